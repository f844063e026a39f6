#include "systempp/config_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <unordered_map>

#include "systempp/errors.hpp"
#include "systempp/fd.hpp"

namespace systempp {

namespace {

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r");
  return s.substr(first, last - first + 1);
}

// What a path that is not a regular file is, for the error line.
const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "an unknown kind of file";
}

config_error too_large(const std::string& path) {
  return config_error(fmt::format("{}: larger than the 1 MiB limit", path));
}

// Reads to EOF, never more than max_config_bytes: the size fstat reported may be stale, and
// files in /proc report 0 whatever they hold.
std::string read_bounded(int fd, const std::string& path) {
  std::string text;
  char buf[16 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw config_error(fmt::format("{}: read error: {}", path, std::strerror(errno)));
    if (n == 0) return text;
    if (text.size() + static_cast<std::size_t>(n) > max_config_bytes) throw too_large(path);
    text.append(buf, static_cast<std::size_t>(n));
  }
}

}  // namespace

std::vector<config_entry> parse_config(std::string_view text, std::string_view origin) {
  // Editors on some systems start a UTF-8 file with a byte order mark.
  constexpr std::string_view bom = "\xEF\xBB\xBF";
  if (text.starts_with(bom)) text.remove_prefix(bom.size());
  std::vector<config_entry> out;
  // key -> the line it was first given on; the views point into `text`.
  std::unordered_map<std::string_view, std::size_t> first_line;
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
    if (const auto [it, fresh] = first_line.try_emplace(key, line_no); !fresh)
      throw config_error(fmt::format("{}:{}: key '{}' given twice (first on line {})", origin,
                                     line_no, key, it->second));
    out.push_back(config_entry{std::string(key), std::string(trim(line.substr(eq + 1))), line_no});
  }
  return out;
}

std::vector<config_entry> read_config_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below like any
  // file that is not regular (a directory would read as empty, /dev/zero without end).
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd) throw config_error(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    throw config_error(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
  if (!S_ISREG(st.st_mode))
    throw config_error(fmt::format("{}: not a regular file ({})", path, kind_of(st.st_mode)));
  if (st.st_size > static_cast<off_t>(max_config_bytes)) throw too_large(path);
  return parse_config(read_bounded(fd.get(), path), path);
}

}  // namespace systempp
