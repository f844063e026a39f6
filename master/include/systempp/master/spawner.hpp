#pragma once
/// The one place that forks.

#include <signal.h>
#include <sys/types.h>

#include <functional>

namespace boost::asio {
class io_context;
}

namespace systempp::master {

/// Forks. In the child: tells Asio about the fork, runs `drop_parent_state` (close what
/// belongs to the master), then `child_main(mask)` with every signal still blocked (`mask`
/// is the mask to restore once the child's own handlers are set) and _exits with its
/// result; it never returns into the master's stack. In the parent: returns the child's
/// pid, or -1 with errno set. Master only.
pid_t fork_worker(boost::asio::io_context& master_io, const std::function<void()>& drop_parent_state,
                  const std::function<int(const sigset_t& mask)>& child_main);

}  // namespace systempp::master
