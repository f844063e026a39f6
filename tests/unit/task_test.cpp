// context::spawn: work a unit starts for a cycle is cancelled when the drain starts and
// waited for before post_shutdown, so it never runs after its unit stopped.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <sstream>
#include <string>
#include <vector>

#include <systempp/lifecycle.hpp>
#include <systempp/systempp.hpp>

#include "engine_fixture.hpp"

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

std::vector<std::string> events;
int cycle = 0;
bool task_throws = false;

// Spawns a task that ticks every 5 ms and never looks at ctx.draining(): only the
// cancellation stops it.
struct ticker {
  static constexpr std::string_view name = "ticker";
  asio::awaitable<void> on_startup(systempp::context& ctx) {
    ++cycle;
    ctx.spawn(*this, tick(ctx, cycle));
    co_return;
  }
  void post_shutdown() { events.push_back("post_shutdown " + std::to_string(cycle)); }

  static asio::awaitable<void> tick(systempp::context& ctx, int in_cycle) {
    asio::steady_timer t(ctx.io());
    for (;;) {
      t.expires_after(5ms);
      try {
        co_await t.async_wait(asio::use_awaitable);
      } catch (...) {
        events.push_back("task of cycle " + std::to_string(in_cycle) + " cancelled");
        throw;
      }
      events.push_back("tick of cycle " + std::to_string(in_cycle));
      if (task_throws) throw std::runtime_error("boom");
    }
  }
};

struct fixture : engine_fixture<systempp::app<ticker>> {
  std::ostringstream log_text;
  fixture() {
    ctx.set_logger(std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::ostream_sink_st>(log_text)));
    events.clear();
    cycle = 0;
    task_throws = false;
    lc.set_timeout(2s);
  }
  // One cycle that serves for 30 ms, as the inline process runs them one after another.
  void run_one() {
    systempp::cycle_hooks hooks;
    hooks.serve = [this]() -> asio::awaitable<void> {
      asio::steady_timer t(io, 30ms);
      co_await t.async_wait(asio::use_awaitable);
    };
    CHECK(systempp::run_cycle(lc, ctx, hooks).code == systempp::exit_code::ok);
  }
};

}  // namespace

TEST_CASE("a spawned task is cancelled at the drain and has ended before its unit's post_shutdown",
          "[lifecycle][tasks]") {
  fixture f;
  f.run_one();
  REQUIRE(std::count(events.begin(), events.end(), "tick of cycle 1") >= 1);
  const auto cancelled = std::find(events.begin(), events.end(), "task of cycle 1 cancelled");
  const auto stopped = std::find(events.begin(), events.end(), "post_shutdown 1");
  REQUIRE(cancelled != events.end());
  REQUIRE(stopped != events.end());
  CHECK(cancelled < stopped);
  CHECK(f.ctx.running_tasks() == 0);
}

TEST_CASE("a task of one cycle never runs in the next (the inline process's reload)", "[lifecycle][tasks]") {
  fixture f;
  f.run_one();
  f.run_one();
  const auto second_stop = std::find(events.begin(), events.end(), "post_shutdown 1");
  REQUIRE(second_stop != events.end());
  // After cycle 1's post_shutdown, only cycle 2's task ticks.
  CHECK(std::find(second_stop, events.end(), "tick of cycle 1") == events.end());
  CHECK(std::count(events.begin(), events.end(), "tick of cycle 2") >= 1);
}

TEST_CASE("a spawned task that throws is logged with its unit's name", "[lifecycle][tasks]") {
  fixture f;
  task_throws = true;
  f.run_one();
  CHECK(f.log_text.str().find("a task of unit ticker failed: boom") != std::string::npos);
  CHECK(f.ctx.running_tasks() == 0);
}
