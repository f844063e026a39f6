#include "systempp/master/pool_setup.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "systempp/errors.hpp"
#include "systempp/fd.hpp"
#include "systempp/privileges.hpp"
#include "systempp/master/systemd.hpp"
#include "systempp/signal_table.hpp"

namespace systempp::master {

namespace {

[[noreturn]] void pidfile_failed(const std::string& path, const std::string& what, int err) {
  throw_start_error(fmt::format("--pidfile {}: {}: {}", path, what, std::strerror(err)), err);
}

// A name only this process uses, created new: a file or symlink planted there is never
// written through (the old fixed "<path>.tmp" let a symlink redirect the write anywhere).
unique_fd create_private(const std::string& path, const std::string& tmp) {
  constexpr int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  unique_fd fd(::open(tmp.c_str(), flags, 0644));
  // The name exists: left by a master with our pid killed between create and rename (in a
  // container that is pid 1 every time), or planted. Unlinking removes the name itself,
  // never what a symlink points to; then it is created new once more.
  if (!fd && errno == EEXIST && ::unlink(tmp.c_str()) == 0) fd.reset(::open(tmp.c_str(), flags, 0644));
  if (!fd) {
    const int err = errno;
    pidfile_failed(path, "cannot create " + tmp, err);
  }
  return fd;
}

bool write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Written whole and synced in the temp file, then renamed over the path: a reader sees the
// old pidfile or the complete new one, never an empty or half-written one. Any failure
// removes the temp file.
// Root's even with --user (0644: the user's control commands read it): a pid the user could
// write would steer a root `kill $(cat PIDFILE)` (logrotate's) to any process.
void write_pidfile(const std::string& path, pid_t pid) {
  const std::string tmp = fmt::format("{}.{}.tmp", path, pid);
  const std::string text = fmt::format("{}\n", pid);
  unique_fd fd = create_private(path, tmp);
  const char* failed = nullptr;
  if (!write_all(fd.get(), text))
    failed = "write";
  else if (::fsync(fd.get()) != 0)
    failed = "fsync";
  else if (::close(fd.release()) != 0)
    failed = "close";
  else if (::rename(tmp.c_str(), path.c_str()) != 0)
    failed = "rename";
  if (failed == nullptr) return;
  const int err = errno;  // of the call that failed: nothing above touched it since
  ::unlink(tmp.c_str());
  pidfile_failed(path, fmt::format("cannot {} {}", failed, tmp), err);
}

}  // namespace

void remove_pidfile(const std::string& path, pid_t pid) {
  if (path.empty()) return;
  // Whatever was put at the path meanwhile, the exit neither blocks on it (a FIFO) nor
  // reads through a symlink.
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return;
  char text[32];
  const ssize_t n = ::read(fd.get(), text, sizeof text);
  if (n <= 0) return;
  pid_t written = 0;
  const auto [end, ec] = std::from_chars(text, text + n, written);
  if (ec == std::errc{} && written == pid && (end == text + n || *end == '\n')) ::unlink(path.c_str());
}

namespace {

// The binary as it was started, made absolute but with its symlinks kept: every exec
// (exec-mode workers, upgrades) resolves it anew, so both a binary renamed over the path
// and a symlink switched to another release are what the next exec runs. A bare name
// (found through PATH) is resolved once, through /proc/self/exe.
std::string invoked_path(const std::string& program) {
  std::error_code ec;
  if (program.find('/') != std::string::npos) {
    auto path = std::filesystem::absolute(program, ec).lexically_normal();
    if (!ec) return path.string();
  }
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? program : exe.string();
}

// This image's executable, to hand over at an upgrade so that a new image that fails can
// return to it (whatever was put at the path since).
unique_fd open_image() {
  unique_fd fd(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  if (!fd) fd.reset(::open("/proc/self/exe", O_PATH | O_CLOEXEC));  // executable, not readable
  return fd;
}

}  // namespace

pool_setup open_pool(const options& opts, const handover* h, const std::vector<std::string>& units,
                     const std::vector<std::string>& stages, std::size_t dedicated, spdlog::logger& log) {
  pool_setup out;
  out.exec_path = invoked_path(opts.program);
  out.image = open_image();
  if (opts.mode == reload_mode::exec) log.info("exec mode: workers run {}", out.exec_path);
  if (h) {
    // Checked by incoming_upgrade::check; the control fd stays open until the pool is taken
    // over, in case this image must still hand it back.
    // A slot's socket follows its listener, in slot order (--accept reuseport).
    std::vector<std::vector<unique_fd>> slot_fds;
    for (const auto& l : h->listeners) {
      if (l.slot_socket && !out.listeners.empty()) {
        slot_fds.back().emplace_back(l.fd);
        continue;
      }
      out.listeners.push_back(adopt_listener(unique_fd(l.fd), l.name));
      slot_fds.emplace_back();
    }
    if (opts.accept == accept_strategy::reuseport) {
      out.slots.enable(out.listeners, log);
      for (std::size_t i = 0; i < slot_fds.size(); ++i) out.slots.adopt(i, std::move(slot_fds[i]));
    }
    const bool bound = std::all_of(h->listeners.begin(), h->listeners.end(), [](auto& l) { return l.bound || l.slot_socket; });
    out.origin = bound ? listener_origin::bound : listener_origin::activated;
    out.segment.emplace(control_segment::attach_fd(h->control_fd, access::read_write));
    out.segment->adopt();  // this image now removes it at exit
    out.lock.emplace(pool_lock::adopt(h->lock_fd));  // survived the exec with its fd
    out.max_workers = std::max(1, static_cast<int>(out.segment->slot_count()) / lanes_per_slot -
                                      static_cast<int>(dedicated));
    return out;
  }
  // First: "running" means holding this lock, so two masters can never both pass here.
  out.lock.emplace(pool_lock::acquire(opts.name, pool_owner(opts)));
  if (auto n = remove_stale_segments(opts.name, keep_none, pool_owner(opts)); n > 0)
    log.warn("removed {} stale control block(s) of pool '{}'", n, opts.name);
  out.listeners = activated_listeners();
  if (out.listeners.empty()) {
    out.listeners = bind_listeners(opts.binds, opts.accept == accept_strategy::reuseport);
  } else {
    out.origin = listener_origin::activated;
    log.info("socket activation: {} listener(s) from systemd; --bind is ignored", out.listeners.size());
  }
  if (opts.accept == accept_strategy::reuseport) out.slots.enable(out.listeners, log);
  out.max_workers = std::min(max_pool_workers, std::max(16, opts.workers * 2));
  out.segment.emplace(control_segment::create(opts.name, ::getpid(),
                                              static_cast<std::uint32_t>((out.max_workers + static_cast<int>(dedicated)) * lanes_per_slot), units,
                                              stages));
  give_to_pool_owner(out.segment->fd(), opts, "the control block");  // its workers and status
  if (!opts.pidfile.empty()) write_pidfile(opts.pidfile, ::getpid());
  control_header& hdr = out.segment->header();
  hdr.master_state.store(master_state::starting);
  hdr.pool_generation.store(1);
  hdr.target_workers.store(static_cast<std::uint32_t>(opts.workers));
  hdr.master_started_ms.store(monotonic_ms());
  return out;
}

void block_master_signals() noexcept {
  sigset_t set;
  ::sigemptyset(&set);
  for (const auto& row : signal_table)
    if (row.master != signal_effect::none && row.master != signal_effect::ignore) ::sigaddset(&set, row.number);
  ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

namespace {

// Whether a worker may still accept on the listeners: until it drains, it holds an acceptor.
bool workers_may_accept(const control_segment& segment) {
  for (const worker_slot& r : segment.slots()) {
    const auto s = r.state.load(std::memory_order_acquire);
    if (s == worker_state::spawned || s == worker_state::starting || s == worker_state::ready) return true;
  }
  return false;
}

void stop_listening(pool_setup& pool, spdlog::logger& log) {
  if (pool.listeners.empty()) return;  // a second stop (TERM, then INT)
  if (pool.origin == listener_origin::bound) {
    // shutdown() acts on the socket, not on this fd: the copies the workers inherited stop
    // listening too, so a new connection is refused now rather than left in the backlog
    // until the last worker exits and then reset.
    for (const auto& l : pool.listeners) ::shutdown(l.fd.get(), SHUT_RD);
    log.info("stop: new connections are refused");
  } else {
    log.info("stop: closed the master's copies of the systemd listeners; new connections wait in their backlog");
  }
  pool.slots.retire(pool.listeners, pool.origin == listener_origin::bound);
  pool.listeners.clear();  // no worker is spawned during a stop, and no upgrade starts
}

void retire_when_idle(boost::asio::steady_timer& timer, pool_setup& pool, std::shared_ptr<spdlog::logger> log,
                      std::chrono::steady_clock::time_point give_up) {
  if (!workers_may_accept(*pool.segment) || std::chrono::steady_clock::now() >= give_up)
    return stop_listening(pool, *log);
  // The workers read their drain byte within a loop turn: look again soon.
  timer.expires_after(std::chrono::milliseconds(10));
  timer.async_wait([&timer, &pool, log = std::move(log), give_up](boost::system::error_code e) mutable {
    if (!e) retire_when_idle(timer, pool, std::move(log), give_up);
  });
}

}  // namespace

// Waiting for the workers first keeps their accept loops from seeing a socket that stopped
// listening under them (an "Invalid argument" from accept in their log).
void retire_listeners(boost::asio::steady_timer& timer, pool_setup& pool, std::shared_ptr<spdlog::logger> log) {
  retire_when_idle(timer, pool, std::move(log), std::chrono::steady_clock::now() + std::chrono::seconds(1));
}

std::string dedicated_mismatch(const control_segment& block, int max_workers,
                               const std::vector<dedicated_slot>& dedicated, const std::vector<std::string>& units) {
  for (std::uint32_t i = 0; i < block.slot_count(); ++i) {
    const auto snap = read_slot(block.slot(i));
    if (snap.pid <= 0 || snap.state == worker_state::free || snap.state == worker_state::exited ||
        snap.state == worker_state::crashed)
      continue;
    const int slot = slot_of_record(i);
    const std::string running = snap.role == no_unit ? "serving" : std::string(unit_name(block.header(), snap.role));
    const auto d = static_cast<std::size_t>(slot - max_workers);
    const std::string wanted = slot < max_workers ? "serving" : d < dedicated.size() ? units[dedicated[d].unit] : "nothing";
    if (running != wanted)
      return fmt::format("slot {} runs {}, where this image runs {}: the dedicated units differ (restart the pool to change them)",
                         slot, running, wanted);
  }
  return {};
}

std::vector<dedicated_slot> dedicated_slots(const detail::app_units& app) {
  std::vector<dedicated_slot> out;
  for (std::size_t u = 0; u < app.units.size(); ++u)
    if (const auto& d = app.units[u].runs_in)
      for (int k = 0; k < d->processes; ++k) out.push_back(dedicated_slot{u, d->may_overlap});
  return out;
}

policy_config policy_config_for(const options& opts, int workers, int max_workers,
                                std::vector<dedicated_slot> dedicated) {
  policy_config cfg;
  cfg.dedicated = std::move(dedicated);
  cfg.workers = workers;
  cfg.max_workers = max_workers;
  cfg.surge = opts.reload_surge;
  cfg.ready_timeout = opts.ready_timeout;
  cfg.heartbeat_timeout = opts.heartbeat_timeout;
  cfg.graceful_timeout = opts.graceful_timeout;
  cfg.abort_grace = std::min(ms(5'000), opts.heartbeat_timeout);
  cfg.backoff_max = opts.restart_backoff_max;
  cfg.backoff_initial = std::min(cfg.backoff_initial, cfg.backoff_max);
  return cfg;
}

}  // namespace systempp::master
