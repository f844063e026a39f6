// The supervisor policy's rollouts: a reload rolls every slot to a new generation,
// `--reload-surge` at a time, and a failed one is aborted and, in fork mode, rolled back.
// The rest of the policy is in supervisor_policy.cpp.

#include <fmt/format.h>

#include <algorithm>
#include <csignal>

#include "systempp/master/supervisor_policy.hpp"

namespace systempp::master {

void supervisor_policy::advance_rollout(time_point now, std::vector<action>& out) {
  if (!rollout_ || stopping_) return;
  rollout& r = *rollout_;
  while (static_cast<int>(r.in_progress.size()) < cfg_.surge && !r.pending.empty()) {
    const int slot = r.pending.front();
    // A dedicated process that may not overlap goes down before its replacement starts:
    // only once every serving slot has switched, so a failed serving start never costs it.
    if (exclusive(slot) && std::any_of(r.in_progress.begin(), r.in_progress.end(),
                                       [this](int s) { return dedicated_at(s) == nullptr; }))
      break;
    r.pending.erase(r.pending.begin());
    // A slot counts as switched only once a new-generation worker in it is READY: one
    // that is still starting (a respawn after a crash) is waited for like a replacement,
    // and a slot with no worker at all (crash-looping, in its backoff) gets one now.
    if (const proc* current = serving(slot); current && current->generation == r.generation) {
      if (current->state != proc_state::ready) r.in_progress.push_back(slot);
      continue;
    }
    if (exclusive(slot)) {  // never two at once: the old one ends, then fill_slots starts the new one
      if (proc* old = serving(slot)) drain(*old, now, out);
      r.in_progress.push_back(slot);
      fill_slots(now, out);
      continue;
    }
    const auto before = out.size();
    spawn_into(slot, r.generation, now, out);
    if (out.size() == before) {  // both lanes busy: retry this slot after the drain
      r.pending.insert(r.pending.begin(), slot);
      break;
    }
    r.in_progress.push_back(slot);
  }
  if (!r.pending.empty() || !r.in_progress.empty()) return;
  if (r.rolling_back)
    finish_rollout(reload_result::failed,
                   fmt::format("{}; rolled back: generation {} serves the previous configuration", r.failure,
                               r.generation),
                   out);
  else
    finish_rollout(reload_result::succeeded, fmt::format("generation {} serving", r.generation), out);
}

// The one place a rollout ends: the failure text names the worker that failed to start,
// and a SIGHUP that came meanwhile is handed back as the next reload.
void supervisor_policy::finish_rollout(reload_result result, std::string message, std::vector<action>& out) {
  if (result != reload_result::succeeded && !start_failure_.empty()) message += "; " + start_failure_;
  const bool next = reload_queued_ && !stopping_;
  reload_queued_ = false;
  out.push_back(reload_done_action{result, std::move(message), next, generation_});
  rollout_.reset();
  check_pool_ready(out);
}

void supervisor_policy::abort_rollout(const std::string& why, time_point now, std::vector<action>& out) {
  if (!rollout_) return;
  // New-generation processes still starting are stopped; every slot that was not
  // switched keeps its old worker, which was never drained.
  for (proc& p : procs_)
    if (p.generation == rollout_->generation && p.state == proc_state::starting && !p.kill_sent)
      send(p, SIGKILL, kill_reason::reload_aborted, out);
  if (rollout_->rolling_back)
    return finish_rollout(reload_result::failed, rollout_->failure + "; the rollback failed too: " + why, out);
  if (!begin_rollback(why, now, out)) finish_rollout(reload_result::failed, why, out);
}

// The slots that switched to the failed generation go back to the previous configuration:
// a rollout of one more generation over just those slots, after the master undid the
// reload (a newer generation, so a replacement drains the failed worker when READY, as
// ready() expects). Returns false when there is nothing to roll back.
bool supervisor_policy::begin_rollback(const std::string& why, time_point now, std::vector<action>& out) {
  rollout& r = *rollout_;
  if (!r.roll_back || stopping_) return false;
  std::vector<int> switched;
  for (const proc& p : procs_)
    if (p.generation == r.generation && p.state == proc_state::ready) switched.push_back(p.slot);
  out.push_back(reload_undo_action{});  // respawns from here on run the previous configuration
  r.failure = start_failure_.empty() ? why : why + "; " + start_failure_;
  start_failure_.clear();
  r.rolling_back = true;
  r.generation = ++generation_;
  r.pending = std::move(switched);
  r.in_progress.clear();
  if (r.pending.empty())
    finish_rollout(reload_result::failed, r.failure + "; no slot had switched: the previous configuration serves", out);
  else
    advance_rollout(now, out);
  return true;
}

reload_request supervisor_policy::request_reload() {
  if (stopping_) return reload_request::ignored;
  if (!rollout_) return reload_request::begin;
  reload_queued_ = true;
  return reload_request::coalesced;
}

reload_done_action supervisor_policy::reject_reload(std::string why) const {
  return reload_done_action{reload_result::rejected, std::move(why), false};
}

std::vector<action> supervisor_policy::reload(time_point now, bool roll_back) {
  std::vector<action> out;
  if (stopping_ || rollout_) return out;
  ++generation_;
  start_failure_.clear();
  rollout r;
  r.generation = generation_;
  r.roll_back = roll_back;
  r.pending = active_slots();
  rollout_ = std::move(r);
  advance_rollout(now, out);
  return out;
}

}  // namespace systempp::master
