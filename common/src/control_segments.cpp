// Naming and finding pools: the pool lock says which master runs a pool, the segment
// names in /dev/shm say where its state is (see pool_registry.hpp).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>

#include <boost/interprocess/shared_memory_object.hpp>

#include "systempp/control_block.hpp"
#include "systempp/errors.hpp"
#include "systempp/pool_registry.hpp"

namespace systempp {

namespace {

constexpr std::string_view name_prefix = "systempp.";
constexpr std::size_t max_pool_name = 64;

/// The whole file, for F_SETLK and F_GETLK.
struct flock whole_file(short type) noexcept {
  struct flock l{};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  return l;
}

/// True for a regular file of this user or of `also` (the pool's --user, for a master
/// started as root): anything else is another user's, or a trap.
bool ours(int fd, uid_t also) noexcept {
  struct stat st{};
  return ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_uid == ::geteuid() || st.st_uid == also);
}

/// The owner of the file of `fd`; this process's uid when fstat fails.
uid_t owner_of(int fd) noexcept {
  struct stat st{};
  return ::fstat(fd, &st) == 0 ? st.st_uid : ::geteuid();
}

/// Opens (creating) the lock file as a regular file of this user or of `owner`. Another
/// user's file is removed first when we are root (it cannot be trusted, and must not block
/// a start).
unique_fd open_lock_file(std::string_view pool, uid_t owner) {
  const std::string path = lock_path(pool);
  bool removed = false;
  for (int attempt = 0; attempt < 4; ++attempt) {
    // O_CREAT only when there is no file: with fs.protected_regular, O_CREAT on another
    // user's file in sticky /dev/shm fails even for root, which would then take the lock of
    // a running --user pool for a stranger's and remove it.
    unique_fd fd(::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
    if (!fd && errno == ENOENT) fd.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd && (errno == ENOENT || errno == EEXIST)) continue;  // another master made or removed it meanwhile
    if (fd && ours(fd.get(), owner)) return fd;
    const int err = fd ? EPERM : errno;
    // Another user's lock that a process holds is a running pool (one started with another
    // --user): root removing it would run a second master of the same name.
    if (auto held = whole_file(F_WRLCK); fd && ::fcntl(fd.get(), F_GETLK, &held) == 0 && held.l_type != F_UNLCK)
      throw config_error("--name " + std::string(pool) + ": a pool with this name is already running (master pid " +
                         std::to_string(held.l_pid) +
                         ", its files owned by uid " + std::to_string(owner_of(fd.get())) + ")");
    if (::geteuid() == 0 && !removed && ::unlink(path.c_str()) == 0) {
      removed = true;
      continue;
    }
    struct stat st{};
    if (::lstat(path.c_str(), &st) == 0 && st.st_uid != ::geteuid())
      throw config_error(path + ": belongs to uid " + std::to_string(st.st_uid) +
                         ", not to this user: remove it to run this pool");
    throw_start_error(path + ": cannot open the pool lock: " + std::strerror(err), err);
  }
  throw config_error(path + ": cannot open the pool lock");
}

/// Calls f(file name, id) for each segment in shm_dir, of every pool.
template <class F>
void for_each_segment(F&& f) {
  std::error_code ec;
  std::filesystem::directory_iterator it{std::filesystem::path{shm_dir}, ec};
  for (; !ec && it != std::filesystem::directory_iterator{}; it.increment(ec)) {
    const std::string file = it->path().filename().string();
    if (auto id = parse_segment_name(file)) f(file, *id);
  }
}

}  // namespace

bool valid_pool_name(std::string_view pool) noexcept {
  if (pool.empty() || pool.size() > max_pool_name) return false;
  return std::all_of(pool.begin(), pool.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
  });
}

void check_pool_name(std::string_view pool) {
  if (!valid_pool_name(pool))
    throw control_block_error("control block pool \"" + std::string{pool} +
                              "\": invalid pool name (want [A-Za-z0-9_-]{1,64})");
}

std::string segment_name(std::string_view pool, pid_t master_pid) {
  std::string name{name_prefix};
  name.append(pool).append(".").append(std::to_string(master_pid));
  return name;
}

std::optional<segment_id> parse_segment_name(std::string_view file) {
  if (!file.starts_with(name_prefix)) return std::nullopt;
  file.remove_prefix(name_prefix.size());
  // Pool names cannot contain '.', so the last '.' separates the pid.
  const auto dot = file.rfind('.');
  if (dot == std::string_view::npos) return std::nullopt;
  segment_id id{std::string(file.substr(0, dot)), 0};
  const auto digits = file.substr(dot + 1);
  const auto* end = digits.data() + digits.size();
  auto [ptr, ec] = std::from_chars(digits.data(), end, id.master_pid);
  // pid <= 0 would make kill() address a process group: never treat it as a pid.
  if (ec != std::errc{} || ptr != end || id.master_pid <= 0 || !valid_pool_name(id.pool)) return std::nullopt;
  return id;
}

std::string lock_path(std::string_view pool) {
  std::string path{shm_dir};
  path.append("systempp-lock.").append(pool);
  return path;
}

pool_lock pool_lock::acquire(std::string_view pool, uid_t owner) {
  check_pool_name(pool);
  const std::string path = lock_path(pool);
  unique_fd fd = open_lock_file(pool, owner);
  auto l = whole_file(F_WRLCK);
  if (::fcntl(fd.get(), F_SETLK, &l) == 0) {
    if (owner != ::geteuid() && ::fchown(fd.get(), owner, static_cast<gid_t>(-1)) != 0)
      throw config_error(path + ": cannot give the pool lock to uid " + std::to_string(owner) + ": " +
                         std::strerror(errno));
    return pool_lock(std::move(fd));
  }
  if (const int err = errno; err != EAGAIN && err != EACCES)
    throw_start_error(path + ": cannot lock: " + std::strerror(err), err);
  auto holder = whole_file(F_WRLCK);
  const bool known = ::fcntl(fd.get(), F_GETLK, &holder) == 0 && holder.l_type != F_UNLCK;
  throw config_error("--name " + std::string(pool) + ": a pool with this name is already running" +
                     (known ? " (master pid " + std::to_string(holder.l_pid) + ")" : std::string()));
}

pool_lock pool_lock::adopt(int fd) noexcept { return pool_lock(unique_fd(fd)); }

std::optional<pid_t> find_live_master(std::string_view pool) {
  check_pool_name(pool);
  unique_fd fd(::open(lock_path(pool).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  // Root reads any user's pool (any regular file; ours() with our uid as the other one).
  if (!fd || !ours(fd.get(), ::geteuid() == 0 ? owner_of(fd.get()) : ::geteuid())) return std::nullopt;
  auto holder = whole_file(F_WRLCK);
  if (::fcntl(fd.get(), F_GETLK, &holder) != 0 || holder.l_type == F_UNLCK || holder.l_pid <= 0)
    return std::nullopt;
  return holder.l_pid;
}

std::optional<std::string> pool_of_master(pid_t master_pid) {
  std::optional<std::string> found;
  for_each_segment([&](const std::string&, const segment_id& id) {
    if (!found && id.master_pid == master_pid) found = id.pool;
  });
  return found;
}

std::optional<uid_t> pool_files_owner(std::string_view pool) {
  check_pool_name(pool);
  struct stat st{};
  if (::lstat(lock_path(pool).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return st.st_uid;
}

uid_t readable_owner(std::string_view pool) {
  return ::geteuid() == 0 ? pool_files_owner(pool).value_or(0) : ::geteuid();
}

std::size_t remove_stale_segments(std::string_view pool, pid_t keep, uid_t owner) {
  check_pool_name(pool);
  if (keep == 0) keep = find_live_master(pool).value_or(0);
  std::size_t removed = 0;
  for_each_segment([&](const std::string& file, const segment_id& id) {
    if (id.pool != pool || id.master_pid == keep) return;
    unique_fd fd(::open((std::string(shm_dir) + file).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (fd && ours(fd.get(), owner) && boost::interprocess::shared_memory_object::remove(file.c_str())) ++removed;
  });
  return removed;
}

}  // namespace systempp
