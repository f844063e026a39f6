#pragma once
/// --user: who the workers run as (and, with --drop-master, the master), and the switch
/// itself. A master started as root binds the listeners and makes the pool's files as root,
/// gives those files to the user, and each worker switches user in its child before it runs
/// anything of the app. docs/operations.md, "Running as another user". Runtime-internal.

#include <sys/types.h>

#include <string>
#include <vector>

namespace systempp {

struct options;

/// A user to run as, looked up once in the launching process: the name service is not
/// safe to call in the forked child of a threaded process, so the child only makes the
/// system calls.
struct user_identity {
  std::string user;   ///< the name in the password database
  std::string group;  ///< the group's name (its number when the group database has none)
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  ///< supplementary groups: the user's in the group database
};

/// Looks up "USER[:GROUP]" (names or numbers; GROUP defaults to the user's primary group).
/// Throws std::invalid_argument naming what is not there: "no user 'bob' on this machine".
/// Any process.
user_identity resolve_user(const std::string& spec);

/// Why these serve options may not start in this process, or "" if they may: running as
/// root with neither --user nor --allow-root, --user root without --allow-root, or a --user
/// other than this process's own without root. The message starts with the option.
std::string run_as_problem(const options& opts);

/// The uid the pool's files (lock, control block, pidfile, log file) belong to: --user's
/// when this process is root, else this process's own.
uid_t pool_owner(const options& opts) noexcept;

/// Gives the file of `fd` to pool_owner(opts) when that is not this process's user (root
/// with --user). Throws config_error naming `what` when the kernel refuses.
void give_to_pool_owner(int fd, const options& opts, const std::string& what);

/// Switches this process to `who` for good: supplementary groups, group, then user, and
/// checks that root cannot be had back. Nothing when it already runs as that user and group
/// (an exec-mode worker, an upgraded master that had switched). The process stays
/// undumpable, as the kernel leaves it. System calls only: safe in the forked child. Throws
/// std::system_error.
void switch_user(const user_identity& who);

}  // namespace systempp
