#include "systempp/lifecycle.hpp"

#include "stage_call.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <numeric>

namespace systempp {

namespace asio = boost::asio;

std::string_view to_string(stage_outcome o) noexcept {
  switch (o) {
    case stage_outcome::ok: return "ok";
    case stage_outcome::failed: return "failed";
    case stage_outcome::timed_out: return "timed out";
    case stage_outcome::cancelled: return "cancelled";
  }
  return "?";
}

namespace {

static_assert(stage_count <= 32, "a unit's completed stages are one bit each");

constexpr std::uint32_t bit(stage s) noexcept {
  return std::uint32_t{1} << static_cast<unsigned>(s);
}

constexpr bool links_point_back() noexcept {
  for (std::size_t i = 0; i < stage_count; ++i)
    if (const auto link = stage_table[i].link; link && static_cast<std::size_t>(*link) >= i)
      return false;
  return true;
}
static_assert(links_point_back(), "a stage links to an earlier stage: resting_on needs one pass");

// `s` and every stage that rests on it through links: undoing s voids their completion.
constexpr std::uint32_t resting_on(stage s) noexcept {
  std::uint32_t set = bit(s);
  for (std::size_t i = 0; i < stage_count; ++i)
    if (const auto link = stage_table[i].link; link && (set & bit(*link)))
      set |= bit(static_cast<stage>(i));
  return set;
}

// What the units forget once `s` ran: nothing, unless s is the last backward stage that
// undoes its link (pre_shutdown leaves on_startup for on_shutdown). Forgotten for every
// unit, whether its teardown hook succeeded or not: a failed stop is logged, not retried.
constexpr std::uint32_t forgotten_after(stage s) noexcept {
  const stage_row& row = stage_row_of(s);
  if (row.direction != stage_direction::backward || !row.link) return 0;
  for (auto i = static_cast<std::size_t>(s) + 1; i < stage_count; ++i)
    if (stage_table[i].direction == stage_direction::backward && stage_table[i].link == row.link)
      return 0;
  return resting_on(*row.link);
}
static_assert(forgotten_after(stage::pre_shutdown) == 0);
static_assert(forgotten_after(stage::on_shutdown) ==
              (bit(stage::on_startup) | bit(stage::post_startup) | bit(stage::pre_shutdown) |
               bit(stage::on_shutdown)));
static_assert(forgotten_after(stage::on_exit) ==
              (bit(stage::on_init) | bit(stage::on_reload) | bit(stage::on_exit)));

// A unit takes a stage when it completed the stage's link (what a forward stage requires,
// what a backward stage undoes) and, for a once-stage, has not completed the stage itself.
constexpr bool eligible(std::uint32_t completed, stage s) noexcept {
  const stage_row& row = stage_row_of(s);
  if (row.link && !(completed & bit(*row.link))) return false;
  return row.repeat == stage_repeat::repeatable || !(completed & bit(s));
}

}  // namespace

lifecycle::lifecycle(detail::app_units& app)
    : app_(app), units_(app.units), before_(max_stages), after_(max_stages), completed_(app.units.size()),
      here_(app.units.size(), true) {
  refs_.reserve(units_.size());
  for (const auto& u : units_) refs_.push_back(u.ref);
  // The entries are in start order, so a unit's dependencies have their level already.
  std::vector<std::size_t> level(units_.size(), 0);
  for (std::size_t u = 0; u < units_.size(); ++u) {
    for (std::size_t d : units_[u].depends_on)
      if (d < u) level[u] = std::max(level[u], level[d] + 1);
    if (levels_.size() <= level[u]) levels_.resize(level[u] + 1);
    levels_[level[u]].push_back(u);
  }
  for (std::size_t id = stage_count; id < first_custom_stage; ++id) extras_.push_back(hook_row(static_cast<stage>(id)));
  extras_.insert(extras_.end(), app.stages.begin(), app.stages.end());
  // Several at one place run in declaration order, the hook nearest its stage: an
  // after-list starts with the hook, a before-list ends with it.
  auto place = [this](std::size_t i) {
    auto& lists = extras_[i].place == stage_place::after ? after_ : before_;
    lists[static_cast<std::size_t>(extras_[i].anchor)].push_back(static_cast<stage>(stage_count + i));
  };
  for (std::size_t i = 0; i < hook_count; ++i)
    if (extras_[i].place == stage_place::after) place(i);
  for (std::size_t i = hook_count; i < extras_.size(); ++i) place(i);
  for (std::size_t i = 0; i < hook_count; ++i)
    if (extras_[i].place == stage_place::before) place(i);
}

std::string_view lifecycle::stage_name(stage s) const noexcept {
  const auto id = static_cast<std::size_t>(s);
  if (id < stage_count) return to_string(s);
  return id - stage_count < extras_.size() ? extras_[id - stage_count].name : std::string_view{};
}

std::vector<std::string> lifecycle::stage_names() const {
  std::vector<std::string> names;
  for (std::size_t id = 0; id < stage_count + extras_.size(); ++id) names.emplace_back(stage_name(static_cast<stage>(id)));
  return names;
}

stage_direction lifecycle::direction(stage s) const noexcept {
  const auto id = static_cast<std::size_t>(s);
  return id < stage_count ? stage_row_of(s).direction : extras_[id - stage_count].direction;
}

// A hook or custom stage fails like the built-in stage its anchors lead to.
bool lifecycle::stops_at_failure(stage s) const noexcept {
  while (static_cast<std::size_t>(s) >= stage_count) s = extras_[static_cast<std::size_t>(s) - stage_count].anchor;
  return !is_backward(s);
}

lifecycle::unit_mask lifecycle::takers(stage s) const {
  unit_mask who(units_.size());
  for (std::size_t u = 0; u < units_.size(); ++u) who[u] = here_[u] && eligible(completed_[u], s);
  return who;
}

void lifecycle::run_only(std::optional<std::size_t> dedicated_unit) {
  if (!dedicated_unit) {
    for (std::size_t u = 0; u < units_.size(); ++u) here_[u] = !units_[u].runs_in;
    return;
  }
  if (*dedicated_unit >= units_.size() || !units_[*dedicated_unit].runs_in)
    throw config_error(fmt::format("unit #{} is not a dedicated unit of this app", *dedicated_unit));
  // The unit and, transitively, what it depends on: the entries are in start order, so
  // walking back from it sees each unit after every unit that depends on it.
  std::fill(here_.begin(), here_.end(), false);
  here_[*dedicated_unit] = true;
  for (std::size_t u = *dedicated_unit + 1; u-- > 0;)
    if (here_[u])
      for (std::size_t d : units_[u].depends_on) here_[d] = true;
}

std::vector<std::size_t> lifecycle::order(stage s) const {
  std::vector<std::size_t> idx(units_.size());
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  if (direction(s) == stage_direction::backward) std::reverse(idx.begin(), idx.end());
  return idx;
}

void lifecycle::forget_undone(stage s) noexcept {
  for (stage_set& c : completed_) c &= ~forgotten_after(s);
}

namespace {

using detail::call_sync;
using detail::clock_type;
using detail::failure_of;
using detail::since;
using detail::stage_attempt;
using detail::timed_out;

// Asio's || waits for the first *successful* branch, so the stage's exception is carried
// out as a value: a throwing stage must end the race at once, not when the timer fires.
asio::awaitable<std::exception_ptr> guarded(detail::async_hook hook, void* self, context& ctx) {
  try {
    co_await hook(self, ctx);
  } catch (...) {
    co_return std::current_exception();
  }
  co_return nullptr;
}

// Whichever finishes first wins and the loser is cancelled, so a unit awaiting Asio
// operations stops at the deadline.
asio::awaitable<stage_attempt> call_async(detail::async_hook hook, void* self, context& ctx,
                                          std::chrono::milliseconds limit) {
  using namespace asio::experimental::awaitable_operators;
  const auto t0 = clock_type::now();
  stage_attempt a;
  try {
    asio::steady_timer timer(ctx.io(), limit);
    auto winner = co_await (guarded(hook, self, ctx) || timer.async_wait(asio::use_awaitable));
    if (winner.index() == 1)
      a = timed_out(limit);
    else if (auto thrown = std::get<0>(winner))
      a = failure_of(thrown);
  } catch (...) {
    a = failure_of(std::current_exception());  // the race itself failed
  }
  a.took = since(t0);
  co_return a;
}

struct sibling_failed {};  // ends a forward level's parallel group at its first failure

// One unit's run of an async stage inside a level, booked by `book` the moment it ends
// (log line, record, observer), while the others of the level may still run. A forward
// stage's failure is thrown, so the group cancels the siblings; a sibling that the
// cancellation stopped before it completed is booked as cancelled, one that completed
// anyway as ok (it started, so it will be stopped).
template <class Book>
asio::awaitable<void> attempt_in_level(detail::async_hook hook, void* self, context& ctx,
                                       std::chrono::milliseconds limit, bool forward, Book book) {
  auto a = co_await call_async(hook, self, ctx, limit);
  const auto state = co_await asio::this_coro::cancellation_state;
  if (a.outcome != stage_outcome::ok && state.cancelled() != asio::cancellation_type::none) {
    a.outcome = stage_outcome::cancelled;
    a.error = "another unit of its level failed first";
  }
  const bool failed = a.outcome != stage_outcome::ok;
  book(std::move(a));
  if (forward && failed) throw sibling_failed{};
}

}  // namespace

// Whether `unit` runs `s` now. A unit without a built-in stage's member completes it at
// once; hooks and custom stages complete nothing (they ride on their built-in stage).
bool lifecycle::enter(std::size_t unit, stage s, bool has_hook) {
  const bool builtin = static_cast<std::size_t>(s) < stage_count;
  if (builtin && !eligible(completed_[unit], s)) return false;
  if (!has_hook) {
    if (builtin) completed_[unit] |= bit(s);
    return false;
  }
  if (observer_) observer_->stage_begin(unit, s);
  return true;
}

// Books one unit's run: completion, observer, log line, record, and the first failure in
// `result`. Returns false when the stage must stop: a forward stage stops at a failure.
bool lifecycle::leave(std::size_t unit, stage s, stage_attempt&& a, context& ctx,
                      stage_result& result) {
  const bool ok = a.outcome == stage_outcome::ok;
  if (ok && static_cast<std::size_t>(s) < stage_count) completed_[unit] |= bit(s);
  if (observer_) observer_->stage_end(unit, s, a.took, a.outcome);
  const double ms = static_cast<double>(a.took.count()) / 1000.0;
  const auto& name = refs_[unit].name;
  if (ok) {
    ctx.log().info("{} {} {:.1f} ms ok", stage_name(s), name, ms);
  } else {
    ctx.log().error("{} {} {:.1f} ms {}: {}", stage_name(s), name, ms, to_string(a.outcome), a.error);
    if (result.ok) {
      result.ok = false;
      result.failed_unit = unit;
      result.config_error = a.config;
      result.error = fmt::format("unit {}, stage {}: {}", name, stage_name(s), a.error);
    }
  }
  records_.push_back(stage_record{unit, s, a.took, a.outcome, std::move(a.error)});
  return ok || !stops_at_failure(s);
}

stage_result lifecycle::run(stage s, context& ctx) {
  stage_result result;
  run_chain(s, takers(s), ctx, result);
  forget_undone(s);
  return result;
}

// Stage `s` with what is anchored before and after it, for the units in `who`. A forward
// chain stops at the first failure (what comes after its failed part does not run).
void lifecycle::run_chain(stage s, const unit_mask& who, context& ctx, stage_result& result) {
  const bool stops = stops_at_failure(s);
  const auto id = static_cast<std::size_t>(s);
  for (stage b : before_[id])
    if (result.ok || !stops) run_chain(b, who, ctx, result);
  if (result.ok || !stops) run_units(s, who, ctx, result);
  for (stage a : after_[id])
    if (result.ok || !stops) run_chain(a, who, ctx, result);
}

void lifecycle::run_units(stage s, const unit_mask& who, context& ctx, stage_result& result) {
  const auto id = static_cast<std::size_t>(s);
  for (std::size_t u : order(s)) {
    const auto hook = units_[u].hooks.sync[id];
    if (!who[u] || !enter(u, s, hook != nullptr)) continue;
    if (!leave(u, s, call_sync(hook, units_[u].ref.object, ctx, timeout_), ctx, result)) break;
  }
}

asio::awaitable<stage_result> lifecycle::run_async(stage s, context& ctx) {
  stage_result result;
  co_await run_chain_async(s, takers(s), ctx, result);
  forget_undone(s);
  co_return result;
}

// run_chain inside the loop: each stage level by level of the dependency graph.
asio::awaitable<void> lifecycle::run_chain_async(stage s, const unit_mask& who, context& ctx,
                                                 stage_result& result) {
  const bool stops = stops_at_failure(s);
  const auto id = static_cast<std::size_t>(s);
  for (stage b : before_[id])
    if (result.ok || !stops) co_await run_chain_async(b, who, ctx, result);
  auto levels = levels_;
  if (direction(s) == stage_direction::backward) {  // the last level first, each in reverse
    std::reverse(levels.begin(), levels.end());
    for (auto& level : levels) std::reverse(level.begin(), level.end());
  }
  for (const auto& level : levels) {
    if (!result.ok && stops) break;  // a forward stage stops at the failed level
    std::vector<std::size_t> running;
    for (std::size_t u : level)
      if (who[u] && enter(u, s, units_[u].hooks.async[id] != nullptr)) running.push_back(u);
    if (!running.empty()) co_await run_level(s, running, ctx, result);
  }
  for (stage a : after_[id])
    if (result.ok || !stops) co_await run_chain_async(a, who, ctx, result);
}

// The units of one level at once; each is booked (leave) as it finishes, so the level's
// first failure is the one the result names.
asio::awaitable<void> lifecycle::run_level(stage s, const std::vector<std::size_t>& units, context& ctx,
                                           stage_result& result) {
  const auto index = static_cast<std::size_t>(s);
  if (units.size() == 1) {
    auto a = co_await call_async(units_[units[0]].hooks.async[index], units_[units[0]].ref.object, ctx, timeout_);
    leave(units[0], s, std::move(a), ctx, result);
    co_return;
  }
  const bool forward = stops_at_failure(s);
  auto ex = co_await asio::this_coro::executor;
  using op = decltype(asio::co_spawn(ex, std::declval<asio::awaitable<void>>(), asio::deferred));
  std::vector<op> ops;
  for (std::size_t unit : units) {
    auto book = [this, unit, s, &ctx, &result](stage_attempt&& a) { leave(unit, s, std::move(a), ctx, result); };
    ops.push_back(asio::co_spawn(
        ex, attempt_in_level(units_[unit].hooks.async[index], units_[unit].ref.object, ctx, timeout_, forward, book),
        asio::deferred));
  }
  auto group = asio::experimental::make_parallel_group(std::move(ops));
  if (forward)
    co_await group.async_wait(asio::experimental::wait_for_one_error(), asio::use_awaitable);
  else
    co_await group.async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
}

}  // namespace systempp
