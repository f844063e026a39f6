#pragma once
/// Master upgrade (SIGUSR2): the master re-executes its binary in place (same pid, so
/// systemd's MAINPID and the workers' parent stay valid) and hands the new image what it
/// must keep, as inherited fds described in one environment variable.
///
/// The pool is never lost on the way:
/// 1. Before anything, the old image runs `<binary> --upgrade-version <its own options>`:
///    the new binary checks the command line and the log file and prints its protocol
///    version (protocol.hpp). A failure or another version refuses the upgrade; nothing
///    changes, and the log and `app status` say why.
/// 2. The handover carries an fd of the old image's executable. Until the new image has
///    taken the pool over (handover checked, logger open, on_init passed, workers adopted),
///    any failure of it, including a fatal signal, re-executes the old image from that fd
///    with the same handover and the reason (`incoming_upgrade::fall_back`). The old image
///    adopts its workers again without rolling them and reports the failed upgrade.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "systempp/listeners.hpp"

namespace spdlog {
class logger;
}

namespace systempp {
struct options;
}

namespace systempp::master {

class supervisor;
class system_calls;
class reload_report;
struct pool_setup;
class slot_sockets;

inline constexpr const char* upgrade_env = "SYSTEMPP_UPGRADE";

/// What the old image hands over.
struct handover {
  struct listener_fd {
    std::string name;
    int fd = -1;
    bool bound = false;  ///< the master bound it (--bind); else systemd's (see listener_origin)
    /// A slot's socket of the listener before it (--accept reuseport; "s" in the text),
    /// in slot order from slot 1.
    bool slot_socket = false;
  };
  struct adopted_worker {
    pid_t pid = 0;
    int slot = 0;
    int lane = 0;
    std::uint32_t generation = 0;
    int channel = -1;  ///< the master's end of the worker's socketpair
  };
  std::uint32_t protocol = 0;  ///< the writer's protocol_version
  int image_fd = -1;           ///< the writer's executable, to fall back to; -1 for none
  int control_fd = -1;
  int lock_fd = -1;  ///< the pool lock (pool_registry.hpp)
  std::vector<listener_fd> listeners;
  std::vector<adopted_worker> workers;
  /// Set when a new image hands the pool back to the image it came from: why it failed.
  std::string back;
};

/// "protocol=1;image=3;control=4;lock=5;listeners=http:6:b;workers=123:0:0:1:7;back=..."
/// The head (protocol and image) keeps this form in every protocol version, so an image of
/// another version can still fall back; the rest belongs to the version.
std::string encode(const handover& h);
/// The inverse; nullopt for anything malformed. A handover of another protocol version
/// comes back with only its head (protocol, image_fd) filled in.
std::optional<handover> decode(std::string_view text);

/// Every fd `h` names: what an exec must keep open.
std::vector<int> handover_fds(const handover& h);

/// Runs `path --upgrade-version <argv[1..]>` and waits up to `timeout`: the new binary must
/// accept this master's command line and log file and speak this protocol version.
/// Returns an empty string when it passed, else why not (with the binary's own error line).
std::string probe_binary(const std::string& path, const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout);

/// What this master hands over: its executable, the control block's fd, the lock, the
/// listeners and every worker in the table with its channel. Master only.
handover describe_pool(int image_fd, int control_fd, int lock_fd, const std::vector<listener>& listeners,
                       const slot_sockets& slots, bool bound, const supervisor& sup);

/// Re-executes `path` in place with `argv`, handing `h` over: clears close-on-exec on its
/// fds, describes them in SYSTEMPP_UPGRADE and blocks every signal (exec keeps the mask and
/// the pending signals, so none is handled between here and the new image's handlers).
/// Returns only when exec failed, after undoing all of that, with the reason. Master only.
std::string exec_upgrade(const handover& h, const std::string& path, const std::vector<std::string>& argv,
                         system_calls& sys);

/// The new image's side, from its first instant until it has taken the pool over.
class incoming_upgrade {
 public:
  /// Reads and removes SYSTEMPP_UPGRADE; nothing when this image was not exec'd by an
  /// upgrade. Until taken_over(), a fatal signal (SEGV, BUS, ILL, FPE, ABRT) falls back.
  /// A handover too malformed to fall back from is reported on stderr and gives nothing.
  static std::optional<incoming_upgrade> take(int argc, const char* const* argv);

  const handover& pool() const noexcept { return h_; }
  /// This is the previous image, handed the pool back by a new image that failed.
  bool returned() const noexcept { return !h_.back.empty(); }
  /// Why the handover cannot be used by this image (protocol, fds, lock, block), or empty.
  std::string check(std::string_view pool_name) const;
  /// Re-executes the previous image with the pool and `why` (also printed on stderr).
  /// Returns only when that cannot be done: this image is itself the returned one, it
  /// has no previous image, or the exec failed; the caller then keeps the pool as it can.
  void fall_back(std::string_view why) const;
  /// The pool is this image's now: fatal signals are fatal again, the image fd is closed.
  void taken_over();

 private:
  incoming_upgrade(handover h, std::vector<std::string> argv) : h_(std::move(h)), argv_(std::move(argv)) {}
  handover h_;
  std::vector<std::string> argv_;
};

/// SIGUSR2: re-executes the master in place, unless a stop or a rollout is in progress
/// (logged) or probe_binary refuses the binary (then the refusal is the last reload, for
/// `app status`). Returns only when it did not exec. Master only.
void upgrade_master(pool_setup& pool, const options& opts, supervisor& sup, system_calls& sys,
                    reload_report& report, spdlog::logger& log);

/// The new image, once its units passed on_init: adopts the handed-over workers and ends
/// the fall-back window. Returns true when they are to be rolled onto this image; false
/// when this is the previous image, handed the pool back (the failed upgrade is then the
/// last reload). Master only.
bool take_over(incoming_upgrade& in, supervisor& sup, reload_report& report, spdlog::logger& log);

/// The new image: takes the handed-over workers into the worker table, and into the policy
/// in the state their records show (starting, ready or draining), then reaps any that
/// exited while the images changed. Master only.
void adopt_workers(const handover& h, supervisor& sup);

}  // namespace systempp::master
