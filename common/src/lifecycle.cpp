#include "systempp/lifecycle.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <numeric>

namespace systempp {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

std::string_view to_string(stage_outcome o) noexcept {
  switch (o) {
    case stage_outcome::ok: return "ok";
    case stage_outcome::failed: return "failed";
    case stage_outcome::timed_out: return "timed out";
  }
  return "?";
}

lifecycle::lifecycle(std::vector<detail::unit_entry>& units)
    : units_(units), progress_(units.size()) {
  refs_.reserve(units.size());
  for (const auto& u : units) refs_.push_back(u.ref);
}

bool lifecycle::idle() const noexcept {
  return std::none_of(progress_.begin(), progress_.end(),
                      [](const progress& p) { return p.pre || p.started; });
}

bool lifecycle::eligible(std::size_t unit, stage s) const noexcept {
  const progress& p = progress_[unit];
  switch (s) {
    case stage::on_init: return true;
    case stage::on_reload: return p.init;
    case stage::pre_startup: return !p.pre;
    case stage::on_startup: return p.pre && !p.started;
    case stage::post_startup: return p.started && !p.post;
    case stage::pre_shutdown:
    case stage::on_shutdown: return p.started;
    case stage::post_shutdown: return p.pre;
    case stage::on_exit: return p.init;
  }
  return false;
}

void lifecycle::mark_done(std::size_t unit, stage s) noexcept {
  progress& p = progress_[unit];
  switch (s) {
    case stage::on_init: p.init = true; break;
    case stage::pre_startup: p.pre = true; break;
    case stage::on_startup: p.started = true; break;
    case stage::post_startup: p.post = true; break;
    default: break;
  }
}

// Teardown clears the state it pairs with, for every unit that was eligible, whether the
// unit's teardown hook succeeded or not: a failed stop is logged, not retried.
void lifecycle::after_stage(stage s) noexcept {
  for (progress& p : progress_) {
    switch (s) {
      case stage::on_shutdown: p.started = p.post = false; break;
      case stage::post_shutdown: p.pre = false; break;
      case stage::on_exit: p.init = false; break;
      default: break;
    }
  }
}

std::vector<std::size_t> lifecycle::order(stage s) const {
  std::vector<std::size_t> idx(units_.size());
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  if (is_backward(s)) std::reverse(idx.begin(), idx.end());
  return idx;
}

void lifecycle::record(std::size_t unit, stage s, clock_type::time_point t0,
                       stage_outcome outcome, std::string error, context& ctx,
                       stage_result& result, bool config) {
  const auto took = std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0);
  const double ms = static_cast<double>(took.count()) / 1000.0;
  if (observer_) observer_->stage_end(unit, s, took, outcome);
  if (outcome == stage_outcome::ok) {
    ctx.log().info("{} {} {:.1f} ms ok", to_string(s), refs_[unit].name, ms);
  } else {
    ctx.log().error("{} {} {:.1f} ms {}: {}", to_string(s), refs_[unit].name, ms,
                    to_string(outcome), error);
    if (result.ok) {
      result.ok = false;
      result.failed_unit = unit;
      result.config_error = config;
      result.error = fmt::format("unit {}, stage {}: {}", refs_[unit].name, to_string(s), error);
    }
  }
  records_.push_back(stage_record{unit, s, took, outcome, std::move(error)});
}

namespace {

// How one unit's run of a stage went.
struct attempt {
  stage_outcome outcome = stage_outcome::ok;
  std::string error;
  bool config = false;  ///< the unit threw config_error
};

attempt failure_of(std::exception_ptr thrown) {
  try {
    std::rethrow_exception(thrown);
  } catch (const config_error& e) {
    return {stage_outcome::failed, e.what(), true};
  } catch (const std::exception& e) {
    return {stage_outcome::failed, e.what(), false};
  } catch (...) {
    return {stage_outcome::failed, "unknown exception", false};
  }
}

attempt timed_out(std::chrono::milliseconds limit) {
  return {stage_outcome::timed_out, fmt::format("exceeded the stage timeout of {} ms", limit.count()), false};
}

}  // namespace

stage_result lifecycle::run(stage s, context& ctx) {
  stage_result result;
  const auto index = static_cast<std::size_t>(s);
  for (std::size_t u : order(s)) {
    if (!eligible(u, s)) continue;
    auto hook = units_[u].hooks.sync[index];
    if (!hook) {  // no hook: the stage trivially completes for this unit
      mark_done(u, s);
      continue;
    }
    if (observer_) observer_->stage_begin(u, s);
    const auto t0 = clock_type::now();
    attempt a;
    try {
      hook(units_[u].ref.object, ctx);
      if (clock_type::now() - t0 > timeout_) a = timed_out(timeout_);
    } catch (...) {
      a = failure_of(std::current_exception());
    }
    if (a.outcome == stage_outcome::ok) mark_done(u, s);
    record(u, s, t0, a.outcome, std::move(a.error), ctx, result, a.config);
    if (a.outcome != stage_outcome::ok && !is_backward(s)) break;
  }
  after_stage(s);
  return result;
}

asio::awaitable<stage_result> lifecycle::run_async(stage s, context& ctx) {
  using namespace asio::experimental::awaitable_operators;
  stage_result result;
  const auto index = static_cast<std::size_t>(s);
  for (std::size_t u : order(s)) {
    if (!eligible(u, s)) continue;
    auto hook = units_[u].hooks.async[index];
    if (!hook) {
      mark_done(u, s);
      continue;
    }
    if (observer_) observer_->stage_begin(u, s);
    const auto t0 = clock_type::now();
    attempt a;
    try {
      asio::steady_timer timer(ctx.io(), timeout_);
      // Whichever finishes first wins; the loser is cancelled. Asio's || waits for the
      // first *successful* branch, so the stage's exception is carried out as a value:
      // a throwing stage must end the race at once, not when the timer fires.
      auto guarded = [](detail::async_hook h, void* self, context& c) -> asio::awaitable<std::exception_ptr> {
        try {
          co_await h(self, c);
        } catch (...) {
          co_return std::current_exception();
        }
        co_return nullptr;
      };
      auto winner = co_await (guarded(hook, units_[u].ref.object, ctx) || timer.async_wait(asio::use_awaitable));
      if (winner.index() == 1)
        a = timed_out(timeout_);
      else if (auto thrown = std::get<0>(winner))
        a = failure_of(thrown);
    } catch (...) {
      a = failure_of(std::current_exception());  // the race itself failed
    }
    if (a.outcome == stage_outcome::ok) mark_done(u, s);
    record(u, s, t0, a.outcome, std::move(a.error), ctx, result, a.config);
    if (a.outcome != stage_outcome::ok && !is_backward(s)) break;
  }
  after_stage(s);
  co_return result;
}

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
      if (hooks.on_drain) hooks.on_drain();
      note(out, stage::pre_shutdown, co_await lc.run_async(stage::pre_shutdown, ctx));
      note(out, stage::on_shutdown, co_await lc.run_async(stage::on_shutdown, ctx));
      // Whatever units left pending stays pending: the cycle is over.
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
