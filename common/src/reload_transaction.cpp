// on_reload as a transaction (lifecycle::reload, commit_reload, abort_reload): every unit
// whose on_reload ran is kept before it runs and restored when the reload fails.

#include <spdlog/spdlog.h>

#include "stage_call.hpp"
#include "systempp/lifecycle.hpp"

namespace systempp {

using detail::call_sync;

stage_result lifecycle::reload(context& ctx) {
  commit_reload(ctx);
  constexpr auto s = stage::on_reload;
  const auto index = static_cast<std::size_t>(s);
  const auto who = takers(s);
  reload_open_ = true;
  stage_result result;
  // The hooks before it change nothing to restore; only a unit's on_reload is kept.
  for (stage b : before_[index])
    if (result.ok) run_chain(b, who, ctx, result);
  for (std::size_t u : order(s)) {
    if (!result.ok) break;
    const auto& hooks = units_[u].hooks;
    const auto hook = hooks.sync[index];
    if (!who[u] || !enter(u, s, hook != nullptr)) continue;
    kept_.emplace_back(u, hooks.keep ? hooks.keep(units_[u].ref.object) : nullptr);
    leave(u, s, call_sync(hook, units_[u].ref.object, ctx, timeout_), ctx, result);
  }
  for (stage a : after_[index])
    if (result.ok) run_chain(a, who, ctx, result);
  forget_undone(s);
  if (!result.ok) abort_reload(ctx);
  return result;
}

void lifecycle::commit_reload(context& ctx) {
  if (!reload_open_) return;
  for (const auto& [u, copy] : kept_) {
    if (!units_[u].hooks.commit) continue;
    const auto a = call_sync(units_[u].hooks.commit, units_[u].ref.object, ctx, timeout_);
    if (a.outcome != stage_outcome::ok) ctx.log().error("commit_reload {}: {}", refs_[u].name, a.error);
  }
  kept_.clear();
  reload_open_ = false;
}

void lifecycle::abort_reload(context& ctx) {
  if (!reload_open_) return;
  for (auto it = kept_.rbegin(); it != kept_.rend(); ++it) {
    const auto& [u, copy] = *it;
    const auto& hooks = units_[u].hooks;
    if (copy) {
      hooks.restore(units_[u].ref.object, copy.get());
    } else if (hooks.rollback) {
      const auto a = call_sync(hooks.rollback, units_[u].ref.object, ctx, timeout_);
      if (a.outcome != stage_outcome::ok) ctx.log().error("rollback_reload {}: {}", refs_[u].name, a.error);
    }
  }
  if (!kept_.empty()) ctx.log().info("reload undone: {} unit(s) as before", kept_.size());
  kept_.clear();
  reload_open_ = false;
}

}  // namespace systempp
