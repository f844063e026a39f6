#include "systempp/master/connection_handover.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include <spdlog/spdlog.h>

#include "systempp/fd.hpp"
#include "systempp/worker/worker_runtime.hpp"

namespace systempp::master {

void connection_handover::update(const std::vector<serving_process>& serving) {
  if (!slots_.enabled() || serving.empty()) return stop();
  serving_ = serving;  // the processes change at every step of a rollout; the slots rarely
  int count = 0;
  for (std::size_t i = 0; i < listeners_.size(); ++i) count = std::max(count, slots_.count(i));
  std::vector<int> unserved;
  std::size_t next = 0;
  for (int slot = 0; slot < count; ++slot) {
    while (next < serving.size() && serving[next].slot < slot) ++next;
    if (next == serving.size() || serving[next].slot != slot) unserved.push_back(slot);
  }
  if (unserved == unserved_ && !watched_.empty() == !unserved.empty()) return;
  unserved_ = unserved;
  std::map<int, std::pair<std::size_t, int>> want;
  for (std::size_t i = 0; i < listeners_.size(); ++i)
    for (int slot : unserved)
      if (slot < slots_.count(i)) want[slots_.socket_of(listeners_, i, slot)] = {i, slot};
  for (auto it = watched_.begin(); it != watched_.end();)
    if (!want.count(it->first)) {
      table_.unwatch(it->first);
      it = watched_.erase(it);
    } else {
      ++it;
    }
  for (const auto& [fd, where] : want) {
    if (watched_.count(fd)) continue;
    table_.watch(fd, [this, fd, where] { take_queued(where.first, where.second, fd); });
    watched_[fd] = where;
  }
}

void connection_handover::stop() noexcept {
  for (const auto& [fd, where] : watched_) table_.unwatch(fd);
  watched_.clear();
  serving_.clear();
  unserved_.clear();
}

// Everything the socket has now, each to the next serving process that takes it.
void connection_handover::take_queued(std::size_t listener, int slot, int fd) {
  const std::string message = worker::msg_connection + listeners_[listener].name + '\n';
  int handed = 0;
  int lost = 0;
  for (;;) {
    unique_fd c(::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!c) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) log_.warn("handing over slot {}'s queue: accept: {}", slot, std::strerror(errno));
      break;
    }
    bool sent = false;
    for (std::size_t tries = 0; tries < serving_.size() && !sent; ++tries)
      sent = table_.send_with_fd(serving_[next_++ % serving_.size()].pid, message, c.get());
    sent ? ++handed : ++lost;
  }
  handed_ += static_cast<std::uint64_t>(handed);
  if (handed)
    log_.info("handed {} connection(s) queued on slot {} of {} to serving workers", handed, slot, listeners_[listener].name);
  if (lost) log_.warn("{} connection(s) queued on slot {} of {} closed: no serving worker took them", lost, slot,
                      listeners_[listener].name);
}

}  // namespace systempp::master
