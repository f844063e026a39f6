// The master process: binds the listeners, runs on_init, forks the workers and supervises
// them from one single-threaded loop. Signals become events on the loop; the decisions
// come from supervisor_policy; this file carries them out.

#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "systempp/control_block.hpp"
#include "systempp/lifecycle.hpp"
#include "systempp/log.hpp"
#include "systempp/master/master_process.hpp"
#include "systempp/master/metrics_server.hpp"
#include "systempp/master/spawner.hpp"
#include "systempp/master/supervisor_policy.hpp"
#include "systempp/master/systemd.hpp"
#include "systempp/master/upgrade.hpp"
#include "systempp/worker/worker_runtime.hpp"

namespace systempp::master {

namespace asio = boost::asio;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

namespace {

time_point now_ms() { return time_point(static_cast<std::int64_t>(monotonic_ms())); }

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("killed by signal {} ({}){}", WTERMSIG(status), ::sigabbrev_np(WTERMSIG(status)) ? ::sigabbrev_np(WTERMSIG(status)) : "?",
                       WCOREDUMP(status) ? " (core dumped)" : "");
  return fmt::format("ended with status {}", status);
}

// Writes the pidfile atomically (temp file, then rename), so a reader never sees half.
void write_pidfile(const std::string& path, pid_t pid) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << pid << "\n";
    if (!out) throw config_error(fmt::format("--pidfile: cannot write {}", path));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw config_error(fmt::format("--pidfile: cannot write {}", path));
}

void remove_pidfile(const std::string& path, pid_t pid) {
  if (path.empty()) return;
  std::ifstream in(path);
  pid_t written = 0;
  if (in >> written && written == pid) std::remove(path.c_str());
}

}  // namespace

class master_process {
 public:
  master_process(const options& opts, std::vector<detail::unit_entry>& units, asio::io_context& io)
      : opts_(opts), units_(units), io_(io), signals_(io_), tick_(io_), watchdog_timer_(io_), lc_(units) {}

  int run();

 private:
  struct worker_handle {
    pid_t pid = 0;
    int slot = 0;
    int lane = 0;
    std::uint32_t generation = 0;
    std::unique_ptr<asio::posix::stream_descriptor> channel;
  };

  worker_slot& record(int slot, int lane) { return segment_->slot(static_cast<std::uint32_t>(slot * 2 + lane)); }
  std::string where(const worker_handle& w);
  void execute(std::vector<action> actions);
  void spawn(const spawn_action& a);
  void send(worker_handle& w, char byte);
  int exec_worker(const spawn_action& a, const unique_fd& channel);
  void reap();
  void on_signal(int sig);
  void begin_reload();
  void begin_rollout(const char* why);
  void adopt(const handover& h);
  void upgrade();
  std::string render_metrics();
  void schedule_tick();
  asio::awaitable<void> signal_loop();
  asio::awaitable<void> channel_loop(pid_t pid, asio::posix::stream_descriptor& ch);

  const options& opts_;
  std::vector<detail::unit_entry>& units_;
  asio::io_context& io_;  ///< made by systempp::main before the units, so it outlives them
  asio::signal_set signals_;
  asio::steady_timer tick_;
  asio::steady_timer watchdog_timer_;
  lifecycle lc_;
  systemd_notifier notify_;
  bool announced_ready_ = false;  ///< READY=1 went out for the first full pool
  std::optional<metrics_server> metrics_;
  std::shared_ptr<spdlog::logger> log_;
  std::vector<listener> listeners_;
  std::optional<control_segment> segment_;
  std::optional<context> ctx_;
  std::optional<supervisor_policy> policy_;
  std::map<pid_t, worker_handle> workers_;
  bool pending_reload_ = false;
  bool unclean_ = false;  ///< a worker was killed at the deadline or failed its shutdown
  bool finished_ = false;
  std::string last_start_failure_;
  std::string exec_path_;  ///< the binary, resolved at start; re-opened by every exec
  std::map<pid_t, std::string> kill_reasons_;  ///< why we sent SIGABRT/SIGKILL, until reaped
};

std::string master_process::where(const worker_handle& w) {
  const worker_slot& r = record(w.slot, w.lane);
  const auto st = r.stage.load(std::memory_order_relaxed);
  const auto un = r.unit.load(std::memory_order_relaxed);
  std::string text = fmt::format("worker[{}] pid {} g{}", w.slot, w.pid, w.generation);
  if (st < stage_count && un < lc_.size())
    text += fmt::format(" (in {} of unit {})", to_string(static_cast<stage>(st)), lc_.unit_name(un));
  return text;
}

int master_process::run() {
  const pid_t self = ::getpid();
  auto handover = take_handover();  // set when this image replaced a running master (SIGUSR2)
  int max_workers = std::min(2048, std::max(16, opts_.workers * 2));
  try {
    log_ = make_logger("master", opts_);
    // Before anything is created that a failure would have to undo.
    if (!opts_.metrics.empty()) {
      auto bound = bind_listeners({parse_metrics_address(opts_.metrics)});
      metrics_.emplace(io_, std::move(bound.front()), [this] { return render_metrics(); }, log_);
    }
    if (handover) {
      // Everything comes from the previous image: listeners, control block, workers.
      for (const auto& l : handover->listeners)
        listeners_.push_back(adopt_listener(unique_fd(l.fd), l.name));
      segment_.emplace(control_segment::attach_fd(handover->control_fd, access::read_write));
      ::close(handover->control_fd);
      segment_->adopt();  // this image now removes it at exit
      max_workers = static_cast<int>(segment_->slot_count() / 2);
    } else {
      if (auto other = find_live_master(opts_.name))
        throw config_error(fmt::format("--name {}: a pool with this name is already running (master pid {})",
                                       opts_.name, *other));
      if (auto n = remove_stale_segments(opts_.name); n > 0)
        log_->warn("removed {} stale control block(s) of pool '{}'", n, opts_.name);
      listeners_ = activated_listeners();
      if (listeners_.empty())
        listeners_ = bind_listeners(opts_.binds);
      else
        log_->info("socket activation: {} listener(s) from systemd; --bind is ignored", listeners_.size());
      std::vector<std::string> names;
      for (const auto& u : units_) names.push_back(u.ref.name);
      segment_.emplace(control_segment::create(opts_.name, self, static_cast<std::uint32_t>(max_workers * 2), names));
      if (!opts_.pidfile.empty()) write_pidfile(opts_.pidfile, self);
    }
  } catch (const std::exception& e) {
    std::cerr << opts_.program << ": error: " << e.what() << "\n";
    return to_int(exit_code::usage);
  }
  if (metrics_) {
    log_->info("metrics on http://{}/metrics", metrics_->where().endpoint());
    metrics_->start();
  }
  // Logged once the control block exists, so whoever reads the port can also attach.
  for (const auto& l : listeners_) log_->info("listening on {} ({})", l.endpoint(), l.name);
  control_header& hdr = segment_->header();
  if (!handover) {
    hdr.master_state.store(master_state::starting);
    hdr.pool_generation.store(1);
    hdr.target_workers.store(static_cast<std::uint32_t>(opts_.workers));
    hdr.master_started_ms.store(monotonic_ms());
  }

  // Signals are turned into events on the loop; nothing is done inside a handler.
  for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGCHLD, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2})
    signals_.add(sig);
  // An upgraded image starts with every signal blocked (see upgrade()); now that the
  // handlers exist, whatever arrived meanwhile is delivered to the loop.
  sigset_t none;
  ::sigemptyset(&none);
  ::pthread_sigmask(SIG_SETMASK, &none, nullptr);

  {
    std::error_code ec;
    exec_path_ = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    if (ec) exec_path_ = opts_.program;
    if (opts_.mode == reload_mode::exec) log_->info("exec mode: workers run {}", exec_path_);
  }
  lc_.set_timeout(opts_.stage_timeout);
  ctx_.emplace(process_role::master, opts_, log_, io_, listeners_, lc_.refs());
  const auto init = lc_.run(stage::on_init, *ctx_);
  if (!init.ok && handover) {
    // The old image is gone; the workers it handed over are still serving. Keep
    // supervising them rather than leaving them without a master.
    log_->error("upgrade: the new image failed on_init ({}); keeping the adopted workers", init.error);
  } else if (!init.ok) {
    lc_.run(stage::on_exit, *ctx_);
    if (!init.config_error) log_->error("start failed: {}", init.error);  // else already said once
    remove_pidfile(opts_.pidfile, self);
    return to_int(code_for(stage::on_init, init));
  }

  policy_config cfg;
  cfg.workers = handover ? static_cast<int>(hdr.target_workers.load()) : opts_.workers;
  cfg.max_workers = max_workers;
  cfg.surge = opts_.reload_surge;
  cfg.ready_timeout = opts_.ready_timeout;
  cfg.heartbeat_timeout = opts_.heartbeat_timeout;
  cfg.graceful_timeout = opts_.graceful_timeout;
  cfg.abort_grace = std::min(ms(5'000), opts_.heartbeat_timeout);
  cfg.backoff_max = opts_.restart_backoff_max;
  cfg.backoff_initial = std::min(cfg.backoff_initial, cfg.backoff_max);
  policy_.emplace(cfg);

  hdr.master_state.store(master_state::running);
  asio::co_spawn(io_, signal_loop(), asio::detached);
  if (auto every = notify_.watchdog_interval()) {
    // WATCHDOG=1 from the master's loop: if the loop wedges, systemd notices.
    asio::co_spawn(io_, [this, every = *every]() -> asio::awaitable<void> {
      for (;;) {
        notify_.watchdog();
        watchdog_timer_.expires_after(every);
        auto [ec] = co_await watchdog_timer_.async_wait(use_tuple);
        if (ec || finished_) co_return;
      }
    }, asio::detached);
  }
  if (handover) {
    announced_ready_ = true;  // the previous image told systemd already
    notify_.main_pid(self);
    adopt(*handover);
    // The adopted workers run the old code: roll them to this image, unless it is broken.
    if (init.ok) begin_rollout("upgrade");
  } else {
    execute(policy_->start(now_ms()));
  }
  io_.run();

  hdr.master_state.store(master_state::stopped);
  const auto exit = lc_.run(stage::on_exit, *ctx_);
  remove_pidfile(opts_.pidfile, self);
  exit_code code = exit_code::ok;
  if (unclean_) code = exit_code::failure;
  if (!exit.ok) code = exit_code::unclean_shutdown;
  log_->info("exit {}", to_int(code));
  return to_int(code);
}

void master_process::execute(std::vector<action> actions) {
  for (auto& a : actions) {
    std::visit(
        [&](auto& act) {
          using T = std::decay_t<decltype(act)>;
          if constexpr (std::is_same_v<T, spawn_action>) {
            spawn(act);
          } else if constexpr (std::is_same_v<T, drain_action>) {
            auto it = workers_.find(act.pid);
            if (it == workers_.end()) return;
            worker_slot& r = record(it->second.slot, it->second.lane);
            r.drain_deadline_ms.store(static_cast<std::uint64_t>(act.deadline.count()));
            r.command.store(worker_command::drain);
            send(it->second, worker::msg_drain);
          } else if constexpr (std::is_same_v<T, signal_action>) {
            auto it = workers_.find(act.pid);
            if (it == workers_.end()) return;
            if (act.sig == SIGKILL || act.sig == SIGABRT) {
              log_->warn("{}: {}: sending {}", where(it->second), act.reason, ::sigabbrev_np(act.sig));
              if (act.reason == "graceful timeout" || act.reason == "fast stop deadline") unclean_ = true;
              kill_reasons_[act.pid] = act.reason;
              if (act.reason == "ready timeout")
                last_start_failure_ = fmt::format("{}: not READY within {} ms", where(it->second), opts_.ready_timeout.count());
            }
            if (act.sig == SIGQUIT) {
              record(it->second.slot, it->second.lane).command.store(worker_command::stop_fast);
              send(it->second, worker::msg_quit);
            }
            ::kill(act.pid, act.sig);
          } else if constexpr (std::is_same_v<T, finished_action>) {
            finished_ = true;
            tick_.cancel();
            watchdog_timer_.cancel();
            io_.stop();
          } else if constexpr (std::is_same_v<T, reload_done_action>) {
            control_header& hdr = segment_->header();
            const auto started = hdr.reload_started_ms.load();
            hdr.reload_duration_ms.store(monotonic_ms() - started);
            std::string message = act.message;
            if (!act.ok && !last_start_failure_.empty()) message += "; " + last_start_failure_;
            write_reload_message(hdr, message);
            hdr.reload_outcome.store(act.ok ? reload_outcome::succeeded : reload_outcome::failed);
            // A coalesced HUP starts the next rollout at once: stay "reloading" until then.
            if (!policy_->stopping() && !pending_reload_) hdr.master_state.store(master_state::running);
            if (act.ok)
              log_->info("reload done in {} ms: {}", monotonic_ms() - started, message);
            else
              log_->error("reload failed: {}", message);
            if (!policy_->stopping())
              notify_.ready(act.ok ? fmt::format("reload succeeded: {}", message)
                                   : fmt::format("reload failed: {}; still serving", message));
            if (pending_reload_ && !policy_->stopping()) {
              pending_reload_ = false;
              asio::post(io_, [this] { begin_reload(); });
            }
          }
        },
        a);
  }
  schedule_tick();
}

// Exec mode, in the forked child: put the control block, the channel and the listeners on
// the fds the worker image expects, describe them in the environment, and exec the
// binary as it is on disk now. Returns only if exec failed.
int master_process::exec_worker(const spawn_action& a, const unique_fd& channel) {
  std::vector<int> sources{segment_->fd(), channel.get()};
  std::string names;
  for (const auto& l : listeners_) {
    sources.push_back(l.fd.get());
    names += (names.empty() ? "" : ",") + l.name;
  }
  // First every source to a high number, so no dup2 below overwrites a source still needed.
  std::vector<int> high;
  for (int fd : sources) {
    const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 100);
    if (copy < 0) return 127;
    high.push_back(copy);
  }
  for (std::size_t i = 0; i < high.size(); ++i)
    if (::dup2(high[i], worker::exec_control_fd + static_cast<int>(i)) < 0) return 127;
  ::close_range(static_cast<unsigned>(worker::exec_control_fd + static_cast<int>(high.size())), ~0U,
                CLOSE_RANGE_CLOEXEC);
  ::setenv(worker::exec_env_worker,
           fmt::format("{}:{}:{}:{}", a.slot, a.lane, a.generation, ::getppid()).c_str(), 1);
  ::setenv(worker::exec_env_listeners, names.c_str(), 1);
  std::vector<char*> argv;
  for (const auto& arg : opts_.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  ::execv(exec_path_.c_str(), argv.data());
  std::fprintf(stderr, "worker[%d]: exec %s: %s\n", a.slot, exec_path_.c_str(), std::strerror(errno));
  return 127;
}

void master_process::send(worker_handle& w, char byte) {
  if (w.channel) [[maybe_unused]] auto n = ::send(w.channel->native_handle(), &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

void master_process::spawn(const spawn_action& a) {
  worker_slot& r = record(a.slot, a.lane);
  r.epoch.fetch_add(1);
  {
    slot_update u(r);
    r.pid.store(0);
    r.generation.store(a.generation);
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
  }

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    log_->error("worker[{}]: socketpair: {}", a.slot, std::strerror(errno));
    execute(policy_->spawn_failed(a, now_ms()));
    return;
  }
  unique_fd master_end(pair[0]);
  unique_fd worker_end(pair[1]);
  const pid_t master_pid = ::getpid();

  const pid_t pid = fork_worker(
      io_,
      [&] {
        // The child keeps only its own channel and its own slot.
        signals_.clear();
        if (metrics_) metrics_->close_in_child();
        for (auto& [p, w] : workers_)
          if (w.channel) ::close(w.channel->native_handle());
        master_end.reset();
      },
      [&](const sigset_t& mask) {
        r.pid.store(::getpid());
        if (opts_.mode == reload_mode::exec) return exec_worker(a, worker_end);
        worker::launch l;
        l.opts = &opts_;
        l.units = &units_;
        l.listeners = &listeners_;
        l.record = &r;
        l.slot = a.slot;
        l.generation = a.generation;
        l.master_pid = master_pid;
        l.channel = std::move(worker_end);
        l.restore_mask = mask;
        return worker::run(l);
      });
  if (pid < 0) {
    log_->error("worker[{}]: fork: {}", a.slot, std::strerror(errno));
    execute(policy_->spawn_failed(a, now_ms()));
    return;
  }
  r.pid.store(pid);
  worker_end.reset();
  worker_handle h{pid, a.slot, a.lane, a.generation,
                  std::make_unique<asio::posix::stream_descriptor>(io_, master_end.release())};
  auto& ch = *h.channel;
  workers_.emplace(pid, std::move(h));
  policy_->spawned(a, pid, now_ms());
  log_->info("worker[{}] pid {} g{} spawned", a.slot, pid, a.generation);
  asio::co_spawn(io_, channel_loop(pid, ch), asio::detached);
}

asio::awaitable<void> master_process::channel_loop(pid_t pid, asio::posix::stream_descriptor& ch) {
  for (;;) {
    char byte = 0;
    auto [ec, n] = co_await ch.async_read_some(asio::buffer(&byte, 1), use_tuple);
    if (ec || n == 0) co_return;  // the worker is gone; SIGCHLD reaps it
    if (byte == worker::msg_ready) {
      if (auto it = workers_.find(pid); it != workers_.end())
        log_->info("worker[{}] pid {} g{} ready", it->second.slot, pid, it->second.generation);
      execute(policy_->ready(pid, now_ms()));
      if (!announced_ready_ && policy_->ready_count() >= policy_->workers() && !policy_->reloading() &&
          !policy_->stopping()) {
        announced_ready_ = true;
        notify_.ready(fmt::format("{} worker(s) ready", policy_->ready_count()));
      }
    } else if (byte == worker::msg_recycle) {
      auto actions = policy_->recycle(pid, now_ms());
      if (!actions.empty())
        segment_->header().restarts[static_cast<std::size_t>(restart_reason::recycle)].fetch_add(1);
      execute(std::move(actions));
    }
  }
}

void master_process::reap() {
  for (;;) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    auto it = workers_.find(pid);
    if (it == workers_.end()) continue;  // not one of ours (e.g. a unit's helper)
    worker_handle w = std::move(it->second);
    workers_.erase(it);
    worker_slot& r = record(w.slot, w.lane);
    const bool clean_exit = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    const bool draining = r.command.load() != worker_command::none;
    const bool was_ready = r.ready_ms.load() != 0;
    const std::string who = where(w);
    if (clean_exit && draining)
      log_->info("{} exited with code 0", who);
    else
      log_->warn("{} {}", who, describe_status(status));
    if (!was_ready && !draining) last_start_failure_ = fmt::format("{} {}", who, describe_status(status));
    if (draining && !clean_exit) unclean_ = true;

    control_header& hdr = segment_->header();
    hdr.requests_total.fetch_add(r.requests.load());
    hdr.errors_total.fetch_add(r.errors.load());
    r.exit_status.store(status);
    {
      slot_update u(r);
      r.state.store(clean_exit || draining ? worker_state::exited : worker_state::crashed);
    }
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    auto actions = policy_->exited(pid, code, now_ms());
    // Why it is being replaced: a timeout we enforced, or a crash of its own.
    const auto killed_for = kill_reasons_.find(pid);
    restart_reason reason = restart_reason::crash;
    if (killed_for != kill_reasons_.end()) {
      if (killed_for->second == "heartbeat timeout") reason = restart_reason::timeout_heartbeat;
      if (killed_for->second == "ready timeout") reason = restart_reason::timeout_ready;
      kill_reasons_.erase(killed_for);
    }
    if (policy_->last_exit_kind() != exit_kind::expected) {
      hdr.restarts[static_cast<std::size_t>(reason)].fetch_add(1);
      r.restarts.fetch_add(1);
    }
    if (policy_->last_exit_kind() == exit_kind::config_error)
      log_->error("{}: configuration error (exit 2): not respawning this slot for {} s", who, 30);
    execute(std::move(actions));
  }
}

void master_process::begin_reload() {
  if (policy_->stopping()) return;
  if (policy_->reloading()) {
    pending_reload_ = true;  // coalesced: one more rollout after this one
    return;
  }
  control_header& hdr = segment_->header();
  hdr.reload_seq.fetch_add(1);
  hdr.reload_started_ms.store(monotonic_ms());
  hdr.reload_outcome.store(reload_outcome::in_progress);
  hdr.master_state.store(master_state::reloading);
  last_start_failure_.clear();
  log_->info("SIGHUP: reloading");
  const auto r = lc_.run(stage::on_reload, *ctx_);
  if (!r.ok) {
    write_reload_message(hdr, r.error);
    hdr.reload_duration_ms.store(monotonic_ms() - hdr.reload_started_ms.load());
    hdr.reload_outcome.store(reload_outcome::rejected);
    hdr.master_state.store(master_state::running);
    log_->error("reload rejected: {}; the workers keep running", r.error);
    notify_.reloading("reloading");
    notify_.ready("reload rejected: " + r.error);
    return;
  }
  begin_rollout("reload");
}

void master_process::begin_rollout(const char* why) {
  control_header& hdr = segment_->header();
  if (std::string_view(why) != "reload") {
    hdr.reload_seq.fetch_add(1);
    hdr.reload_started_ms.store(monotonic_ms());
    hdr.reload_outcome.store(reload_outcome::in_progress);
    hdr.master_state.store(master_state::reloading);
    last_start_failure_.clear();
  }
  notify_.reloading(fmt::format("{}: rolling to generation {}", why, policy_->generation() + 1));
  auto actions = policy_->reload(now_ms());
  hdr.pool_generation.store(policy_->generation());
  log_->info("{}: rolling {} worker(s) to generation {}", why, policy_->workers(), policy_->generation());
  execute(std::move(actions));
}

void master_process::adopt(const handover& h) {
  for (const auto& w : h.workers) {
    policy_->adopt(w.pid, w.slot, w.lane, w.generation, now_ms());
    worker_handle handle{w.pid, w.slot, w.lane, w.generation,
                         std::make_unique<asio::posix::stream_descriptor>(io_, w.channel)};
    auto& ch = *handle.channel;
    workers_.emplace(w.pid, std::move(handle));
    asio::co_spawn(io_, channel_loop(w.pid, ch), asio::detached);
  }
  log_->info("upgrade: adopted {} worker(s)", h.workers.size());
  reap();  // a worker that exited while the images changed is reaped now
}

// SIGUSR2: re-execute this binary in place. Listeners, the control block and the workers'
// channels stay open across exec (close-on-exec cleared); the new image adopts them.
void master_process::upgrade() {
  if (policy_->stopping() || policy_->reloading()) {
    log_->warn("SIGUSR2: a {} is in progress; upgrade not started", policy_->stopping() ? "stop" : "rollout");
    return;
  }
  if (auto why = check_binary(exec_path_, std::chrono::seconds(5)); !why.empty()) {
    log_->error("SIGUSR2: upgrade refused: {}", why);
    return;
  }
  handover h;
  h.control_fd = segment_->fd();
  for (const auto& l : listeners_) h.listeners.push_back({l.name, l.fd.get()});
  for (const auto& [pid, w] : workers_)
    if (w.channel) h.workers.push_back({pid, w.slot, w.lane, w.generation, w.channel->native_handle()});
  std::vector<int> fds{h.control_fd};
  for (const auto& l : h.listeners) fds.push_back(l.fd);
  for (const auto& w : h.workers) fds.push_back(w.channel);
  for (int fd : fds) ::fcntl(fd, F_SETFD, 0);
  ::setenv(upgrade_env, encode(h).c_str(), 1);

  log_->info("SIGUSR2: upgrading the master in place ({})", exec_path_);
  log_->flush();
  // No signal may be handled between here and the new image's handlers: block them all;
  // exec keeps the mask and the pending signals.
  sigset_t all, previous;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &previous);
  std::vector<char*> argv;
  for (const auto& arg : opts_.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  ::execv(exec_path_.c_str(), argv.data());

  const int err = errno;  // still the old image: undo and keep serving
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  ::unsetenv(upgrade_env);
  for (int fd : fds) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  log_->error("SIGUSR2: exec {} failed: {}; the current master keeps running", exec_path_, std::strerror(err));
}

void master_process::on_signal(int sig) {
  control_header& hdr = segment_->header();
  switch (sig) {
    case SIGCHLD: reap(); break;
    case SIGTERM:
      log_->info("SIGTERM: draining {} worker(s)", workers_.size());
      notify_.stopping(fmt::format("draining {} worker(s)", workers_.size()));
      hdr.master_state.store(master_state::draining);
      execute(policy_->stop(stop_mode::graceful, now_ms()));
      break;
    case SIGINT:
    case SIGQUIT:
      log_->info("{}: fast stop", sig == SIGINT ? "SIGINT" : "SIGQUIT");
      notify_.stopping("fast stop");
      hdr.master_state.store(master_state::draining);
      execute(policy_->stop(stop_mode::fast, now_ms()));
      break;
    case SIGHUP: begin_reload(); break;
    case SIGTTIN:
    case SIGTTOU: {
      // `app scale N` leaves N in the block; a bare signal means one more or one fewer.
      const auto requested = hdr.scale_request.exchange(0);
      const int want = requested && sig == SIGTTIN ? static_cast<int>(requested)
                                                   : policy_->workers() + (sig == SIGTTIN ? 1 : -1);
      const int before = policy_->workers();
      auto actions = policy_->scale(want, now_ms());
      hdr.target_workers.store(static_cast<std::uint32_t>(policy_->workers()));
      hdr.restarts[static_cast<std::size_t>(restart_reason::scale)].fetch_add(
          static_cast<std::uint64_t>(std::abs(policy_->workers() - before)));
      log_->info("{}: {} worker(s)", requested ? "scale" : sig == SIGTTIN ? "SIGTTIN" : "SIGTTOU", policy_->workers());
      execute(std::move(actions));
      break;
    }
    case SIGUSR1:
      log_ = make_logger("master", opts_);
      ctx_->set_logger(log_);
      log_->info("SIGUSR1: log reopened");
      for (auto& [pid, w] : workers_) ::kill(pid, SIGUSR1);
      break;
    case SIGUSR2: upgrade(); break;
    default: break;
  }
}

asio::awaitable<void> master_process::signal_loop() {
  for (;;) {
    auto [ec, sig] = co_await signals_.async_wait(use_tuple);
    if (ec) co_return;
    try {
      on_signal(sig);
    } catch (const std::exception& e) {
      log_->critical("handling signal {}: {}", sig, e.what());
    }
    if (finished_) co_return;
  }
}

void master_process::schedule_tick() {
  if (finished_) return;
  // Heartbeats are checked a few times per timeout; other deadlines come from the policy.
  const auto check = std::clamp(opts_.heartbeat_timeout / 4, ms(100), ms(1000));
  auto next = now_ms() + check;
  if (auto d = policy_->next_deadline(); d && *d < next) next = *d;
  const auto delay = std::max(ms(0), next - now_ms());
  tick_.expires_after(delay);
  tick_.async_wait([this](boost::system::error_code ec) {
    if (ec || finished_) return;
    try {
      execute(policy_->tick(now_ms(), [this](const proc& p) {
        const worker_slot& r = record(p.slot, p.lane);
        return time_point(static_cast<std::int64_t>(r.heartbeat_ms.load(std::memory_order_relaxed)));
      }));
    } catch (const std::exception& e) {
      log_->critical("tick: {}", e.what());
      schedule_tick();
    }
  });
}

// Prometheus text exposition, from the control block. Live workers are the ones this
// master has not reaped yet; a reaped worker's counters are already folded into the
// header, so the totals never go backwards.
std::string master_process::render_metrics() {
  const control_header& h = segment_->header();
  std::string out;
  auto family = [&](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  std::uint64_t requests = h.requests_total.load();
  std::uint64_t errors = h.errors_total.load();
  std::uint64_t in_flight = 0;
  std::map<worker_state, int> by_state;
  std::map<std::pair<std::uint32_t, std::size_t>, std::uint32_t> slowest;
  for (const auto& [pid, w] : workers_) {
    const auto snap = read_slot(record(w.slot, w.lane));
    requests += snap.requests;
    errors += snap.errors;
    in_flight += snap.in_flight;
    ++by_state[snap.state];
    for (std::uint32_t u = 0; u < h.unit_count.load() && u < worker_slot::max_units; ++u)
      for (std::size_t st = 0; st < stage_count; ++st)
        if (snap.stage_us[u][st]) slowest[{u, st}] = std::max(slowest[{u, st}], snap.stage_us[u][st]);
  }
  family("systempp_workers", "gauge", "Worker processes by state.");
  for (auto st : {worker_state::spawned, worker_state::starting, worker_state::ready, worker_state::draining})
    out += fmt::format("systempp_workers{{state=\"{}\"}} {}\n", to_string(st), by_state[st]);
  family("systempp_target_workers", "gauge", "Workers the pool is sized for.");
  out += fmt::format("systempp_target_workers {}\n", h.target_workers.load());
  family("systempp_pool_generation", "gauge", "Generation of the newest workers.");
  out += fmt::format("systempp_pool_generation {}\n", h.pool_generation.load());
  family("systempp_requests_total", "counter", "Requests served, dead workers included.");
  out += fmt::format("systempp_requests_total {}\n", requests);
  family("systempp_errors_total", "counter", "Requests that failed (5xx), dead workers included.");
  out += fmt::format("systempp_errors_total {}\n", errors);
  family("systempp_in_flight_requests", "gauge", "Requests being served now.");
  out += fmt::format("systempp_in_flight_requests {}\n", in_flight);
  family("systempp_worker_restarts_total", "counter", "Workers replaced, by reason.");
  for (std::size_t r = 0; r < restart_reason_count; ++r)
    out += fmt::format("systempp_worker_restarts_total{{reason=\"{}\"}} {}\n",
                       to_string(static_cast<restart_reason>(r)), h.restarts[r].load());
  family("systempp_reloads_total", "counter", "Reloads started (SIGHUP, upgrades).");
  out += fmt::format("systempp_reloads_total {}\n", h.reload_seq.load());
  family("systempp_reload_last_outcome", "gauge", "1 for the outcome of the last reload.");
  const auto outcome = h.reload_outcome.load();
  for (auto o : {reload_outcome::in_progress, reload_outcome::succeeded, reload_outcome::failed, reload_outcome::rejected})
    out += fmt::format("systempp_reload_last_outcome{{outcome=\"{}\"}} {}\n", to_string(o), o == outcome ? 1 : 0);
  family("systempp_reload_last_duration_seconds", "gauge", "Duration of the last reload.");
  out += fmt::format("systempp_reload_last_duration_seconds {:.3f}\n", h.reload_duration_ms.load() / 1000.0);
  family("systempp_stage_duration_seconds", "gauge", "Slowest run of a unit's stage among live workers.");
  for (const auto& [key, us] : slowest)
    out += fmt::format("systempp_stage_duration_seconds{{unit=\"{}\",stage=\"{}\"}} {:.6f}\n",
                       unit_name(h, key.first), to_string(static_cast<stage>(key.second)), us / 1e6);
  family("systempp_master_stage_duration_seconds", "gauge", "The master's own stages (last run).");
  std::map<std::pair<std::size_t, stage>, double> master_stages;
  for (const auto& rec : lc_.records()) master_stages[{rec.unit, rec.which}] = rec.duration.count() / 1e6;
  for (const auto& [key, secs] : master_stages)
    out += fmt::format("systempp_master_stage_duration_seconds{{unit=\"{}\",stage=\"{}\"}} {:.6f}\n",
                       lc_.unit_name(key.first), to_string(key.second), secs);
  return out;
}

int run_master(const options& opts, std::vector<detail::unit_entry>& units, asio::io_context& io) {
  master_process m(opts, units, io);
  return m.run();
}

}  // namespace systempp::master
