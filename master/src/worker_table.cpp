// The master's table of worker processes: spawn, channel, reap. Decisions are elsewhere
// (supervisor_policy); this file only carries them out on processes and records.

#include "systempp/master/worker_table.hpp"

#include "systempp/master/app_metrics.hpp"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <fmt/format.h>

#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "systempp/stage.hpp"
#include "systempp/worker/worker_runtime.hpp"

namespace systempp::master {

namespace asio = boost::asio;

namespace {
// In the channels' epoll, a channel's data is its worker's pid; a watched socket's is its
// fd with this bit.
constexpr std::uint64_t watched_tag = std::uint64_t{1} << 63;
}  // namespace

// A worker's channel is not an Asio object: the master's loop watches one epoll instance
// that holds every channel (worker_table::channels_), so the loop has a handful of
// descriptors whatever the pool's size, and a forked child, whose Asio reactor re-registers
// all of them (notify_fork), pays for a handful instead of one per worker.
struct worker_channel {
  worker_channel(unique_fd f, int epoll) : fd(std::move(f)), epoll(epoll) {}
  ~worker_channel() {
    if (fd) ::epoll_ctl(epoll, EPOLL_CTL_DEL, fd.get(), nullptr);  // children may hold copies
  }
  worker_channel(const worker_channel&) = delete;
  worker_channel& operator=(const worker_channel&) = delete;
  unique_fd fd;
  int epoll;
  char request = 0;  ///< a request byte whose text is being read, or 0
  std::string text{};  ///< that text so far

  /// Takes one byte read. Returns the message it completes (the byte alone, or a request
  /// with its text), or nothing while a request's text is still coming.
  std::optional<std::pair<char, std::string>> take(char byte) {
    if (request == 0 && byte != worker::msg_reload_request && byte != worker::msg_stop_request)
      return std::pair{byte, std::string()};
    if (request == 0) {
      request = byte;
      text.clear();
      return std::nullopt;
    }
    if (byte != '\n') {
      if (text.size() < worker::max_request_reason) text += byte;
      return std::nullopt;
    }
    return std::pair{std::exchange(request, 0), std::move(text)};
  }
};

worker_handle::worker_handle() noexcept = default;
worker_handle::worker_handle(pid_t p, int s, int l, std::uint32_t g, std::unique_ptr<worker_channel> c) noexcept
    : pid(p), slot(s), lane(l), generation(g), channel(std::move(c)) {}
worker_handle::worker_handle(worker_handle&&) noexcept = default;
worker_handle& worker_handle::operator=(worker_handle&&) noexcept = default;
worker_handle::~worker_handle() = default;
int worker_handle::channel_fd() const noexcept { return channel ? channel->fd.get() : -1; }

std::unique_ptr<worker_channel> worker_table::open_channel(pid_t pid, int fd) {
  auto c = std::make_unique<worker_channel>(unique_fd(fd), channels_.native_handle());
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = static_cast<std::uint64_t>(pid);
  if (::epoll_ctl(channels_.native_handle(), EPOLL_CTL_ADD, fd, &ev) != 0)
    throw std::system_error(errno, std::generic_category(), "epoll_ctl (a worker's channel)");
  return c;
}

bool reaped_worker::clean() const noexcept { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

int reaped_worker::code() const noexcept { return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status); }

std::string reaped_worker::describe() const {
  if (WIFEXITED(status)) return fmt::format("exited with code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* abbrev = ::sigabbrev_np(WTERMSIG(status));
    return fmt::format("killed by signal {} ({}){}", WTERMSIG(status), abbrev ? abbrev : "?",
                       WCOREDUMP(status) ? " (core dumped)" : "");
  }
  return fmt::format("ended with status {}", status);
}

worker_table::worker_table(asio::io_context& io, control_segment& segment, system_calls& sys,
                           std::vector<std::string> unit_names, message_handler on_message)
    : io_(io),
      segment_(segment),
      sys_(sys),
      unit_names_(std::move(unit_names)),
      on_message_(std::move(on_message)),
      channels_(io) {
  const int epoll = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1 (workers' channels)");
  channels_.assign(epoll);
  watch_channels();
}

worker_table::~worker_table() = default;

const worker_handle* worker_table::find(pid_t pid) const {
  auto it = workers_.find(pid);
  return it == workers_.end() ? nullptr : &it->second;
}

std::string worker_table::where(const worker_handle& w) const {
  const worker_slot& r = segment_.record(w.slot, w.lane);
  const auto st = r.stage.load(std::memory_order_relaxed);
  const auto un = r.unit.load(std::memory_order_relaxed);
  std::string text = fmt::format("worker[{}] pid {} g{}", w.slot, w.pid, w.generation);
  if (const auto stage = stage_name(segment_.header(), st); !stage.empty() && un < unit_names_.size())
    text += fmt::format(" (in {} of unit {})", stage, unit_names_[un]);
  return text;
}

pid_t worker_table::spawn(const spawn_action& a, const std::function<void()>& drop_parent_state,
                          const child_main& body) {
  worker_slot& r = segment_.record(a.slot, a.lane);
  r.epoch.fetch_add(1);
  {
    slot_update u(r);
    r.pid.store(0);
    r.generation.store(a.generation);
    r.role.store(a.role);
    r.state.store(worker_state::spawned);
    r.command.store(worker_command::none);
    r.stage.store(no_stage);
    r.unit.store(no_unit);
    r.in_flight.store(0);
    r.requests.store(0);
    r.errors.store(0);
    r.heartbeat_ms.store(0);
    r.ready_ms.store(0);
    r.started_ms.store(monotonic_ms());
    r.metrics_digest.store(0);
    r.rss_bytes.store(0);
    for (auto& v : r.app_values) v.store(0);
  }
  write_health(r, no_unit, {});
  unique_fd master_end, worker_end;
  if (const int err = sys_.channel_pair(master_end, worker_end); err != 0) return -err;

  // The channels' epoll leaves the loop's reactor across the fork. A child's Asio re-registers
  // all the reactor's descriptors in a reactor of its own (notify_fork), which it keeps: with
  // this one among them, each new child's registration walked every channel through every
  // earlier child's copy (the kernel's epoll path checks), O(workers^2) per fork.
  const bool rearm = waiting_;
  const int channels = channels_.release();  // a pending wait ends with operation_aborted
  waiting_ = false;
  const auto rejoin = [&] {
    channels_.assign(channels);
    if (rearm) watch_channels();
  };
  pid_t pid = -1;
  try {
    pid = sys_.fork(
        [&] {
          // The child keeps only its own channel and its own record.
          drop_parent_state();
          std::vector<int> theirs{channels, master_end.release()};
          theirs.reserve(workers_.size() + 2);
          for (auto& [p, w] : workers_) theirs.push_back(w.channel_fd());
          close_all(theirs);
        },
        [&](const sigset_t& mask) {
          r.pid.store(::getpid());
          return body(a, r, std::move(worker_end), mask);
        });
  } catch (...) {
    rejoin();
    throw;
  }
  const int saved = errno;
  try {
    rejoin();
  } catch (...) {
    if (pid > 0) sys_.kill(pid, SIGKILL);  // no worker the master cannot hear; reaped as unknown
    throw;
  }
  errno = saved;
  if (pid < 0) return -errno;
  r.pid.store(pid);
  worker_end.reset();
  workers_.emplace(pid, worker_handle(pid, a.slot, a.lane, a.generation, open_channel(pid, master_end.release())));
  return pid;
}

void worker_table::adopt(pid_t pid, int slot, int lane, std::uint32_t generation, int channel_fd) {
  workers_.emplace(pid, worker_handle(pid, slot, lane, generation, open_channel(pid, channel_fd)));
}

// Whatever the channels have, as their bytes come: a channel at EOF leaves the epoll (the
// worker is gone; SIGCHLD reaps it). A message's handler may reap, and so destroy, any
// channel: each read looks its worker up again. Drained completely before the wait is
// re-armed: the loop's registration is edge-triggered, and a byte that comes later makes a
// new edge.
void worker_table::watch_channels() {
  waiting_ = true;
  channels_.async_wait(asio::posix::descriptor_base::wait_read, [this](boost::system::error_code ec) {
    if (ec) return;  // released for a fork (spawn waits again), or the table is going away
    waiting_ = false;
    epoll_event events[64];
    for (int n = 64; n == 64;) {
      n = ::epoll_wait(channels_.native_handle(), events, 64, 0);
      for (int i = 0; i < n; ++i) {
        const std::uint64_t tag = events[i].data.u64;
        if (!(tag & watched_tag)) {
          read_channel(static_cast<pid_t>(tag));
        } else if (auto it = watched_.find(static_cast<int>(tag & ~watched_tag)); it != watched_.end()) {
          auto readable = it->second;  // it may unwatch itself
          readable();
        }
      }
    }
    watch_channels();
  });
}

void worker_table::watch(int fd, std::function<void()> readable) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = watched_tag | static_cast<std::uint64_t>(fd);
  const bool known = watched_.count(fd) != 0;
  if (::epoll_ctl(channels_.native_handle(), known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0)
    throw std::system_error(errno, std::generic_category(), "epoll_ctl (a watched socket)");
  watched_[fd] = std::move(readable);
}

void worker_table::unwatch(int fd) noexcept {
  if (watched_.erase(fd)) ::epoll_ctl(channels_.native_handle(), EPOLL_CTL_DEL, fd, nullptr);
}

bool worker_table::send_with_fd(pid_t pid, std::string_view bytes, int fd) {
  auto it = workers_.find(pid);
  if (it == workers_.end() || it->second.channel_fd() < 0 || bytes.empty() || bytes.size() > 512) return false;
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  // A message this small (at most 512 bytes) goes into a stream socket whole or not at all:
  // the kernel queues it as one buffer.
  ssize_t n;
  do n = ::sendmsg(it->second.channel_fd(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n > 0;  // the socket went with the first byte
}

void worker_table::read_channel(pid_t pid) {
  for (;;) {
    auto it = workers_.find(pid);
    if (it == workers_.end() || !it->second.channel) return;
    worker_channel& c = *it->second.channel;
    char bytes[64];
    const auto got = ::recv(c.fd.get(), bytes, sizeof bytes, MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (got <= 0) {
      ::epoll_ctl(channels_.native_handle(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
      return;
    }
    std::vector<std::pair<char, std::string>> messages;
    for (ssize_t k = 0; k < got; ++k)
      if (auto m = c.take(bytes[k])) messages.push_back(std::move(*m));
    for (auto& m : messages) on_message_(pid, m.first, m.second);
  }
}

void worker_table::command(pid_t pid, worker_command c, char byte, std::uint64_t drain_deadline_ms) {
  auto it = workers_.find(pid);
  if (it == workers_.end()) return;
  worker_slot& r = record(it->second);
  if (drain_deadline_ms) r.drain_deadline_ms.store(drain_deadline_ms);
  r.command.store(c);
  if (const int fd = it->second.channel_fd(); fd >= 0)
    [[maybe_unused]] auto n = ::send(fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

int worker_table::signal(pid_t pid, int sig) {
  if (!workers_.count(pid)) return ESRCH;
  return sys_.kill(pid, sig);
}

std::optional<reaped_worker> worker_table::reap() {
  for (;;) {
    int status = 0;
    const pid_t pid = sys_.reap_any(status);
    if (pid <= 0) return std::nullopt;
    auto it = workers_.find(pid);
    if (it == workers_.end()) continue;  // not one of ours (e.g. a unit's helper)
    reaped_worker out{std::move(it->second), status};
    workers_.erase(it);
    worker_slot& r = record(out.handle);
    const bool draining = r.command.load() != worker_command::none;
    control_header& hdr = segment_.header();
    hdr.requests_total.fetch_add(r.requests.load());
    hdr.errors_total.fetch_add(r.errors.load());
    if (metrics_) fold_app_metrics(hdr, r, *metrics_);
    r.exit_status.store(status);
    slot_update u(r);
    r.state.store(out.clean() || draining ? worker_state::exited : worker_state::crashed);
    return out;
  }
}

}  // namespace systempp::master
