// The stage engine: order, failure rules, timeouts, composition, script runner.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <systempp/lifecycle.hpp>
#include <systempp/systempp.hpp>

#include "engine_fixture.hpp"

namespace {

using systempp::stage;

std::vector<std::string> events;

// Which unit fails where, and how.
enum class fault { none, throws, config, hangs };
struct injection {
  std::string unit;
  stage where = stage::on_init;
  fault kind = fault::none;
};
std::optional<injection> inject;
std::optional<injection> inject_too;  // a second fault, for two units of one level

void reset() {
  events.clear();
  inject.reset();
  inject_too.reset();
}

bool apply(const std::optional<injection>& i, std::string_view unit, stage s) {
  if (!i || i->unit != unit || i->where != s) return false;
  if (i->kind == fault::throws) throw std::runtime_error("injected failure");
  if (i->kind == fault::config) throw systempp::config_error("injected bad config");
  return i->kind == fault::hangs;
}

bool hit(std::string_view unit, stage s) {
  events.push_back(std::string(unit) + ":" + std::string(to_string(s)));
  return apply(inject, unit, s) || apply(inject_too, unit, s);
}

// A slow sync stage: the sleep is the behaviour under test (a stage overrunning its
// timeout), not a wait for another thread.
void hang_sync() { std::this_thread::sleep_for(std::chrono::milliseconds(300)); }

boost::asio::awaitable<void> hang_async(systempp::context& ctx) {
  boost::asio::steady_timer forever(ctx.io(), std::chrono::hours(1));
  co_await forever.async_wait(boost::asio::use_awaitable);
}

template <int N, bool Chained>
struct probe;

// A chained probe depends on the one before it, so each runs its async stages alone, one
// after the other; a free one depends on nothing and shares its level with the others.
template <int N, bool Chained>
struct probe_dependencies {
  using type = systempp::units<>;
};
template <int N>
  requires(N > 1)
struct probe_dependencies<N, true> {
  using type = systempp::units<probe<N - 1, true>>;
};

// A unit with every stage; N names it u1, u2, ...
template <int N, bool Chained = true>
struct probe {
  static constexpr std::string_view names[] = {"u0", "u1", "u2", "u3", "u4"};
  static constexpr std::string_view name = names[N];
  using depends_on = typename probe_dependencies<N, Chained>::type;
  void on_init(systempp::context&) { if (hit(name, stage::on_init)) hang_sync(); }
  void on_reload(systempp::context&) { if (hit(name, stage::on_reload)) hang_sync(); }
  void pre_startup(systempp::context&) { if (hit(name, stage::pre_startup)) hang_sync(); }
  boost::asio::awaitable<void> on_startup(systempp::context& ctx) {
    if (hit(name, stage::on_startup)) co_await hang_async(ctx);
  }
  boost::asio::awaitable<void> post_startup(systempp::context& ctx) {
    if (hit(name, stage::post_startup)) co_await hang_async(ctx);
  }
  boost::asio::awaitable<void> pre_shutdown(systempp::context& ctx) {
    if (hit(name, stage::pre_shutdown)) co_await hang_async(ctx);
  }
  // A plain function is a valid async stage too.
  void on_shutdown(systempp::context&) { hit(name, stage::on_shutdown); }
  void post_shutdown(systempp::context&) { if (hit(name, stage::post_shutdown)) hang_sync(); }
  void on_exit() { if (hit(name, stage::on_exit)) hang_sync(); }
};

using three = systempp::app<probe<1>, probe<2>, probe<3>>;  // a chain: u1 <- u2 <- u3
using three_free = systempp::app<probe<1, false>, probe<2, false>, probe<3, false>>;  // one level

template <class App = three>
int run(std::vector<const char*> extra = {}, int body_code = 0) {
  std::vector<const char*> argv{"lifecycle_test", "--log-level", "off", "--stage-timeout", "0.1"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(nullptr);
  return systempp::run_script<App>(static_cast<int>(argv.size() - 1),
                                     const_cast<char**>(argv.data()),
                                     [&](systempp::context&) {
                                       events.push_back("body");
                                       return body_code;
                                     });
}

std::vector<std::string> seq(std::initializer_list<std::string> items) { return items; }

std::vector<std::string> stage_events(stage s, std::initializer_list<int> units) {
  std::vector<std::string> out;
  for (int u : units) out.push_back("u" + std::to_string(u) + ":" + std::string(to_string(s)));
  return out;
}

std::vector<std::string> join(std::initializer_list<std::vector<std::string>> parts) {
  std::vector<std::string> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

const auto full_start = join({stage_events(stage::on_init, {1, 2, 3}),
                              stage_events(stage::pre_startup, {1, 2, 3}),
                              stage_events(stage::on_startup, {1, 2, 3}),
                              stage_events(stage::post_startup, {1, 2, 3})});
const auto full_stop = join({stage_events(stage::pre_shutdown, {3, 2, 1}),
                             stage_events(stage::on_shutdown, {3, 2, 1}),
                             stage_events(stage::post_shutdown, {3, 2, 1}),
                             stage_events(stage::on_exit, {3, 2, 1})});

}  // namespace

TEST_CASE("forward stages run in declaration order and backward stages in reverse",
          "[lifecycle]") {
  reset();
  CHECK(run() == 0);
  CHECK(events == join({full_start, seq({"body"}), full_stop}));
}

TEST_CASE("a script returns its body's exit code after a full teardown", "[lifecycle][script]") {
  reset();
  CHECK(run({}, 42) == 42);
  CHECK(events == join({full_start, seq({"body"}), full_stop}));
}

namespace {
// Leaves a raw handler on the loop that throws: no coroutine of the runtime catches it.
struct thrower {
  void on_startup(systempp::context& ctx) {
    boost::asio::post(ctx.io(), [] { throw std::runtime_error("a raw handler threw"); });
  }
};
}  // namespace

TEST_CASE("a handler of the loop that throws fails the cycle with exit code 1", "[lifecycle][script]") {
  const char* argv[] = {"script", "--log-level", "off", nullptr};
  const int code = systempp::run_script<systempp::app<thrower>>(
      3, const_cast<char**>(argv), [](systempp::context& ctx) -> boost::asio::awaitable<int> {
        boost::asio::steady_timer t(ctx.io(), std::chrono::seconds(5));  // the throw stops the loop first
        co_await t.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
        co_return 0;
      });
  CHECK(code == 1);
}

TEST_CASE("a script whose body throws still runs every shutdown stage", "[lifecycle][script]") {
  reset();
  const char* argv[] = {"script", "--log-level", "off", nullptr};
  const int code = systempp::run_script<three>(3, const_cast<char**>(argv), [](systempp::context&) -> int {
    events.push_back("body");
    throw std::runtime_error("body failed");
  });
  CHECK(code == 1);
  CHECK(events == join({full_start, seq({"body"}), full_stop}));
}

TEST_CASE("a coroutine body runs inside the loop", "[lifecycle][script]") {
  reset();
  const char* argv[] = {"script", "--log-level", "off", nullptr};
  const int code = systempp::run_script<three>(
      3, const_cast<char**>(argv), [](systempp::context& ctx) -> boost::asio::awaitable<int> {
        boost::asio::steady_timer t(ctx.io(), std::chrono::milliseconds(1));
        co_await t.async_wait(boost::asio::use_awaitable);
        events.push_back("body");
        co_return 5;
      });
  CHECK(code == 5);
  CHECK(events == join({full_start, seq({"body"}), full_stop}));
}

TEST_CASE("a unit that throws in a stage: which callbacks run, and the exit code",
          "[lifecycle][failure]") {
  struct row {
    stage where;
    int code;
    std::vector<std::string> expected;
  };
  const std::vector<row> table{
      {stage::on_init, 3,
       join({seq({"u1:on_init", "u2:on_init"}), stage_events(stage::on_exit, {1})})},
      {stage::pre_startup, 4,
       join({stage_events(stage::on_init, {1, 2, 3}), seq({"u1:pre_startup", "u2:pre_startup"}),
             stage_events(stage::post_shutdown, {1}), stage_events(stage::on_exit, {3, 2, 1})})},
      {stage::on_startup, 5,
       join({stage_events(stage::on_init, {1, 2, 3}), stage_events(stage::pre_startup, {1, 2, 3}),
             seq({"u1:on_startup", "u2:on_startup"}), stage_events(stage::pre_shutdown, {1}),
             stage_events(stage::on_shutdown, {1}), stage_events(stage::post_shutdown, {3, 2, 1}),
             stage_events(stage::on_exit, {3, 2, 1})})},
      {stage::post_startup, 6,
       join({stage_events(stage::on_init, {1, 2, 3}), stage_events(stage::pre_startup, {1, 2, 3}),
             stage_events(stage::on_startup, {1, 2, 3}), seq({"u1:post_startup", "u2:post_startup"}),
             full_stop})},
      {stage::pre_shutdown, 7, join({full_start, seq({"body"}), full_stop})},
      {stage::on_shutdown, 7, join({full_start, seq({"body"}), full_stop})},
      {stage::post_shutdown, 7, join({full_start, seq({"body"}), full_stop})},
      {stage::on_exit, 7, join({full_start, seq({"body"}), full_stop})},
  };
  for (const auto& r : table) {
    DYNAMIC_SECTION("u2 throws in " << to_string(r.where)) {
      reset();
      inject = injection{"u2", r.where, fault::throws};
      CHECK(run() == r.code);
      CHECK(events == r.expected);
    }
  }
}

TEST_CASE("units of one level: a failure in on_startup and which callbacks run", "[lifecycle][failure][concurrent]") {
  struct row {
    std::string name;
    std::optional<injection> second;
    std::vector<std::string> expected;
  };
  // All three start in one level; u2 throws at once. u1 and u3 completed their on_startup
  // (nothing in them waits), so both are stopped, latest first; a u3 still waiting when u2
  // fails is cancelled and, never having started, is not stopped.
  const std::vector<row> table{
      {"the siblings complete", std::nullopt,
       join({stage_events(stage::on_init, {1, 2, 3}), stage_events(stage::pre_startup, {1, 2, 3}),
             stage_events(stage::on_startup, {1, 2, 3}), stage_events(stage::pre_shutdown, {3, 1}),
             stage_events(stage::on_shutdown, {3, 1}), stage_events(stage::post_shutdown, {3, 2, 1}),
             stage_events(stage::on_exit, {3, 2, 1})})},
      {"u3 is still waiting", injection{"u3", stage::on_startup, fault::hangs},
       join({stage_events(stage::on_init, {1, 2, 3}), stage_events(stage::pre_startup, {1, 2, 3}),
             stage_events(stage::on_startup, {1, 2, 3}), stage_events(stage::pre_shutdown, {1}),
             stage_events(stage::on_shutdown, {1}), stage_events(stage::post_shutdown, {3, 2, 1}),
             stage_events(stage::on_exit, {3, 2, 1})})},
  };
  for (const auto& r : table) {
    DYNAMIC_SECTION(r.name) {
      reset();
      inject = injection{"u2", stage::on_startup, fault::throws};
      inject_too = r.second;
      CHECK(run<three_free>() == 5);
      CHECK(events == r.expected);
    }
  }
}

TEST_CASE("units of one level: a hanging pre_shutdown does not hold the others back", "[lifecycle][timeout][concurrent]") {
  reset();
  inject = injection{"u2", stage::pre_shutdown, fault::hangs};
  CHECK(run<three_free>() == 7);
  CHECK(events == join({stage_events(stage::on_init, {1, 2, 3}), stage_events(stage::pre_startup, {1, 2, 3}),
                        stage_events(stage::on_startup, {1, 2, 3}), stage_events(stage::post_startup, {1, 2, 3}),
                        seq({"body"}), stage_events(stage::pre_shutdown, {3, 2, 1}),
                        stage_events(stage::on_shutdown, {3, 2, 1}), stage_events(stage::post_shutdown, {3, 2, 1}),
                        stage_events(stage::on_exit, {3, 2, 1})}));
}

namespace {

// An on_startup that waits 200 ms on the loop.
template <int N, bool Chained>
struct sleeper {
  static constexpr std::string_view names[] = {"s0", "s1", "s2", "s3"};
  static constexpr std::string_view name = names[N];
  using depends_on = std::conditional_t<Chained && (N > 1), systempp::units<sleeper<(N > 1 ? N - 1 : 1), Chained>>,
                                        systempp::units<>>;
  boost::asio::awaitable<void> on_startup(systempp::context& ctx) {
    boost::asio::steady_timer t(ctx.io(), std::chrono::milliseconds(200));
    co_await t.async_wait(boost::asio::use_awaitable);
  }
};

template <bool Chained>
std::chrono::milliseconds startup_of_three_sleepers() {
  using sleepers = systempp::app<sleeper<1, Chained>, sleeper<2, Chained>, sleeper<3, Chained>>;
  const char* argv[] = {"lifecycle_test", "--log-level", "off", nullptr};
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(systempp::run_script<sleepers>(3, const_cast<char**>(argv), [](systempp::context&) { return 0; }) == 0);
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
}

}  // namespace

TEST_CASE("three independent units whose on_startup waits 200 ms start together, a chain of them one by one",
          "[lifecycle][concurrent]") {
  // 600 ms apart: the bounds tell concurrent from sequential on a loaded machine too.
  const auto together = startup_of_three_sleepers<false>();
  const auto chained = startup_of_three_sleepers<true>();
  INFO("independent " << together.count() << " ms, chained " << chained.count() << " ms");
  CHECK(together >= std::chrono::milliseconds(200));
  CHECK(together < std::chrono::milliseconds(550));
  CHECK(chained >= std::chrono::milliseconds(600));
}

TEST_CASE("a config_error in a startup stage exits with code 2", "[lifecycle][failure]") {
  reset();
  inject = injection{"u3", stage::on_init, fault::config};
  CHECK(run() == 2);
  CHECK(events == join({stage_events(stage::on_init, {1, 2, 3}), stage_events(stage::on_exit, {2, 1})}));
}

TEST_CASE("an async stage that exceeds its timeout fails as a timeout and still tears down",
          "[lifecycle][timeout]") {
  reset();
  inject = injection{"u2", stage::on_startup, fault::hangs};
  CHECK(run() == 5);
  CHECK(events ==
        join({stage_events(stage::on_init, {1, 2, 3}), stage_events(stage::pre_startup, {1, 2, 3}),
              seq({"u1:on_startup", "u2:on_startup"}), stage_events(stage::pre_shutdown, {1}),
              stage_events(stage::on_shutdown, {1}), stage_events(stage::post_shutdown, {3, 2, 1}),
              stage_events(stage::on_exit, {3, 2, 1})}));
}

TEST_CASE("a hanging shutdown stage times out and the other units still stop",
          "[lifecycle][timeout]") {
  reset();
  inject = injection{"u2", stage::pre_shutdown, fault::hangs};
  CHECK(run() == 7);
  CHECK(events == join({full_start, seq({"body"}), full_stop}));
}

TEST_CASE("a sync stage that overruns its timeout is recorded as timed out",
          "[lifecycle][timeout]") {
  reset();
  inject = injection{"u1", stage::pre_startup, fault::hangs};
  CHECK(run() == 4);
  CHECK(events == join({stage_events(stage::on_init, {1, 2, 3}), seq({"u1:pre_startup"}),
                        stage_events(stage::post_shutdown, {}), stage_events(stage::on_exit, {3, 2, 1})}));
}

namespace {

using lifecycle_fixture = engine_fixture<three>;

}  // namespace

TEST_CASE("on_reload stops at the first throwing unit and names it", "[lifecycle][failure]") {
  reset();
  lifecycle_fixture f;
  REQUIRE(f.lc.run(stage::on_init, f.ctx).ok);
  inject = injection{"u2", stage::on_reload, fault::throws};
  const auto r = f.lc.run(stage::on_reload, f.ctx);
  CHECK_FALSE(r.ok);
  CHECK(r.failed_unit == 1);
  CHECK(r.error == "unit u2, stage on_reload: injected failure");
  CHECK(events == join({stage_events(stage::on_init, {1, 2, 3}), seq({"u1:on_reload", "u2:on_reload"})}));
}

TEST_CASE("every stage run is recorded with its duration and outcome", "[lifecycle]") {
  reset();
  lifecycle_fixture f;
  inject = injection{"u3", stage::on_init, fault::throws};
  f.lc.run(stage::on_init, f.ctx);
  const auto& rec = f.lc.records();
  REQUIRE(rec.size() == 3);
  CHECK(rec[0].outcome == systempp::stage_outcome::ok);
  CHECK(rec[2].unit == 2);
  CHECK(rec[2].outcome == systempp::stage_outcome::failed);
  CHECK(rec[2].error == "injected failure");
  CHECK(rec[2].duration.count() >= 0);
}

namespace {

struct base_a { static constexpr std::string_view name = "base_a"; void on_init() { events.push_back("base_a:on_init"); } void on_exit() { events.push_back("base_a:on_exit"); } };
struct base_b { static constexpr std::string_view name = "base_b"; void on_init() { events.push_back("base_b:on_init"); } void on_exit() { events.push_back("base_b:on_exit"); } };
struct extra { void on_init(systempp::context& ctx) { events.push_back("extra:on_init"); ctx.unit<base_a>(); } void on_exit() { events.push_back("extra:on_exit"); } };
using base_app = systempp::app<base_a, base_b>;
using extended_app = systempp::app<base_app, extra>;

}  // namespace

TEST_CASE("an app extending another keeps base units first forward and last backward",
          "[lifecycle][composition]") {
  reset();
  const char* argv[] = {"script", "--log-level", "off", nullptr};
  CHECK(systempp::run_script<extended_app>(3, const_cast<char**>(argv), [](systempp::context& ctx) {
          return &ctx.unit<extra>() != nullptr ? 0 : 1;
        }) == 0);
  CHECK(events == seq({"base_a:on_init", "base_b:on_init", "extra:on_init", "extra:on_exit",
                       "base_b:on_exit", "base_a:on_exit"}));
}

TEST_CASE("units are named by their name member or their type", "[lifecycle][composition]") {
  systempp::app_instance<extended_app> instance;
  REQUIRE(instance.entries().units.size() == 3);
  CHECK(instance.entries().units[0].ref.name == "base_a");
  CHECK(instance.entries().units[2].ref.name == "extra");
}

TEST_CASE("an async stage that throws fails at once with its message, not as a timeout",
          "[lifecycle][failure]") {
  reset();
  lifecycle_fixture f;
  REQUIRE(f.lc.run(stage::on_init, f.ctx).ok);
  REQUIRE(f.lc.run(stage::pre_startup, f.ctx).ok);
  f.lc.set_timeout(std::chrono::hours(1));  // a swallowed exception would hang here
  inject = injection{"u2", stage::on_startup, fault::throws};
  std::optional<systempp::stage_result> result;
  boost::asio::co_spawn(f.io, f.lc.run_async(stage::on_startup, f.ctx),
                        [&](std::exception_ptr, systempp::stage_result r) { result = r; });
  f.io.run_for(std::chrono::seconds(10));
  REQUIRE(result);
  CHECK_FALSE(result->ok);
  CHECK(result->error == "unit u2, stage on_startup: injected failure");
  CHECK(f.lc.records().back().outcome == systempp::stage_outcome::failed);
}

TEST_CASE("a config_error thrown by an async startup stage exits with code 2", "[lifecycle][failure]") {
  reset();
  inject = injection{"u3", stage::post_startup, fault::config};
  CHECK(run() == 2);
}

namespace deps {

std::vector<std::string> started;

struct settings {
  static constexpr std::string_view name = "settings";
  void on_init() { started.push_back("settings"); }
};
struct database {
  static constexpr std::string_view name = "database";
  using depends_on = systempp::units<settings>;
  void on_init() { started.push_back("database"); }
  void on_exit() { started.push_back("~database"); }
};
struct web {
  static constexpr std::string_view name = "web";
  using depends_on = systempp::units<database, settings>;
  void on_init() { started.push_back("web"); }
  void on_exit() { started.push_back("~web"); }
};
struct x {
  static constexpr std::string_view name = "x";
  void on_init() { started.push_back("x"); }
};
struct y {
  static constexpr std::string_view name = "y";
  void on_init() { started.push_back("y"); }
};

}  // namespace deps

TEST_CASE("declared dependencies start first, declaration order breaks ties, teardown is the reverse",
          "[lifecycle][dependencies]") {
  deps::started.clear();
  // Declared backwards, with two independent units around them.
  systempp::app_instance<systempp::app<deps::x, deps::web, deps::y, deps::database, deps::settings>> instance;
  std::vector<std::string> names;
  for (const auto& e : instance.entries().units) names.push_back(e.ref.name);
  CHECK(names == std::vector<std::string>{"x", "y", "settings", "database", "web"});
  // Each entry knows the positions of what it depends on.
  CHECK(instance.entries().units[3].depends_on == std::vector<std::size_t>{2});
  CHECK(instance.entries().units[4].depends_on == std::vector<std::size_t>{3, 2});

  boost::asio::io_context io;
  systempp::lifecycle lc(instance.entries());
  systempp::options opts;
  std::vector<systempp::listener> listeners;
  systempp::context ctx{systempp::process_role::script, opts,
                        std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>()),
                        io, listeners, lc.refs()};
  REQUIRE(lc.run(stage::on_init, ctx).ok);
  REQUIRE(lc.run(stage::on_exit, ctx).ok);
  CHECK(deps::started == std::vector<std::string>{"x", "y", "settings", "database", "web", "~web", "~database"});
}

TEST_CASE("an app without dependencies keeps its declaration order", "[lifecycle][dependencies]") {
  systempp::app_instance<systempp::app<deps::y, deps::x, deps::settings>> instance;
  std::vector<std::string> names;
  for (const auto& e : instance.entries().units) names.push_back(e.ref.name);
  CHECK(names == std::vector<std::string>{"y", "x", "settings"});
}

namespace {

struct base_unit {
  void pre_startup() { events.push_back("base"); }
};
struct consumer {
  static constexpr systempp::dedicated runs_in{.processes = 2};
  using depends_on = systempp::units<base_unit>;
  void pre_startup() { events.push_back("consumer"); }
};
struct web_unit {
  void pre_startup() { events.push_back("web"); }
};
using with_consumer = systempp::app<base_unit, web_unit, consumer>;

}  // namespace

TEST_CASE("run_only: a dedicated process runs its unit and what it depends on, a serving worker the rest",
          "[lifecycle][dedicated]") {
  reset();
  engine_fixture<with_consumer> dedicated, serving;
  dedicated.lc.run_only(2);  // consumer, in start order after base_unit and web_unit
  serving.lc.run_only(std::nullopt);
  REQUIRE(dedicated.lc.run(stage::pre_startup, dedicated.ctx).ok);
  CHECK(events == seq({"base", "consumer"}));
  events.clear();
  REQUIRE(serving.lc.run(stage::pre_startup, serving.ctx).ok);
  CHECK(events == seq({"base", "web"}));
  // An index from another image that is not a dedicated unit here is refused, not used.
  CHECK_THROWS_AS(serving.lc.run_only(1), systempp::config_error);
  CHECK_THROWS_AS(serving.lc.run_only(7), systempp::config_error);
}
