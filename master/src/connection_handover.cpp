#include "systempp/master/connection_handover.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "systempp/worker/worker_runtime.hpp"

namespace systempp::master {

namespace {
constexpr int batch = 64;  // connections taken per wake-up before the loop sees to the rest
constexpr auto retry_after = std::chrono::milliseconds(100);
}  // namespace

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
  if (unserved == unserved_) return;
  unserved_ = std::move(unserved);
  if (paused_) return;  // the retry watches them
  try {
    watch_unserved();
  } catch (...) {
    unserved_.clear();  // so that the next update tries again
    throw;
  }
}

void connection_handover::watch_unserved() {
  std::map<int, std::pair<std::size_t, int>> want;
  for (std::size_t i = 0; i < listeners_.size(); ++i)
    for (int slot : unserved_)
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
  held_.reset();
  paused_ = false;
  retry_.cancel();
}

bool connection_handover::pass_on() {
  const std::string message = fmt::format("{}{}\n", worker::msg_connection, held_->listener);
  for (std::size_t tries = 0; tries < serving_.size(); ++tries)
    if (table_.send_with_fd(serving_[next_++ % serving_.size()].pid, message, held_->fd.get())) {
      held_.reset();  // the worker has its own copy now
      return true;
    }
  return false;
}

void connection_handover::take_queued(std::size_t listener, int slot, int fd) {
  int handed = 0;
  std::string stalled;
  for (int i = 0; i < batch && stalled.empty(); ++i) {
    unique_fd c(::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!c) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) stalled = fmt::format("accept: {}", std::strerror(errno));
      break;
    }
    held_ = held_connection{std::move(c), listener};
    if (pass_on()) ++handed;
    else stalled = "no serving worker took a connection";
  }
  if (handed)
    log_->info("handed {} connection(s) queued on slot {} of {} to serving workers", handed, slot, listeners_[listener].name);
  if (!stalled.empty()) pause(fmt::format("slot {} of {}: {}", slot, listeners_[listener].name, stalled));
}

void connection_handover::pause(std::string why) {
  if (!paused_) log_->warn("handing over queued connections paused: {}; trying again every {} ms", why, retry_after.count());
  paused_ = true;
  for (const auto& [fd, where] : watched_) table_.unwatch(fd);
  watched_.clear();
  retry_.expires_after(retry_after);
  retry_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;  // stopped
    if (held_ && !pass_on()) return pause("still no serving worker takes it");
    paused_ = false;
    log_->info("handing over queued connections again");
    try {
      watch_unserved();
    } catch (const std::exception& e) {
      pause(e.what());
    }
  });
}

}  // namespace systempp::master
