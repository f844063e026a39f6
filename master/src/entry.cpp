// run_main: the one place where a command line becomes a runner and its exit code.

#include <spdlog/spdlog.h>

#include <exception>
#include <iostream>

#include "systempp/app_config.hpp"
#include "systempp/errors.hpp"
#include "systempp/fd.hpp"
#include "systempp/log.hpp"
#include "systempp/master/metrics_server.hpp"
#include "systempp/protocol.hpp"
#include "systempp/master/control_client.hpp"
#include "systempp/master/master_process.hpp"
#include "systempp/runners.hpp"
#include "systempp/worker/worker_runtime.hpp"

namespace systempp::master {

int print_upgrade_version(const options& opts) {
  try {
    make_logger("master", opts);  // the log file opens, as the new master's will
    if (!opts.metrics.empty()) parse_metrics_address(opts.metrics);
  } catch (const std::exception& e) {
    std::cerr << opts.program << ": error: " << e.what() << "\n";
    return to_int(start_failure_code(e));
  }
  std::cout << protocol_banner << " " << protocol_version << std::endl;
  return 0;
}

}  // namespace systempp::master

namespace systempp::detail {

int run_main(int argc, const char* const* argv, app_units& units,
             boost::asio::io_context& io) {
  // First: this image may have been handed a running pool by a master upgrade, and from
  // here on any failure hands it back instead of losing it.
  auto upgrade = master::incoming_upgrade::take(argc, argv);
  try {
    require_free_descriptors(6);  // the event loop's own (epoll, eventfd, timerfd, signal pipe)
    auto parsed = parse_command_line(argc, argv, parse_mode::serve, units.info, units.options);
    if (upgrade && !std::holds_alternative<serve_command>(parsed)) {
      upgrade->fall_back("the new image rejected the command line");
      return std::get_if<exit_now>(&parsed) ? std::get<exit_now>(parsed).code : to_int(exit_code::usage);
    }
    if (auto* stop = std::get_if<exit_now>(&parsed)) return stop->code;
    if (auto* ctl = std::get_if<control_command>(&parsed)) return master::run_control(*ctl);
    const options& opts = std::get<serve_command>(parsed).opts;
    if (const auto stop = install_config(opts, units, unknown_tables::refused)) {
      if (upgrade) upgrade->fall_back("the new image rejected the configuration file");
      return *stop;
    }
    if (opts.upgrade_version) return master::print_upgrade_version(opts);
    if (worker::is_exec_worker()) return worker::run_exec_worker(opts, units, io);
    if (opts.workers == 0 && !upgrade) return run_inline(opts, units, io);
    return master::run_master(opts, units, io, std::move(upgrade));
  } catch (const std::exception& e) {
    if (upgrade) upgrade->fall_back(std::string("the new image failed: ") + e.what());
    std::cerr << (argc > 0 ? argv[0] : "app") << (dynamic_cast<const resource_error*>(&e) ? ": error: " : ": fatal: ")
              << e.what() << "\n";
    return to_int(exit_code::failure);
  }
}

}  // namespace systempp::detail
