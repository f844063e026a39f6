#pragma once
/// The control block's fields as the processes read and write them: the seqlock around a
/// slot's multi-field updates, consistent copies of a slot and of the reload message, the
/// names of units and stages. The layout itself and its rules are in control_block.hpp.

#include <sys/types.h>

#include <string.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "systempp/control_layout.hpp"

namespace systempp {

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
  std::uint64_t rss_bytes = 0;
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

}  // namespace systempp
