// A test-only app: the demo's units plus three probes (alpha, beta, gamma) that implement
// every stage, and the custom stage "warmup" (after post_startup, before READY), so the
// runtime logs each call ("pre_startup beta 0.0 ms ok"). Faults are injected from the
// environment (a stage may be "warmup" too):
//   PROBE_FAULTS="unit:stage:kind,..."  kind = throw | config | hang | exit | abort
//     throw: a runtime_error; config: a config_error (exit 2); hang: never completes
//     (a sync stage blocks, an async one waits forever); exit: _exit(99) on the spot;
//     abort: std::abort() (SIGABRT, a crash).
//     A kind may end in "@slotN" or "@genN": the fault then applies only to that worker
//     slot or pool generation.
//   PROBE_FAULTS_FILE=PATH  read the faults from this file (same syntax) at every stage
//     instead, so a test can change them while the pool runs.
//   PROBE_REQUEST="reload:worker0g1" | "stop:worker0g1" | "reload:master" | "stop:master"
//     gamma calls ctx.request_reload/request_stop("probe asked"), from a thread of its own:
//     in worker slot 0 of generation 1 once READY (post_startup), or in the master's on_init.
//   PROBE_BLOCK_LOOP_MS=N  N ms after READY, the worker's loop blocks for good (a wedged
//     process: its heartbeat stops).
//   PROBE_RAW_SPAWN=PATH  gamma's on_startup starts a raw co_spawn(ctx.io(), ...) ticker
//     that never watches the drain: every 5 ms it appends "cycle K tick" to PATH (K: the
//     cycle it was started in), and "cycle K ran in cycle M" when it runs in a later cycle
//     M, that is after its unit's post_shutdown.
//   PROBE_UNHEALTHY="unit:reason"  that probe reports itself unhealthy in its post_startup
//     (ctx.set_unhealthy), so the worker is READY but unhealthy.
//   PROBE_GROW_FILE=PATH  gamma looks at PATH every 20 ms in each worker; when it holds
//     "PID MB" with the worker's own pid, the worker allocates MB MiB more and touches it
//     (resident memory grows; --max-rss), once per new content.
//   PROBE_DELAY="stage:ms"  e.g. "on_startup:300": alpha, beta and gamma each wait ms on a
//     steady_timer of ctx.io() in that async stage (on_startup, post_startup, warmup,
//     pre_shutdown or on_shutdown), after its fault check.

#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include <systempp/helpers.hpp>
#include <systempp/systempp.hpp>

#include "http_server.hpp"
#include "settings.hpp"

namespace {

using systempp::stage;

std::string faults() {
  if (const char* file = std::getenv("PROBE_FAULTS_FILE")) {
    std::ifstream in(file);
    std::string text;
    std::getline(in, text);
    return text;
  }
  const char* env = std::getenv("PROBE_FAULTS");
  return env ? env : "";
}

// `stage_name`: a built-in stage, a hook or the custom stage "warmup".
std::string fault_for(std::string_view unit, std::string_view stage_name, const systempp::context& ctx) {
  const std::string text = faults();
  if (text.empty()) return {};
  const std::string prefix = std::string(unit) + ":" + std::string(stage_name) + ":";
  std::string_view all(text);
  while (!all.empty()) {
    auto comma = all.find(',');
    std::string_view item = all.substr(0, comma);
    all = comma == std::string_view::npos ? std::string_view{} : all.substr(comma + 1);
    if (!item.starts_with(prefix)) continue;
    std::string kind(item.substr(prefix.size()));
    if (auto at = kind.find('@'); at != std::string::npos) {
      const std::string filter = kind.substr(at + 1);
      kind.erase(at);
      if (filter.starts_with("slot") && std::to_string(ctx.slot()) != filter.substr(4)) continue;
      if (filter.starts_with("gen") && std::to_string(ctx.generation()) != filter.substr(3)) continue;
    }
    return kind;
  }
  return {};
}

// Returns true when the stage should hang.
bool apply_fault(std::string_view unit, std::string_view stage_name, const systempp::context& ctx) {
  const std::string kind = fault_for(unit, stage_name, ctx);
  if (kind.empty()) return false;
  if (kind == "throw") throw std::runtime_error("injected failure");
  if (kind == "config") throw systempp::config_error("injected configuration error");
  if (kind == "exit") ::_exit(99);
  if (kind == "abort") std::abort();
  return kind == "hang";
}
bool apply_fault(std::string_view unit, stage s, const systempp::context& ctx) {
  return apply_fault(unit, to_string(s), ctx);
}

void hang_forever() {
  for (;;) ::pause();
}

boost::asio::awaitable<void> wait_forever(systempp::context& ctx) {
  boost::asio::steady_timer t(ctx.io(), std::chrono::hours(24));
  co_await t.async_wait(boost::asio::use_awaitable);
}

// PROBE_DELAY: how long the probes wait in async stage `s` (zero unless it names `s`).
std::chrono::milliseconds delay_for(std::string_view stage_name) {
  const char* env = std::getenv("PROBE_DELAY");
  if (!env) return {};
  const std::string_view spec(env);
  const auto colon = spec.find(':');
  if (colon == std::string_view::npos || spec.substr(0, colon) != stage_name) return {};
  return std::chrono::milliseconds(std::atoi(env + colon + 1));
}

boost::asio::awaitable<void> probe_delay(systempp::context& ctx, std::string_view stage_name) {
  const auto ms = delay_for(stage_name);
  if (ms <= std::chrono::milliseconds::zero()) co_return;
  boost::asio::steady_timer t(ctx.io(), ms);
  co_await t.async_wait(boost::asio::use_awaitable);
}

// PROBE_REQUEST: whether this process (the master, or worker slot/generation) asks now.
void maybe_request(systempp::context& ctx) {
  const char* env = std::getenv("PROBE_REQUEST");
  if (!env) return;
  const std::string_view spec(env);
  const auto colon = spec.find(':');
  const std::string_view what = spec.substr(0, colon);
  const std::string_view where = colon == std::string_view::npos ? "" : spec.substr(colon + 1);
  const std::string here = ctx.role() == systempp::process_role::master
                               ? "master"
                               : "worker" + std::to_string(ctx.slot()) + "g" + std::to_string(ctx.generation());
  if (where != here) return;
  std::thread([&ctx, reload = what == "reload"] {
    if (reload)
      ctx.request_reload("probe asked");
    else
      ctx.request_stop("probe asked");
  }).join();
}

// PROBE_RAW_SPAWN: which cycle of this process runs now (pre_startup counts them).
int current_cycle = 0;

boost::asio::awaitable<void> raw_ticker(systempp::context& ctx, std::string path, int cycle) {
  boost::asio::steady_timer t(ctx.io());
  for (;;) {
    t.expires_after(std::chrono::milliseconds(5));
    co_await t.async_wait(boost::asio::use_awaitable);
    std::ofstream out(path, std::ios::app);
    if (cycle == current_cycle)
      out << "cycle " << cycle << " tick\n";
    else
      out << "cycle " << cycle << " ran in cycle " << current_cycle << "\n";
  }
}

void maybe_raw_spawn(systempp::context& ctx) {
  if (const char* path = std::getenv("PROBE_RAW_SPAWN"))
    boost::asio::co_spawn(ctx.io(), raw_ticker(ctx, path, current_cycle), boost::asio::detached);
}

template <int N>
struct probe {
  static constexpr std::string_view names[] = {"alpha", "beta", "gamma"};
  static constexpr std::string_view name = names[N];

  void on_init(systempp::context& ctx) {
    if (apply_fault(name, stage::on_init, ctx)) hang_forever();
    if (N == 2 && ctx.role() == systempp::process_role::master) maybe_request(ctx);
  }
  void on_reload(systempp::context& ctx) { if (apply_fault(name, stage::on_reload, ctx)) hang_forever(); }
  // Not copyable (the timer below): it takes part in the reload transaction by these.
  void rollback_reload(systempp::context& ctx) { ctx.log().info("rollback_reload {}", name); }
  void commit_reload(systempp::context& ctx) { ctx.log().info("commit_reload {}", name); }
  void pre_startup(systempp::context& ctx) {
    if (N == 2) ++current_cycle;
    if (apply_fault(name, stage::pre_startup, ctx)) hang_forever();
  }
  boost::asio::awaitable<void> on_startup(systempp::context& ctx) {
    if (apply_fault(name, stage::on_startup, ctx)) co_await wait_forever(ctx);
    co_await probe_delay(ctx, to_string(stage::on_startup));
    if (N == 2) maybe_raw_spawn(ctx);
  }
  boost::asio::awaitable<void> post_startup(systempp::context& ctx) {
    if (apply_fault(name, stage::post_startup, ctx)) co_await wait_forever(ctx);
    co_await probe_delay(ctx, to_string(stage::post_startup));
    if (const char* sick = std::getenv("PROBE_UNHEALTHY"); sick && std::string_view(sick).starts_with(std::string(name) + ":"))
      ctx.set_unhealthy(*this, std::string_view(sick).substr(name.size() + 1));
    if (N == 2) schedule_block(ctx);
    if (N == 2 && ctx.role() != systempp::process_role::master) maybe_grow(ctx);
    if (N == 2 && ctx.role() != systempp::process_role::master) maybe_request(ctx);
  }
  // The app's custom stage (after post_startup, before READY); faults and delays name it
  // "warmup" like a built-in stage.
  boost::asio::awaitable<void> warmup(systempp::context& ctx) {
    if (apply_fault(name, "warmup", ctx)) co_await wait_forever(ctx);
    co_await probe_delay(ctx, "warmup");
  }
  boost::asio::awaitable<void> pre_shutdown(systempp::context& ctx) {
    if (apply_fault(name, stage::pre_shutdown, ctx)) co_await wait_forever(ctx);
    co_await probe_delay(ctx, to_string(stage::pre_shutdown));
  }
  boost::asio::awaitable<void> on_shutdown(systempp::context& ctx) {
    if (apply_fault(name, stage::on_shutdown, ctx)) co_await wait_forever(ctx);
    co_await probe_delay(ctx, to_string(stage::on_shutdown));
  }
  void post_shutdown(systempp::context& ctx) { if (apply_fault(name, stage::post_shutdown, ctx)) hang_forever(); }
  void on_exit(systempp::context& ctx) { if (apply_fault(name, stage::on_exit, ctx)) hang_forever(); }

  // PROBE_BLOCK_LOOP_MS: a timer that, when it fires, never returns to the loop.
  void schedule_block(systempp::context& ctx) {
    const char* ms = std::getenv("PROBE_BLOCK_LOOP_MS");
    if (!ms) return;
    block_timer_ = std::make_unique<boost::asio::steady_timer>(ctx.io(), std::chrono::milliseconds(std::atoi(ms)));
    block_timer_->async_wait([](boost::system::error_code ec) {
      if (!ec) hang_forever();
    });
  }
  std::unique_ptr<boost::asio::steady_timer> block_timer_;

  // PROBE_GROW_FILE: resident memory that grows when the test says so.
  void maybe_grow(systempp::context& ctx) {
    const char* path = std::getenv("PROBE_GROW_FILE");
    if (!path) return;
    systempp::every(ctx, *this, std::chrono::milliseconds(20), [this, &ctx, file = std::string(path)] {
      std::ifstream in(file);
      long pid = 0, mb = 0;
      if (!(in >> pid >> mb) || pid != ::getpid() || mb <= 0 || grown_.size() == static_cast<std::size_t>(mb)) return;
      grown_.assign(static_cast<std::size_t>(mb), std::string(std::size_t{1} << 20, 'x'));  // every page written
      ctx.log().info("probe: grew by {} MiB", mb);
    });
  }
  std::vector<std::string> grown_;
};

SYSTEMPP_STAGE(warmup, async, forward, after, systempp::stages::post_startup);

using probe_app = systempp::app<demo::settings, probe<0>, probe<1>, probe<2>, demo::web, demo::http_server, warmup>;

}  // namespace

int main(int argc, char** argv) { return systempp::main<probe_app>(argc, argv); }
