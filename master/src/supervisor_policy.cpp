#include "systempp/master/supervisor_policy.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <csignal>

namespace systempp::master {

std::string_view to_string(kill_reason r) noexcept {
  switch (r) {
    case kill_reason::ready_timeout: return "ready timeout";
    case kill_reason::heartbeat_timeout: return "heartbeat timeout";
    case kill_reason::graceful_timeout: return "graceful timeout";
    case kill_reason::fast_stop: return "fast stop";
    case kill_reason::fast_stop_deadline: return "fast stop deadline";
    case kill_reason::reload_aborted: return "reload aborted";
  }
  return "?";
}

supervisor_policy::supervisor_policy(policy_config cfg) : cfg_(cfg) {
  cfg_.max_workers = std::max(cfg_.max_workers, cfg_.workers);
  slots_.resize(static_cast<std::size_t>(cfg_.max_workers) + cfg_.dedicated.size());
}

const dedicated_slot* supervisor_policy::dedicated_at(int slot) const noexcept {
  const auto d = static_cast<std::size_t>(slot - cfg_.max_workers);
  return slot >= cfg_.max_workers && d < cfg_.dedicated.size() ? &cfg_.dedicated[d] : nullptr;
}

std::vector<int> supervisor_policy::active_slots() const {
  std::vector<int> slots;
  for (int slot = 0; slot < cfg_.workers; ++slot) slots.push_back(slot);
  for (std::size_t d = 0; d < cfg_.dedicated.size(); ++d) slots.push_back(cfg_.max_workers + static_cast<int>(d));
  return slots;
}

bool supervisor_policy::exclusive(int slot) const noexcept {
  const dedicated_slot* d = dedicated_at(slot);
  return d && !d->may_overlap;
}

proc* supervisor_policy::find(pid_t pid) {
  auto it = std::find_if(procs_.begin(), procs_.end(), [&](const proc& p) { return p.pid == pid; });
  return it == procs_.end() ? nullptr : &*it;
}

proc* supervisor_policy::serving(int slot) {
  for (proc& p : procs_)
    if (p.slot == slot && p.state != proc_state::draining) return &p;
  return nullptr;
}

int supervisor_policy::free_lane(int slot) const {
  bool used[2] = {false, false};
  for (const proc& p : procs_)
    if (p.slot == slot) used[p.lane] = true;
  if (!used[0]) return 0;
  if (!used[1]) return 1;
  return -1;
}

// Consecutive failed starts of a slot: backoff_initial, doubling, capped at backoff_max.
ms supervisor_policy::backoff(unsigned failures) const noexcept {
  return std::min(cfg_.backoff_max, cfg_.backoff_initial * (1 << std::min(failures - 1, 16u)));
}

// Every SIGABRT/SIGKILL/SIGQUIT goes out here, so the reason stays with the process until
// it is reaped (restart counters) and a kill at a stop deadline marks the stop unclean.
void supervisor_policy::send(proc& p, int sig, kill_reason why, std::vector<action>& out) {
  if (sig == SIGKILL || sig == SIGABRT) {
    p.killed_for = why;
    if (why == kill_reason::graceful_timeout || why == kill_reason::fast_stop_deadline) unclean_ = true;
  }
  if (sig == SIGKILL) p.kill_sent = true;
  out.push_back(signal_action{p.pid, sig, why});
}

int supervisor_policy::ready_count() const {
  return static_cast<int>(std::count_if(procs_.begin(), procs_.end(), [&](const proc& p) {
    return p.state == proc_state::ready && p.slot < cfg_.max_workers;
  }));
}

// The process is recorded at once with pid 0, so that decisions made before the master
// reports the pid see the slot as taken.
void supervisor_policy::spawn_into(int slot, std::uint32_t gen, time_point now,
                                   std::vector<action>& out) {
  const int lane = free_lane(slot);
  if (lane < 0) return;  // both lanes busy: the drain in progress must finish first
  procs_.push_back(proc{0, slot, lane, gen, proc_state::starting, now, time_point{0}, time_point{0}, false, {}});
  const dedicated_slot* d = dedicated_at(slot);
  out.push_back(spawn_action{slot, lane, gen, d ? static_cast<std::uint32_t>(d->unit) : no_unit});
}

void supervisor_policy::spawned(const spawn_action& a, pid_t pid, time_point now) {
  for (proc& p : procs_)
    if (p.pid == 0 && p.slot == a.slot && p.lane == a.lane) {
      p.pid = pid;
      p.started = now;
      return;
    }
}

std::vector<action> supervisor_policy::spawn_failed(const spawn_action& a, time_point now) {
  std::erase_if(procs_, [&](const proc& p) { return p.pid == 0 && p.slot == a.slot && p.lane == a.lane; });
  std::vector<action> out;
  slot_info& s = slots_[static_cast<std::size_t>(a.slot)];
  ++s.failures;
  s.next_spawn = now + backoff(s.failures);  // the same delay as a failed start
  if (rollout_ && a.generation == rollout_->generation)
    abort_rollout(fmt::format("could not start a worker for slot {}", a.slot), now, out);
  return out;
}

void supervisor_policy::drain(proc& p, time_point now, std::vector<action>& out) {
  if (p.state == proc_state::draining) return;
  p.state = proc_state::draining;
  p.drain_deadline = now + cfg_.graceful_timeout;
  out.push_back(drain_action{p.pid, p.drain_deadline});
}

void supervisor_policy::adopt(pid_t pid, int slot, int lane, std::uint32_t generation, proc_state state,
                              time_point now) {
  if (slot < 0 || static_cast<std::size_t>(slot) >= slots_.size() || lane < 0 || lane > 1) return;
  // A worker still starting is given a fresh ready timeout; one draining, a fresh deadline.
  const time_point deadline = state == proc_state::draining ? now + cfg_.graceful_timeout : time_point{0};
  procs_.push_back(proc{pid, slot, lane, generation, state, now, deadline, time_point{0}, false, {}});
  generation_ = std::max(generation_, generation);
}

std::vector<action> supervisor_policy::start(time_point now) {
  std::vector<action> out;
  for (int slot : active_slots()) spawn_into(slot, generation_, now, out);
  return out;
}

std::vector<action> supervisor_policy::ready(pid_t pid, time_point now) {
  std::vector<action> out;
  proc* p = find(pid);
  if (!p || p->state != proc_state::starting) return out;
  p->state = proc_state::ready;
  slots_[static_cast<std::size_t>(p->slot)].failures = 0;
  if (stopping_) {  // it raced the stop: drain it like the others
    if (*stopping_ == stop_mode::graceful) drain(*p, now, out);
    else send(*p, SIGQUIT, kill_reason::fast_stop, out);
    return out;
  }
  // The new process takes over its slot: whoever served it before drains now.
  // Only a process of the same or an older generation: an old-generation worker that gets
  // READY while its new-generation replacement is still starting (a reload came before it
  // was READY) must not drain that replacement, nor count as the slot's switch, or the
  // rollout would end "ok" with the slot still on the old generation.
  const int slot = p->slot;
  const std::uint32_t gen = p->generation;
  for (proc& other : procs_)
    if (other.slot == slot && other.pid != pid && other.state != proc_state::draining &&
        other.generation <= gen)
      drain(other, now, out);
  if (rollout_) {
    if (gen == rollout_->generation) std::erase(rollout_->in_progress, slot);
    advance_rollout(now, out);
  }
  check_pool_ready(out);
  return out;
}

void supervisor_policy::check_pool_ready(std::vector<action>& out) {
  if (announced_ready_ || rollout_ || stopping_ || ready_count() < cfg_.workers) return;
  announced_ready_ = true;
  out.push_back(pool_ready_action{ready_count()});
}

exit_result supervisor_policy::exited(pid_t pid, int code, time_point now, std::string_view description) {
  exit_result r;
  proc* found = find(pid);
  if (!found) return r;
  const proc p = *found;
  std::erase_if(procs_, [&](const proc& q) { return q.pid == pid; });

  slot_info& s = slots_[static_cast<std::size_t>(p.slot)];
  if (p.state == proc_state::draining || stopping_) {
    r.kind = exit_kind::expected;
  } else if (code == 2) {
    // A configuration error will not fix itself by retrying: wait long.
    r.kind = exit_kind::config_error;
    ++s.failures;
    s.next_spawn = now + cfg_.config_error_backoff;
  } else if (p.state == proc_state::starting) {
    r.kind = exit_kind::failed_start;
    ++s.failures;
    s.next_spawn = now + backoff(s.failures);
  } else {
    r.kind = exit_kind::crashed;  // served, then died: replace at once
    s.next_spawn = now;
  }
  if (r.kind != exit_kind::expected) {
    // A timeout we enforced, or a crash of its own.
    r.restart = restart_reason::crash;
    if (p.killed_for == kill_reason::heartbeat_timeout) r.restart = restart_reason::timeout_heartbeat;
    if (p.killed_for == kill_reason::ready_timeout) r.restart = restart_reason::timeout_ready;
  }
  r.unclean = p.state == proc_state::draining && code != 0;
  if (r.unclean) unclean_ = true;
  if (p.state == proc_state::starting && !description.empty()) start_failure_ = std::string(description);

  if (rollout_ && p.generation == rollout_->generation && p.state == proc_state::starting &&
      !stopping_) {
    abort_rollout(fmt::format("new worker in slot {} (pid {}) {} before READY", p.slot, p.pid,
                              code >= 0 ? fmt::format("exited with code {}", code)
                                        : fmt::format("was killed by signal {}", -code)),
                  now, r.actions);
  }
  if (stopping_) {
    check_finished(r.actions);
    return r;
  }
  fill_slots(now, r.actions);
  advance_rollout(now, r.actions);
  return r;
}

// One pass over the processes, so that a look at every slot costs O(workers), not
// O(workers^2) (a rollout of 256 workers makes about a thousand such looks).
std::vector<std::uint8_t> supervisor_policy::slot_flags() const {
  std::vector<std::uint8_t> flags(slots_.size());
  for (const proc& p : procs_) {
    auto& f = flags[static_cast<std::size_t>(p.slot)];
    f |= slot_occupied;
    if (p.state != proc_state::draining) f |= slot_served;
  }
  return flags;
}

// A slot needs a process when none serves it (for a dedicated one that may not overlap:
// none is in it at all).
bool supervisor_policy::needs_process(int slot, std::uint8_t flags) const noexcept {
  return !(flags & slot_served) && !(exclusive(slot) && (flags & slot_occupied));
}

void supervisor_policy::fill_slots(time_point now, std::vector<action>& out) {
  const auto flags = slot_flags();
  for (int slot : active_slots()) {
    if (!needs_process(slot, flags[static_cast<std::size_t>(slot)])) continue;
    if (now < slots_[static_cast<std::size_t>(slot)].next_spawn) continue;
    spawn_into(slot, generation_, now, out);
  }
}

std::vector<action> supervisor_policy::scale(int workers, time_point now) {
  std::vector<action> out;
  if (stopping_) return out;
  workers = std::clamp(workers, 1, cfg_.max_workers);
  const int before = cfg_.workers;
  cfg_.workers = workers;
  if (workers < before) {
    auto gone = [&](int slot) { return slot >= workers && slot < cfg_.max_workers; };
    for (proc& p : procs_)
      if (gone(p.slot)) drain(p, now, out);
    if (rollout_) {
      std::erase_if(rollout_->pending, gone);
      std::erase_if(rollout_->in_progress, gone);
    }
  }
  for (int slot = before; slot < workers; ++slot) slots_[static_cast<std::size_t>(slot)] = slot_info{};
  fill_slots(now, out);
  advance_rollout(now, out);
  return out;
}

std::vector<action> supervisor_policy::recycle(pid_t pid, time_point now) {
  std::vector<action> out;
  proc* p = find(pid);
  if (!p || p->state != proc_state::ready || stopping_) return out;
  for (const proc& other : procs_)
    if (other.slot == p->slot && other.pid != pid) return out;  // already being replaced
  if (exclusive(p->slot))
    drain(*p, now, out);  // it ends first; fill_slots starts the next one after its exit
  else
    spawn_into(p->slot, generation_, now, out);
  return out;
}

std::vector<action> supervisor_policy::stop(stop_mode mode, time_point now) {
  std::vector<action> out;
  if (stopping_ && (*stopping_ == stop_mode::fast || mode == stop_mode::graceful)) return out;
  stopping_ = mode;
  if (rollout_) finish_rollout(reload_result::failed, "stopped during the rollout", out);
  if (mode == stop_mode::graceful) {
    for (proc& p : procs_) drain(p, now, out);
  } else {
    stop_deadline_ = now + cfg_.fast_stop_timeout;
    for (proc& p : procs_) {
      p.state = proc_state::draining;
      p.drain_deadline = stop_deadline_;
      send(p, SIGQUIT, kill_reason::fast_stop, out);
    }
  }
  check_finished(out);
  return out;
}

void supervisor_policy::check_finished(std::vector<action>& out) {
  if (stopping_ && procs_.empty() && !finished_) {
    finished_ = true;
    out.push_back(finished_action{});
  }
}

void supervisor_policy::check_timeouts(time_point now, std::vector<action>& out) {
  for (proc& p : procs_) {
    if (p.kill_sent || p.pid == 0) continue;
    std::optional<kill_reason> reason;
    if (p.state == proc_state::starting && now - p.started > cfg_.ready_timeout)
      reason = kill_reason::ready_timeout;
    else if (p.abort_sent.count() != 0 && now - p.abort_sent > cfg_.abort_grace)
      reason = kill_reason::heartbeat_timeout;
    else if (p.state == proc_state::draining && now > p.drain_deadline)
      reason = stopping_ == stop_mode::fast ? kill_reason::fast_stop_deadline : kill_reason::graceful_timeout;
    if (reason) send(p, SIGKILL, *reason, out);
  }
}

std::optional<time_point> supervisor_policy::next_deadline() const {
  std::optional<time_point> next;
  auto consider = [&](time_point t) { if (!next || t < *next) next = t; };
  for (const proc& p : procs_) {
    if (p.kill_sent) continue;
    if (p.state == proc_state::starting) consider(p.started + cfg_.ready_timeout + ms(1));
    if (p.state == proc_state::draining) consider(p.drain_deadline + ms(1));
    if (p.abort_sent.count() != 0) consider(p.abort_sent + cfg_.abort_grace + ms(1));
  }
  if (!stopping_) {
    const auto flags = slot_flags();
    for (int slot : active_slots())
      if (needs_process(slot, flags[static_cast<std::size_t>(slot)]))
        consider(slots_[static_cast<std::size_t>(slot)].next_spawn);
  }
  return next;
}

}  // namespace systempp::master
