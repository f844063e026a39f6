#pragma once
/// The system calls the master makes on its workers, behind a small interface: the real
/// one forks and signals, a test's fake records the calls and invents pids, so the master's
/// execution of actions is unit-tested without processes (tests/unit/supervisor_test.cpp).

#include <signal.h>
#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "systempp/fd.hpp"

namespace boost::asio {
class io_context;
}

namespace systempp::master {

class system_calls {
 public:
  virtual ~system_calls() = default;
  /// A connected AF_UNIX stream pair, close-on-exec. Returns 0, or the errno.
  virtual int channel_pair(unique_fd& master_end, unique_fd& worker_end) = 0;
  /// fork_worker() (spawner.hpp): the child's pid, or -1 with errno set.
  virtual pid_t fork(const std::function<void()>& drop_parent_state,
                     const std::function<int(const sigset_t& mask)>& child_main) = 0;
  /// kill(2). Returns 0, or the errno (ESRCH: the process is gone already).
  virtual int kill(pid_t pid, int sig) = 0;
  /// waitpid(-1, WNOHANG): a reaped pid and its status; 0 (or -1) when none is left.
  virtual pid_t reap_any(int& status) = 0;
  /// execv(2) of this process (the master upgrade). Returns only on failure, with errno.
  virtual int exec(const std::string& path, const std::vector<std::string>& argv) = 0;
};

/// The real calls, forking through `master_io` (for Asio's notify_fork). Master only.
class os_system_calls final : public system_calls {
 public:
  explicit os_system_calls(boost::asio::io_context& master_io) noexcept : io_(master_io) {}
  int channel_pair(unique_fd& master_end, unique_fd& worker_end) override;
  pid_t fork(const std::function<void()>& drop_parent_state,
             const std::function<int(const sigset_t& mask)>& child_main) override;
  int kill(pid_t pid, int sig) override;
  pid_t reap_any(int& status) override;
  int exec(const std::string& path, const std::vector<std::string>& argv) override;

 private:
  boost::asio::io_context& io_;
};

}  // namespace systempp::master
