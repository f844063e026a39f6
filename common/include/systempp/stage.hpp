#pragma once
/// The lifecycle stages: one table that says, per stage, where it runs, in which order
/// units take it, what it depends on or undoes, and the exit code of its failure. The
/// enum, the names, the lifecycle's eligibility rules and the member checks in unit.hpp
/// are all generated from it.
///
/// To add a stage: add its row to SYSTEMPP_STAGES and call it where it belongs in the
/// runners (run_cycle in cycle.cpp, or the inline/master runner). Any new row renumbers the
/// hooks and custom stages whose ids are stored in shared memory: bump
/// control_block_layout_version and protocol_version, the stage_count assert below, and
/// the pinned sizes in tests/unit/control_block_test.cpp. A new startup stage also wants
/// its own exit_code (errors.hpp, `app --help` in options.cpp, docs/guide.md). An app
/// that only needs a stage of its own declares a custom stage instead (stage_types.hpp).

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string_view>

#include "systempp/errors.hpp"

/// The stage table, one row per stage, in the order of a full life (on_init first, on_exit
/// last). The row's position is the stage's value, stored in the control block: append
/// only. Columns:
///   name       the member a unit writes, and the word in logs
///   loop       sync: called outside the event loop; async: inside it, may be a coroutine
///   direction  forward: units in declaration order, stopping at the first failure;
///              backward: units in reverse order, every one runs even after a failure
///   link       forward: the stage a unit must have completed first (std::nullopt: none);
///              backward: the stage it undoes, so it runs for exactly the units that
///              completed that one
///   repeat     once: a unit that completed it does not run it again until the stage is
///              undone; repeatable: it runs whenever its link allows (on_reload)
///   failure    the exit code when a unit fails it (errors.hpp)
#define SYSTEMPP_STAGES(X)                                                                  \
  X(on_init,       sync,  forward,  std::nullopt,        once,       init_failed)            \
  X(on_reload,     sync,  forward,  stage::on_init,      repeatable, unclean_shutdown)       \
  X(pre_startup,   sync,  forward,  std::nullopt,        once,       pre_startup_failed)     \
  X(on_startup,    async, forward,  stage::pre_startup,  once,       on_startup_failed)      \
  X(post_startup,  async, forward,  stage::on_startup,   once,       post_startup_failed)    \
  X(pre_shutdown,  async, backward, stage::on_startup,   once,       unclean_shutdown)       \
  X(on_shutdown,   async, backward, stage::on_startup,   once,       unclean_shutdown)       \
  X(post_shutdown, sync,  backward, stage::pre_startup,  once,       unclean_shutdown)       \
  X(on_exit,       sync,  backward, stage::on_init,      once,       unclean_shutdown)

namespace systempp {

/// A lifecycle stage, one enumerator per row of SYSTEMPP_STAGES. Stored as an index in the
/// control block. Which process runs which stage in pool, inline and script mode:
/// docs/guide.md, "The stage table".
enum class stage : std::uint8_t {
#define SYSTEMPP_DETAIL_STAGE_ENUMERATOR(name, ...) name,
  SYSTEMPP_STAGES(SYSTEMPP_DETAIL_STAGE_ENUMERATOR)
#undef SYSTEMPP_DETAIL_STAGE_ENUMERATOR
};
static_assert(static_cast<int>(stage::on_exit) == 8, "stage values are stored in shared memory");

/// Where a stage runs: outside the event loop, or inside it.
enum class stage_loop { sync, async };
/// Which way a stage walks the units (see SYSTEMPP_STAGES).
enum class stage_direction { forward, backward };
/// Whether a completed stage may run again for the same unit (see SYSTEMPP_STAGES).
enum class stage_repeat { once, repeatable };

/// One row of the stage table.
struct stage_row {
  std::string_view name;
  stage_loop loop;
  stage_direction direction;
  std::optional<stage> link;  ///< forward: required before; backward: undone
  stage_repeat repeat;
  exit_code failure;
};

/// The rows of SYSTEMPP_STAGES, indexed by stage. Compile time / any process.
inline constexpr stage_row stage_table[] = {
#define SYSTEMPP_DETAIL_STAGE_ROW(name, loop, direction, link, repeat, failure)           \
  stage_row{#name, stage_loop::loop, stage_direction::direction, link, stage_repeat::repeat, \
            exit_code::failure},
    SYSTEMPP_STAGES(SYSTEMPP_DETAIL_STAGE_ROW)
#undef SYSTEMPP_DETAIL_STAGE_ROW
};

/// Number of stages; sizes the per-stage tables (and the control block's stage_us).
inline constexpr std::size_t stage_count = std::size(stage_table);

/// The table row of `s`. Any process; s must be a valid enumerator (a value read from
/// shared memory is checked against stage_count first).
constexpr const stage_row& stage_row_of(stage s) noexcept {
  return stage_table[static_cast<std::size_t>(s)];
}

// ---------------------------------------------------------------------------------------------
// Hooks and custom stages
// ---------------------------------------------------------------------------------------------
// Besides the built-in stages a unit may implement a *hook*, before_X or after_X for every
// built-in stage X, and an app may declare *custom stages* (SYSTEMPP_STAGE, stage_types.hpp)
// anchored before or after any stage. They are stages like the others: each has an id (a
// `stage` value past the built-in ones), is logged, timed and shown in status, and runs
// where its anchor runs, for the units that take the anchor. Ids:
//   0 .. stage_count-1                     the built-in stages, rows of SYSTEMPP_STAGES
//   stage_count + 2i, stage_count + 2i + 1 before_X and after_X of built-in stage i
//   first_custom_stage ..                  the app's custom stages, in declaration order

/// Where a hook or custom stage runs relative to the stage it is anchored to.
enum class stage_place { before, after };

/// Number of hooks: one before and one after each built-in stage.
inline constexpr std::size_t hook_count = 2 * stage_count;
/// The id of an app's first custom stage.
inline constexpr std::size_t first_custom_stage = stage_count + hook_count;
/// Ids an app may use; sizes the per-stage tables (unit hooks, the control block's stage_us
/// and stage names).
inline constexpr std::size_t max_stages = 48;
/// How many custom stages one app may declare.
inline constexpr std::size_t max_custom_stages = max_stages - first_custom_stage;

/// The id of hook before_X or after_X of built-in stage `anchor`. Compile time / any process.
constexpr stage hook_of(stage anchor, stage_place place) noexcept {
  return static_cast<stage>(stage_count + 2 * static_cast<std::size_t>(anchor) +
                            (place == stage_place::after ? 1 : 0));
}

/// A hook or custom stage: its name, where it runs and in which order units take it.
/// Built by the app (app.hpp); read by the lifecycle in any process.
struct extra_stage {
  std::string_view name;
  stage_loop loop;
  stage_direction direction;
  stage anchor;  ///< the stage it runs before or after (built-in, hook or custom)
  stage_place place;
};

namespace detail {
/// "before_on_init", "after_on_init", ...: the hooks' names, in id order.
inline constexpr std::string_view hook_names[] = {
#define SYSTEMPP_DETAIL_HOOK_NAMES(name, ...) "before_" #name, "after_" #name,
    SYSTEMPP_STAGES(SYSTEMPP_DETAIL_HOOK_NAMES)
#undef SYSTEMPP_DETAIL_HOOK_NAMES
};
static_assert(std::size(hook_names) == hook_count);
}  // namespace detail

/// The hook with id `s` (stage_count <= s < first_custom_stage): it runs where its built-in
/// stage runs, in the same direction. Compile time / any process.
constexpr extra_stage hook_row(stage s) noexcept {
  const auto i = static_cast<std::size_t>(s) - stage_count;
  const stage anchor = static_cast<stage>(i / 2);
  const stage_row& row = stage_row_of(anchor);
  return {detail::hook_names[i], row.loop, row.direction, anchor,
          i % 2 ? stage_place::after : stage_place::before};
}

/// The name of a built-in stage or hook as written in unit classes and logs ("" for a
/// custom stage id: only the app knows those, see lifecycle::stage_name). Any process.
constexpr std::string_view to_string(stage s) noexcept {
  const auto i = static_cast<std::size_t>(s);
  if (i < stage_count) return stage_row_of(s).name;
  if (i < first_custom_stage) return hook_row(s).name;
  return {};
}

// The three below take a built-in stage only (s < stage_count): a hook's or custom stage's
// row is the lifecycle's (lifecycle::stops_at_failure, stage_name).

/// Async stages run inside the process's io_context and may be coroutines. Any process.
constexpr bool is_async(stage s) noexcept { return stage_row_of(s).loop == stage_loop::async; }

/// Backward stages run units in reverse declaration order and never stop early. Any
/// process.
constexpr bool is_backward(stage s) noexcept {
  return stage_row_of(s).direction == stage_direction::backward;
}

/// The exit code for a failed stage: 3 to 6 for on_init and the startup stages, 7 for
/// on_reload and the backward stages. Any process.
constexpr exit_code failed_stage_code(stage s) noexcept { return stage_row_of(s).failure; }

}  // namespace systempp
