#pragma once
/// Carries out the policy's decisions on the worker table: the master's action executor.
/// Events come in (a worker's channel byte, SIGCHLD, a tick, an operator's command), go to
/// supervisor_policy, and the actions that come back are executed here, each with its log
/// line and control-block write. What concerns the whole master (leaving the loop, systemd,
/// the reload's report) goes back to the owner through supervisor_hooks. Master only.

#include <functional>
#include <memory>
#include <vector>

#include "systempp/context.hpp"
#include "systempp/master/supervisor_policy.hpp"
#include "systempp/master/worker_table.hpp"

namespace spdlog {
class logger;
}

namespace systempp::master {

/// Monotonic now, as the policy counts time. Any process.
time_point now_ms() noexcept;

struct supervisor_hooks {
  std::function<void()> finished;                               ///< every worker is gone after a stop
  std::function<void(const reload_done_action&)> reload_done;  ///< a reload ended
  std::function<void()> reload_undo;  ///< undo the reload's configuration before a rollback
  /// A worker's unit asked for a reload or a stop (context::request_reload): who and why.
  std::function<void(control_request what, const std::string& who, std::string_view reason)> requested;
  std::function<void(int ready)> pool_ready;                   ///< the first full pool is READY
  std::function<void()> executed;                              ///< after each batch: reschedule the tick
};

class supervisor {
 public:
  /// `log` is the owner's logger pointer, replaced on SIGUSR1; read at each use.
  supervisor(policy_config cfg, worker_table& table, control_header& header,
             const std::shared_ptr<spdlog::logger>& log, supervisor_hooks hooks);

  /// How a forked worker is made to run, and what the child drops first. Set before start.
  void set_child(std::function<void()> drop_parent_state, child_main body);

  supervisor_policy& policy() noexcept { return policy_; }
  const supervisor_policy& policy() const noexcept { return policy_; }
  worker_table& table() noexcept { return table_; }
  const worker_table& table() const noexcept { return table_; }

  /// Carries out every action, in order, then calls hooks.executed.
  void execute(std::vector<action> actions);
  /// A message from a worker's channel: READY, a recycle request, or a unit's request
  /// for a reload or a stop (with its reason in `text`).
  void message(pid_t pid, char byte, std::string_view text = {});
  /// SIGCHLD: reaps every exited worker and hands each exit to the policy.
  void reap();
  /// SIGTTIN/SIGTTOU/`app scale`: resizes the pool (within 1..max_workers), counts the
  /// workers started or stopped for it, and returns the new size.
  int scale(int workers);
  /// The periodic check: heartbeats (read from the records), deadlines, backoffs.
  void tick();
  /// The serving slots to steer new connections to (supervisor_policy::steerable): READY
  /// and beating within `late`.
  std::vector<serving_process> steerable(ms late);

 private:
  time_point last_beat(const proc& p);
  void spawn(const spawn_action& a);
  void signal(const signal_action& a);
  void exited(reaped_worker w);
  spdlog::logger& log() const { return *log_; }

  supervisor_policy policy_;
  worker_table& table_;
  control_header& header_;
  const std::shared_ptr<spdlog::logger>& log_;
  supervisor_hooks hooks_;
  std::function<void()> drop_parent_state_;
  child_main body_;
};

}  // namespace systempp::master
