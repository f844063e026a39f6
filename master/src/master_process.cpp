// The master process: the owner of the parts. It opens the pool, runs on_init, then one
// loop whose events are signals (the master column of signal_table.hpp), the workers'
// channel bytes and a tick; the supervisor carries out the policy's decisions. As in
// nginx's master cycle: handlers only queue, the loop dispatches to named helpers.

#include "master_process.hpp"

#include <unistd.h>

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <utility>

#include "systempp/log.hpp"
#include "systempp/master/app_metrics.hpp"
#include "systempp/master/metrics_text.hpp"
#include "systempp/master/worker_launch.hpp"
#include "systempp/process_title.hpp"
#include "systempp/signal_table.hpp"

namespace systempp::master {

namespace {
// A worker beats every second; one that missed two is steered around (--accept reuseport).
constexpr ms late_beat{2'500};
}  // namespace

int master_process::run() {
  // Signals become events on the loop before anything exists that a default action would leave
  // behind. Blocked until now (run_master; an upgraded image starts with all blocked): one that
  // came meanwhile waits in the set and is handled once the pool has started.
  listen(signals_, signal_role::master);
  sigset_t none;
  ::sigemptyset(&none);
  ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
  if (const int code = open(); code != 0) return code;
  control_header& hdr = pool_.segment->header();

  lc_.set_timeout(opts_.stage_timeout);
  ctx_.emplace(process_role::master, opts_, log_, io_, pool_.listeners, lc_.refs());
  ctx_->set_config_source(units_.config);
  ctx_->set_requester([this](control_request what, std::string reason) {  // any thread: onto the loop
    asio::post(io_, [this, what, reason] { guarded("a request", [&] { requested(what, "the master", reason); }); });
  });
  const auto init = lc_.run(stage::on_init, *ctx_);
  if (!init.ok && upgrade_) {
    lc_.run(stage::on_exit, *ctx_);
    upgrade_->fall_back("the new image failed on_init: " + init.error);  // returns: nowhere to go back to
    log_->error("upgrade: on_init failed ({}); keeping the adopted workers", init.error);
  } else if (!init.ok) {
    lc_.run(stage::on_exit, *ctx_);
    if (!init.config_error) log_->error("start failed: {}", init.error);  // else already said once
    remove_pidfile(opts_.pidfile, ::getpid());
    return to_int(code_for(stage::on_init, init));
  }

  start_supervisor(upgrade_ ? adopted_target() : opts_.workers, pool_.max_workers);
  hdr.master_state.store(master_state::running);
  show_title();
  wait_signal();
  start_watchdog();
  watch_files();
  if (!upgrade_) {
    sup_->execute(sup_->policy().start(now_ms()));
  } else {
    notify_.main_pid(::getpid());
    if (take_over(*upgrade_, *sup_, *report_, *log_) && init.ok) begin_rollout("upgrade");  // onto this image
  }
  io_.run();

  hdr.master_state.store(master_state::stopped);
  const auto exit = lc_.run(stage::on_exit, *ctx_);
  remove_pidfile(opts_.pidfile, ::getpid());
  exit_code code = exit_code::ok;
  if (sup_->policy().unclean()) code = exit_code::failure;
  if (!exit.ok) code = exit_code::unclean_shutdown;
  log_->info("exit {}", to_int(code));
  return to_int(code);
}

// Everything that a failure at start would have to undo, opened before anything runs. An
// image handed a pool by an upgrade hands it back instead of failing (upgrade.hpp).
int master_process::open() {
  try {
    log_ = make_logger("master", opts_, upgrade_ && upgrade_->returned());
    if (const auto why = upgrade_ ? upgrade_->check(opts_.name) : ""; !why.empty()) throw std::runtime_error("handover: " + why);
    if (!opts_.metrics.empty()) {
      auto bound = bind_listeners({parse_metrics_address(opts_.metrics)});
      metrics_.emplace(io_, std::move(bound.front()), [this] { return table_ ? render_metrics(*pool_.segment, *table_, lc_, units_.metrics) : std::string(); }, log_);
    }
    pool_ = open_pool(opts_, upgrade_ ? &upgrade_->pool() : nullptr, lc_.unit_names(), lc_.stage_names(),
                      dedicated_slots(units_).size(), *log_);
    if (upgrade_) {
      // Checked against the previous image's names, then status names what this image
      // runs (the adopted workers, rolled at once, keep their indexes until replaced).
      if (auto why = dedicated_mismatch(*pool_.segment, pool_.max_workers, dedicated_slots(units_), lc_.unit_names());
          !why.empty())
        throw std::runtime_error(why);
      pool_.segment->rename(lc_.unit_names(), lc_.stage_names());
    }
    take_app_metrics(pool_.segment->header(), units_.metrics);
    // --accept reuseport: every serving slot's socket before the first fork, and new
    // connections spread over them (an upgrade takes over the previous image's steering).
    try {
      pool_.slots.steer(pool_.listeners, slot_sockets::all_of(upgrade_ ? adopted_target() : opts_.workers));
    } catch (const std::exception& e) {
      log_->warn("--accept reuseport: {}; every worker accepts on the listener as with --accept shared", e.what());
      pool_.slots.disable();
    }
    if (opts_.drop_master && opts_.run_as && ::geteuid() != opts_.run_as->uid) {
      switch_user(*opts_.run_as);
      log_->info("--drop-master: the master runs as {}:{} from now on", opts_.run_as->user, opts_.run_as->group);
    }
  } catch (const std::exception& e) {
    if (upgrade_) upgrade_->fall_back(fmt::format("the new image cannot start: {}", e.what()));
    std::cerr << opts_.program << ": error: " << e.what() << "\n";
    return to_int(start_failure_code(e));
  }
  if (metrics_) {
    log_->info("metrics on http://{}/metrics", metrics_->where().endpoint());
    metrics_->start();
  }
  // Logged once the control block exists, so whoever reads the port can also attach.
  for (const auto& l : pool_.listeners) log_->info("listening on {} ({})", l.endpoint(), l.name);
  return 0;
}

// An upgrade takes the worker count from the block. With --user the workers' user can write
// the block, so the count is kept within what the block was sized for.
int master_process::adopted_target() const {
  const auto target = pool_.segment->header().target_workers.load();
  return static_cast<int>(std::clamp<std::uint32_t>(target, 1, static_cast<std::uint32_t>(std::max(1, pool_.max_workers))));
}

void master_process::start_supervisor(int workers, int max_workers) {
  control_header& hdr = pool_.segment->header();
  report_.emplace(hdr, notify_, log_);
  table_.emplace(io_, *pool_.segment, sys_, lc_.unit_names(), [this](pid_t pid, char byte, std::string_view text) {
    guarded("a worker's message", [&] { sup_->message(pid, byte, text); });
  });
  table_->set_metrics(&units_.metrics);
  handover_.emplace(io_, *table_, pool_.slots, pool_.listeners, log_);
  supervisor_hooks hooks;
  hooks.finished = [this] { finish(); };
  hooks.reload_done = [this](const reload_done_action& done) {
    done.ok() ? lc_.commit_reload(*ctx_) : lc_.abort_reload(*ctx_);  // respawns run what passed
    auto said = done;
    if (!reload_why_.empty()) said.message += " (" + std::exchange(reload_why_, {}) + ")";
    report_->ended(said, sup_->policy().stopping());
    if (done.next_queued) asio::post(io_, [this] { begin_reload("SIGHUP (coalesced)", false); });
    if (std::exchange(upgrade_pending_, false))
      asio::post(io_, [this] { guarded("a changed file", [&] { files_changed({pool_.exec_path}); }); });
  };
  hooks.requested = [this](control_request what, const std::string& who, std::string_view reason) {
    requested(what, who, reason);
  };
  hooks.reload_undo = [this] { lc_.abort_reload(*ctx_); };
  hooks.pool_ready = [this](int ready) { notify_.ready(fmt::format("{} worker(s) ready", ready)); };
  hooks.executed = [this] {
    steer_connections();
    schedule_tick();
    show_title();
  };
  sup_.emplace(policy_config_for(opts_, workers, max_workers, dedicated_slots(units_)), *table_, hdr, log_,
               std::move(hooks));
  // In the forked child: it keeps only its own channel and record.
  sup_->set_child(
      [this] {
        signals_.clear();
        if (metrics_) metrics_->close_in_child();
        if (watch_) watch_->close_in_child();
      },
      [this, launch = worker_launch{&opts_, &units_, &pool_.listeners, &pool_.slots, pool_.segment->fd(), pool_.exec_path, ::getpid()}](
          const spawn_action& a, worker_slot& record, unique_fd channel, const sigset_t& mask) {
        return run_worker_child(launch, a, record, std::move(channel), mask);
      });
}

void master_process::on_signal(int sig) {
  guarded(::sigabbrev_np(sig), [&] {
    switch (effect_of(signal_role::master, sig)) {
      case signal_effect::reap: sup_->reap(); break;
      case signal_effect::drain: stop(stop_mode::graceful, "SIGTERM"); break;
      case signal_effect::fast_stop: stop(stop_mode::fast, sig == SIGINT ? "SIGINT" : "SIGQUIT"); break;
      case signal_effect::reload: begin_reload("SIGHUP", false); break;
      case signal_effect::scale_up:
      case signal_effect::scale_down: scale(sig); break;
      case signal_effect::reopen_logs:
        log_ = ctx_->reopen_log();
        for (const auto& [pid, w] : table_->workers()) table_->signal(pid, SIGUSR1);
        break;
      case signal_effect::upgrade: upgrade_master(pool_, opts_, *sup_, sys_, *report_, *log_); break;
      default: break;  // not a master signal: the set does not listen on it
    }
  });
  wait_signal();
}

void master_process::wait_signal() {
  if (finished_) return;
  signals_.async_wait([this](boost::system::error_code e, int sig) {
    if (!e) on_signal(sig);
  });
}

void master_process::stop(stop_mode mode, std::string_view why) {
  const auto n = table_->size();
  if (mode == stop_mode::graceful) {
    log_->info("{}: draining {} worker(s)", why, n);
    notify_.stopping(fmt::format("draining {} worker(s)", n));
  } else {
    log_->info("{}: fast stop", why);
    notify_.stopping("fast stop");
  }
  pool_.segment->header().master_state.store(master_state::draining);
  sup_->execute(sup_->policy().stop(mode, now_ms()));
  retire_listeners(retire_, pool_, log_);  // new connections are refused, not queued for nobody
}

// `app scale N` leaves N in the block; a bare signal means one more or one fewer.
void master_process::scale(int sig) {
  const auto requested = pool_.segment->header().scale_request.exchange(0);
  const int now = sup_->policy().workers();
  const int want = std::clamp(requested && sig == SIGTTIN ? static_cast<int>(requested) : now + (sig == SIGTTIN ? 1 : -1),
                              1, pool_.max_workers);
  pool_.slots.grow(pool_.listeners, want);  // before a new slot's worker is forked
  if (want < now) {  // before the slots drain: their queues only shrink
    auto keep = pool_.slots.steered();
    std::erase_if(keep, [&](int slot) { return slot >= want; });
    pool_.slots.steer(pool_.listeners, keep.empty() ? slot_sockets::all_of(want) : keep);
  }
  const int n = sup_->scale(requested && sig == SIGTTIN ? static_cast<int>(requested) : now + (sig == SIGTTIN ? 1 : -1));
  log_->info("{}: {} worker(s)", requested ? "scale" : sig == SIGTTIN ? "SIGTTIN" : "SIGTTOU", n);
}

// A unit's ctx.request_reload/request_stop, from a worker's channel or the master itself.
void master_process::requested(control_request what, const std::string& who, std::string_view reason) {
  const auto why = fmt::format("{} requested by {}: {}", what == control_request::reload ? "reload" : "stop", who, reason);
  what == control_request::reload ? begin_reload(why, true) : stop(stop_mode::graceful, why);
}

void master_process::begin_reload(const std::string& why, bool in_status) {
  if (sup_->policy().request_reload() != reload_request::begin) return log_->info("{}: after the rollout in progress", why);
  report_->begun();
  log_->info("{}: reloading", why);
  if (in_status) reload_why_ = why;  // a unit's request: said with the outcome too
  const auto r = lc_.reload(*ctx_);  // a transaction: undone if it fails now or in the rollout
  if (!r.ok) return sup_->execute({sup_->policy().reject_reload(r.error)});
  begin_rollout("reload");
}

void master_process::begin_rollout(std::string_view why) {
  if (why != "reload") report_->begun();
  auto& policy = sup_->policy();
  // Only fork mode can roll switched slots back (exec and upgrades lack the previous code).
  auto actions = policy.reload(now_ms(), why == "reload" && opts_.mode == reload_mode::fork);
  report_->rolling(why, policy.generation(), policy.workers());
  sup_->execute(std::move(actions));
}

// --reload-on-change: the config file, and the binary (exec mode: a reload runs it; fork
// mode: an upgrade, the one way a new binary reaches a fork-mode pool).
void master_process::watch_files() {
  if (!opts_.reload_on_change) return;
  std::vector<std::string> files{pool_.exec_path};
  if (!opts_.config.empty()) files.push_back(std::filesystem::absolute(opts_.config).lexically_normal().string());
  try {
    watch_.emplace(io_, files, std::chrono::milliseconds(300),
                   [this](const std::vector<std::string>& changed) { guarded("a changed file", [&] { files_changed(changed); }); },
                   log_);
  } catch (const std::exception& e) {
    log_->error("{}; files are not watched", e.what());
  }
}

void master_process::files_changed(const std::vector<std::string>& changed) {
  if (changed.empty()) return;
  const bool binary = std::find(changed.begin(), changed.end(), pool_.exec_path) != changed.end();
  std::string what;
  for (const auto& f : changed) what += (what.empty() ? "" : ", ") + f;
  if (binary && opts_.mode == reload_mode::fork) {
    if (sup_->policy().reloading()) {  // an upgrade waits for it; reloads are coalesced anyway
      upgrade_pending_ = true;
      return log_->info("--reload-on-change: {} changed: upgrading after the rollout in progress", what);
    }
    log_->info("--reload-on-change: {} changed: upgrading the master to the binary (SIGUSR2)", what);
    return upgrade_master(pool_, opts_, *sup_, sys_, *report_, *log_);
  }
  begin_reload(fmt::format("--reload-on-change: {} changed", what), true);
}

// WATCHDOG=1 from the master's loop: if the loop wedges, systemd notices.
void master_process::start_watchdog() {
  const auto every = notify_.watchdog_interval();
  if (!every || finished_) return;
  notify_.watchdog();
  watchdog_timer_.expires_after(*every);
  watchdog_timer_.async_wait([this](boost::system::error_code e) {
    if (!e) start_watchdog();
  });
}

// --accept reuseport: new connections go to the serving slots whose worker is READY and
// beat lately (a stopped or wedged one is left alone before the heartbeat timeout kills
// it); while none is, the steering stays as it was. What the other slots' queues hold is
// handed to those workers (connection_handover).
void master_process::steer_connections() {
  if (!pool_.slots.enabled() || pool_.listeners.empty()) return;
  if (sup_->policy().stopping()) return handover_->stop();
  const auto serving = sup_->steerable(late_beat);
  std::vector<int> slots;
  for (const auto& s : serving) slots.push_back(s.slot);
  if (!slots.empty()) try {
      pool_.slots.steer(pool_.listeners, slots);
    } catch (const std::exception& e) {
      log_->error("--accept reuseport: steering to {} slot(s): {}", slots.size(), e.what());
    }
  try {
    handover_->update(serving);  // none serving: nothing is taken, it waits for them
  } catch (const std::exception& e) {
    log_->error("--accept reuseport: watching the unserved slots: {}", e.what());
  }
}

// `ps`: "PROG: master [NAME] gen 3", and the state when it is not running (reloading,
// draining). Set when it changes.
void master_process::show_title() {
  const control_header& hdr = pool_.segment->header();
  const auto state = hdr.master_state.load();
  auto title = fmt::format("master [{}] gen {}", opts_.name, sup_->policy().generation());
  if (state != master_state::running) title += fmt::format(" {}", to_string(state));
  if (title != title_) detail::set_process_title(title_ = std::move(title), "master");
}

void master_process::schedule_tick() {
  if (finished_) return;
  // Heartbeats are checked a few times per timeout; other deadlines come from the policy.
  const auto check = std::clamp(opts_.heartbeat_timeout / 4, ms(100), ms(1000));
  auto next = now_ms() + check;
  if (auto d = sup_->policy().next_deadline(); d && *d < next) next = *d;
  tick_.expires_after(std::max(ms(0), next - now_ms()));
  tick_.async_wait([this](boost::system::error_code e) {
    if (!e && !finished_ && !guarded("tick", [&] { sup_->tick(); })) schedule_tick();
  });
}

void master_process::finish() {
  finished_ = true;
  tick_.cancel();
  watchdog_timer_.cancel();
  retire_.cancel();
  signals_.cancel();
  io_.stop();
}

int run_master(const options& opts, detail::app_units& units, asio::io_context& io,
               std::optional<incoming_upgrade> upgrade) {
  block_master_signals();  // until the master's signal_set listens on them (run)
  master_process m(opts, units, io, std::move(upgrade));
  return m.run();
}

}  // namespace systempp::master
