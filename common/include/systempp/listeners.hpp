#pragma once
/// Listening sockets: bound once by the master (or the inline process) and kept open until
/// a stop begins; workers inherit the fds and accept on them.

#include <cstdint>
#include <string>
#include <vector>

#include "systempp/fd.hpp"
#include "systempp/options.hpp"

namespace systempp {

/// A bound, listening, non-blocking socket owned by the process that bound it. Every
/// process holds its own copy of the fd (inherited by fork or exec); the master keeps its
/// copy open until a stop begins (then new connections are refused, docs/operations.md),
/// so a worker closing its copy at a reload or recycle loses no queued connection.
struct listener {
  std::string name;     ///< from `--bind NAME=...` (default "http") or LISTEN_FDNAMES
  std::string address;  ///< numeric host as bound, e.g. "127.0.0.1" or "::1"
  std::uint16_t port = 0;  ///< the real port, also when 0 was asked for
  /// The listening socket (close-on-exec, non-blocking). Accept on a dup() of it:
  /// make_acceptor in acceptor.hpp.
  unique_fd fd;
  int family = 0;  ///< AF_INET or AF_INET6

  /// "127.0.0.1:8080" or "[::1]:8080". Any process.
  std::string endpoint() const;
};

/// Binds and listens on every spec; throws config_error naming `--bind` and the address
/// on failure (address in use, permission denied for a privileged port, bad host).
/// `reuse_port`: bound with SO_REUSEPORT, so the master can add a socket per worker slot
/// to the port (--accept reuseport). Master / inline only.
std::vector<listener> bind_listeners(const std::vector<bind_spec>& specs, bool reuse_port = false);

/// Takes over an inherited listening socket (exec'd worker, master upgrade, socket
/// activation): reads its address back from the kernel. Throws if `fd` is not a socket.
/// Master (upgrade, socket activation) or exec'd worker, at start.
listener adopt_listener(unique_fd fd, std::string name);

}  // namespace systempp
