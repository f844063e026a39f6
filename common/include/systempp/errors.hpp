#pragma once
/// Exceptions and exit codes shared by every runner.

#include <stdexcept>
#include <string>

#include "systempp/stage.hpp"

namespace systempp {

/// Process exit codes. A supervisor reads them: 2 means "do not respawn in a loop".
/// Documented in `app --help` and docs/guide.md; keep the numbers stable. Returned by the
/// master, the inline process, a script and each worker (the master reads a worker's code:
/// 2 delays its respawn by 30 s).
enum class exit_code : int {
  ok = 0,
  failure = 1,             ///< runtime failure; a script body that threw; a pool whose
                           ///< workers had to be killed or failed their shutdown
  usage = 2,               ///< bad option or configuration: fatal, never respawned
  init_failed = 3,         ///< a unit's on_init threw or timed out
  pre_startup_failed = 4,  ///< a unit's pre_startup threw or timed out
  on_startup_failed = 5,   ///< a unit's on_startup threw or timed out
  post_startup_failed = 6, ///< a unit's post_startup threw or timed out
  unclean_shutdown = 7,    ///< a backward stage failed for some unit (all still ran)
  /// Not returned by the runtime: a pool whose workers had to be killed at the drain
  /// deadline exits 1 (failure), see docs/ARCHITECTURE.md "Exit codes". Kept reserved.
  killed_workers = 8,      ///< master only: workers had to be killed at the drain deadline
  interrupted = 130,       ///< a second SIGINT stopped the process at once
};

/// The number to return from main(). Any process.
constexpr int to_int(exit_code c) noexcept { return static_cast<int>(c); }

/// The exit code for a failed forward stage (3 to 6); on_reload and the backward stages
/// give 7. Any process.
constexpr exit_code failed_stage_code(stage s) noexcept {
  switch (s) {
    case stage::on_init: return exit_code::init_failed;
    case stage::pre_startup: return exit_code::pre_startup_failed;
    case stage::on_startup: return exit_code::on_startup_failed;
    case stage::post_startup: return exit_code::post_startup_failed;
    default: return exit_code::unclean_shutdown;
  }
}

/// Thrown by a unit (or the runtime, for bad options) for bad configuration. In a startup
/// stage it makes the process exit with code 2, which a master never respawns in a tight
/// loop. In detail: thrown from a forward stage (on_init to post_startup) it gives exit code 2
/// (but see "Known issues" in docs/guide.md for the async ones); from on_reload it rejects
/// the reload like any other exception; from a backward stage it counts as an unclean
/// shutdown (7). Throw it from any unit, in any process.
class config_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Thrown when a stage exceeds its timeout.
/// Reserved: the stage engine does not throw it; an overrun is recorded as
/// stage_outcome::timed_out and logged as "timed out".
class stage_timeout : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace systempp
