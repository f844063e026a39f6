#include "systempp/process_title.hpp"

#include <bsd/unistd.h>
#include <errno.h>
#include <sys/prctl.h>

#include <cstdio>

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
  if (initialised) setproctitle("%s", title.c_str());
  char thread[16];  // the kernel keeps 15 bytes and the NUL
  std::snprintf(thread, sizeof thread, "%s: %s", program_invocation_short_name ? program_invocation_short_name : "app",
                role.c_str());
  ::prctl(PR_SET_NAME, thread, 0, 0, 0);
}

}  // namespace systempp::detail
