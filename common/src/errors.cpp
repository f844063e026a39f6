#include "systempp/errors.hpp"

#include <cerrno>

namespace systempp {

bool is_resource_shortage(int err) noexcept {
  switch (err) {
    case EMFILE:
    case ENFILE:
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case ENOBUFS:
    case EAGAIN:
      return true;
    default:
      return false;
  }
}

void throw_start_error(const std::string& what, int err) {
  if (is_resource_shortage(err)) throw resource_error(what);
  throw config_error(what);
}

exit_code start_failure_code(const std::exception& e) noexcept {
  return dynamic_cast<const config_error*>(&e) ? exit_code::usage : exit_code::failure;
}

}  // namespace systempp
