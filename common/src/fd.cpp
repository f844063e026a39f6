#include "systempp/fd.hpp"

#include <unistd.h>

namespace systempp {

void unique_fd::reset(int fd) noexcept {
  if (fd_ >= 0 && fd_ != fd) ::close(fd_);
  fd_ = fd;
}

}  // namespace systempp
