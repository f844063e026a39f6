#pragma once
/// The non-template entry points behind systempp::main and systempp::run_script.

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <memory>
#include <vector>

#include "systempp/app.hpp"
#include "systempp/options.hpp"

namespace boost::asio {
class io_context;
}

namespace systempp::detail {

/// `app --workers 0`: every stage in this process; SIGHUP reloads in place, SIGTERM and
/// SIGINT drain, a second SIGINT (or SIGQUIT) exits at once. Inline only: called by
/// run_main in the launching process; returns the exit code.
int run_inline(const options& opts, app_units& units, boost::asio::io_context& io);

/// A script body as run_script takes it (systempp::run_script wraps `int(context&)` too).
/// Runs on the script process's loop, between post_startup and pre_shutdown.
using script_body = std::function<boost::asio::awaitable<int>(context&)>;

/// on_init, startup stages, the body, shutdown stages, on_exit; returns the body's code,
/// or the failed stage's code. Script only: parses the command line in script mode, binds
/// nothing, forks nothing.
int run_script(int argc, const char* const* argv, app_units& units,
               script_body body, boost::asio::io_context& io);

/// Parses the command line and runs inline or as a pool master. Defined in master/.
/// Also runs the control sub-commands and, when SYSTEMPP_WORKER is set, an exec'd worker
/// image. Launching process only; returns the exit code (1 for an unexpected exception).
int run_main(int argc, const char* const* argv, app_units& units,
             boost::asio::io_context& io);

/// The process's event loop, made before the units so that it outlives them: a unit's
/// timers and sockets belong to it and must be destroyed first. Any process.
std::shared_ptr<boost::asio::io_context> make_io_context();

}  // namespace systempp::detail
