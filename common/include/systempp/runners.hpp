#pragma once
/// The non-template entry points behind systempp::main and systempp::run_script.

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <vector>

#include "systempp/app.hpp"
#include "systempp/options.hpp"

namespace systempp::detail {

/// `app --workers 0`: every stage in this process; SIGHUP reloads in place, SIGTERM and
/// SIGINT drain, a second SIGINT (or SIGQUIT) exits at once.
int run_inline(const options& opts, std::vector<unit_entry>& units);

using script_body = std::function<boost::asio::awaitable<int>(context&)>;

/// on_init, startup stages, the body, shutdown stages, on_exit; returns the body's code,
/// or the failed stage's code.
int run_script(int argc, const char* const* argv, std::vector<unit_entry>& units,
               script_body body);

/// Parses the command line and runs inline or as a pool master. Defined in master/.
int run_main(int argc, const char* const* argv, std::vector<unit_entry>& units);

}  // namespace systempp::detail
