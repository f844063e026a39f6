#pragma once
/// Which pools run on this machine, and which process is each one's master.
///
/// A pool is running while its master holds the pool's lock: a POSIX record lock on
/// /dev/shm/systempp-lock.<pool>, taken before anything else at start and held for the
/// master's whole life. Such a lock is not inherited by forked workers, survives the
/// master's in-place exec (the upgrade hands the fd over), goes away with the process
/// whatever kills it, and names its holder (F_GETLK), so a control command signals a pid
/// only when that pid holds the pool's lock. The control blocks,
/// /dev/shm/systempp.<pool>.<master pid>, hold state; a block whose pid does not hold the
/// lock is stale, whatever that pid is now. Files of another user are never trusted, with
/// two exceptions: a master started as root with --user gives the pool's files to that user
/// (its workers and the user's control commands open them), and trusts them as its own at
/// the next start; and root's control commands read the pool of any user, since what they
/// signal is the pid the kernel names as the lock's holder.

#include <sys/types.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <string_view>

#include "systempp/fd.hpp"

namespace systempp {

/// Where Linux shows POSIX shared memory: Boost's shm_open names are files here.
inline constexpr std::string_view shm_dir = "/dev/shm/";

/// The lock a master holds for its whole life. Master only.
class pool_lock {
 public:
  /// Takes the lock of `pool` at once or throws config_error: "a pool with this name is
  /// already running (master pid N)". The file belongs to `owner` (privileges.hpp,
  /// pool_owner), given to it when that is not this process's user. A lock file of another
  /// user than these two is removed first when running as root, and refused otherwise (it
  /// names the owner).
  static pool_lock acquire(std::string_view pool, uid_t owner = ::geteuid());
  /// The lock fd a previous image of this process handed over (upgrade): already held.
  static pool_lock adopt(int fd) noexcept;

  /// The lock file's fd (close-on-exec; an upgrade clears that to hand it over).
  int fd() const noexcept { return fd_.get(); }

 private:
  explicit pool_lock(unique_fd fd) noexcept : fd_(std::move(fd)) {}
  unique_fd fd_;
};

/// "/dev/shm/systempp-lock.<pool>". Does not validate the pool name. Runs anywhere.
std::string lock_path(std::string_view pool);

/// The pid holding the pool's lock: its running master. Nothing when no process holds it,
/// or the lock file belongs to another user (for root: any user's lock counts). A process asking about a lock it holds itself
/// gets nothing (F_GETLK ignores one's own locks). Runs anywhere. Throws
/// control_block_error for an invalid pool name.
std::optional<pid_t> find_live_master(std::string_view pool);

/// The owner of the pool's lock file, if there is one: whose the pool's files are. Runs
/// anywhere.
std::optional<uid_t> pool_files_owner(std::string_view pool);
/// The owner this process requires of the pool's control block: itself, or for root
/// whoever owns the pool's lock file (root reads any user's pool). Runs anywhere.
uid_t readable_owner(std::string_view pool);

/// What a segment's name says: "systempp.<pool>.<master pid>".
struct segment_id {
  std::string pool;
  pid_t master_pid = 0;
};

/// Splits a file name in shm_dir; nullopt for anything that is not a segment name with a
/// valid pool name and a pid > 0. Runs anywhere.
std::optional<segment_id> parse_segment_name(std::string_view file);

/// The pool whose segment is named after `master_pid` (a pidfile's pid), if any. Runs
/// anywhere; confirm with find_live_master before trusting it.
std::optional<std::string> pool_of_master(pid_t master_pid);

/// `keep` for remove_stale_segments: a master holding the lock before it created its block.
inline constexpr pid_t keep_none = -1;

/// Removes the segments of `pool` that belong to this user or to `owner`, except the one of `keep` (0 asks
/// find_live_master for the lock holder; keep_none keeps none, for a master that holds the
/// lock and has no block yet, since even a block named after its own pid is then stale: a
/// container's pid 1, killed and started again); returns how many. Throws
/// control_block_error for an invalid pool name.
std::size_t remove_stale_segments(std::string_view pool, pid_t keep = 0, uid_t owner = ::geteuid());

}  // namespace systempp
