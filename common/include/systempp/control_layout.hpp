#pragma once
/// The control block's layout: one shared-memory segment per pool that the master, its
/// workers and `app status` share (docs/ARCHITECTURE.md, "The control block").
///
/// Layout rules, and why:
/// - No locks. A process-shared mutex stays locked forever when its owner is SIGKILLed, so
///   every shared field is a lock-free `std::atomic` and has exactly one writer, named in a
///   comment next to it. Where a reader needs several fields that agree with each other, the
///   writer wraps its update in a seqlock (`begin_update`/`end_update`) and the reader copies
///   with `read_slot`, retrying while an update was in progress.
/// - No pointers, containers or virtuals: the struct is mapped at a different address in
///   every process (and by a different build after a master upgrade).
/// - The header starts with magic, layout version and sizes; every attach checks them, so a
///   mismatched build refuses loudly instead of reading garbage. Tests pin sizeof/offsetof.
/// - No `std::atomic::wait/notify`: libstdc++ 12 uses private futexes, which do not wake a
///   waiter in another process. Wake-ups travel through fds; this block holds state only.

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "systempp/control_states.hpp"
#include "systempp/metrics.hpp"
#include "systempp/stage.hpp"

namespace systempp {

// ---------------------------------------------------------------------------------------------
// The layout
// ---------------------------------------------------------------------------------------------

/// "SPCB" read as a little-endian word: tells a control block from any other segment.
inline constexpr std::uint32_t control_block_magic = 0x42435053;
/// Bump this when the layout changes (any field, size, order or meaning), and update the
/// pinned sizes in tests/unit/control_block_test.cpp.
inline constexpr std::uint32_t control_block_layout_version = 5;

/// `stage` and `unit` in a slot hold this while no stage runs (e.g. while serving).
inline constexpr std::uint32_t no_stage = 0xffff'ffff;
/// The `unit` counterpart of no_stage.
inline constexpr std::uint32_t no_unit = 0xffff'ffff;

// Times in the block are CLOCK_MONOTONIC milliseconds: the clock is system-wide, so a
// heartbeat written by a worker compares with the master's "now".

/// CLOCK_MONOTONIC in milliseconds. Runs anywhere, async-signal-safe.
std::uint64_t monotonic_ms() noexcept;

/// The pool-wide part, at offset 0. Written by the master only; everyone else reads.
/// alignas(64) keeps its size a multiple of a cache line, so the slots that follow it are
/// aligned too.
struct alignas(64) control_header {
  /// Most units an app may have to run as a pool: create() refuses more (the master exits 2).
  static constexpr std::size_t max_units = 16;
  static constexpr std::size_t unit_name_size = 32;        ///< including the terminating NUL
  static constexpr std::size_t reload_message_size = 256;  ///< including the terminating NUL

  // Identity, written once by `control_segment::create`. The magic is stored last with
  // release order, so an attacher that sees the magic also sees everything else filled in.
  std::atomic<std::uint32_t> magic{};           ///< master, once, last
  std::atomic<std::uint32_t> layout_version{};  ///< master, once
  std::atomic<std::uint32_t> header_size{};     ///< master, once: sizeof(control_header)
  std::atomic<std::uint32_t> slot_size{};       ///< master, once: sizeof(worker_slot)
  std::atomic<std::uint32_t> slot_count{};      ///< master, once
  std::atomic<std::uint32_t> unit_count{};      ///< master, once; <= max_units
  std::atomic<std::int32_t> master_pid{};       ///< master, once (same pid after an upgrade)

  // Qualified type names: the members below share their names with their types.
  std::atomic<systempp::master_state> master_state{};  ///< master
  std::atomic<std::uint32_t> pool_generation{};        ///< master: bumped by each reload
  std::atomic<std::uint32_t> target_workers{};         ///< master: changed by scaling

  std::atomic<std::uint32_t> reload_seq{};                 ///< master: bumped when a reload starts
  std::atomic<systempp::reload_outcome> reload_outcome{};  ///< master
  /// master: seqlock counter of reload_message, odd while the master rewrites it.
  std::atomic<std::uint32_t> reload_message_seq{};
  std::atomic<std::uint64_t> reload_started_ms{};   ///< master: monotonic_ms() at the start
  std::atomic<std::uint64_t> reload_duration_ms{};  ///< master: set when the reload ends

  // Counters folded in from dead workers, so pool totals survive respawns.
  std::atomic<std::uint64_t> requests_total{};  ///< master, when it reaps a worker
  std::atomic<std::uint64_t> errors_total{};    ///< master, when it reaps a worker
  /// master: respawns, indexed by restart_reason.
  std::atomic<std::uint64_t> restarts[restart_reason_count]{};

  /// master, under reload_message_seq: "reload failed: unit X, stage Y: message". Only
  /// accessed through write_reload_message/read_reload_message (bytewise atomics).
  char reload_message[reload_message_size]{};
  /// master, once, before any worker exists; NUL-terminated unless exactly 31 chars + NUL.
  /// Read with unit_name().
  char unit_names[max_units][unit_name_size]{};

  // Layout version 2.
  /// master: monotonic_ms() when the pool started (kept across a master upgrade).
  std::atomic<std::uint64_t> master_started_ms{};
  /// `app scale N` (the one writer outside the pool) stores N here and sends SIGTTIN; the
  /// master takes it with exchange(0), so a plain SIGTTIN still means "one more".
  std::atomic<std::uint32_t> scale_request{};

  // Layout version 3.
  /// master, once, before any worker exists: the name of every stage id the app runs
  /// (built-in, hooks, custom; stage.hpp), like unit_names. Read with stage_name().
  char stage_names[max_stages][unit_name_size]{};

  // Layout version 4.
  /// master: the metric_registry digest that app_totals (and the records summed into
  /// /metrics) are for; reset with them by an upgrade to an image with other metrics.
  std::atomic<std::uint64_t> app_metrics_digest{};
  /// master, when it reaps a worker: the app's counters and histogram values folded in
  /// from dead workers (histogram sums as double bits). Gauges are not kept.
  std::atomic<std::uint64_t> app_totals[max_metric_values]{};
};

/// One per worker slot, cache-line aligned so that two workers' hot counters never share
/// a line. The worker writes its own progress; the master writes what it decides (epoch,
/// pid, generation, command) and takes over the worker's fields once the worker is dead.
struct alignas(64) worker_slot {
  static constexpr std::size_t max_units = control_header::max_units;

  /// Seqlock counter, odd during an update. The worker bumps it around multi-field updates
  /// (state + stage + unit); the master uses it too while it owns the slot (worker dead).
  std::atomic<std::uint32_t> seq{};
  std::atomic<std::uint32_t> epoch{};       ///< master: bumped each time the slot is reused
  std::atomic<std::int32_t> pid{};          ///< master, at spawn; 0 when free
  std::atomic<std::uint32_t> generation{};  ///< master, at spawn: the pool generation
  /// worker while it lives; master writes spawned (at spawn) and free/crashed/exited once
  /// the worker is dead.
  std::atomic<worker_state> state{};
  std::atomic<worker_command> command{};  ///< master
  std::atomic<std::uint32_t> stage{no_stage};  ///< worker: index of systempp::stage running
  std::atomic<std::uint32_t> unit{no_unit};    ///< worker: index into unit_names running
  std::atomic<std::uint32_t> in_flight{};      ///< worker: requests being served now
  std::atomic<std::int32_t> exit_status{};     ///< master, after reaping: raw wait status
  std::atomic<std::uint32_t> restarts{};       ///< master: respawns of this slot

  std::atomic<std::uint64_t> drain_deadline_ms{};  ///< master, with command
  std::atomic<std::uint64_t> heartbeat_ms{};       ///< worker: last sign of life
  std::atomic<std::uint64_t> started_ms{};         ///< master, at spawn
  std::atomic<std::uint64_t> ready_ms{};           ///< worker, when it becomes READY
  std::atomic<std::uint64_t> requests{};           ///< worker: served since spawn
  std::atomic<std::uint64_t> errors{};             ///< worker: failed since spawn

  /// worker: duration in microseconds of each stage, per unit (like systemd-analyze blame).
  std::atomic<std::uint32_t> stage_us[max_units][max_stages]{};
  /// master, at spawn: the unit a dedicated process runs (index into unit_names), or
  /// no_unit for a serving worker. The worker reads it to know which units it runs.
  std::atomic<std::uint32_t> role{no_unit};

  // Layout version 4.
  static constexpr std::size_t health_reason_size = 96;  ///< including the terminating NUL
  /// worker, under seq: the first unit (index into unit_names) that reported itself
  /// unhealthy (context::set_unhealthy), or no_unit; and its reason (bytewise atomics).
  std::atomic<std::uint32_t> unhealthy_unit{no_unit};
  char health_reason[health_reason_size]{};
  /// worker, at start: the digest of its image's metrics (metric_registry).
  std::atomic<std::uint64_t> metrics_digest{};
  /// worker: the app's metric values (metrics.hpp); zeroed by the master at spawn.
  std::atomic<std::uint64_t> app_values[max_metric_values]{};

  // Layout version 5 (and restart_reason::memory in the header's restarts).
  /// worker: its resident memory in bytes, at each heartbeat (--max-rss, status, metrics).
  std::atomic<std::uint64_t> rss_bytes{};
};

// One static_assert per atomic type used: a type that needs a lock would put a
// process-private mutex (or a lock that a dying process keeps) into shared memory.
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::int32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<worker_state>::is_always_lock_free);
static_assert(std::atomic<master_state>::is_always_lock_free);
static_assert(std::atomic<worker_command>::is_always_lock_free);
static_assert(std::atomic<reload_outcome>::is_always_lock_free);
static_assert(std::atomic_ref<char>::is_always_lock_free);  // reload_message bytes

static_assert(sizeof(pid_t) == sizeof(std::int32_t), "pids are stored as int32");
static_assert(max_stages == 48, "a new stage limit changes worker_slot::stage_us: bump the version "
                                "(see \"to add a stage\" in stage.hpp)");
static_assert(std::is_standard_layout_v<control_header> && std::is_standard_layout_v<worker_slot>,
              "offsetof is pinned in tests");
// Nobody runs destructors on a segment (another process may still use it).
static_assert(std::is_trivially_destructible_v<control_header> &&
              std::is_trivially_destructible_v<worker_slot>);
static_assert(sizeof(control_header) % alignof(worker_slot) == 0, "slots must stay aligned");

}  // namespace systempp
