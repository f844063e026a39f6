#pragma once
/// Exceptions and exit codes shared by every runner.

#include <stdexcept>
#include <string>

namespace systempp {

/// Process exit codes. A supervisor reads them: 2 means "do not respawn in a loop".
/// Documented in `app --help` and docs/guide.md; keep the numbers stable. Returned by the
/// master, the inline process, a script and each worker (the master reads a worker's code:
/// 2 delays its respawn by 30 s). Which code a failed stage gives is the `failure` column
/// of the stage table (stage.hpp).
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
  interrupted = 130,       ///< a second SIGINT stopped the process at once
};

/// The number to return from main(). Any process.
constexpr int to_int(exit_code c) noexcept { return static_cast<int>(c); }

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

/// Thrown by the runtime when the machine is short of something it needs at start
/// (descriptors, memory, disk space, processes): exit code 1, a runtime failure a service
/// manager restarts, not 2. Any process.
class resource_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Whether `err` (an errno) says the machine is short of a resource rather than that the
/// request was wrong: EMFILE, ENFILE, ENOSPC, EDQUOT, ENOMEM, ENOBUFS, EAGAIN. Any process.
bool is_resource_shortage(int err) noexcept;

/// Throws resource_error when is_resource_shortage(err), else config_error; `what` is the
/// whole message. Any process.
[[noreturn]] void throw_start_error(const std::string& what, int err);

/// The exit code of a start that failed with `e`: 2 for a config_error (bad option or
/// configuration), 1 for anything else (a resource shortage, a system failure). Any process.
exit_code start_failure_code(const std::exception& e) noexcept;

}  // namespace systempp
