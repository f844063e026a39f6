#pragma once
/// Exec mode's hand-over between the forked child (which writes it, then execs) and the
/// worker image (which reads it back): both sides live here so the layout is defined once.
///
/// The layout:
///   fd 3            the control block (attached with control_segment::attach_fd)
///   fd 4            the worker's end of its channel socketpair
///   fd 5, 6, ...    the listeners, in the master's order
///   SYSTEMPP_WORKER     "slot:lane:generation:master_pid", decimal
///   SYSTEMPP_LISTENERS  "name,name,...", one name per listener fd, same order
///   SYSTEMPP_PROTOCOL   the writer's protocol_version (protocol.hpp), checked first
/// Every other fd is close-on-exec. The image that reads this is the binary on disk at the
/// time of the exec, possibly newer than the master that wrote it: a change to the layout
/// bumps protocol_version, and a reader of another version refuses to start (the reload is
/// then rolled back by the readiness gate, with the reason in the worker's log).

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "systempp/listeners.hpp"

namespace systempp::worker {

/// The layout's fds and variable names, as described above. Any process.
inline constexpr int exec_control_fd = 3;
inline constexpr int exec_channel_fd = 4;
inline constexpr int exec_first_listener_fd = 5;
inline constexpr const char* exec_env_worker = "SYSTEMPP_WORKER";        ///< "slot:lane:gen:master_pid"
inline constexpr const char* exec_env_listeners = "SYSTEMPP_LISTENERS";  ///< "name,name,..."
/// The exit code of a forked child whose image could not be started, as a shell uses it
/// for a command it cannot run.
inline constexpr int exec_failed = 127;

/// Who the exec'd worker is, carried in SYSTEMPP_WORKER. Any process.
struct exec_identity {
  int slot = 0;
  int lane = 0;  ///< which of the slot's two control-block records is this worker's
  std::uint32_t generation = 0;
  pid_t master_pid = 0;
};

/// Moves `control_fd`, `channel_fd` and the listeners onto the layout above, sets both
/// variables and execs `path` with `argv`. Returns exec_failed (127) only if the image
/// could not be started; an execv failure is printed to stderr as
/// "worker[<slot>]: exec <path>: <strerror>". Master only, in the forked child (it
/// overwrites fds 3.. and the environment of the calling process).
int exec_worker_image(const std::string& path, const std::vector<std::string>& argv, int control_fd,
                      int channel_fd, const std::vector<listener>& listeners,
                      const exec_identity& id) noexcept;

/// What an exec'd worker image received. Worker only.
struct exec_handover {
  exec_identity id;
  std::vector<listener> listeners;  ///< adopted from fds 5..; they own their fds
};

/// True when this process image was exec'd as a pool worker. Any process.
bool is_exec_worker() noexcept;

/// Checks SYSTEMPP_PROTOCOL, parses both variables, adopts the listener fds and unsets
/// the variables (so the worker's own children do not take themselves for workers). The
/// control block (fd 3) and the channel (fd 4) are left to the caller. Throws
/// std::runtime_error when the protocol differs or SYSTEMPP_WORKER is missing or
/// malformed. Worker only, in the exec'd image, once.
exec_handover read_exec_handover();

}  // namespace systempp::worker
