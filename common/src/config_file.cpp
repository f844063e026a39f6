#include "systempp/config_file.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "systempp/errors.hpp"

namespace systempp {

namespace {

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r");
  return s.substr(first, last - first + 1);
}

}  // namespace

std::vector<config_entry> parse_config(std::string_view text, std::string_view origin) {
  std::vector<config_entry> out;
  std::size_t line_no = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    if (line.find('\0') != std::string_view::npos)
      throw config_error(fmt::format("{}:{}: NUL byte in line", origin, line_no));
    const auto eq = line.find('=');
    if (eq == std::string_view::npos)
      throw config_error(fmt::format("{}:{}: expected 'key = value'", origin, line_no));
    const auto key = trim(line.substr(0, eq));
    if (key.empty()) throw config_error(fmt::format("{}:{}: empty key", origin, line_no));
    for (const auto& e : out)
      if (e.key == key)
        throw config_error(fmt::format("{}:{}: key '{}' given twice (first on line {})", origin,
                                       line_no, key, e.line));
    out.push_back(config_entry{std::string(key), std::string(trim(line.substr(eq + 1))), line_no});
  }
  return out;
}

std::vector<config_entry> read_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw config_error(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw config_error(fmt::format("{}: read error", path));
  return parse_config(text.str(), path);
}

}  // namespace systempp
