#include <fcntl.h>
#include "support/proc.hpp"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <system_error>

namespace support {

namespace {

struct dir_closer {
  void operator()(DIR* d) const { ::closedir(d); }
};
using dir_ptr = std::unique_ptr<DIR, dir_closer>;

std::optional<pid_t> parse_pid(std::string_view text) {
  pid_t v = 0;
  const auto* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc{} || p != end || v <= 0) return std::nullopt;
  return v;
}

/// Every process's stat, read one by one: a process may vanish between the listing and the read.
template <class Keep>
std::vector<pid_t> scan_processes(Keep keep) {
  std::vector<pid_t> found;
  dir_ptr dir(::opendir("/proc"));
  if (!dir) return found;
  while (const dirent* e = ::readdir(dir.get())) {
    const auto pid = parse_pid(e->d_name);
    if (!pid) continue;
    if (const auto s = read_stat(*pid); s && keep(*s)) found.push_back(*pid);
  }
  std::sort(found.begin(), found.end());
  return found;
}

dir_ptr open_fd_dir(pid_t pid) {
  const auto path = "/proc/" + std::to_string(pid) + "/fd";
  dir_ptr dir(::opendir(path.c_str()));
  if (!dir) throw std::system_error(errno, std::generic_category(), "opendir " + path);
  return dir;
}

/// Calls fn(fd) for each entry of /proc/<pid>/fd, minus the listing's own handle.
template <class Fn>
void for_each_fd(pid_t pid, Fn fn) {
  auto dir = open_fd_dir(pid);
  const int own = pid == ::getpid() ? ::dirfd(dir.get()) : -1;
  while (const dirent* e = ::readdir(dir.get())) {
    int fd = -1;
    const std::string_view name = e->d_name;
    auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), fd);
    if (ec != std::errc{} || p != name.data() + name.size() || fd == own) continue;
    fn(fd);
  }
}

}  // namespace

// A /proc file of a process that may exit meanwhile: read() then fails with ESRCH, which
// libstdc++'s filebuf would turn into an exception. Plain read() reports it as nullopt.
std::optional<std::string> read_proc_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string text;
  char buf[4096];
  for (;;) {
    const auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

std::optional<proc_stat> read_stat(pid_t pid) {
  const auto file = read_proc_file("/proc/" + std::to_string(pid) + "/stat");
  if (!file) return std::nullopt;
  const std::string& text = *file;
  // comm is free text in parentheses; the fields resume after the *last* ')'.
  const auto open = text.find('(');
  const auto close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  proc_stat s;
  s.pid = pid;
  s.comm = text.substr(open + 1, close - open - 1);
  std::istringstream rest(text.substr(close + 1));
  if (!(rest >> s.state >> s.ppid >> s.pgrp >> s.session)) return std::nullopt;
  return s;
}

bool pid_alive(pid_t pid) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) < 0 && errno != EPERM) return false;
  const auto s = read_stat(pid);
  return s && s->state != 'Z' && s->state != 'X';
}

std::vector<pid_t> children_of(pid_t parent) {
  return scan_processes([&](const proc_stat& s) {
    return s.ppid == parent && s.state != 'Z' && s.state != 'X';
  });
}

std::vector<pid_t> zombie_children_of(pid_t parent) {
  return scan_processes([&](const proc_stat& s) { return s.ppid == parent && s.state == 'Z'; });
}

std::vector<pid_t> group_members(pid_t pgid) {
  return scan_processes([&](const proc_stat& s) {
    return s.pgrp == pgid && s.state != 'Z' && s.state != 'X';
  });
}

std::size_t count_fds(pid_t pid) {
  std::size_t n = 0;
  for_each_fd(pid, [&](int) { ++n; });
  return n;
}

std::map<int, std::string> fd_targets(pid_t pid) {
  std::map<int, std::string> targets;
  const auto base = "/proc/" + std::to_string(pid) + "/fd/";
  for_each_fd(pid, [&](int fd) {
    char buf[4096];
    const auto path = base + std::to_string(fd);
    const auto n = ::readlink(path.c_str(), buf, sizeof buf);
    targets[fd] = n < 0 ? std::string("?") : std::string(buf, static_cast<std::size_t>(n));
  });
  return targets;
}

std::vector<std::string> shm_segments(std::string_view prefix) {
  std::vector<std::string> names;
  dir_ptr dir(::opendir("/dev/shm"));
  if (!dir) return names;
  while (const dirent* e = ::readdir(dir.get())) {
    const std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    if (name.substr(0, prefix.size()) == prefix) names.emplace_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace support
