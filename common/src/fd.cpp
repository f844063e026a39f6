#include "systempp/fd.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "systempp/errors.hpp"

namespace systempp {

void unique_fd::reset(int fd) noexcept {
  if (fd_ >= 0 && fd_ != fd) ::close(fd_);
  fd_ = fd;
}

void close_all(std::vector<int>& fds) noexcept {
  std::erase_if(fds, [](int fd) { return fd < 0; });
  std::sort(fds.begin(), fds.end());
  fds.erase(std::unique(fds.begin(), fds.end()), fds.end());
  for (std::size_t i = 0; i < fds.size();) {
    std::size_t j = i;
    while (j + 1 < fds.size() && fds[j + 1] == fds[j] + 1) ++j;
    if (::close_range(static_cast<unsigned>(fds[i]), static_cast<unsigned>(fds[j]), 0) != 0)
      for (std::size_t k = i; k <= j; ++k) ::close(fds[k]);  // a kernel without close_range
    i = j + 1;
  }
}

void require_free_descriptors(int n) {
  std::vector<unique_fd> held;
  for (int i = 0; i < n; ++i) {
    unique_fd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (fd) {
      held.push_back(std::move(fd));
      continue;
    }
    const int err = errno;
    if (!is_resource_shortage(err)) return;  // no /dev/null: nothing to learn here
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    throw resource_error(fmt::format("too few free file descriptors to start: {} (the limit is {}, {} more are needed)",
                                     std::strerror(err), limit.rlim_cur, n - i));
  }
}

int exec_image(const std::string& path, const std::vector<std::string>& argv) noexcept {
  try {
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    ::execv(path.c_str(), args.data());
    return errno;
  } catch (...) {  // the vector could not be allocated
    return ENOMEM;
  }
}

}  // namespace systempp
