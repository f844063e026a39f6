// The inline runner (`--workers 0`): every stage in one process, reload in place.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>
#include <iostream>

#include "systempp/lifecycle.hpp"
#include "systempp/log.hpp"
#include "systempp/runners.hpp"

namespace systempp::detail {

namespace asio = boost::asio;

namespace {

[[noreturn]] void exit_at_once(spdlog::logger& log, int sig) {
  log.warn("signal {} during drain: stopping at once", sig);
  log.flush();
  std::_Exit(to_int(exit_code::interrupted));
}

}  // namespace

int run_inline(const options& opts, std::vector<unit_entry>& units, asio::io_context& io) {
  // The signal set exists before anything else, so a signal that arrives during on_init
  // or between cycles is queued for the loop instead of killing the process.
  asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
  signals.add(SIGQUIT);
  signals.add(SIGUSR1);
  // Pool-only signals: their default actions would stop (TTIN, TTOU) or kill (USR2) us.
  for (int sig : {SIGTTIN, SIGTTOU, SIGUSR2}) signals.add(sig);

  std::shared_ptr<spdlog::logger> log;
  std::vector<listener> listeners;
  try {
    log = make_logger("inline", opts);
    listeners = bind_listeners(opts.binds);
  } catch (const config_error& e) {
    std::cerr << opts.program << ": error: " << e.what() << "\n";
    return to_int(exit_code::usage);
  }
  for (const auto& l : listeners) log->info("listening on {} ({})", l.endpoint(), l.name);

  lifecycle lc(units);
  lc.set_timeout(opts.stage_timeout);
  context ctx(process_role::inline_process, opts, log, io, listeners, lc.refs());

  const auto init = lc.run(stage::on_init, ctx);
  if (!init.ok) {
    lc.run(stage::on_exit, ctx);
    if (!init.config_error) log->error("start failed: {}", init.error);  // else already said once
    return to_int(code_for(stage::on_init, init));
  }

  exit_code code = exit_code::ok;
  bool reload = false;
  for (int cycle = 1;; ++cycle) {
    reload = false;
    cycle_hooks hooks;
    hooks.on_ready = [&] { log->info("ready (cycle {})", cycle); };
    hooks.serve = [&]() -> asio::awaitable<void> {
      for (;;) {
        auto [ec, sig] = co_await signals.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec) co_return;
        if (sig == SIGQUIT) exit_at_once(*log, sig);
        if (sig == SIGTTIN || sig == SIGTTOU || sig == SIGUSR2) {
          log->warn("signal {} ignored: scaling and upgrades need pool mode (--workers N)", sig);
          continue;
        }
        if (sig == SIGUSR1) {  // logrotate's postrotate: reopen the log file
          log = make_logger("inline", opts);
          ctx.set_logger(log);
          log->info("SIGUSR1: log reopened");
          continue;
        }
        reload = sig == SIGHUP;
        log->info("{}: {}", reload ? "SIGHUP" : sig == SIGINT ? "SIGINT" : "SIGTERM",
                  reload ? "reloading in place" : "draining");
        co_return;
      }
    };
    // While the units drain, a second SIGINT (or a SIGQUIT) ends the process at once; a
    // SIGHUP only asks for the reload to happen anyway; a SIGTERM changes nothing.
    hooks.on_drain = [&] {
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            for (;;) {
              auto [ec, sig] = co_await signals.async_wait(asio::as_tuple(asio::use_awaitable));
              if (ec) co_return;
              if (sig == SIGINT || sig == SIGQUIT) exit_at_once(*log, sig);
            }
          },
          asio::detached);
    };
    hooks.on_loop_stopped = [&] { signals.cancel(); };

    const auto result = run_cycle(lc, ctx, hooks);
    if (result.code != exit_code::ok) {
      code = result.code;
      log->error("cycle {} failed: {}", cycle, result.error);
      break;
    }
    if (!reload) break;
    if (auto r = lc.run(stage::on_reload, ctx); !r.ok)
      log->error("reload rejected: {}; starting again with the previous configuration", r.error);
  }

  const auto exit = lc.run(stage::on_exit, ctx);
  if (code == exit_code::ok && !exit.ok) code = exit_code::unclean_shutdown;
  log->info("exit {}", to_int(code));
  return to_int(code);
}

}  // namespace systempp::detail
