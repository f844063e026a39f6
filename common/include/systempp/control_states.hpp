#pragma once
/// The states and commands stored in the control block (control_block.hpp), and their
/// names for logs, `app status` and metrics. Stored in shared memory: keep the numbers.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace systempp {


/// A worker slot's life (docs/ARCHITECTURE.md, "Supervision").
enum class worker_state : std::uint32_t {
  free,      ///< no process; the slot may be reused
  spawned,   ///< master forked it; the worker has not started its stages yet
  starting,  ///< running pre_startup..post_startup
  ready,     ///< serving
  draining,  ///< told to drain: pre_shutdown..post_shutdown
  exited,    ///< ended cleanly (written by the worker, or by the master after a clean reap)
  crashed,   ///< died without writing EXITED (written by the master)
};

/// The master's own state, for `app status` and the workers.
enum class master_state : std::uint32_t { starting, running, reloading, draining, stopped };

/// What the master asks a worker to do; the wake-up itself travels through the worker's fd.
enum class worker_command : std::uint32_t { none, drain, stop_fast };

/// The result of the latest rolling reload.
enum class reload_outcome : std::uint32_t { none, in_progress, succeeded, failed, rejected };

/// Why the master respawned a worker; indexes `control_header::restarts`.
enum class restart_reason : std::uint32_t {
  crash,              ///< the worker died without writing EXITED
  timeout_ready,      ///< STARTING past --ready-timeout
  timeout_heartbeat,  ///< READY without a heartbeat past --heartbeat-timeout
  recycle,            ///< --max-requests reached
  scale,              ///< SIGTTIN/SIGTTOU changed the target
  memory,             ///< resident memory passed --max-rss
};
/// Number of restart_reason values: the size of control_header::restarts.
inline constexpr std::size_t restart_reason_count = 6;

namespace detail {
/// `names[value]`, or "unknown" for a value outside the table: values read from shared
/// memory may be garbage (a foreign or broken segment), so no lookup may index blindly.
/// Any process.
template <class Enum, std::size_t N>
constexpr std::string_view name_in(const std::array<std::string_view, N>& names,
                                   Enum value) noexcept {
  const auto i = static_cast<std::size_t>(value);
  return i < N ? names[i] : "unknown";
}
}  // namespace detail

/// Lower-case names of worker_state, master_state, worker_command, reload_outcome and
/// restart_reason, indexed by value; each table's last name belongs to the last enumerator.
inline constexpr std::array<std::string_view, 7> worker_state_names{
    "free", "spawned", "starting", "ready", "draining", "exited", "crashed"};
static_assert(worker_state_names.size() == static_cast<std::size_t>(worker_state::crashed) + 1);
inline constexpr std::array<std::string_view, 5> master_state_names{
    "starting", "running", "reloading", "draining", "stopped"};
static_assert(master_state_names.size() == static_cast<std::size_t>(master_state::stopped) + 1);
inline constexpr std::array<std::string_view, 3> worker_command_names{"none", "drain",
                                                                      "stop_fast"};
static_assert(worker_command_names.size() ==
              static_cast<std::size_t>(worker_command::stop_fast) + 1);
inline constexpr std::array<std::string_view, 5> reload_outcome_names{
    "none", "in_progress", "succeeded", "failed", "rejected"};
static_assert(reload_outcome_names.size() ==
              static_cast<std::size_t>(reload_outcome::rejected) + 1);
inline constexpr std::array<std::string_view, restart_reason_count> restart_reason_names{
    "crash", "timeout_ready", "timeout_heartbeat", "recycle", "scale", "memory"};
static_assert(restart_reason_count == static_cast<std::size_t>(restart_reason::memory) + 1);

/// Lower-case name, e.g. "ready"; "unknown" for a value outside the enum. Any process.
constexpr std::string_view to_string(worker_state s) noexcept {
  return detail::name_in(worker_state_names, s);
}
/// Lower-case name, e.g. "reloading"; "unknown" for a value outside the enum. Any process.
constexpr std::string_view to_string(master_state s) noexcept {
  return detail::name_in(master_state_names, s);
}
/// Lower-case name, e.g. "stop_fast"; "unknown" for a value outside the enum. Any process.
constexpr std::string_view to_string(worker_command c) noexcept {
  return detail::name_in(worker_command_names, c);
}
/// Lower-case name, e.g. "in_progress"; "unknown" for a value outside the enum. Any process.
constexpr std::string_view to_string(reload_outcome o) noexcept {
  return detail::name_in(reload_outcome_names, o);
}
/// Lower-case name, e.g. "timeout_ready"; "unknown" for a value outside the enum. Any
/// process.
constexpr std::string_view to_string(restart_reason r) noexcept {
  return detail::name_in(restart_reason_names, r);
}

}  // namespace systempp
