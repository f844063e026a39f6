// One cycle of a worker, the inline process or a script: pre_startup before the loop, the
// async stages and the serving inside it, post_shutdown after it (lifecycle.hpp).

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <spdlog/spdlog.h>

#include <exception>

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
    asio::co_spawn(io, body, [&](std::exception_ptr e) {
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
    io.run();
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
