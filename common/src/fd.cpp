#include "systempp/fd.hpp"

#include <unistd.h>

#include <cerrno>

namespace systempp {

void unique_fd::reset(int fd) noexcept {
  if (fd_ >= 0 && fd_ != fd) ::close(fd_);
  fd_ = fd;
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
