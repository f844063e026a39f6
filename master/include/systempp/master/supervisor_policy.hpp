#pragma once
/// The supervisor's decisions, kept pure: it takes events (a worker became READY, a
/// process exited, time passed, an operator asked for a stop, reload or scale) and returns
/// actions (spawn, drain, signal). It never forks or signals; master.cpp carries the
/// actions out. Unit tests drive it without processes.
///
/// Slots and lanes: a logical worker slot holds at most two processes at once, the serving
/// one and its replacement (or the one draining after a switch). Each takes one of the
/// slot's two lanes, and each lane has its own control-block record (index slot*2+lane).

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace systempp::master {

using ms = std::chrono::milliseconds;
using time_point = std::chrono::milliseconds;  ///< monotonic time in ms (monotonic_ms())

enum class proc_state { starting, ready, draining };
enum class stop_mode { graceful, fast };

/// Start a worker of `generation` in `slot`/`lane`.
struct spawn_action {
  int slot = 0;
  int lane = 0;
  std::uint32_t generation = 0;
};
/// Tell a worker to drain (finish in-flight work and exit).
struct drain_action {
  pid_t pid = 0;
  time_point deadline{0};
};
/// Send a signal: SIGQUIT (fast stop), SIGABRT (hung: core, then KILL), SIGKILL.
struct signal_action {
  pid_t pid = 0;
  int sig = 0;
  std::string reason;  ///< for the log: "ready timeout", "heartbeat timeout", ...
};
/// Every worker is gone after a stop: run on_exit and leave.
struct finished_action {};
/// A rollout ended (for the log, the control block and systemd).
struct reload_done_action {
  bool ok = false;
  std::string message;
};
using action = std::variant<spawn_action, drain_action, signal_action, finished_action,
                            reload_done_action>;

/// A live process the policy knows about.
struct proc {
  pid_t pid = 0;
  int slot = 0;
  int lane = 0;
  std::uint32_t generation = 0;
  proc_state state = proc_state::starting;
  time_point started{0};
  time_point drain_deadline{0};
  time_point abort_sent{0};  ///< when SIGABRT went out for a missed heartbeat (0: not yet)
  bool kill_sent = false;
};

struct policy_config {
  int workers = 1;
  int max_workers = 64;  ///< logical slots available for scaling up
  int surge = 1;
  ms ready_timeout{30'000};
  ms heartbeat_timeout{30'000};
  ms graceful_timeout{30'000};
  ms fast_stop_timeout{2'000};
  ms abort_grace{5'000};     ///< SIGABRT to SIGKILL for a hung worker
  ms backoff_initial{100};
  ms backoff_max{10'000};
  ms config_error_backoff{30'000};  ///< a worker that exited 2: wait long, do not spin
};

/// Why a worker is being replaced, for counters and logs.
enum class exit_kind { expected, crashed, failed_start, config_error };

class supervisor_policy {
 public:
  explicit supervisor_policy(policy_config cfg);

  /// Master upgrade: a READY worker the previous master image started.
  void adopt(pid_t pid, int slot, int lane, std::uint32_t generation, time_point now);
  /// The pool starts: one generation-1 worker per slot.
  std::vector<action> start(time_point now);
  /// A process was spawned (the master learnt its pid).
  void spawned(const spawn_action& a, pid_t pid, time_point now);
  /// A spawn failed in the master (fork error): treated like a failed start.
  std::vector<action> spawn_failed(const spawn_action& a, time_point now);
  /// The worker reported READY.
  std::vector<action> ready(pid_t pid, time_point now);
  /// The worker is gone; `code` is its exit code, or -signal when killed by one.
  std::vector<action> exited(pid_t pid, int code, time_point now);
  /// Time passed: timeouts, heartbeats, backoffs. `heartbeat(const proc&)` gives the last
  /// beat as a time_point (0: none yet).
  template <class Heartbeat>
  std::vector<action> tick(time_point now, Heartbeat heartbeat);
  /// SIGTERM (graceful) or SIGINT/SIGQUIT (fast).
  std::vector<action> stop(stop_mode mode, time_point now);
  /// SIGHUP after on_reload succeeded: roll every slot to a new generation.
  std::vector<action> reload(time_point now);
  /// SIGTTIN/SIGTTOU/`app scale N`: the wanted number of workers.
  std::vector<action> scale(int workers, time_point now);
  /// --max-requests: this worker served its share; replace it without a capacity dip.
  std::vector<action> recycle(pid_t pid, time_point now);

  /// When tick() should run next (nullopt: nothing is pending on time).
  std::optional<time_point> next_deadline() const;

  const std::vector<proc>& procs() const noexcept { return procs_; }
  std::uint32_t generation() const noexcept { return generation_; }
  int workers() const noexcept { return cfg_.workers; }
  bool stopping() const noexcept { return stopping_.has_value(); }
  bool reloading() const noexcept { return rollout_.has_value(); }
  /// What the last exit was classified as (for restart counters).
  exit_kind last_exit_kind() const noexcept { return last_exit_; }
  /// READY processes of the current generation.
  int ready_count() const;

 private:
  struct slot_info {
    unsigned failures = 0;     ///< consecutive failed starts
    time_point next_spawn{0};  ///< backoff: no spawn before this
  };
  struct rollout {
    std::uint32_t generation = 0;
    std::vector<int> pending;      ///< slots not yet switched
    std::vector<int> in_progress;  ///< slots whose replacement is starting
    time_point started{0};
  };

  proc* find(pid_t pid);
  proc* serving(int slot);  ///< the starting/ready process of a slot that is not draining
  int free_lane(int slot) const;
  void spawn_into(int slot, std::uint32_t gen, time_point now, std::vector<action>& out);
  void drain(proc& p, time_point now, std::vector<action>& out);
  void fill_slots(time_point now, std::vector<action>& out);
  void advance_rollout(time_point now, std::vector<action>& out);
  void abort_rollout(const std::string& why, time_point now, std::vector<action>& out);
  void check_finished(std::vector<action>& out);
  void check_timeouts(time_point now, std::vector<action>& out);

  policy_config cfg_;
  std::uint32_t generation_ = 1;
  std::vector<proc> procs_;
  std::vector<slot_info> slots_;
  std::optional<rollout> rollout_;
  std::optional<stop_mode> stopping_;
  time_point stop_deadline_{0};
  bool finished_ = false;
  exit_kind last_exit_ = exit_kind::expected;
};

template <class Heartbeat>
std::vector<action> supervisor_policy::tick(time_point now, Heartbeat heartbeat) {
  std::vector<action> out;
  for (proc& p : procs_) {
    if (p.state != proc_state::ready || p.abort_sent.count() != 0) continue;
    const time_point beat = heartbeat(p);
    if (beat.count() != 0 && now - beat > cfg_.heartbeat_timeout) {
      p.abort_sent = now;
      out.push_back(signal_action{p.pid, 6 /* SIGABRT */, "heartbeat timeout"});
    }
  }
  check_timeouts(now, out);
  if (!stopping_) {
    fill_slots(now, out);
    advance_rollout(now, out);
  }
  return out;
}

}  // namespace systempp::master
