#pragma once
/// The pool's master process.

#include <vector>

#include "systempp/app.hpp"
#include "systempp/options.hpp"

namespace boost::asio {
class io_context;
}

namespace systempp::master {

/// Binds, runs on_init, forks and supervises `opts.workers` workers until SIGTERM/SIGINT,
/// then runs on_exit. Returns the process exit code. Master only.
int run_master(const options& opts, std::vector<detail::unit_entry>& units, boost::asio::io_context& io);

}  // namespace systempp::master
