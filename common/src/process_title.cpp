#include "systempp/process_title.hpp"

#include <bsd/unistd.h>
#include <errno.h>
#include <sys/prctl.h>

extern char** environ;

namespace systempp::detail {

namespace {
bool initialised = false;
}  // namespace

void init_process_title(int argc, char** argv) noexcept {
  if (initialised || argc < 1 || !argv) return;
  setproctitle_init(argc, argv, environ);
  initialised = true;
}

void set_process_title(const std::string& title, const std::string& role) noexcept {
  const std::string program = program_invocation_short_name ? program_invocation_short_name : "app";
  if (initialised) setproctitle("%s", title.c_str());
  const std::string thread = (program + ": " + role).substr(0, 15);
  ::prctl(PR_SET_NAME, thread.c_str(), 0, 0, 0);
}

}  // namespace systempp::detail
