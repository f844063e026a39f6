// on_reload as a transaction (lifecycle::reload, commit_reload, abort_reload): every unit
// whose on_reload ran is kept before it runs and restored when the reload fails.

#include <spdlog/spdlog.h>

#include <set>
#include <string>

#include "stage_call.hpp"
#include "systempp/app_config.hpp"
#include "systempp/lifecycle.hpp"

namespace systempp {

using detail::call_sync;

namespace {

// Names the [systempp] keys that changed since start: they apply at the next start.
void log_runtime_changes(const config_document* start, const config_document& now, spdlog::logger& log) {
  const auto value_in = [](const config_document* d, const std::string& key) -> const config_value* {
    const auto* e = d ? d->find("systempp", key) : nullptr;
    return e ? &e->value : nullptr;
  };
  std::set<std::string> keys;
  for (const auto* d : {start, &now})
    if (const auto* t = d ? d->find("systempp") : nullptr)
      for (const auto& e : t->entries) keys.insert(e.key);
  std::string changed;
  for (const auto& key : keys) {
    const auto *was = value_in(start, key), *is = value_in(&now, key);
    if (!was || !is || *was != *is) changed += (changed.empty() ? "" : ", ") + key;
  }
  if (!changed.empty())
    log.warn("{}: [systempp] changed ({}): runtime options apply at the next start or upgrade",
             now.path, changed);
}

}  // namespace

stage_result lifecycle::reload(context& ctx) {
  commit_reload(ctx);
  constexpr auto s = stage::on_reload;
  const auto index = static_cast<std::size_t>(s);
  stage_result result;
  if (!ctx.opts().config.empty()) {
    try {
      auto next = detail::reread_config(ctx.opts(), app_);
      log_runtime_changes(ctx.opts().file.get(), *next, ctx.log());
      kept_config_ = std::exchange(app_.config, std::move(next));
    } catch (const config_error& e) {
      ctx.log().error("reload refused: {}", e.what());
      return stage_result{false, true, 0, e.what()};
    }
  }
  const auto who = takers(s);
  reload_open_ = true;
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
  kept_config_.reset();
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
  if (kept_config_) app_.config = std::move(kept_config_);
  kept_.clear();
  reload_open_ = false;
}

}  // namespace systempp
