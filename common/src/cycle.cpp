// One cycle of a worker, the inline process or a script: pre_startup before the loop, the
// async stages and the serving inside it, post_shutdown after it (lifecycle.hpp).

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <exception>
#include <thread>
#include <vector>

#include "systempp/lifecycle.hpp"

namespace systempp {

namespace asio = boost::asio;

exit_code code_for(stage s, const stage_result& r) noexcept {
  if (r.ok) return exit_code::ok;
  if (r.config_error && !is_backward(s)) return exit_code::usage;
  return failed_stage_code(s);
}

namespace {

// Keeps the first failure of a cycle; later teardown failures only downgrade a clean
// result to unclean_shutdown.
void note(cycle_result& out, stage s, const stage_result& r) {
  if (r.ok || out.code != exit_code::ok) return;
  out.code = code_for(s, r);
  out.error = r.error;
}

// Runs the loop on this thread and threads - 1 more until it stops. A handler that throws
// (every one of the runtime's catches its own) stops the loop rather than a thread; returns
// false then, and the cycle fails.
bool run_loop(asio::io_context& io, int threads, spdlog::logger& log) {
  std::atomic<bool> clean{true};
  const auto run = [&io, &log, &clean] {
    try {
      io.run();
    } catch (const std::exception& e) {
      log.critical("a handler of the loop threw: {}; stopping the cycle", e.what());
      clean = false;
      io.stop();
    } catch (...) {
      log.critical("a handler of the loop threw; stopping the cycle");
      clean = false;
      io.stop();
    }
  };
  {
    std::vector<std::jthread> more;
    for (int i = 1; i < threads; ++i) more.emplace_back(run);
    run();
  }  // joined: every thread has left run() once the loop stopped
  return clean;
}

}  // namespace

cycle_result run_cycle(lifecycle& lc, context& ctx, const cycle_hooks& hooks) {
  cycle_result out;
  note(out, stage::pre_startup, lc.run(stage::pre_startup, ctx));

  if (out.code == exit_code::ok) {
    auto& io = ctx.io();
    auto body = [&]() -> asio::awaitable<void> {
      auto started = co_await lc.run_async(stage::on_startup, ctx);
      note(out, stage::on_startup, started);
      if (started.ok) {
        auto post = co_await lc.run_async(stage::post_startup, ctx);
        note(out, stage::post_startup, post);
        if (post.ok) {
          if (hooks.on_ready) hooks.on_ready();
          if (hooks.serve) co_await hooks.serve();
        }
      }
      ctx.set_draining(true);
      ctx.cancel_tasks();  // work spawned for this cycle stops with it
      if (hooks.on_drain) hooks.on_drain();
      note(out, stage::pre_shutdown, co_await lc.run_async(stage::pre_shutdown, ctx));
      note(out, stage::on_shutdown, co_await lc.run_async(stage::on_shutdown, ctx));
      co_await ctx.join_tasks(lc.timeout());  // none runs after its unit's post_shutdown
      // Whatever units left pending otherwise stays pending: the cycle is over.
      io.stop();
    };
    asio::co_spawn(ctx.executor(), body, [&](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        ctx.log().critical("cycle aborted: {}", ex.what());
      }
      if (out.code == exit_code::ok) out.code = exit_code::failure;
      io.stop();
    });
    io.restart();
    if (!run_loop(io, ctx.role() == process_role::script ? 1 : ctx.opts().threads, ctx.log()) &&
        out.code == exit_code::ok) {
      out.code = exit_code::failure;
      out.error = "a handler of the loop threw";
    }
    if (hooks.on_loop_stopped) hooks.on_loop_stopped();
  }

  const auto post = lc.run(stage::post_shutdown, ctx);
  if (!post.ok && out.code == exit_code::ok) {
    out.code = exit_code::unclean_shutdown;
    out.error = post.error;
  }
  ctx.set_draining(false);
  return out;
}

}  // namespace systempp
