// Naming and finding control blocks: the segment names in /dev/shm are the registry of
// running pools (one scan serves the stale-segment cleanup, the second-master refusal and
// the control commands' --name and --pidfile look-ups).

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <filesystem>

#include <boost/interprocess/shared_memory_object.hpp>

#include "systempp/control_block.hpp"

namespace systempp {

namespace {

constexpr std::string_view name_prefix = "systempp.";
constexpr std::size_t max_pool_name = 64;

bool alive(pid_t pid) noexcept {
  // EPERM: the process exists but belongs to someone else; only ESRCH proves it is gone.
  return !(::kill(pid, 0) == -1 && errno == ESRCH);
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

std::optional<std::string> pool_of_master(pid_t master_pid) {
  std::optional<std::string> found;
  for_each_segment([&](const std::string&, const segment_id& id) {
    if (!found && id.master_pid == master_pid) found = id.pool;
  });
  return found;
}

std::size_t remove_stale_segments(std::string_view pool) {
  check_pool_name(pool);
  std::size_t removed = 0;
  for_each_segment([&](const std::string& file, const segment_id& id) {
    if (id.pool == pool && !alive(id.master_pid) &&
        boost::interprocess::shared_memory_object::remove(file.c_str()))
      ++removed;
  });
  return removed;
}

std::optional<pid_t> find_live_master(std::string_view pool) {
  check_pool_name(pool);
  std::optional<pid_t> found;
  for_each_segment([&](const std::string&, const segment_id& id) {
    if (!found && id.pool == pool && alive(id.master_pid)) found = id.master_pid;
  });
  return found;
}

}  // namespace systempp
