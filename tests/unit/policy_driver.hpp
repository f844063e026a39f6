#pragma once
// The test master for the supervisor policy: invented pids, time the test moves forward,
// every action checked against what a real master would see. Shared by the policy tests.

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <systempp/master/supervisor_policy.hpp>

namespace policy_test {

using namespace std::chrono_literals;
using systempp::master::action;
using systempp::master::drain_action;
using systempp::master::exit_kind;
using systempp::master::exit_result;
using systempp::master::finished_action;
using systempp::master::kill_reason;
using systempp::master::ms;
using systempp::master::policy_config;
using systempp::master::pool_ready_action;
using systempp::master::proc;
using systempp::master::proc_state;
using systempp::master::reload_request;
using systempp::master::reload_result;
using systempp::master::reload_done_action;
using systempp::master::signal_action;
using systempp::master::spawn_action;
using systempp::master::stop_mode;
using systempp::master::supervisor_policy;
using systempp::master::time_point;

/// Where a spawn puts a worker; comparable and printable so Catch shows it on failure.
struct placement {
  int slot = 0;
  int lane = 0;
  std::uint32_t generation = 0;
  bool operator==(const placement&) const = default;
};
inline std::ostream& operator<<(std::ostream& os, const placement& p) {
  return os << "{slot " << p.slot << ", lane " << p.lane << ", g" << p.generation << "}";
}

/// A process as the test sees it, from the actions it got (not from the policy's table).
struct fake_worker {
  pid_t pid = 0;
  placement at;
  bool ready = false;
  int drains = 0;
  bool quit = false;    ///< got SIGQUIT
  bool killed = false;  ///< got SIGKILL
  bool serving() const { return ready && drains == 0 && !quit && !killed; }
};

/// Plays the master: hands each call's actions back as the last step, gives every spawn a
/// fresh pid at once (or a fork failure, when asked), and keeps the table of live workers.
/// With `capacity_floor` set, every step checks that at least that many workers are
/// READY and not draining.
struct driver {
  supervisor_policy policy;
  time_point now{1'000'000};  // any monotonic time; not 0, which means "never" to the policy
  pid_t next_pid = 100;
  int fork_failures = 0;  ///< the next this-many spawns fail in the master
  int capacity_floor = 0;
  std::map<pid_t, fake_worker> live;
  std::set<pid_t> ever_drained;
  std::map<pid_t, time_point> beats;  ///< last heartbeat per pid (absent: none yet)
  std::vector<action> last;           ///< the actions of the last step
  std::vector<fake_worker> last_spawned;
  exit_result last_exit;              ///< what the last exits() was classified as

  explicit driver(policy_config cfg) : policy(cfg) {}

  // --- events ---------------------------------------------------------------------------
  void start() { step(policy.start(now)); }
  void ready(pid_t pid) {
    if (auto it = live.find(pid); it != live.end()) it->second.ready = true;
    step(policy.ready(pid, now));
  }
  void exits(pid_t pid, int code) {
    live.erase(pid);
    beats.erase(pid);
    auto r = policy.exited(pid, code, now);
    step(std::move(r.actions));
    last_exit = std::move(r);
  }
  void tick() {
    step(policy.tick(now, [this](const proc& p) {
      auto it = beats.find(p.pid);
      return it == beats.end() ? time_point{0} : it->second;
    }));
  }
  void stop(stop_mode mode) { step(policy.stop(mode, now)); }
  void reload(bool roll_back = false) { step(policy.reload(now, roll_back)); }
  bool undone() const { return !of<systempp::master::reload_undo_action>().empty(); }
  void scale(int n) { step(policy.scale(n, now)); }
  void recycle(pid_t pid) { step(policy.recycle(pid, now)); }
  void beat(pid_t pid) { beats[pid] = now; }

  // --- time -----------------------------------------------------------------------------
  void at(time_point t) {
    REQUIRE(t >= now);
    now = t;
  }
  void after(ms d) { at(now + d); }
  time_point deadline() const {
    const auto d = policy.next_deadline();
    REQUIRE(d.has_value());
    return *d;
  }

  // --- shortcuts ------------------------------------------------------------------------
  /// Starts the pool and reports every first worker READY.
  std::vector<pid_t> start_ready() {
    start();
    std::vector<pid_t> pids = spawned_pids();
    for (pid_t p : pids) ready(p);
    return pids;
  }
  pid_t only_spawned() const {
    REQUIRE(last_spawned.size() == 1);
    return last_spawned.front().pid;
  }

  // --- what the last step asked for -----------------------------------------------------
  std::vector<placement> spawns() const {
    std::vector<placement> out;
    for (const auto& w : last_spawned) out.push_back(w.at);
    return out;
  }
  std::vector<pid_t> spawned_pids() const {
    std::vector<pid_t> out;
    for (const auto& w : last_spawned) out.push_back(w.pid);
    return out;
  }
  std::vector<drain_action> drains() const { return of<drain_action>(); }
  std::vector<pid_t> drained_pids() const {
    std::vector<pid_t> out;
    for (const auto& d : drains()) out.push_back(d.pid);
    std::sort(out.begin(), out.end());
    return out;
  }
  std::vector<pid_t> signalled(int sig) const {
    std::vector<pid_t> out;
    for (const auto& s : of<signal_action>())
      if (s.sig == sig) out.push_back(s.pid);
    std::sort(out.begin(), out.end());
    return out;
  }
  std::vector<signal_action> signals() const { return of<signal_action>(); }
  bool finished() const { return !of<finished_action>().empty(); }
  std::optional<reload_done_action> reload_done() const {
    const auto r = of<reload_done_action>();
    REQUIRE(r.size() <= 1);
    if (r.empty()) return std::nullopt;
    return r.front();
  }
  bool nothing() const { return last.empty(); }
  std::vector<pool_ready_action> of_ready() const { return of<pool_ready_action>(); }

  // --- the workers as the test sees them ------------------------------------------------
  int serving_count() const {
    return static_cast<int>(std::count_if(live.begin(), live.end(),
                                          [](const auto& kv) { return kv.second.serving(); }));
  }
  /// The generation of the worker serving each slot (0: none), in slot order.
  std::vector<std::uint32_t> serving_generations(int slots) const {
    std::vector<std::uint32_t> out(static_cast<std::size_t>(slots), 0);
    for (const auto& [pid, w] : live)
      if (w.serving()) {
        auto& g = out.at(static_cast<std::size_t>(w.at.slot));
        CHECK(g == 0);  // one serving worker per slot
        g = w.at.generation;
      }
    return out;
  }

 private:
  template <class T>
  std::vector<T> of() const {
    std::vector<T> out;
    for (const auto& a : last)
      if (const T* t = std::get_if<T>(&a)) out.push_back(*t);
    return out;
  }

  void step(std::vector<action> acts) {
    last.clear();
    last_spawned.clear();
    carry_out(std::move(acts));
    if (capacity_floor > 0) {
      INFO("workers READY and not draining after this step");
      CHECK(serving_count() >= capacity_floor);
    }
  }

  void carry_out(std::vector<action> acts) {
    for (const action& a : acts) {
      last.push_back(a);
      if (const auto* s = std::get_if<spawn_action>(&a)) {
        if (fork_failures > 0) {
          --fork_failures;
          carry_out(policy.spawn_failed(*s, now));
          continue;
        }
        fake_worker w{next_pid++, placement{s->slot, s->lane, s->generation}};
        policy.spawned(*s, w.pid, now);
        live.emplace(w.pid, w);
        last_spawned.push_back(w);
      } else if (const auto* d = std::get_if<drain_action>(&a)) {
        INFO("drain for pid " << d->pid);
        REQUIRE(live.count(d->pid) == 1);  // never a pid that is gone or was never ours
        CHECK(live[d->pid].drains == 0);   // a worker is drained once
        ++live[d->pid].drains;
        ever_drained.insert(d->pid);
      } else if (const auto* g = std::get_if<signal_action>(&a)) {
        INFO("signal " << g->sig << " for pid " << g->pid << " (" << to_string(g->reason) << ")");
        REQUIRE(live.count(g->pid) == 1);
        if (g->sig == SIGQUIT) live[g->pid].quit = true;
        if (g->sig == SIGKILL) {
          CHECK_FALSE(live[g->pid].killed);  // SIGKILL goes out once
          live[g->pid].killed = true;
        }
      }
    }
  }
};

inline policy_config config(int workers) {
  policy_config cfg;
  cfg.workers = workers;
  cfg.max_workers = 8;
  cfg.ready_timeout = 5'000ms;
  cfg.heartbeat_timeout = 10'000ms;
  cfg.graceful_timeout = 30'000ms;
  cfg.fast_stop_timeout = 2'000ms;
  cfg.abort_grace = 3'000ms;
  cfg.backoff_initial = 100ms;
  cfg.backoff_max = 1'000ms;
  cfg.config_error_backoff = 30'000ms;
  return cfg;
}

using pids = std::vector<pid_t>;
using placements = std::vector<placement>;

}  // namespace policy_test
