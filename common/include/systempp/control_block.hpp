#pragma once
/// The control block: one shared-memory segment per pool that the master, its workers and
/// `app status` share (docs/ARCHITECTURE.md, "The control block").
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

#include <string.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#include <boost/interprocess/mapped_region.hpp>

#include "systempp/control_states.hpp"
#include "systempp/metrics.hpp"
#include "systempp/pool_registry.hpp"
#include "systempp/stage.hpp"

namespace systempp {

// ---------------------------------------------------------------------------------------------
// The layout
// ---------------------------------------------------------------------------------------------

/// "SPCB" read as a little-endian word: tells a control block from any other segment.
inline constexpr std::uint32_t control_block_magic = 0x42435053;
/// Bump this when the layout changes (any field, size, order or meaning), and update the
/// pinned sizes in tests/unit/control_block_test.cpp.
inline constexpr std::uint32_t control_block_layout_version = 4;

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

// ---------------------------------------------------------------------------------------------
// Seqlocks
// ---------------------------------------------------------------------------------------------

/// Opens a multi-field update of `slot` (makes `seq` odd). Called by the slot's current
/// writer: the worker, or the master once the worker is dead. Safe if a dead worker left
/// `seq` odd: the update then simply continues from there. Async-signal-safe.
void begin_update(worker_slot& slot) noexcept;
/// Closes the update opened by begin_update (makes `seq` even). Async-signal-safe.
void end_update(worker_slot& slot) noexcept;

/// RAII form of begin_update/end_update, for the worker and for the master.
class slot_update {
 public:
  /// Opens the update; the destructor closes it.
  explicit slot_update(worker_slot& slot) noexcept : slot_(slot) { begin_update(slot_); }
  ~slot_update() { end_update(slot_); }
  slot_update(const slot_update&) = delete;
  slot_update& operator=(const slot_update&) = delete;

 private:
  worker_slot& slot_;
};

/// A plain copy of a worker_slot, taken by read_slot.
struct slot_snapshot {
  std::uint32_t seq = 0;
  std::uint32_t epoch = 0;
  pid_t pid = 0;
  std::uint32_t generation = 0;
  worker_state state = worker_state::free;
  worker_command command = worker_command::none;
  std::uint32_t stage = no_stage;
  std::uint32_t unit = no_unit;
  std::uint32_t in_flight = 0;
  std::int32_t exit_status = 0;
  std::uint32_t restarts = 0;
  std::uint64_t drain_deadline_ms = 0;
  std::uint64_t heartbeat_ms = 0;
  std::uint64_t started_ms = 0;
  std::uint64_t ready_ms = 0;
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;
  std::array<std::array<std::uint32_t, max_stages>, worker_slot::max_units> stage_us{};
  std::uint32_t role = no_unit;
  std::uint32_t unhealthy_unit = no_unit;
  std::array<char, worker_slot::health_reason_size> health_reason{};  ///< read with reason()
  std::uint64_t metrics_digest = 0;
  std::array<std::uint64_t, max_metric_values> app_values{};
  /// false when the writer kept updating (or died mid-update) through every retry; the
  /// copy is then best effort: each field is valid but they may not agree.
  bool consistent = true;

  /// The health reason, up to its NUL (never past the array).
  std::string_view reason() const noexcept {
    return {health_reason.data(), ::strnlen(health_reason.data(), health_reason.size())};
  }
};

/// Publishes the worker's health: `unit` (an index into unit_names, or no_unit when every
/// unit is healthy) and its reason, cut at a UTF-8 boundary. Worker only (its own record),
/// one thread at a time.
void write_health(worker_slot& slot, std::uint32_t unit, std::string_view reason) noexcept;

/// Copies `slot` consistently: retries while an update is in progress, a bounded number of
/// times (a writer that died mid-update must not hang the reader). Runs anywhere.
slot_snapshot read_slot(const worker_slot& slot) noexcept;

/// Replaces the reload message, cut to 255 bytes at a UTF-8 character boundary.
/// Master only (single writer).
void write_reload_message(control_header& header, std::string_view message) noexcept;
/// A consistent copy of the reload message, or an empty string when the master kept
/// rewriting it through every one of the bounded retries (never a torn copy). Runs anywhere.
std::string read_reload_message(const control_header& header);

/// The name of unit `index`, or "" when the index is out of range. The view points into
/// the segment; the names never change after create. Runs anywhere.
std::string_view unit_name(const control_header& header, std::uint32_t index) noexcept;
/// The name of stage id `index` (a slot's `stage`, a stage_us column), or "" when the index
/// is out of range or the app has no such stage. Runs anywhere.
std::string_view stage_name(const control_header& header, std::uint32_t index) noexcept;

// ---------------------------------------------------------------------------------------------
// The segment
// ---------------------------------------------------------------------------------------------

/// A control block that cannot be created or attached, or fails validation. The message is
/// one line: "control block systempp.web.123: wrong magic".
class control_block_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Pool names end up in file names: [A-Za-z0-9_-], 1..64 characters. Runs anywhere.
bool valid_pool_name(std::string_view pool) noexcept;
/// Throws control_block_error naming `pool` unless valid_pool_name(pool). Runs anywhere.
void check_pool_name(std::string_view pool);

/// "systempp.<pool>.<pid>": the shared-memory object name (Linux shows it as
/// /dev/shm/systempp.<pool>.<pid>). Does not validate the pool name. Runs anywhere.
std::string segment_name(std::string_view pool, pid_t master_pid);

/// How to map the block: `app status` and `app reload` map it read_only; the master, its
/// workers and `app scale` (which writes scale_request) map it read_write.
enum class access { read_only, read_write };

/// Lanes per logical slot: a slot holds at most two processes at once (the serving one and
/// its replacement, or the one draining after a switch), each with its own record.
inline constexpr int lanes_per_slot = 2;

/// The record of logical slot `slot`, lane `lane` (0 or 1): the one place that knows the
/// layout of records. Any process.
constexpr std::uint32_t record_index(int slot, int lane) noexcept {
  return static_cast<std::uint32_t>(slot * lanes_per_slot + lane);
}
/// The logical slot and the lane of record `index`: the inverse of record_index. Any process.
constexpr int slot_of_record(std::uint32_t index) noexcept { return static_cast<int>(index) / lanes_per_slot; }
constexpr int lane_of_record(std::uint32_t index) noexcept { return static_cast<int>(index) % lanes_per_slot; }

/// Owns a mapping of the control block and the shm fd behind it. Move-only. The creator
/// also owns the segment's name and removes it on destruction, unless disowned.
class control_segment {
 public:
  /// Master only. Creates "systempp.<pool>.<master_pid>" (fails if it exists), mode 0600,
  /// sized for `slot_count` slots, every slot FREE, unit and stage names (lifecycle::
  /// stage_names) filled in. Throws control_block_error.
  static control_segment create(std::string_view pool, pid_t master_pid,
                                std::uint32_t slot_count,
                                std::span<const std::string> unit_names,
                                std::span<const std::string> stage_names = {});

  /// Workers and `app status`. Opens an existing segment and validates it (that `owner`
  /// owns it, size, magic, layout version, sizes). Throws control_block_error on any mismatch.
  static control_segment attach(std::string_view pool, pid_t master_pid, access mode, uid_t owner = ::geteuid());

  /// Exec-mode workers and an upgraded master: attaches the segment behind an inherited fd,
  /// with the same validation as attach but the owner's (the parent gave it). The caller
  /// keeps ownership of `fd`; the segment works on its own close-on-exec duplicate.
  static control_segment attach_fd(int fd, access mode);

  /// Moves the mapping, the fd and the ownership of the name; `other` is left empty.
  control_segment(control_segment&& other) noexcept;
  /// Closes (and, if owner, removes) this segment, then takes `other`'s.
  control_segment& operator=(control_segment&& other) noexcept;
  control_segment(const control_segment&) = delete;
  control_segment& operator=(const control_segment&) = delete;
  /// Unmaps and closes; removes the name if this object owns it and this is the process
  /// that created (or adopted) it, so a forked child's copy never removes the master's
  /// segment even if the child forgets disown().
  ~control_segment();

  /// Keep the mapping but never remove the segment: for a forked child holding the
  /// master's object.
  void disown() noexcept { owner_ = false; }
  /// Become the owner that removes the segment on destruction: for a master that
  /// re-executed itself and attached the block by fd. Master only.
  void adopt() noexcept;
  /// Master upgrade: the unit and stage names of the image taking the pool over, written
  /// over the previous image's (its units or custom stages may differ). Readers may see a
  /// name half rewritten for an instant: names are for display. Master only; throws
  /// control_block_error for more names than the block holds.
  void rename(std::span<const std::string> unit_names, std::span<const std::string> stage_names);
  /// True when destroying this object removes the segment's name.
  bool owns_segment() const noexcept { return owner_; }

  /// Writing through these in a read_only segment faults: the mapping is read-only.
  /// Any process that attached; who may write which field is noted next to the field.
  control_header& header() noexcept { return *header_; }
  const control_header& header() const noexcept { return *header_; }
  /// Record i (see record_index). Throws std::out_of_range for i >= slot_count(). Any
  /// process that attached.
  worker_slot& slot(std::uint32_t i);
  const worker_slot& slot(std::uint32_t i) const;
  /// The record of logical slot `slot`, lane `lane`. Throws like slot(i).
  worker_slot& record(int slot, int lane) { return this->slot(record_index(slot, lane)); }
  const worker_slot& record(int slot, int lane) const { return this->slot(record_index(slot, lane)); }
  /// Every record, FREE ones included. Any process that attached.
  std::span<worker_slot> slots() noexcept { return {slots_, slot_count_}; }
  std::span<const worker_slot> slots() const noexcept { return {slots_, slot_count_}; }
  /// Validated at attach and cached: the header's copy is not trusted again after that.
  std::uint32_t slot_count() const noexcept { return slot_count_; }
  /// "systempp.<pool>.<pid>" (for attach_fd: as the kernel names the fd, else "fd <n>").
  const std::string& name() const noexcept { return name_; }
  /// The shm fd, open (close-on-exec) as long as this object lives; pass it to exec'd
  /// children by dup2.
  int fd() const noexcept { return fd_; }

 private:
  /// Takes ownership of `fd`; maps nothing yet.
  control_segment(std::string name, int fd) noexcept;
  void map_and_validate(access mode, std::optional<uid_t> owner);
  void close() noexcept;

  std::string name_;
  int fd_ = -1;
  boost::interprocess::mapped_region region_;
  control_header* header_ = nullptr;
  worker_slot* slots_ = nullptr;
  std::uint32_t slot_count_ = 0;
  bool owner_ = false;
  pid_t owner_pid_ = 0;  ///< the process allowed to remove the name
};

}  // namespace systempp
