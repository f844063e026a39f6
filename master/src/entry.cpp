// run_main: the one place where a command line becomes a runner and its exit code.

#include <spdlog/spdlog.h>

#include <exception>
#include <iostream>

#include "systempp/errors.hpp"
#include "systempp/master/control_client.hpp"
#include "systempp/master/master_process.hpp"
#include "systempp/runners.hpp"
#include "systempp/worker/worker_runtime.hpp"

namespace systempp::detail {

int run_main(int argc, const char* const* argv, std::vector<unit_entry>& units,
             boost::asio::io_context& io) {
  try {
    auto parsed = parse_command_line(argc, argv);
    if (auto* stop = std::get_if<exit_now>(&parsed)) return stop->code;
    if (auto* ctl = std::get_if<control_command>(&parsed)) return master::run_control(*ctl);
    const options& opts = std::get<serve_command>(parsed).opts;
    if (worker::is_exec_worker()) return worker::run_exec_worker(opts, units, io);
    if (opts.workers == 0) return run_inline(opts, units, io);
    return master::run_master(opts, units, io);
  } catch (const std::exception& e) {
    std::cerr << (argc > 0 ? argv[0] : "app") << ": fatal: " << e.what() << "\n";
    return to_int(exit_code::failure);
  }
}

}  // namespace systempp::detail
