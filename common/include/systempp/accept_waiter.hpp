#pragma once
/// --accept exclusive: a thread of the worker's own that waits for a shared listener to
/// have a connection, woken alone among the pool's workers (EPOLLEXCLUSIVE). Asio's
/// reactor cannot register a descriptor that way, and a nested epoll instance handed to it
/// defeats the flag (docs/ARCHITECTURE.md), so the wait happens here and the accepting on
/// the loop (connection_acceptor in acceptor.hpp). No Asio here: this is compiled once.

#include <functional>
#include <thread>

#include "systempp/fd.hpp"

namespace systempp::detail {

class accept_waiter {
 public:
  /// Starts the thread. Each time `listen_fd` has a connection to accept and this worker
  /// is the one the kernel woke, the thread calls `ready` (which must only hand over to the
  /// loop, e.g. post) and then waits for resume() before it waits on the socket again: a
  /// worker whose loop has not taken the last hand-over yet is not waiting, so the kernel
  /// wakes another one. Every 16 hand-overs it re-registers, which puts this worker last
  /// in the socket's queue of exclusive waiters (the kernel wakes the first one waiting;
  /// without this, one idle worker would take every connection). Every 200 ms without a
  /// wake-up it also looks at the socket itself, so a connection whose wake-up went to a
  /// worker that was stopped before it accepted still gets taken. Throws std::system_error.
  accept_waiter(int listen_fd, std::function<void()> ready);
  ~accept_waiter();  ///< stop()
  accept_waiter(const accept_waiter&) = delete;
  accept_waiter& operator=(const accept_waiter&) = delete;

  /// The loop accepted what it could: wait for the next connection. Any thread.
  void resume() noexcept;
  /// Ends and joins the thread; later calls do nothing. The thread that constructed it.
  void stop() noexcept;

 private:
  void run() noexcept;

  int listen_fd_;
  std::function<void()> ready_;
  unique_fd epoll_;
  unique_fd resume_;  ///< eventfd: the loop took the hand-over
  unique_fd stop_;    ///< eventfd: end the thread
  std::thread thread_;
};

}  // namespace systempp::detail
