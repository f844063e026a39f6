#include "store.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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
  // The name is this write's own (pid and a per-process count), so two writes of one key
  // (two workers, or two threads of one) never share a file.
  static std::atomic<std::uint64_t> writes{0};
  const auto tmp = fs::path(s_.data_dir) /
                   (".tmp." + std::to_string(::getpid()) + "." + std::to_string(++writes) + "." + key);
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
  const auto expired = [&](const fs::path& p) {
    std::error_code ec;
    const auto written = fs::last_write_time(p, ec);
    return !ec && now - written > s_.ttl;
  };
  for (const auto& key : keys()) {
    const auto path = fs::path(s_.data_dir) / key;
    if (!expired(path)) continue;
    // Moved aside first: a PUT landing between the check and the removal puts a fresh file
    // there, which is then what was moved, and it goes back unless a newer one came since.
    const auto aside = fs::path(s_.data_dir) / (".expired." + key);
    if (::rename(path.c_str(), aside.c_str()) != 0) continue;
    if (expired(aside)) {
      std::error_code ec;
      removed += fs::remove(aside, ec) ? 1 : 0;
    } else if (::renameat2(AT_FDCWD, aside.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) != 0) {
      std::error_code ec;
      fs::remove(aside, ec);  // a newer value is in place already
    }
  }
  return removed;
}

}  // namespace kv
