#pragma once
/// Runs the stages of an app's units with the ordering and failure rules of the stage table
/// (stage.hpp), and records duration and outcome per unit and stage.
///
/// Teardown pairs with startup, unit by unit (our reading of the reference design's
/// failure rule, see docs/ARCHITECTURE.md "Units and stages"): pre_shutdown and
/// on_shutdown go to the units whose on_startup completed, post_shutdown to those whose
/// pre_startup completed, on_exit to those whose on_init completed. So a unit that started
/// something is always asked to stop it, and a unit that never started is never asked.

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "systempp/app.hpp"
#include "systempp/context.hpp"
#include "systempp/errors.hpp"
#include "systempp/stage.hpp"

namespace systempp {

/// How one unit's run of one stage ended: ok, failed (it threw), timed_out (it overran
/// --stage-timeout), cancelled (another unit of its level failed first).
enum class stage_outcome { ok, failed, timed_out, cancelled };

/// "ok", "failed" or "timed out", as in the log line. Any process.
std::string_view to_string(stage_outcome o) noexcept;

/// One unit's run of one stage.
struct stage_record {
  /// Index of the unit in declaration order.
  std::size_t unit = 0;
  /// The stage that ran.
  stage which = stage::on_init;
  /// Wall-clock time the unit spent in the stage.
  std::chrono::microseconds duration{0};
  /// How it ended.
  stage_outcome outcome = stage_outcome::ok;
  std::string error;  ///< the exception's message when the outcome is not ok
};

/// The result of running one stage over the units.
struct stage_result {
  /// True when every unit that ran the stage completed it.
  bool ok = true;
  bool config_error = false;   ///< a unit threw systempp::config_error
  std::size_t failed_unit = 0; ///< first failing unit (valid when !ok)
  std::string error;           ///< "unit X, stage Y: message" of the first failure
};

/// Told when a unit enters and leaves a stage (workers publish it in their control slot).
/// Called on the thread that runs the stages, in the process that runs them.
struct stage_observer {
  virtual ~stage_observer() = default;
  /// Unit `unit` is about to run stage `s` (not called for units without that stage).
  virtual void stage_begin(std::size_t unit, stage s) = 0;
  /// Unit `unit` left stage `s` after `took`, with `outcome`.
  virtual void stage_end(std::size_t unit, stage s, std::chrono::microseconds took,
                         stage_outcome outcome) = 0;
};

namespace detail {
/// How one unit's run of one stage went; defined in lifecycle.cpp.
struct stage_attempt;
}  // namespace detail

/// The stage engine of one process. Not thread-safe; lives on the loop's thread.
/// Each process (master, every worker, inline, script) has its own, so "which units
/// completed which stage" is per process.
class lifecycle {
 public:
  /// Keeps a reference to `app`'s units (an app_instance's entries) and learns its custom
  /// stages. Any process.
  explicit lifecycle(detail::app_units& app);

  /// Name/type/object of every unit, for context's sibling lookups.
  std::span<const detail::unit_ref> refs() const noexcept { return refs_; }
  /// Number of units.
  std::size_t size() const noexcept { return units_.size(); }
  /// Name of unit i (detail::unit_name). i < size().
  const std::string& unit_name(std::size_t i) const { return refs_[i].name; }
  /// Every unit's name, in declaration order.
  std::vector<std::string> unit_names() const {
    std::vector<std::string> names;
    for (const auto& r : refs_) names.push_back(r.name);
    return names;
  }

  /// The name of stage id `s`: built-in, hook or one of this app's custom stages.
  std::string_view stage_name(stage s) const noexcept;
  /// The names of every stage id this app can run, in id order (for the control block).
  std::vector<std::string> stage_names() const;
  /// Whether a failure of stage id `s` stops it (forward) or every unit still runs it
  /// (backward). A hook or custom stage fails like the built-in stage it is anchored to.
  bool stops_at_failure(stage s) const noexcept;

  /// Runs a sync stage (on_init, on_reload, pre_startup, post_shutdown, on_exit) outside
  /// the loop, with the hooks and custom stages anchored to it (stage_types.hpp): they run
  /// for the units that take the stage, and their failure is the stage's. A sync stage cannot be interrupted: one that overruns its timeout is
  /// recorded as timed out when it returns (the master's --ready-timeout catches hangs).
  stage_result run(stage s, context& ctx);

  /// Runs an async stage inside ctx.io(), level by level of the dependency graph (levels()):
  /// the units of one level run concurrently, each level after the one before. A unit that
  /// overruns the timeout is cancelled (its pending Asio operations complete with
  /// operation_aborted) and counts as timed out. In a forward stage the first failure
  /// cancels the siblings still running in its level (they count as cancelled, not
  /// completed) and no later level runs; a backward stage waits for every unit.
  /// Like run, the hooks and custom stages anchored to `s` run with it.
  boost::asio::awaitable<stage_result> run_async(stage s, context& ctx);

  /// Which units this process runs, for a pool worker: `dedicated_unit` (an index) and what
  /// it depends on, in a dedicated process; every unit that is not dedicated (nullopt), in
  /// a serving worker. Without a call every unit runs (master, inline, script). Call
  /// before the first stage. Throws config_error for an index that is not a dedicated unit.
  void run_only(std::optional<std::size_t> dedicated_unit);
  /// Whether unit i runs in this process (run_only).
  bool runs_here(std::size_t i) const { return here_[i]; }

  /// The units by dependency level, in start order: level 0 depends on nothing, level k on
  /// units of lower levels only. Sync stages run one unit at a time, in start order.
  const std::vector<std::vector<std::size_t>>& levels() const noexcept { return levels_; }

  /// on_reload as a transaction. With --config, the file is read again first and checked
  /// (app_config.hpp): a file that fails fails the reload before any unit runs; one that
  /// passes is what ctx.config() returns from here on, and is put back with the units when
  /// the reload is undone. Before a unit's on_reload runs, the unit is kept (a copy,
  /// unless it declares rollback_reload). When a unit fails, every unit whose on_reload ran
  /// (the failing one too) is restored, in reverse order, and the result names the failure:
  /// the units are exactly as before. When all pass, the transaction stays open until
  /// commit_reload (the new configuration is live) or abort_reload (it is not, e.g. the
  /// rollout failed). A reload begun while one is open commits that one first.
  stage_result reload(context& ctx);
  /// The open reload passed: calls commit_reload of the units that have it and drops the
  /// copies. Nothing when none is open.
  void commit_reload(context& ctx);
  /// The open reload is undone: every unit kept is restored (copy assigned back, or its
  /// rollback_reload called), in reverse order; a throwing rollback_reload is logged and the
  /// others still run. Nothing when none is open.
  void abort_reload(context& ctx);
  /// True between a reload that passed and its commit or abort.
  bool reload_open() const noexcept { return reload_open_; }

  /// Every stage run so far, in order.
  const std::vector<stage_record>& records() const noexcept { return records_; }

  /// The per-unit, per-stage limit (--stage-timeout; 30 s by default).
  void set_timeout(std::chrono::milliseconds t) noexcept { timeout_ = t; }
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }
  /// Who is told about stage begin/end (the worker's control-slot publisher); may be null.
  void set_observer(stage_observer* o) noexcept { observer_ = o; }

 private:
  /// Bit i set: the unit completed stage i, and no stage has undone it since.
  using stage_set = std::uint32_t;

  /// Which units run a chain: true for those that take its built-in stage.
  using unit_mask = std::vector<bool>;

  unit_mask takers(stage s) const;
  std::vector<std::size_t> order(stage s) const;
  stage_direction direction(stage s) const noexcept;
  void run_chain(stage s, const unit_mask& who, context& ctx, stage_result& result);
  void run_units(stage s, const unit_mask& who, context& ctx, stage_result& result);
  boost::asio::awaitable<void> run_chain_async(stage s, const unit_mask& who, context& ctx,
                                               stage_result& result);
  boost::asio::awaitable<void> run_level(stage s, const std::vector<std::size_t>& units, context& ctx,
                                         stage_result& result);
  bool enter(std::size_t unit, stage s, bool has_hook);
  bool leave(std::size_t unit, stage s, detail::stage_attempt&& a, context& ctx,
             stage_result& result);
  void forget_undone(stage s) noexcept;

  detail::app_units& app_;  ///< its config slot is the open reload's to replace
  std::vector<detail::unit_entry>& units_;
  /// The hooks, then the app's custom stages: the row of id `stage_count + i` is extras_[i].
  std::vector<extra_stage> extras_;
  /// Per stage id, the stages anchored before and after it, in the order they run.
  std::vector<std::vector<stage>> before_, after_;
  std::vector<detail::unit_ref> refs_;
  std::vector<stage_set> completed_;  ///< per unit
  std::vector<bool> here_;             ///< per unit: it runs in this process (run_only)
  std::vector<std::vector<std::size_t>> levels_;
  std::vector<stage_record> records_;
  /// The open reload: each unit whose on_reload ran, with its copy (null when the unit
  /// rolls back itself), in the order they ran.
  std::vector<std::pair<std::size_t, std::shared_ptr<void>>> kept_;
  /// The open reload's previous configuration file, put back when it is undone.
  std::shared_ptr<const config_document> kept_config_;
  bool reload_open_ = false;
  std::chrono::milliseconds timeout_{30'000};
  stage_observer* observer_ = nullptr;
};

/// How a cycle ended.
struct cycle_result {
  /// The exit code of the first failure (see code_for), or ok.
  exit_code code = exit_code::ok;
  std::string error;  ///< the first failure, "unit X, stage Y: message"
};

/// Hooks a runner gives run_cycle: `serve` runs between post_startup and pre_shutdown and
/// returns when the cycle should end; `on_ready` is told once post_startup completed.
struct cycle_hooks {
  /// Runs inside the loop after post_startup succeeded; returning starts the drain.
  std::function<boost::asio::awaitable<void>()> serve;
  /// Called inside the loop once post_startup completed for every unit (the READY moment).
  std::function<void()> on_ready;
  std::function<void()> on_drain;  ///< called before pre_shutdown
  std::function<void()> on_loop_stopped;  ///< called after the loop stopped, before post_shutdown
};

/// One cycle: pre_startup (before the loop), on_startup, post_startup, serve,
/// pre_shutdown, on_shutdown (in the loop), post_shutdown (after the loop stopped).
/// Worker, inline process and script.
cycle_result run_cycle(lifecycle& lc, context& ctx, const cycle_hooks& hooks);

/// Folds a failed stage into an exit code: ok when r.ok; 2 for a config_error in a forward
/// stage; otherwise failed_stage_code(s). Any process.
exit_code code_for(stage s, const stage_result& r) noexcept;

}  // namespace systempp
