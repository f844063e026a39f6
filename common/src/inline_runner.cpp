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
#include <cstring>
#include <iostream>
#include <span>
#include <string_view>

#include "systempp/lifecycle.hpp"
#include "systempp/log.hpp"
#include "systempp/runners.hpp"
#include "systempp/signal_table.hpp"

namespace systempp::detail {

namespace asio = boost::asio;

namespace {

/// What a signal does to the inline process.
enum class inline_signal {
  drain,        ///< end the cycle gracefully and exit
  interrupt,    ///< like drain, but a second one during the drain exits at once
  reload,       ///< end the cycle gracefully, run on_reload, start a new cycle
  fast_stop,    ///< exit at once, without teardown
  reopen_logs,  ///< open --log-file again (logrotate)
  pool_only,    ///< a pool-mode signal: logged and ignored
};

constexpr std::string_view pool_only_note =
    "ignored: scaling and upgrades need pool mode (--workers N)";

// Every row is handled, none ignored: the pool-only signals' default actions would stop
// (TTIN, TTOU) or kill (USR2) us, so they are caught and logged instead.
constexpr signal_row<inline_signal> inline_signal_rows[] = {
    {SIGTERM, signal_disposition::handle, inline_signal::drain, "draining"},
    {SIGINT, signal_disposition::handle, inline_signal::interrupt, "draining"},
    {SIGHUP, signal_disposition::handle, inline_signal::reload, "reloading in place"},
    {SIGQUIT, signal_disposition::handle, inline_signal::fast_stop, "exit at once"},
    {SIGUSR1, signal_disposition::handle, inline_signal::reopen_logs, "reopen the log file"},
    {SIGTTIN, signal_disposition::handle, inline_signal::pool_only, pool_only_note},
    {SIGTTOU, signal_disposition::handle, inline_signal::pool_only, pool_only_note},
    {SIGUSR2, signal_disposition::handle, inline_signal::pool_only, pool_only_note},
};
constexpr std::span<const signal_row<inline_signal>> inline_signals{inline_signal_rows};

[[noreturn]] void exit_at_once(spdlog::logger& log, int sig) {
  log.warn("signal {} during drain: stopping at once", sig);
  log.flush();
  std::_Exit(to_int(exit_code::interrupted));
}

// The serve hook: waits for the signal that ends this cycle, handling the others in place.
// Sets `reload` when the cycle ends for a reload rather than for good.
asio::awaitable<void> serve_until_signal(asio::signal_set& signals, context& ctx, bool& reload) {
  for (;;) {
    auto [ec, sig] = co_await signals.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    const auto* row = row_of(inline_signals, sig);
    if (!row) continue;  // every signal the set listens on has a row
    switch (row->action) {
      case inline_signal::fast_stop: exit_at_once(ctx.log(), sig);
      case inline_signal::pool_only:
        ctx.log().warn("signal {} {}", sig, row->what);
        continue;
      case inline_signal::reopen_logs: ctx.reopen_log(); continue;
      case inline_signal::drain:
      case inline_signal::interrupt:
      case inline_signal::reload: break;
    }
    reload = row->action == inline_signal::reload;
    ctx.log().info("SIG{}: {}", ::sigabbrev_np(sig), row->what);
    co_return;
  }
}

// While the units drain, a second SIGINT (or a SIGQUIT) ends the process at once; every
// other signal is taken off the set and ignored, so it cannot change what the drain does.
asio::awaitable<void> watch_drain(asio::signal_set& signals, context& ctx) {
  for (;;) {
    auto [ec, sig] = co_await signals.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    const auto action = action_of(inline_signals, sig);
    if (action == inline_signal::interrupt || action == inline_signal::fast_stop)
      exit_at_once(ctx.log(), sig);
  }
}

// Runs cycles until one ends for good; SIGHUP between them runs on_reload. Returns the
// first failed cycle's code, or ok.
exit_code run_cycles(lifecycle& lc, context& ctx, asio::signal_set& signals) {
  for (int cycle = 1;; ++cycle) {
    bool reload = false;
    cycle_hooks hooks;
    hooks.on_ready = [&] { ctx.log().info("ready (cycle {})", cycle); };
    hooks.serve = [&] { return serve_until_signal(signals, ctx, reload); };
    hooks.on_drain = [&] { asio::co_spawn(ctx.io(), watch_drain(signals, ctx), asio::detached); };
    hooks.on_loop_stopped = [&] { signals.cancel(); };

    const auto result = run_cycle(lc, ctx, hooks);
    if (result.code != exit_code::ok) {
      ctx.log().error("cycle {} failed: {}", cycle, result.error);
      return result.code;
    }
    if (!reload) return exit_code::ok;
    if (auto r = lc.run(stage::on_reload, ctx); !r.ok)
      ctx.log().error("reload rejected: {}; starting again with the previous configuration", r.error);
  }
}

}  // namespace

int run_inline(const options& opts, std::vector<unit_entry>& units, asio::io_context& io) {
  // The signal set exists before anything else, so a signal that arrives during on_init
  // or between cycles is queued for the loop instead of killing the process.
  asio::signal_set signals(io);
  listen(signals, inline_signals);
  ignore(inline_signals);

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

  exit_code code = run_cycles(lc, ctx, signals);
  const auto exit = lc.run(stage::on_exit, ctx);
  if (code == exit_code::ok && !exit.ok) code = exit_code::unclean_shutdown;
  ctx.log().info("exit {}", to_int(code));
  return to_int(code);
}

}  // namespace systempp::detail
