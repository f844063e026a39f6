#include "store.hpp"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace kv {

namespace fs = std::filesystem;

void store::on_init(systempp::context& ctx) {
  s_ = ctx.config(*this);
  std::error_code ec;
  fs::create_directories(s_.data_dir, ec);
  if (ec || !fs::is_directory(s_.data_dir))
    throw systempp::config_error("store.data-dir '" + s_.data_dir + "': " +
                                 (ec ? ec.message() : std::string("not a directory")));
}

bool store::valid_key(std::string_view key) {
  if (key.empty() || key.size() > 128 || key.front() == '.') return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

std::optional<std::string> store::get(const std::string& key) {
  gets.inc();
  std::ifstream in(fs::path(s_.data_dir) / key, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream value;
  value << in.rdbuf();
  return value.str();
}

bool store::put(const std::string& key, const std::string& value) {
  if (static_cast<std::int64_t>(value.size()) > s_.max_value_bytes) return false;
  puts.inc();
  // Written aside, then renamed over the key: a reader sees the old value or the new one.
  const auto tmp = fs::path(s_.data_dir) / (".tmp." + std::to_string(::getpid()) + "." + key);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << value;
    if (!out.flush()) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, fs::path(s_.data_dir) / key);
  return true;
}

bool store::erase(const std::string& key) {
  deletes.inc();
  std::error_code ec;
  return fs::remove(fs::path(s_.data_dir) / key, ec);
}

std::vector<std::string> store::keys() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(s_.data_dir, ec)) {
    auto name = e.path().filename().string();
    if (valid_key(name)) out.push_back(std::move(name));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::size_t store::purge_expired() {
  if (s_.ttl.count() == 0) return 0;
  std::size_t removed = 0;
  const auto now = fs::file_time_type::clock::now();
  for (const auto& key : keys()) {
    std::error_code ec;
    const auto path = fs::path(s_.data_dir) / key;
    const auto written = fs::last_write_time(path, ec);
    if (!ec && now - written > s_.ttl && fs::remove(path, ec)) ++removed;
  }
  return removed;
}

}  // namespace kv
