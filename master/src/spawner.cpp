#include "systempp/master/spawner.hpp"

#include <unistd.h>

#include <boost/asio/io_context.hpp>

#include <cerrno>

namespace systempp::master {

pid_t fork_worker(boost::asio::io_context& master_io, const std::function<void()>& drop_parent_state,
                  const std::function<int(const sigset_t& mask)>& child_main) {
  // Block every signal across fork(): a signal sent to the new child before it replaced
  // Asio's handlers would otherwise be written to the master's signal pipe, which the
  // child still shares, and be handled by the master (chriskohlhoff/asio#1069).
  sigset_t all;
  sigset_t previous;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &previous);
  master_io.notify_fork(boost::asio::execution_context::fork_prepare);

  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 1;
    try {
      // The child gets its own epoll, timer fd and signal pipe; the master's are left alone.
      master_io.notify_fork(boost::asio::execution_context::fork_child);
      drop_parent_state();
      code = child_main(previous);
    } catch (...) {
      // No exception may unwind into the master's frames in the child.
      code = 1;
    }
    ::_exit(code);
  }

  const int saved = errno;
  master_io.notify_fork(boost::asio::execution_context::fork_parent);
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  errno = saved;
  return pid;
}

}  // namespace systempp::master
