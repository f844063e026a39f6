#pragma once
/// Master upgrade (SIGUSR2): the master re-executes its binary in place (same pid, so
/// systemd's MAINPID and the workers' parent stay valid) and hands the new image what it
/// must keep, as inherited fds described in one environment variable.

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

namespace systempp::master {

class supervisor;
class system_calls;

inline constexpr const char* upgrade_env = "SYSTEMPP_UPGRADE";

/// What the old image hands over.
struct handover {
  struct listener_fd {
    std::string name;
    int fd = -1;
  };
  struct adopted_worker {
    pid_t pid = 0;
    int slot = 0;
    int lane = 0;
    std::uint32_t generation = 0;
    int channel = -1;  ///< the master's end of the worker's socketpair
  };
  int control_fd = -1;
  int lock_fd = -1;  ///< the pool lock (pool_registry.hpp); -1 from an image without one
  std::vector<listener_fd> listeners;
  std::vector<adopted_worker> workers;
};

/// "control=3;lock=4;listeners=http:5;workers=123:0:0:1:7,124:1:0:1:8"
std::string encode(const handover& h);
/// The inverse; nullopt for anything malformed (then nothing is adopted).
std::optional<handover> decode(std::string_view text);

/// Reads and removes the variable: the new image's own children must not see it.
std::optional<handover> take_handover();

/// Runs `path --help` and waits up to `timeout`: a binary that cannot even print its help
/// must not replace a running master. Returns an empty string when it passed, else why not.
std::string check_binary(const std::string& path, std::chrono::milliseconds timeout);

/// What this master hands over: the control block's fd, the listeners and every worker
/// in the table with its channel. Master only.
handover describe_pool(int control_fd, int lock_fd, const std::vector<listener>& listeners, const supervisor& sup);

/// Re-executes `path` in place with `argv`, handing `h` over: clears close-on-exec on its
/// fds, describes them in SYSTEMPP_UPGRADE and blocks every signal (exec keeps the mask and
/// the pending signals, so none is handled between here and the new image's handlers).
/// Returns only when exec failed, after undoing all of that, with the reason. Master only.
std::string exec_upgrade(const handover& h, const std::string& path, const std::vector<std::string>& argv,
                         system_calls& sys);

/// SIGUSR2: re-executes the master in place, unless a stop or a rollout is in progress or
/// `path --help` fails (then nothing changes). Returns only when it did not exec. Master only.
void upgrade_master(int control_fd, int lock_fd, const std::vector<listener>& listeners, const std::string& path,
                    const std::vector<std::string>& argv, supervisor& sup, system_calls& sys, spdlog::logger& log);

/// The new image: takes the handed-over workers into the worker table, and into the policy
/// in the state their records show (starting, ready or draining), then reaps any that
/// exited while the images changed. Master only.
void adopt_workers(const handover& h, supervisor& sup);

}  // namespace systempp::master
