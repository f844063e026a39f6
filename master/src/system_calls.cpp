#include "systempp/master/system_calls.hpp"

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "systempp/master/spawner.hpp"

namespace systempp::master {

int os_system_calls::channel_pair(unique_fd& master_end, unique_fd& worker_end) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return errno;
  master_end.reset(pair[0]);
  worker_end.reset(pair[1]);
  return 0;
}

pid_t os_system_calls::fork(const std::function<void()>& drop_parent_state,
                            const std::function<int(const sigset_t& mask)>& child_main) {
  return fork_worker(io_, drop_parent_state, child_main);
}

int os_system_calls::kill(pid_t pid, int sig) { return ::kill(pid, sig) == 0 ? 0 : errno; }

pid_t os_system_calls::reap_any(int& status) { return ::waitpid(-1, &status, WNOHANG); }

int os_system_calls::exec(const std::string& path, const std::vector<std::string>& argv) {
  return exec_image(path, argv);
}

}  // namespace systempp::master
