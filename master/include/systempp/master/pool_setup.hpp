#pragma once
/// What the master opens before it runs anything that a failure would have to undo: the
/// listeners, the control block and the pidfile, either fresh or handed over by the previous
/// master image (upgrade). Master only.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include "systempp/control_block.hpp"
#include "systempp/listeners.hpp"
#include "systempp/app.hpp"
#include "systempp/master/slot_sockets.hpp"
#include "systempp/master/supervisor_policy.hpp"
#include "systempp/master/upgrade.hpp"
#include "systempp/options.hpp"

namespace spdlog {
class logger;
}

namespace systempp::master {

/// Where the listeners came from, which decides how a stop retires them (retire_listeners).
/// The origin survives an upgrade: the handover says it for each listener.
enum class listener_origin {
  bound,      ///< this master (or the image it was upgraded from) bound them (--bind)
  activated,  ///< systemd's (LISTEN_FDS): systemd keeps its own copy
};

struct pool_setup {
  std::optional<pool_lock> lock;  ///< held for the master's whole life (pool_registry.hpp)
  std::vector<listener> listeners;
  slot_sockets slots;  ///< --accept reuseport: the other slots' sockets of each listener
  listener_origin origin = listener_origin::bound;
  std::optional<control_segment> segment;
  int max_workers = 0;  ///< serving slots the block has records for (the dedicated ones follow)
  /// This binary as started (absolute, symlinks kept): what exec mode and upgrades run,
  /// resolved anew by every exec.
  std::string exec_path;
  unique_fd image;  ///< this image's executable, handed over at an upgrade to fall back to
};

/// Fresh: refuses a second pool of the same name, removes stale blocks, takes systemd's
/// sockets or binds --bind, creates the block and writes --pidfile. Handed over: adopts the
/// previous image's listeners and block (checked first by incoming_upgrade::check). Throws config_error (exit 2) for bad input.
pool_setup open_pool(const options& opts, const handover* h, const std::vector<std::string>& units,
                     const std::vector<std::string>& stages, std::size_t dedicated, spdlog::logger& log);

/// Blocks every signal the master handles (its column of the signal table), so that one
/// arriving before the master's signal_set listens waits instead of killing the process
/// with the default action. First thing in the master, before anything is created.
void block_master_signals() noexcept;

/// At a stop: refuses new connections once no worker accepts any more (no record is
/// spawned, starting or ready: each closed its acceptors at pre_shutdown), or after 1 s.
/// Listeners this master bound are shut down, which stops every process's copy of the
/// socket listening; then the master closes its own copies. systemd's sockets are only
/// closed, since shutting them down would also stop systemd's copy.
/// Master only, on its loop; `timer` is the master's, cancelled when the loop ends.
void retire_listeners(boost::asio::steady_timer& timer, pool_setup& pool, std::shared_ptr<spdlog::logger> log);

/// The supervisor policy's configuration from the command line.
policy_config policy_config_for(const options& opts, int workers, int max_workers,
                                std::vector<dedicated_slot> dedicated);

/// Upgrade: "" when the adopted block's live processes sit where this image's layout puts
/// them (serving workers below `max_workers`, each dedicated slot running this image's unit
/// for it), else why not: an image whose dedicated units differ cannot take the pool over.
std::string dedicated_mismatch(const control_segment& block, int max_workers,
                               const std::vector<dedicated_slot>& dedicated, const std::vector<std::string>& units);

/// The app's dedicated processes (units with runs_in), one entry per process, in start
/// order of their units: the policy's dedicated slots. Any process.
std::vector<dedicated_slot> dedicated_slots(const detail::app_units& app);

/// Removes --pidfile if it still names this process. Master only.
void remove_pidfile(const std::string& path, pid_t pid);

}  // namespace systempp::master
