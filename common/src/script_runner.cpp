// The script runner: one pass through every stage around a body, in this process.

#include <boost/asio/io_context.hpp>
#include <spdlog/spdlog.h>

#include <iostream>

#include "systempp/app_config.hpp"
#include "systempp/lifecycle.hpp"
#include "systempp/log.hpp"
#include "systempp/runners.hpp"

namespace systempp::detail {

std::shared_ptr<boost::asio::io_context> make_io_context() {
  return std::make_shared<boost::asio::io_context>();
}

int run_script(int argc, const char* const* argv, app_units& units,
               script_body body, boost::asio::io_context& io) {
  auto parsed = parse_command_line(argc, argv, parse_mode::script, units.info, units.options);
  if (auto* stop = std::get_if<exit_now>(&parsed)) return stop->code;
  const options opts = std::get<serve_command>(std::move(parsed)).opts;
  if (const auto stop = install_config(opts, units, unknown_tables::ignored)) return *stop;

  std::shared_ptr<spdlog::logger> log;
  try {
    log = make_logger("script", opts);
  } catch (const config_error& e) {
    std::cerr << opts.program << ": error: " << e.what() << "\n";
    return to_int(exit_code::usage);
  }

  const std::vector<listener> no_listeners;  // scripts serve nobody
  lifecycle lc(units);
  lc.set_timeout(opts.stage_timeout);
  context ctx(process_role::script, opts, log, io, no_listeners, lc.refs());
  ctx.set_config_source(units.config);

  exit_code code = code_for(stage::on_init, lc.run(stage::on_init, ctx));
  int body_code = 0;
  if (code == exit_code::ok) {
    cycle_hooks hooks;
    hooks.serve = [&]() -> boost::asio::awaitable<void> {
      try {
        body_code = co_await body(ctx);
      } catch (const std::exception& e) {
        log->error("script body failed: {}", e.what());
        body_code = to_int(exit_code::failure);
      } catch (...) {
        log->error("script body failed: unknown exception");
        body_code = to_int(exit_code::failure);
      }
    };
    code = run_cycle(lc, ctx, hooks).code;
  }
  const bool exit_clean = lc.run(stage::on_exit, ctx).ok;
  if (code != exit_code::ok) return to_int(code);
  if (!exit_clean) return to_int(exit_code::unclean_shutdown);
  return body_code;
}

}  // namespace systempp::detail
