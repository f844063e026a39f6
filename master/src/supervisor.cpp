// The master's action executor: policy decisions carried out on the worker table, with the
// log line and the control-block write that go with each.

#include "systempp/master/supervisor.hpp"

#include <string.h>

#include <cstdlib>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "systempp/worker/worker_runtime.hpp"

namespace systempp::master {

time_point now_ms() noexcept { return time_point(static_cast<std::int64_t>(monotonic_ms())); }

supervisor::supervisor(policy_config cfg, worker_table& table, control_header& header,
                       const std::shared_ptr<spdlog::logger>& log, supervisor_hooks hooks)
    : policy_(cfg), table_(table), header_(header), log_(log), hooks_(std::move(hooks)) {}

void supervisor::set_child(std::function<void()> drop_parent_state, child_main body) {
  drop_parent_state_ = std::move(drop_parent_state);
  body_ = std::move(body);
}

void supervisor::execute(std::vector<action> actions) {
  for (auto& a : actions) {
    if (const auto* s = std::get_if<spawn_action>(&a)) {
      spawn(*s);
    } else if (const auto* d = std::get_if<drain_action>(&a)) {
      table_.command(d->pid, worker_command::drain, worker::msg_drain, static_cast<std::uint64_t>(d->deadline.count()));
    } else if (const auto* k = std::get_if<signal_action>(&a)) {
      signal(*k);
    } else if (std::holds_alternative<finished_action>(a)) {
      if (hooks_.finished) hooks_.finished();
    } else if (const auto* r = std::get_if<reload_done_action>(&a)) {
      if (hooks_.reload_done) hooks_.reload_done(*r);
    } else if (std::holds_alternative<reload_undo_action>(a)) {
      if (hooks_.reload_undo) hooks_.reload_undo();
    } else if (const auto* p = std::get_if<pool_ready_action>(&a)) {
      if (hooks_.pool_ready) hooks_.pool_ready(p->ready);
    }
  }
  if (hooks_.executed) hooks_.executed();
}

void supervisor::spawn(const spawn_action& a) {
  const pid_t pid = table_.spawn(a, drop_parent_state_, body_);
  if (pid < 0) {
    log().error("worker[{}]: cannot start a process: {}", a.slot, ::strerror(-pid));
    execute(policy_.spawn_failed(a, now_ms()));
    return;
  }
  policy_.spawned(a, pid, now_ms());
  log().info("worker[{}] pid {} g{} spawned", a.slot, pid, a.generation);
}

void supervisor::signal(const signal_action& a) {
  const worker_handle* w = table_.find(a.pid);
  if (!w) return;  // reaped meanwhile
  if (a.sig == SIGKILL || a.sig == SIGABRT)
    log().warn("{}: {}: sending {}", table_.where(*w), to_string(a.reason), ::sigabbrev_np(a.sig));
  if (a.sig == SIGQUIT) table_.command(a.pid, worker_command::stop_fast, worker::msg_quit);
  if (const int err = table_.signal(a.pid, a.sig); err != 0)
    log().warn("{}: kill {}: {}", table_.where(*w), ::sigabbrev_np(a.sig), ::strerror(err));
}

void supervisor::message(pid_t pid, char byte, std::string_view text) {
  if (byte == worker::msg_reload_request || byte == worker::msg_stop_request) {
    const worker_handle* w = table_.find(pid);
    if (!w || !hooks_.requested) return;
    hooks_.requested(byte == worker::msg_reload_request ? control_request::reload : control_request::stop,
                     fmt::format("worker[{}] pid {}", w->slot, pid), text);
  } else if (byte == worker::msg_ready) {
    if (const worker_handle* w = table_.find(pid))
      log().info("worker[{}] pid {} g{} ready", w->slot, pid, w->generation);
    execute(policy_.ready(pid, now_ms()));
  } else if (byte == worker::msg_recycle || byte == worker::msg_recycle_memory) {
    auto actions = policy_.recycle(pid, now_ms());
    if (actions.empty()) return;
    const bool memory = byte == worker::msg_recycle_memory;
    header_.restarts[static_cast<std::size_t>(memory ? restart_reason::memory : restart_reason::recycle)].fetch_add(1);
    if (const worker_handle* w = table_.find(pid); w && memory)
      log().info("{}: resident memory {} MiB passed --max-rss: starting its replacement", table_.where(*w),
                 read_slot(table_.record(*w)).rss_bytes >> 20);
    execute(std::move(actions));
  }
}

void supervisor::reap() {
  while (auto w = table_.reap()) exited(std::move(*w));
}

void supervisor::exited(reaped_worker w) {
  worker_slot& r = table_.record(w.handle);
  const std::string who = table_.where(w.handle);
  if (w.clean() && r.command.load() != worker_command::none)
    log().info("{} exited with code 0", who);
  else
    log().warn("{} {}", who, w.describe());
  auto result = policy_.exited(w.handle.pid, w.code(), now_ms(), fmt::format("{} {}", who, w.describe()));
  if (result.restart) {
    header_.restarts[static_cast<std::size_t>(*result.restart)].fetch_add(1);
    r.restarts.fetch_add(1);
  }
  if (result.kind == exit_kind::config_error)
    log().error("{}: configuration error (exit 2): not respawning this slot for {} s", who,
                std::chrono::duration_cast<std::chrono::seconds>(policy_.config().config_error_backoff).count());
  execute(std::move(result.actions));
}

int supervisor::scale(int workers) {
  const int before = policy_.workers();
  auto actions = policy_.scale(workers, now_ms());
  const int after = policy_.workers();
  header_.target_workers.store(static_cast<std::uint32_t>(after));
  header_.restarts[static_cast<std::size_t>(restart_reason::scale)].fetch_add(
      static_cast<std::uint64_t>(std::abs(after - before)));
  execute(std::move(actions));
  return after;
}

time_point supervisor::last_beat(const proc& p) {
  const worker_slot& r = table_.record(p.slot, p.lane);
  return time_point(static_cast<std::int64_t>(r.heartbeat_ms.load(std::memory_order_relaxed)));
}

void supervisor::tick() {
  execute(policy_.tick(now_ms(), [this](const proc& p) { return last_beat(p); }));
}

// A worker that drains on its own (a SIGTERM sent to it, not to the master) says so in its
// record before the master reaps it: no new connection goes there.
std::vector<serving_process> supervisor::steerable(ms late) {
  auto out = policy_.steerable(now_ms(), late, [this](const proc& p) { return last_beat(p); });
  std::erase_if(out, [this](const serving_process& s) {
    const auto* w = table_.find(s.pid);
    return !w || table_.record(*w).state.load(std::memory_order_relaxed) != worker_state::ready;
  });
  return out;
}

}  // namespace systempp::master
