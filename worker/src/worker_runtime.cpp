// The worker process: one cycle of stages, READY and heartbeat in its control-block
// record, and a drain on DRAIN, SIGTERM or the master's death.

#include "systempp/worker/worker_runtime.hpp"

#include <sys/prctl.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <csignal>

#include "systempp/lifecycle.hpp"
#include "systempp/log.hpp"

namespace systempp::worker {

namespace asio = boost::asio;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

namespace {

// Publishes the running unit and stage, and each stage's duration, in the slot.
class slot_observer final : public stage_observer {
 public:
  explicit slot_observer(worker_slot& r) : r_(r) {}
  void stage_begin(std::size_t unit, stage s) override {
    if (failed_) return;  // keep naming the stage that failed, for the master's log
    slot_update u(r_);
    r_.unit.store(static_cast<std::uint32_t>(unit), std::memory_order_relaxed);
    r_.stage.store(static_cast<std::uint32_t>(s), std::memory_order_relaxed);
  }
  void stage_end(std::size_t unit, stage s, std::chrono::microseconds took, stage_outcome outcome) override {
    if (unit < worker_slot::max_units) {
      const auto us = std::min<std::int64_t>(took.count(), UINT32_MAX);
      r_.stage_us[unit][static_cast<std::size_t>(s)].store(static_cast<std::uint32_t>(us),
                                                          std::memory_order_relaxed);
    }
    if (outcome != stage_outcome::ok && !is_backward(s)) failed_ = true;
  }

 private:
  worker_slot& r_;
  bool failed_ = false;
};

void set_state(worker_slot& r, worker_state s) {
  slot_update u(r);
  r.state.store(s, std::memory_order_release);
}

}  // namespace

int run(launch& l) noexcept {
  try {
    // Die with the master: the kernel sends SIGTERM when the parent goes, and a master that
    // died before prctl took effect is caught by the getppid() check.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != l.master_pid) return to_int(exit_code::failure);

    // The master coordinates reloads and scaling: a terminal's Ctrl-C or a HUP sent to the
    // whole process group must not reach the workers' units.
    for (int sig : {SIGHUP, SIGINT, SIGTTIN, SIGTTOU, SIGUSR2, SIGPIPE}) ::signal(sig, SIG_IGN);

    worker_slot& rec = *l.record;
    const options& opts = *l.opts;
    auto log = make_logger(fmt::format("worker[{}] g{}", l.slot, l.generation), opts);

    asio::io_context io;
    asio::signal_set signals(io, SIGTERM, SIGQUIT, SIGUSR1);
    ::pthread_sigmask(SIG_SETMASK, &l.restore_mask, nullptr);
    asio::posix::stream_descriptor channel(io, l.channel.release());

    lifecycle lc(*l.units);
    lc.set_timeout(opts.stage_timeout);
    slot_observer observer(rec);
    lc.set_observer(&observer);
    context ctx(process_role::worker, opts, log, io, *l.listeners, lc.refs());
    ctx.set_process(process_role::worker, l.slot, l.generation, ::getpid());
    ctx.set_slot_record(&rec);
    set_state(rec, worker_state::starting);

    // The heartbeat runs on the loop, so a blocked loop stops beating.
    const auto beat_every = std::clamp(opts.heartbeat_timeout / 4, std::chrono::milliseconds(50),
                                       std::chrono::milliseconds(1000));
    asio::steady_timer beat(io);
    // --max-requests with jitter: this worker's share, so the pool does not recycle in step.
    std::uint64_t request_limit = 0;
    if (opts.max_requests > 0) {
      request_limit = opts.max_requests;
      if (opts.max_requests_jitter > 0)
        request_limit += static_cast<std::uint64_t>(::getpid()) * 2654435761u % (opts.max_requests_jitter + 1);
    }
    bool recycle_asked = false;
    auto heartbeat = [&]() -> asio::awaitable<void> {
      for (;;) {
        rec.heartbeat_ms.store(monotonic_ms(), std::memory_order_relaxed);
        if (request_limit && !recycle_asked && !ctx.draining() &&
            rec.requests.load(std::memory_order_relaxed) >= request_limit) {
          recycle_asked = true;  // the master starts a replacement, then drains this one
          const char byte = msg_recycle;
          [[maybe_unused]] auto n = ::write(channel.native_handle(), &byte, 1);
          log->info("served {} requests: asking to be recycled", request_limit);
        }
        beat.expires_after(beat_every);
        auto [ec] = co_await beat.async_wait(use_tuple);
        if (ec) co_return;
      }
    };

    bool fast = false;
    cycle_hooks hooks;
    hooks.on_ready = [&] {
      rec.ready_ms.store(monotonic_ms(), std::memory_order_relaxed);
      {
        slot_update u(rec);  // serving: no unit is inside a stage
        rec.stage.store(no_stage, std::memory_order_relaxed);
        rec.unit.store(no_unit, std::memory_order_relaxed);
        rec.state.store(worker_state::ready, std::memory_order_release);
      }
      const char byte = msg_ready;
      [[maybe_unused]] auto n = ::write(channel.native_handle(), &byte, 1);
      log->info("ready");
    };
    // Serve until the master says drain (or dies: EOF on the channel), or SIGTERM comes.
    hooks.serve = [&]() -> asio::awaitable<void> {
      using namespace asio::experimental::awaitable_operators;
      auto from_master = [&]() -> asio::awaitable<void> {
        for (;;) {
          char byte = 0;
          auto [ec, n] = co_await channel.async_read_some(asio::buffer(&byte, 1), use_tuple);
          if (ec == asio::error::operation_aborted) co_return;  // a signal came first
          if (ec || n == 0) {
            log->warn("the master is gone: draining");
            co_return;
          }
          if (byte == msg_drain) co_return;
          if (byte == msg_quit) {
            fast = true;
            co_return;
          }
        }
      };
      auto from_signals = [&]() -> asio::awaitable<void> {
        for (;;) {
          auto [ec, sig] = co_await signals.async_wait(use_tuple);
          if (ec) co_return;
          if (sig == SIGUSR1) {
            log = make_logger(log->name(), opts);  // reopen the log file
            ctx.set_logger(log);
            log->info("SIGUSR1: log reopened");
            continue;
          }
          fast = sig == SIGQUIT;
          co_return;
        }
      };
      co_await (from_master() || from_signals());
      if (fast) {
        log->info("fast stop");
        log->flush();
        ::_exit(0);
      }
    };
    hooks.on_drain = [&] {
      set_state(rec, worker_state::draining);
      // While draining, a fast stop (SIGQUIT or the master's QUIT) still ends it at once.
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            for (;;) {
              auto [ec, sig] = co_await signals.async_wait(use_tuple);
              if (ec) co_return;
              if (sig == SIGQUIT) ::_exit(0);
            }
          },
          asio::detached);
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            for (;;) {
              char byte = 0;
              auto [ec, n] = co_await channel.async_read_some(asio::buffer(&byte, 1), use_tuple);
              if (ec || n == 0) co_return;
              if (byte == msg_quit) ::_exit(0);
            }
          },
          asio::detached);
      // A kernel-enforced deadline: even a wedged loop cannot outlive the drain for long.
      ::alarm(static_cast<unsigned>(std::ceil(opts.graceful_timeout.count() / 1000.0)) + 1);
      log->info("draining");
    };
    hooks.on_loop_stopped = [&] { beat.cancel(); };

    asio::co_spawn(io, heartbeat(), asio::detached);
    const auto result = run_cycle(lc, ctx, hooks);
    {
      slot_update u(rec);
      if (result.code == exit_code::ok) {
        rec.stage.store(no_stage, std::memory_order_relaxed);
        rec.unit.store(no_unit, std::memory_order_relaxed);
      }
      rec.state.store(worker_state::exited, std::memory_order_release);
    }
    if (result.code != exit_code::ok) log->error("worker failed: {}", result.error);
    log->info("exit {}", to_int(result.code));
    log->flush();
    return to_int(result.code);
  } catch (const config_error& e) {
    std::fprintf(stderr, "worker: %s\n", e.what());
    return to_int(exit_code::usage);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker: fatal: %s\n", e.what());
    return to_int(exit_code::failure);
  } catch (...) {
    return to_int(exit_code::failure);
  }
}

}  // namespace systempp::worker
