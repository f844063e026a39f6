#pragma once
/// Linux /proc and /dev/shm probes for integration tests: who is alive, who are whose
/// children, how many fds a process holds, which shared-memory segments exist.
///
/// All of these are snapshots of a moving system. Wrap them in support::wait_until with a
/// deadline when the state is expected to change (a worker exiting, a reload finishing).

#include <sys/types.h>

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace support {

/// The fields of /proc/<pid>/stat that tests look at.
struct proc_stat {
  pid_t pid = 0;
  std::string comm;  ///< the name between the parentheses (may contain spaces)
  char state = '?';  ///< R, S, D, Z, T, ...
  pid_t ppid = 0;
  pid_t pgrp = 0;
  pid_t session = 0;
};

/// Reads /proc/<pid>/stat; nullopt if the process does not exist (any more).
std::optional<proc_stat> read_stat(pid_t pid);

/// True if the process exists and is not a zombie: an exited but unreaped worker is dead.
bool pid_alive(pid_t pid);

/// Live (non-zombie) processes whose parent is `parent`, sorted by pid.
std::vector<pid_t> children_of(pid_t parent);
/// Zombie processes whose parent is `parent`, sorted by pid: a parent that fails to reap.
std::vector<pid_t> zombie_children_of(pid_t parent);
/// Live (non-zombie) members of process group `pgid`, sorted by pid (a master and its workers).
std::vector<pid_t> group_members(pid_t pgid);

/// Number of open fds of the process (entries of /proc/<pid>/fd; when pid is this process, the
/// directory handle used to count them is left out). Throws std::system_error if the directory
/// cannot be read, e.g. the process is gone: a count of 0 would hide that.
std::size_t count_fds(pid_t pid);
/// fd -> link target ("socket:[1234]", "/dev/shm/x", "pipe:[5]") for telling which fd leaked.
/// Throws like count_fds.
std::map<int, std::string> fd_targets(pid_t pid);

/// Names (without the /dev/shm/ directory) of shared-memory segments starting with prefix,
/// sorted; empty if /dev/shm does not exist.
std::vector<std::string> shm_segments(std::string_view prefix);

}  // namespace support
