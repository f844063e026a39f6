// The inline runner (`--workers 0`): every stage in one process, reload in place.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <unistd.h>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string_view>
#include <vector>

#include "systempp/lifecycle.hpp"
#include "systempp/log.hpp"
#include "systempp/runners.hpp"
#include "systempp/signal_table.hpp"

namespace systempp::detail {

namespace asio = boost::asio;

namespace {

// The inline column of the signal table: every signal it names is handled, none ignored;
// the pool-only signals' default actions would stop (TTIN, TTOU) or kill (USR2) us, so
// they are caught and logged instead.

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
    const auto effect = effect_of(signal_role::inline_process, sig);
    switch (effect) {
      case signal_effect::fast_stop: exit_at_once(ctx.log(), sig);
      case signal_effect::pool_only:
        ctx.log().warn("signal {} ignored: scaling and upgrades need pool mode (--workers N)", sig);
        continue;
      case signal_effect::reopen_logs: ctx.reopen_log(); continue;
      case signal_effect::drain:
      case signal_effect::interrupt:
      case signal_effect::reload: break;
      default: continue;  // not an inline signal: the set does not listen on it
    }
    reload = effect == signal_effect::reload;
    ctx.log().info("SIG{}: {}", ::sigabbrev_np(sig), reload ? "reloading in place" : "draining");
    co_return;
  }
}

// While the units drain, a second SIGINT (or a SIGQUIT) ends the process at once; every
// other signal is taken off the set and kept in `carried`, so it cannot change what the
// drain does and is raised again for the next cycle once its set exists.
asio::awaitable<void> watch_drain(asio::signal_set& signals, context& ctx, std::vector<int>& carried) {
  for (;;) {
    auto [ec, sig] = co_await signals.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    const auto effect = effect_of(signal_role::inline_process, sig);
    if (effect == signal_effect::interrupt || effect == signal_effect::fast_stop)
      exit_at_once(ctx.log(), sig);
    carried.push_back(sig);
  }
}

// The loop of one cycle, with the signal set that ends it. A cycle runs on a loop of its
// own, like a worker's life: what its units left on it (a raw co_spawn nobody stopped, a
// timer nobody cancelled) is destroyed when the cycle ends, never run in the next one.
class cycle_loop {
 public:
  cycle_loop() { listen(signals_, signal_role::inline_process); }
  asio::io_context& io() noexcept { return io_; }
  asio::signal_set& signals() noexcept { return signals_; }
  /// The cycle is over: pending handlers are destroyed without running. The objects stay,
  /// so a unit's timer or socket bound to this loop can still be destroyed later.
  void retire() {
    signals_.clear();
    io_.shutdown();
  }

 private:
  struct loop : asio::io_context {
    using asio::io_context::shutdown;  // protected in execution_context
  };
  loop io_;
  asio::signal_set signals_{io_};
};

// Keeps the last cycles' loops as long as the process's loop, which systempp::main destroys
// after the units: a unit's member bound to a cycle loop is destroyed before that loop.
struct loop_keeper : asio::execution_context::service {
  static inline asio::execution_context::id id;
  explicit loop_keeper(asio::execution_context& owner) : service(owner) {}
  void shutdown() override {}
  std::vector<std::unique_ptr<cycle_loop>> loops;
};

void keep_until_exit(asio::io_context& io, std::unique_ptr<cycle_loop> loop) {
  if (loop) asio::use_service<loop_keeper>(io).loops.push_back(std::move(loop));
}

// Runs cycles until one ends for good; SIGHUP between them runs on_reload. Returns the
// first failed cycle's code, or ok. `next` is the first cycle's loop, made before on_init
// so that its signal set queues what arrives until the loop runs. The stages outside a
// cycle (on_reload, on_exit) see the process's loop `io`.
exit_code run_cycles(lifecycle& lc, context& ctx, std::unique_ptr<cycle_loop> next, asio::io_context& io) {
  std::unique_ptr<cycle_loop> current, previous;
  for (int cycle = 1;; ++cycle) {
    // A loop is destroyed one cycle after it retired (an object a unit kept past
    // post_shutdown against the rule is then still safe to destroy until the next cycle ends).
    previous = std::move(current);
    current = std::move(next);
    ctx.set_io(current->io());
    auto& signals = current->signals();
    bool reload = false;
    cycle_hooks hooks;
    hooks.on_ready = [&] {
      lc.commit_reload(ctx);  // the configuration of this cycle passed its start
      ctx.log().info("ready (cycle {})", cycle);
    };
    hooks.serve = [&] { return serve_until_signal(signals, ctx, reload); };
    std::vector<int> carried;  // signals that came during the drain
    hooks.on_drain = [&] { asio::co_spawn(ctx.executor(), watch_drain(signals, ctx, carried), asio::detached); };

    const auto result = run_cycle(lc, ctx, hooks);
    // The next set exists before this one retires, so some set always holds what arrives:
    // on_reload, on_exit and the restart after a failed cycle are never left unprotected.
    // What is still in the signal pipe reaches the next set alone (the retired one has left
    // the pipe); what the drain took is raised again for it.
    next = std::make_unique<cycle_loop>();
    current->retire();
    ctx.set_io(io);
    for (int sig : carried) ::raise(sig);
    if (result.code != exit_code::ok && lc.reload_open()) {
      // A reloaded configuration that cannot start is undone like a pool's failed rollout.
      lc.abort_reload(ctx);
      ctx.log().error("cycle {} failed: {}; starting again with the previous configuration", cycle, result.error);
      continue;
    }
    if (result.code != exit_code::ok || !reload) {
      if (result.code != exit_code::ok) ctx.log().error("cycle {} failed: {}", cycle, result.error);
      keep_until_exit(io, std::move(previous));
      keep_until_exit(io, std::move(current));
      keep_until_exit(io, std::move(next));  // its set keeps signals from killing on_exit
      return result.code;
    }
    if (auto r = lc.reload(ctx); !r.ok)
      ctx.log().error("reload rejected: {}; starting again with the previous configuration", r.error);
  }
}

}  // namespace

int run_inline(const options& opts, app_units& units, asio::io_context& io) {
  // The first cycle's signal set exists before anything else, so a signal that arrives
  // during on_init is queued for the loop instead of killing the process.
  auto first = std::make_unique<cycle_loop>();

  std::shared_ptr<spdlog::logger> log;
  std::vector<listener> listeners;
  try {
    log = make_logger("inline", opts);
    listeners = bind_listeners(opts.binds);
    if (opts.run_as) switch_user(*opts.run_as);  // the one process serves: it switches now
  } catch (const std::exception& e) {
    std::cerr << opts.program << ": error: " << e.what() << "\n";
    return to_int(start_failure_code(e));
  }
  for (const auto& l : listeners) log->info("listening on {} ({})", l.endpoint(), l.name);

  lifecycle lc(units);
  lc.set_timeout(opts.stage_timeout);
  context ctx(process_role::inline_process, opts, log, io, listeners, lc.refs());
  ctx.set_config_source(units.config);
  // From any thread: said here, then carried out as the signal would be.
  ctx.set_requester([log](control_request what, std::string reason) {
    log->info("{} requested: {}", what == control_request::reload ? "reload" : "stop", reason);
    ::kill(::getpid(), what == control_request::reload ? SIGHUP : SIGTERM);
  });

  const auto init = lc.run(stage::on_init, ctx);
  if (!init.ok) {
    lc.run(stage::on_exit, ctx);
    if (!init.config_error) log->error("start failed: {}", init.error);  // else already said once
    return to_int(code_for(stage::on_init, init));
  }

  exit_code code = run_cycles(lc, ctx, std::move(first), io);
  const auto exit = lc.run(stage::on_exit, ctx);
  if (code == exit_code::ok && !exit.ok) code = exit_code::unclean_shutdown;
  ctx.log().info("exit {}", to_int(code));
  return to_int(code);
}

}  // namespace systempp::detail
