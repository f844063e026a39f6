#pragma once
/// What the master opens before it runs anything that a failure would have to undo: the
/// listeners, the control block and the pidfile, either fresh or handed over by the previous
/// master image (upgrade). Master only.

#include <optional>
#include <string>
#include <vector>

#include "systempp/control_block.hpp"
#include "systempp/listeners.hpp"
#include "systempp/master/supervisor_policy.hpp"
#include "systempp/master/upgrade.hpp"
#include "systempp/options.hpp"

namespace spdlog {
class logger;
}

namespace systempp::master {

struct pool_setup {
  std::vector<listener> listeners;
  std::optional<control_segment> segment;
  int max_workers = 0;  ///< logical slots the block has records for
  std::string exec_path;  ///< this binary, resolved at start: what exec mode and upgrades run
};

/// Fresh: refuses a second pool of the same name, removes stale blocks, takes systemd's
/// sockets or binds --bind, creates the block and writes --pidfile. Handed over: adopts the
/// previous image's listeners and block. Throws config_error (exit 2) for bad input.
pool_setup open_pool(const options& opts, const std::optional<handover>& h, const std::vector<std::string>& units,
                     spdlog::logger& log);

/// The supervisor policy's configuration from the command line.
policy_config policy_config_for(const options& opts, int workers, int max_workers);

/// Removes --pidfile if it still names this process. Master only.
void remove_pidfile(const std::string& path, pid_t pid);

}  // namespace systempp::master
