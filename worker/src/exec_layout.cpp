// Exec mode's hand-over: the writing side runs in the master's forked child, the reading
// side in the exec'd worker image. The layout is described in exec_layout.hpp.

#include "systempp/worker/exec_layout.hpp"

#include <fcntl.h>
#include <linux/close_range.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "systempp/fd.hpp"
#include "systempp/protocol.hpp"

namespace systempp::worker {

namespace {

// Above any fd the layout uses, so parking the sources there frees 3.. for the dup2s.
constexpr int park_floor = 100;

// Puts sources[i] on fd exec_control_fd + i and marks every fd above them close-on-exec.
bool move_to_layout(const std::vector<int>& sources) {
  // First every source to a high number, so no dup2 below overwrites a source still needed.
  std::vector<int> parked;
  for (int fd : sources) {
    const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, park_floor);
    if (copy < 0) return false;
    parked.push_back(copy);
  }
  for (std::size_t i = 0; i < parked.size(); ++i)
    if (::dup2(parked[i], exec_control_fd + static_cast<int>(i)) < 0) return false;
  ::close_range(static_cast<unsigned>(exec_control_fd + static_cast<int>(parked.size())), ~0U,
                CLOSE_RANGE_CLOEXEC);
  return true;
}

}  // namespace

int exec_worker_image(const std::string& path, const std::vector<std::string>& argv, int control_fd,
                      int channel_fd, const std::vector<listener>& listeners,
                      const exec_identity& id) noexcept {
  try {
    std::vector<int> sources{control_fd, channel_fd};
    std::string names;
    for (const auto& l : listeners) {
      sources.push_back(l.fd.get());
      names += (names.empty() ? "" : ",") + l.name;
    }
    if (!move_to_layout(sources)) return exec_failed;
    ::setenv(exec_env_worker,
             fmt::format("{}:{}:{}:{}", id.slot, id.lane, id.generation, id.master_pid).c_str(), 1);
    ::setenv(exec_env_listeners, names.c_str(), 1);
    ::setenv(protocol_env, std::to_string(protocol_version).c_str(), 1);
    const int error = exec_image(path, argv);
    std::fprintf(stderr, "worker[%d]: exec %s: %s\n", id.slot, path.c_str(), std::strerror(error));
  } catch (...) {  // out of memory in the child: it cannot exec either
  }
  return exec_failed;
}

bool is_exec_worker() noexcept { return std::getenv(exec_env_worker) != nullptr; }

exec_handover read_exec_handover() {
  // The number first: a layout of another protocol is never read.
  const char* protocol = std::getenv(protocol_env);
  if (!protocol || std::to_string(protocol_version) != protocol)
    throw std::runtime_error(fmt::format("the master speaks systempp protocol {}, this binary {}: restart the pool "
                                         "to run this binary",
                                         protocol ? protocol : "0 (unversioned)", protocol_version));
  const char* worker = std::getenv(exec_env_worker);
  int slot = 0, lane = 0, master = 0;
  unsigned gen = 0;
  if (!worker || std::sscanf(worker, "%d:%d:%u:%d", &slot, &lane, &gen, &master) != 4)
    throw std::runtime_error(std::string(exec_env_worker) + " is malformed");
  exec_handover h;
  h.id = {slot, lane, gen, master};
  const char* names_env = std::getenv(exec_env_listeners);
  std::istringstream names(names_env ? names_env : "");
  int fd = exec_first_listener_fd;
  for (std::string name; std::getline(names, name, ',');)
    h.listeners.push_back(adopt_listener(unique_fd(fd++), name));
  ::unsetenv(exec_env_worker);
  ::unsetenv(exec_env_listeners);
  ::unsetenv(protocol_env);
  return h;
}

}  // namespace systempp::worker
