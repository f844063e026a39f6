#include "systempp/process_title.hpp"

#include <bsd/unistd.h>
#include <errno.h>
#include <sys/prctl.h>

#include <cstdio>
#include <cstring>

extern char** environ;

namespace systempp::detail {

namespace {
bool initialised = false;
char* title_start = nullptr;  ///< argv[0], where the title is written
char* args_last = nullptr;    ///< the last byte of the command line's strings, its final NUL
}  // namespace

void init_process_title(int argc, char** argv) noexcept {
  if (initialised || argc < 1 || !argv || !argv[argc - 1]) return;
  title_start = argv[0];
  args_last = argv[argc - 1] + std::strlen(argv[argc - 1]);
  setproctitle_init(argc, argv, environ);
  initialised = true;
}

void set_process_title(const std::string& title, const std::string& role) noexcept {
  if (initialised) {
    setproctitle("%s", title.c_str());
    // Linux shows only the title (up to its NUL) when the command line's last byte is not
    // NUL; otherwise the whole old area, where libbsd leaves a '.' when the title is
    // shorter than argv[0] ("app: master [app] gen 1   ." in ps).
    if (title_start + std::strlen(title_start) < args_last) *args_last = '.';
  }
  char thread[16];  // the kernel keeps 15 bytes and the NUL
  std::snprintf(thread, sizeof thread, "%s: %s", program_invocation_short_name ? program_invocation_short_name : "app",
                role.c_str());
  ::prctl(PR_SET_NAME, thread, 0, 0, 0);
}

}  // namespace systempp::detail
