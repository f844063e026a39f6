#pragma once
/// The lifecycle stages, their direction and whether they run inside the event loop.

#include <array>
#include <cstdint>
#include <string_view>

namespace systempp {

/// A lifecycle stage (DESIGN.md section 1). The enumerator order is the order of a full
/// life: on_init first, on_exit last. Stored as an index in the control block, so keep it.
/// Which process runs which stage in pool, inline and script mode: docs/guide.md.
enum class stage : std::uint8_t {
  on_init,
  on_reload,
  pre_startup,
  on_startup,
  post_startup,
  pre_shutdown,
  on_shutdown,
  post_shutdown,
  on_exit,
};

/// Number of stages; sizes the per-stage tables (and the control block's stage_us).
inline constexpr std::size_t stage_count = 9;

/// Every stage in enumerator order. Compile time / any process.
inline constexpr std::array<stage, stage_count> all_stages{
    stage::on_init,      stage::on_reload,    stage::pre_startup,
    stage::on_startup,   stage::post_startup, stage::pre_shutdown,
    stage::on_shutdown,  stage::post_shutdown, stage::on_exit};

/// The stage's name as written in unit classes and logs. Any process; s must be a valid
/// enumerator (a value read from shared memory is checked against stage_count first).
constexpr std::string_view to_string(stage s) noexcept {
  constexpr std::array<std::string_view, stage_count> names{
      "on_init",      "on_reload",   "pre_startup",   "on_startup", "post_startup",
      "pre_shutdown", "on_shutdown", "post_shutdown", "on_exit"};
  return names[static_cast<std::size_t>(s)];
}

/// Async stages run inside the process's io_context and may be coroutines. Any process.
constexpr bool is_async(stage s) noexcept {
  return s == stage::on_startup || s == stage::post_startup || s == stage::pre_shutdown ||
         s == stage::on_shutdown;
}

/// Backward stages run units in reverse declaration order and never stop early. Any
/// process.
constexpr bool is_backward(stage s) noexcept {
  return s == stage::pre_shutdown || s == stage::on_shutdown || s == stage::post_shutdown ||
         s == stage::on_exit;
}

}  // namespace systempp
