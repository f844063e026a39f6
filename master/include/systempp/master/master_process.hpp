#pragma once
/// The pool's master process.

#include <optional>
#include <vector>

#include "systempp/app.hpp"
#include "systempp/master/upgrade.hpp"
#include "systempp/options.hpp"

namespace boost::asio {
class io_context;
}

namespace systempp::master {

/// Binds, runs on_init, forks and supervises `opts.workers` workers until SIGTERM/SIGINT,
/// then runs on_exit. Returns the process exit code. With `upgrade`, this image was exec'd
/// by a master upgrade: it takes that pool over, or hands it back (upgrade.hpp). Master only.
int run_master(const options& opts, detail::app_units& units, boost::asio::io_context& io,
               std::optional<incoming_upgrade> upgrade = std::nullopt);

/// `app --upgrade-version`: opens the log file as the master would (then closes it),
/// prints "systempp-protocol N" and returns 0, or prints the error and returns its exit
/// code. Runs in the process that the old master starts to probe a new binary.
int print_upgrade_version(const options& opts);

}  // namespace systempp::master
