#pragma once
/// The supervisor's decisions, kept pure: it takes events (a worker became READY, a
/// process exited, time passed, an operator asked for a stop, reload or scale) and returns
/// actions (spawn, drain, signal, reload done). It never forks or signals; the supervisor
/// (master/src/supervisor.cpp) carries the actions out. Unit tests drive it without
/// processes (tests/unit/supervisor_policy_test.cpp).
///
/// Slots and lanes: a logical worker slot holds at most two processes at once, the serving
/// one and its replacement (or the one draining after a switch). Each takes one of the
/// slot's two lanes, and each lane has its own control-block record (record_index()).

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "systempp/control_block.hpp"

namespace systempp::master {

using ms = std::chrono::milliseconds;
using time_point = std::chrono::milliseconds;  ///< monotonic time in ms (monotonic_ms())

/// A live process as the policy sees it. The control block's record states map onto it
/// through policy_state_of().
enum class proc_state { starting, ready, draining };
enum class stop_mode { graceful, fast };

/// The explicit mapping from a record's worker_state (written by the worker and the master)
/// to the policy's state: spawned and starting are both "starting" (not READY yet); free,
/// exited and crashed are no live process (nullopt). Any process.
constexpr std::optional<proc_state> policy_state_of(worker_state s) noexcept {
  switch (s) {
    case worker_state::spawned:
    case worker_state::starting: return proc_state::starting;
    case worker_state::ready: return proc_state::ready;
    case worker_state::draining: return proc_state::draining;
    case worker_state::free:
    case worker_state::exited:
    case worker_state::crashed: return std::nullopt;
  }
  return std::nullopt;
}

/// Why the policy sends SIGQUIT, SIGABRT or SIGKILL.
enum class kill_reason {
  ready_timeout,       ///< STARTING past ready_timeout: SIGKILL
  heartbeat_timeout,   ///< READY without a beat: SIGABRT, then SIGKILL after abort_grace
  graceful_timeout,    ///< DRAINING past graceful_timeout: SIGKILL (the stop is unclean)
  fast_stop,           ///< SIGINT/SIGQUIT to the master: SIGQUIT
  fast_stop_deadline,  ///< still alive after fast_stop_timeout: SIGKILL (unclean)
  reload_aborted,      ///< a new-generation worker still starting when its rollout failed
};

/// "ready timeout", "heartbeat timeout", ... as in the master's log. Any process.
std::string_view to_string(kill_reason r) noexcept;

/// Start a worker of `generation` in `slot`/`lane`.
struct spawn_action {
  int slot = 0;
  int lane = 0;
  std::uint32_t generation = 0;
  std::uint32_t role = no_unit;  ///< the unit of a dedicated process; no_unit: a serving worker
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
  kill_reason reason = kill_reason::fast_stop;
};
/// Every worker is gone after a stop: run on_exit and leave.
struct finished_action {};
/// How a reload ended: every slot switched, a new worker failed (rolled back), or
/// on_reload refused the configuration (nothing was touched).
enum class reload_result { succeeded, failed, rejected };
/// A reload ended (for the log, the control block and systemd). The master commits the
/// reload's configuration when it succeeded and undoes it otherwise.
struct reload_done_action {
  reload_result result = reload_result::failed;
  std::string message;  ///< what serves now, or why it failed (with the failed start)
  bool next_queued = false;  ///< a coalesced SIGHUP: begin the next reload at once
  std::uint32_t generation = 0;  ///< the pool generation now (0: unchanged, e.g. rejected)
  bool ok() const noexcept { return result == reload_result::succeeded; }
};
/// A rollout failed and its switched slots are rolled back: the master undoes the reload's
/// configuration now (lifecycle::abort_reload), before the spawns that follow fork from it.
struct reload_undo_action {};
/// The first full pool is READY: tell systemd READY=1 (once per master life).
struct pool_ready_action {
  int ready = 0;
};
using action = std::variant<spawn_action, drain_action, signal_action, finished_action,
                            reload_done_action, reload_undo_action, pool_ready_action>;

/// A slot and the process serving it (supervisor_policy::steerable).
struct serving_process {
  int slot;
  pid_t pid;
  bool operator==(const serving_process&) const = default;
};

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
  std::optional<kill_reason> killed_for;  ///< the last SIGABRT/SIGKILL's reason
};

/// One dedicated process (a unit with runs_in; unit.hpp): which unit it runs, and whether a
/// reload may start its replacement before it ended.
struct dedicated_slot {
  std::size_t unit = 0;
  bool may_overlap = false;
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
  /// The dedicated processes, in slots max_workers, max_workers + 1, ...: started with the
  /// pool, replaced when they die, rolled on reload, never scaled. One that may not overlap
  /// is drained before its replacement starts, so it never runs twice.
  std::vector<dedicated_slot> dedicated;
};

/// Why a worker is being replaced, for counters and logs.
enum class exit_kind { expected, crashed, failed_start, config_error };

/// What an exit means: the actions, how it is classified, which restart counter it adds
/// to (none for an expected exit) and whether it makes the master's own exit unclean.
struct exit_result {
  std::vector<action> actions;
  exit_kind kind = exit_kind::expected;
  std::optional<restart_reason> restart;
  bool unclean = false;  ///< it was draining and did not exit 0
};

/// What to do with a SIGHUP.
enum class reload_request {
  begin,      ///< run on_reload now, then reload() (or reject_reload())
  coalesced,  ///< a rollout is running: one more follows it (reload_done_action::next_queued)
  ignored,    ///< the pool is stopping
};

class supervisor_policy {
 public:
  explicit supervisor_policy(policy_config cfg);

  /// Master upgrade: a worker the previous master image started, in the state its record
  /// shows (policy_state_of).
  void adopt(pid_t pid, int slot, int lane, std::uint32_t generation, proc_state state, time_point now);
  /// Master upgrade: the previous image told systemd READY=1 already.
  void ready_announced() noexcept { announced_ready_ = true; }
  /// The pool starts: one generation-1 worker per slot.
  std::vector<action> start(time_point now);
  /// A process was spawned (the master learnt its pid).
  void spawned(const spawn_action& a, pid_t pid, time_point now);
  /// A spawn failed in the master (fork error): treated like a failed start.
  std::vector<action> spawn_failed(const spawn_action& a, time_point now);
  /// The worker reported READY.
  std::vector<action> ready(pid_t pid, time_point now);
  /// The worker is gone; `code` is its exit code, or -signal when killed by one.
  /// `description` ("worker[0] pid 12 g2 (in pre_startup of unit db) exited with code 3")
  /// becomes the failed reload's explanation when a worker dies before READY.
  exit_result exited(pid_t pid, int code, time_point now, std::string_view description = {});
  /// Time passed: timeouts, heartbeats, backoffs. `heartbeat(const proc&)` gives the last
  /// beat as a time_point (0: none yet).
  template <class Heartbeat>
  std::vector<action> tick(time_point now, Heartbeat heartbeat);
  /// SIGTERM (graceful) or SIGINT/SIGQUIT (fast).
  std::vector<action> stop(stop_mode mode, time_point now);
  /// SIGHUP arrived: begin, coalesce or ignore it.
  reload_request request_reload();
  /// on_reload refused the new configuration: the workers keep running untouched.
  reload_done_action reject_reload(std::string why) const;
  /// SIGHUP after on_reload succeeded (or a master upgrade): roll every slot to a new
  /// generation. `roll_back`: when a new worker fails before READY, the slots that had
  /// switched are rolled to one more generation made from the previous configuration
  /// (reload_undo_action first), so the pool ends as it was; without it (exec mode, an
  /// upgrade: the previous code is not at hand) they keep their new workers.
  std::vector<action> reload(time_point now, bool roll_back = false);
  /// SIGTTIN/SIGTTOU/`app scale N`: the wanted number of workers.
  std::vector<action> scale(int workers, time_point now);
  /// --max-requests: this worker served its share; replace it without a capacity dip.
  std::vector<action> recycle(pid_t pid, time_point now);

  /// When tick() should run next (nullopt: nothing is pending on time).
  std::optional<time_point> next_deadline() const;

  const std::vector<proc>& procs() const noexcept { return procs_; }
  std::uint32_t generation() const noexcept { return generation_; }
  int workers() const noexcept { return cfg_.workers; }
  /// The serving slots whose READY process beat within `late` of `now`, in slot order,
  /// each with that process (the newest generation's when a reload runs two): where
  /// --accept reuseport steers new connections and hands over queued ones. `heartbeat` as
  /// for tick. One pass.
  template <class Heartbeat>
  std::vector<serving_process> steerable(time_point now, ms late, Heartbeat heartbeat) const;
  const policy_config& config() const noexcept { return cfg_; }
  bool stopping() const noexcept { return stopping_.has_value(); }
  bool reloading() const noexcept { return rollout_.has_value(); }
  /// True once a worker had to be killed at a drain deadline or drained uncleanly: the
  /// master exits 1 rather than 0.
  bool unclean() const noexcept { return unclean_; }
  /// READY serving workers (dedicated processes are not counted).
  int ready_count() const;
  /// The dedicated process of `slot`, or null for a serving slot.
  const dedicated_slot* dedicated_at(int slot) const noexcept;

 private:
  struct slot_info {
    unsigned failures = 0;     ///< consecutive failed starts
    time_point next_spawn{0};  ///< backoff: no spawn before this
  };
  struct rollout {
    std::uint32_t generation = 0;
    std::vector<int> pending;      ///< slots not yet switched
    std::vector<int> in_progress;  ///< slots whose replacement is starting
    bool roll_back = false;        ///< on failure, switched slots go back (reload in fork mode)
    bool rolling_back = false;     ///< this is that rollback, to the previous configuration
    std::string failure;           ///< why the rollout that is being rolled back failed
  };

  proc* find(pid_t pid);
  std::vector<int> active_slots() const;  ///< the serving slots in use, then the dedicated ones
  bool exclusive(int slot) const noexcept;  ///< a dedicated slot whose process may not overlap
  static constexpr std::uint8_t slot_occupied = 1, slot_served = 2;  ///< slot_flags() bits
  std::vector<std::uint8_t> slot_flags() const;  ///< per slot: occupied, served (not draining)
  bool needs_process(int slot, std::uint8_t flags) const noexcept;
  proc* serving(int slot);  ///< the starting/ready process of a slot that is not draining
  int free_lane(int slot) const;
  ms backoff(unsigned failures) const noexcept;
  void send(proc& p, int sig, kill_reason why, std::vector<action>& out);
  void finish_rollout(reload_result result, std::string message, std::vector<action>& out);
  void check_pool_ready(std::vector<action>& out);
  void spawn_into(int slot, std::uint32_t gen, time_point now, std::vector<action>& out);
  void drain(proc& p, time_point now, std::vector<action>& out);
  void fill_slots(time_point now, std::vector<action>& out);
  void advance_rollout(time_point now, std::vector<action>& out);
  void abort_rollout(const std::string& why, time_point now, std::vector<action>& out);
  bool begin_rollback(const std::string& why, time_point now, std::vector<action>& out);
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
  bool unclean_ = false;
  bool reload_queued_ = false;   ///< a SIGHUP came during the rollout
  bool announced_ready_ = false;  ///< pool_ready_action went out (or an upgrade adopted)
  std::string start_failure_;    ///< the last worker that died before READY in this rollout
};

template <class Heartbeat>
std::vector<serving_process> supervisor_policy::steerable(time_point now, ms late, Heartbeat heartbeat) const {
  std::vector<const proc*> fresh(static_cast<std::size_t>(cfg_.workers));
  for (const proc& p : procs_)
    if (p.state == proc_state::ready && p.slot < cfg_.workers) {
      const time_point beat = heartbeat(p);
      const proc*& best = fresh[static_cast<std::size_t>(p.slot)];
      if ((beat.count() == 0 || now - beat <= late) && (!best || best->generation < p.generation)) best = &p;
    }
  std::vector<serving_process> out;
  for (std::size_t slot = 0; slot < fresh.size(); ++slot)
    if (fresh[slot]) out.push_back({static_cast<int>(slot), fresh[slot]->pid});
  return out;
}

template <class Heartbeat>
std::vector<action> supervisor_policy::tick(time_point now, Heartbeat heartbeat) {
  std::vector<action> out;
  for (proc& p : procs_) {
    if (p.state != proc_state::ready || p.abort_sent.count() != 0) continue;
    const time_point beat = heartbeat(p);
    if (beat.count() != 0 && now - beat > cfg_.heartbeat_timeout) {
      p.abort_sent = now;
      send(p, 6 /* SIGABRT */, kill_reason::heartbeat_timeout, out);
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
