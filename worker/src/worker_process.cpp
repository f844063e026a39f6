// The worker process: one cycle of stages, READY and heartbeat in its control-block
// record, and a drain on DRAIN, SIGTERM or the master's death.

#include "worker_process.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <csignal>

#include "systempp/log.hpp"
#include "systempp/process_title.hpp"
#include "systempp/signal_table.hpp"

namespace systempp::worker {

namespace asio = boost::asio;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

void set_state(worker_slot& r, worker_state s) {
  slot_update u(r);
  r.state.store(s, std::memory_order_release);
}

// Four beats per --heartbeat-timeout, so one late beat is not yet a missed heartbeat.
std::chrono::milliseconds beat_interval(const options& opts) {
  return std::clamp(opts.heartbeat_timeout / 4, std::chrono::milliseconds(50),
                    std::chrono::milliseconds(1000));
}

// Resident memory of this process in bytes: the second field of /proc/self/statm, in
// pages. 0 when it cannot be read.
std::uint64_t resident_bytes() noexcept {
  unique_fd fd(::open("/proc/self/statm", O_RDONLY | O_CLOEXEC));
  char text[128];
  const ssize_t n = fd ? ::read(fd.get(), text, sizeof text - 1) : -1;
  if (n <= 0) return 0;
  text[n] = '\0';
  unsigned long long size = 0, resident = 0;
  if (std::sscanf(text, "%llu %llu", &size, &resident) != 2) return 0;
  static const long page = ::sysconf(_SC_PAGESIZE);
  return resident * static_cast<std::uint64_t>(page > 0 ? page : 4096);
}

std::uint64_t mib(std::uint64_t bytes) noexcept { return bytes >> 20; }

// --max-requests with jitter: this worker's share, so the pool does not recycle in step.
std::uint64_t request_limit(const options& opts) {
  if (opts.max_requests == 0) return 0;
  std::uint64_t limit = opts.max_requests;
  if (opts.max_requests_jitter > 0)
    limit += static_cast<std::uint64_t>(::getpid()) * 2654435761u % (opts.max_requests_jitter + 1);
  return limit;
}

}  // namespace

void slot_observer::publish(std::size_t unit, stage s) {
  slot_update u(r_);
  r_.unit.store(static_cast<std::uint32_t>(unit), std::memory_order_relaxed);
  r_.stage.store(static_cast<std::uint32_t>(s), std::memory_order_relaxed);
}

void slot_observer::stage_begin(std::size_t unit, stage s) {
  running_.push_back(unit);
  if (!failed_) publish(unit, s);  // else keep naming the stage that failed, for the master's log
}

void slot_observer::stage_end(std::size_t unit, stage s, std::chrono::microseconds took,
                              stage_outcome outcome) {
  if (unit < worker_slot::max_units) {
    const auto us = std::min<std::int64_t>(took.count(), UINT32_MAX);
    r_.stage_us[unit][static_cast<std::size_t>(s) % max_stages].store(static_cast<std::uint32_t>(us),
                                                        std::memory_order_relaxed);
  }
  std::erase(running_, unit);
  if (failed_) return;
  // Units of one level run concurrently: the record names the one that failed first, or
  // else one still running (the one to blame if the stage hangs).
  if (outcome != stage_outcome::ok && lc_.stops_at_failure(s)) {
    failed_ = true;
    publish(unit, s);
  } else if (!running_.empty()) {
    publish(running_.front(), s);
  }
}

bool worker_process::guard_parent(pid_t master_pid) noexcept {
  // The kernel sends SIGTERM when the parent goes, and a master that died before prctl
  // took effect is caught by the getppid() check.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  return ::getppid() == master_pid;
}

void worker_process::ignore_pool_signals() noexcept { ignore_signals(signal_role::worker); }

worker_process::worker_process(launch& l)
    : opts_(*l.opts),
      record_(*l.record),
      own_io_(l.io ? std::nullopt : std::make_optional<boost::asio::io_context>()),
      io_(l.io ? *l.io : *own_io_),
      signals_(io_),
      channel_(io_, l.channel.release()),
      lifecycle_(*l.units),
      observer_(record_, lifecycle_),
      ctx_(process_role::worker, opts_,
           make_logger(fmt::format("worker[{}] g{}", l.slot, l.generation), opts_), io_,
           *l.listeners, lifecycle_.refs()),
      beat_(io_),
      beat_every_(beat_interval(opts_)),
      request_limit_(request_limit(opts_)) {
  listen(signals_, signal_role::worker);
  // Only now: a signal that came since fork stayed pending and reaches the set.
  ::pthread_sigmask(SIG_SETMASK, &l.restore_mask, nullptr);
  lifecycle_.run_only(l.dedicated_unit);
  lifecycle_.set_timeout(opts_.stage_timeout);
  lifecycle_.set_observer(&observer_);
  ctx_.set_process(process_role::worker, l.slot, l.generation, ::getpid());
  ctx_.set_config_source(l.units->config);
  // The units' metrics now count in this worker's record, which the master sums.
  l.units->metrics.bind(record_.app_values);
  record_.metrics_digest.store(l.units->metrics.digest);
  ctx_.set_slot_record(&record_);
  // `ps`: "PROG: worker 2 gen 3 [kvd]", a dedicated process by its unit's name.
  role_ = l.dedicated_unit ? lifecycle_.unit_names()[*l.dedicated_unit] : fmt::format("worker {}", l.slot);
  title_ = fmt::format("{} gen {} [{}]", role_, l.generation, opts_.name);
  detail::set_process_title(title_, role_);
  pin_to_cpu(l.slot);
  // From any thread: one write of the whole message, which the master reads up to '\n'.
  ctx_.set_requester([fd = channel_.native_handle()](control_request what, std::string reason) {
    std::string message(1, what == control_request::reload ? msg_reload_request : msg_stop_request);
    message += reason.substr(0, max_request_reason) + '\n';
    [[maybe_unused]] auto n = ::send(fd, message.data(), message.size(), MSG_NOSIGNAL);
  });
  set_state(record_, worker_state::starting);
}

int worker_process::run() {
  cycle_hooks hooks;
  hooks.on_ready = [this] { report_ready(); };
  hooks.serve = [this] { return serve(); };
  hooks.on_drain = [this] { begin_drain(); };
  hooks.on_loop_stopped = [this] { beat_.cancel(); };
  start_heartbeat();
  return publish_exit(run_cycle(lifecycle_, ctx_, hooks));
}

// On the loop, so a blocked loop stops beating and the master notices.
void worker_process::start_heartbeat() { asio::co_spawn(ctx_.executor(), heartbeat(), asio::detached); }

asio::awaitable<void> worker_process::heartbeat() {
  for (;;) {
    record_.heartbeat_ms.store(monotonic_ms(), std::memory_order_relaxed);
    record_.rss_bytes.store(resident_bytes(), std::memory_order_relaxed);
    ask_recycle_if_due();
    beat_.expires_after(beat_every_);
    auto [ec] = co_await beat_.async_wait(use_tuple);
    if (ec) co_return;
  }
}

// The master starts a replacement, then drains this one: asked once, and only while
// serving (the master replaces READY workers only).
void worker_process::ask_recycle_if_due() {
  // The master may decline (its rollout is in progress, the slot is being replaced): the
  // worker asks again every 10 s while it still serves, and says so only the first time.
  constexpr std::uint64_t ask_again_ms = 10'000;
  const std::uint64_t now = monotonic_ms();
  if ((asked_ms_ && now - asked_ms_ < ask_again_ms) || ctx_.draining() ||
      record_.state.load(std::memory_order_acquire) != worker_state::ready)
    return;
  const bool again = asked_ms_ != 0;
  if (request_limit_ && record_.requests.load(std::memory_order_relaxed) >= request_limit_) {
    asked_ms_ = now;
    send(msg_recycle);
    if (!again) ctx_.log().info("served {} requests: asking to be recycled", request_limit_);
    return;
  }
  const std::uint64_t rss = record_.rss_bytes.load(std::memory_order_relaxed);
  if (!opts_.max_rss_bytes || rss <= opts_.max_rss_bytes ||
      rss_at_ready_.load(std::memory_order_relaxed) > opts_.max_rss_bytes)
    return;
  asked_ms_ = now;
  send(msg_recycle_memory);
  if (!again)
    ctx_.log().warn("resident memory {} MiB is over --max-rss {} MiB: asking to be recycled", mib(rss),
                    mib(opts_.max_rss_bytes));
}

void worker_process::report_ready() {
  record_.ready_ms.store(monotonic_ms(), std::memory_order_relaxed);
  // Before READY is published: the heartbeat (another thread with --threads) reads it once
  // it sees READY. A worker over the limit from the start would be replaced by one just as
  // big, in a loop.
  const std::uint64_t rss = resident_bytes();
  rss_at_ready_.store(rss, std::memory_order_relaxed);
  {
    slot_update u(record_);  // serving: no unit is inside a stage
    record_.stage.store(no_stage, std::memory_order_relaxed);
    record_.unit.store(no_unit, std::memory_order_relaxed);
    record_.state.store(worker_state::ready, std::memory_order_release);
  }
  send(msg_ready);
  ctx_.log().info("ready");
  if (opts_.max_rss_bytes && rss > opts_.max_rss_bytes)
    ctx_.log().warn("resident memory is {} MiB at READY, already over --max-rss {} MiB: this worker is not "
                    "recycled for its memory (raise --max-rss)", mib(rss), mib(opts_.max_rss_bytes));
}

// Until the master says drain (or dies: EOF on the channel), or a drain/fast-stop signal.
asio::awaitable<void> worker_process::serve() {
  using namespace asio::experimental::awaitable_operators;
  co_await (read_master() || read_signals());
  if (fast_) {
    ctx_.log().info("fast stop");
    ctx_.log().flush();
    ::_exit(0);
  }
}

asio::awaitable<void> worker_process::read_master() {
  for (;;) {
    auto [ec, byte] = co_await next_message();
    if (ec == asio::error::operation_aborted) co_return;  // a signal came first
    if (ec) {
      ctx_.log().warn("the master is gone: draining");
      co_return;
    }
    if (byte == msg_drain) co_return;
    if (byte == msg_quit) {
      fast_ = true;
      co_return;
    }
  }
}

asio::awaitable<void> worker_process::read_signals() {
  for (;;) {
    auto [ec, sig] = co_await signals_.async_wait(use_tuple);
    if (ec) co_return;
    const auto effect = effect_of(signal_role::worker, sig);
    if (effect == signal_effect::reopen_logs) {
      ctx_.reopen_log();
      continue;
    }
    fast_ = effect == signal_effect::fast_stop;
    co_return;
  }
}

// --cpu-affinity: slot k on the (k mod n)-th CPU of the list, so a reload or a respawn
// puts the slot's next worker on the same CPU.
void worker_process::pin_to_cpu(int slot) {
  const auto cpus = cpu_affinity_cpus(opts_.cpu_affinity);  // checked when parsed
  if (cpus.empty()) return;
  const int cpu = cpus[static_cast<std::size_t>(slot) % cpus.size()];
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0)
    ctx_.log().warn("--cpu-affinity: cannot pin to CPU {}: {}", cpu, std::strerror(errno));
  else
    ctx_.log().info("pinned to CPU {}", cpu);
}

void worker_process::begin_drain() {
  set_state(record_, worker_state::draining);
  detail::set_process_title(title_ + " draining", role_);
  // While draining, a fast stop (SIGQUIT or the master's QUIT) still ends it at once.
  asio::co_spawn(ctx_.executor(), exit_on_fast_stop_signal(), asio::detached);
  asio::co_spawn(ctx_.executor(), exit_on_fast_stop_message(), asio::detached);
  // A kernel-enforced deadline: even a wedged loop cannot outlive the drain for long.
  ::alarm(static_cast<unsigned>(std::ceil(opts_.graceful_timeout.count() / 1000.0)) + 1);
  ctx_.log().info("draining");
}

asio::awaitable<void> worker_process::exit_on_fast_stop_signal() {
  for (;;) {
    auto [ec, sig] = co_await signals_.async_wait(use_tuple);
    if (ec) co_return;
    if (effect_of(signal_role::worker, sig) == signal_effect::fast_stop) ::_exit(0);
  }
}

asio::awaitable<void> worker_process::exit_on_fast_stop_message() {
  for (;;) {
    auto [ec, byte] = co_await next_message();
    if (ec) co_return;
    if (byte == msg_quit) ::_exit(0);
  }
}

// The next byte from the master. A connection it hands over (msg_connection with the
// socket attached, then its listener's index and '\n') is passed on here, also while the
// worker drains: it was accepted, so it is answered. An error at EOF (the master is gone)
// or when the wait is cancelled.
asio::awaitable<std::pair<boost::system::error_code, char>> worker_process::next_message() {
  for (;;) {
    while (!inbox_.empty()) {
      if (inbox_[0] != msg_connection) {
        const char byte = inbox_[0];
        inbox_.erase(0, 1);
        co_return std::pair{boost::system::error_code{}, byte};
      }
      const auto end = inbox_.find('\n');
      if (end == std::string::npos) break;  // its listener's index is still coming
      const std::string index = inbox_.substr(1, end - 1);
      inbox_.erase(0, end + 1);
      hand_over(index);
    }
    auto [ec] = co_await channel_.async_wait(asio::posix::descriptor_base::wait_read, use_tuple);
    if (ec) co_return std::pair{ec, char{0}};
    char bytes[512];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    iovec iov{bytes, sizeof bytes};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const auto n = ::recvmsg(channel_.native_handle(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n == 0) co_return std::pair{boost::system::error_code(asio::error::eof), char{0}};
    if (n < 0) co_return std::pair{boost::system::error_code(errno, boost::system::system_category()), char{0}};
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
        for (std::size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); ++i) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
          handed_.emplace_back(fd);
        }
    inbox_.append(bytes, static_cast<std::size_t>(n));
  }
}

// On the runtime's strand, where the acceptors register.
void worker_process::hand_over(const std::string& index) {
  if (handed_.empty()) return;  // a message without its socket: nothing to serve
  unique_fd fd = std::move(handed_.front());
  handed_.pop_front();
  const auto& listeners = ctx_.listeners();
  std::size_t i = listeners.size();
  std::from_chars(index.data(), index.data() + index.size(), i);
  if (i >= listeners.size()) return ctx_.log().warn("a connection handed over for listener #{}, which this worker has not: closed", index);
  asio::post(ctx_.executor(), [this, name = listeners[i].name, fd = std::move(fd)]() mutable {
    if (!ctx_.take_connection(name, std::move(fd)))
      ctx_.log().warn("a connection handed over for listener {} found no acceptor here: closed", name);
  });
}

int worker_process::publish_exit(const cycle_result& result) {
  {
    slot_update u(record_);
    if (result.code == exit_code::ok) {  // a failure keeps its unit and stage for the master
      record_.stage.store(no_stage, std::memory_order_relaxed);
      record_.unit.store(no_unit, std::memory_order_relaxed);
    }
    record_.state.store(worker_state::exited, std::memory_order_release);
  }
  if (result.code != exit_code::ok) ctx_.log().error("worker failed: {}", result.error);
  ctx_.log().info("exit {}", to_int(result.code));
  ctx_.log().flush();
  return to_int(result.code);
}

// The byte only wakes the master; a full or closed channel loses nothing the record lacks.
void worker_process::send(char byte) noexcept {
  [[maybe_unused]] auto n = ::write(channel_.native_handle(), &byte, 1);
}

}  // namespace systempp::worker
