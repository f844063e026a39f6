#include "systempp/accept_waiter.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <system_error>

namespace systempp::detail {

namespace {

constexpr int rotate_every = 16;  // hand-overs between re-registrations, as nginx does
// A worker woken for a connection and then stopped (SIGSTOP, a debugger) before its loop
// accepted keeps that wake-up: nobody else is woken until the next connection. So an idle
// waiter looks at the socket itself this often and takes what waits there.
constexpr int look_every_ms = 200;

bool readable(int fd) noexcept {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

[[noreturn]] void fail(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

void add(int epoll, int fd, std::uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev) != 0) fail("epoll_ctl");
}

void signal_fd(int fd) noexcept {
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);  // an eventfd write only fails on overflow
}

}  // namespace

accept_waiter::accept_waiter(int listen_fd, std::function<void()> ready)
    : listen_fd_(listen_fd),
      ready_(std::move(ready)),
      epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      resume_(::eventfd(0, EFD_CLOEXEC)),
      stop_(::eventfd(0, EFD_CLOEXEC)) {
  if (!epoll_ || !resume_ || !stop_) fail("accept_waiter");
  add(epoll_.get(), listen_fd_, EPOLLIN | EPOLLEXCLUSIVE);
  add(epoll_.get(), stop_.get(), EPOLLIN);
  // Signals stay with the loop's threads: the new thread starts with all of them blocked.
  struct blocked_signals {
    sigset_t previous;
    blocked_signals() {
      sigset_t all;
      ::sigfillset(&all);
      ::pthread_sigmask(SIG_BLOCK, &all, &previous);
    }
    ~blocked_signals() { ::pthread_sigmask(SIG_SETMASK, &previous, nullptr); }
  } during_start;
  thread_ = std::thread([this] { run(); });
}

accept_waiter::~accept_waiter() { stop(); }

void accept_waiter::resume() noexcept { signal_fd(resume_.get()); }

void accept_waiter::stop() noexcept {
  if (!thread_.joinable()) return;
  signal_fd(stop_.get());
  thread_.join();
}

void accept_waiter::run() noexcept {
  for (int handed = 0;;) {
    epoll_event events[2];
    const int n = ::epoll_wait(epoll_.get(), events, 2, look_every_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;  // cannot wait any more; the loop's accepts fail with the socket's error
    bool waiting = n == 0 && readable(listen_fd_);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == stop_.get()) return;
      waiting = true;
    }
    if (!waiting) continue;
    try {
      ready_();
    } catch (...) {
      return;  // nothing to hand over with (out of memory): the other workers accept
    }
    // Until the loop has accepted, this worker is not waiting: the next connection wakes
    // another worker.
    pollfd wait[2] = {{resume_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    while (::poll(wait, 2, -1) < 0 && errno == EINTR) {
    }
    if (wait[1].revents) return;
    std::uint64_t count = 0;
    [[maybe_unused]] auto r = ::read(resume_.get(), &count, sizeof count);
    if (++handed % rotate_every == 0) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLEXCLUSIVE;
      ev.data.fd = listen_fd_;
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listen_fd_, nullptr);
      if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listen_fd_, &ev) != 0) return;
    }
  }
}

}  // namespace systempp::detail
