// Hooks (before_X / after_X) and custom stages (SYSTEMPP_STAGE): where they run, for whom,
// and how their failures count. The first case ports systemPY's custom-target test.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <systempp/lifecycle.hpp>
#include <systempp/systempp.hpp>

#include "engine_fixture.hpp"

namespace {

std::vector<std::string> calls;
std::optional<std::string> fail_at;  // "u2:before_on_startup": that call throws

void note(std::string_view what, std::string_view who) {
  const std::string call = std::string(what) + ":" + std::string(who);
  calls.push_back(call);
  if (fail_at == call) throw std::runtime_error("injected failure");
}

// systemPY's test: a target adds hooks around on_init, pre_startup, post_startup,
// pre_shutdown and post_shutdown, plus a stage after post_shutdown and one after that.
// Here the hooks need no declaration; the two stages do.
SYSTEMPP_STAGE(also_after_post_shutdown, sync, backward, after, systempp::stages::post_shutdown);
SYSTEMPP_STAGE(after_also_after_post_shutdown, sync, backward, after, also_after_post_shutdown);

template <int N>
struct daemon_unit {
  static constexpr std::string_view names[] = {"", "1", "2", "3"};
  static constexpr std::string_view name = names[N];

  void before_on_init() { note("before_on_init", name); }
  void on_init() { note("on_init", name); }
  void after_on_init() { note("after_on_init", name); }
  void before_pre_startup() { note("before_pre_startup", name); }
  void pre_startup() { note("pre_startup", name); }
  void after_pre_startup() { note("after_pre_startup", name); }
  boost::asio::awaitable<void> on_startup() { note("on_startup", name); co_return; }
  boost::asio::awaitable<void> before_post_startup() { note("before_post_startup", name); co_return; }
  boost::asio::awaitable<void> post_startup() { note("post_startup", name); co_return; }
  // systemPY gathers these two; here units of one level run concurrently anyway, so the
  // order among them is not part of the contract: "*" like the original.
  boost::asio::awaitable<void> after_post_startup() { note("after_post_startup", "*"); co_return; }
  boost::asio::awaitable<void> before_pre_shutdown() { note("before_pre_shutdown", "*"); co_return; }
  boost::asio::awaitable<void> pre_shutdown() { note("pre_shutdown", name); co_return; }
  boost::asio::awaitable<void> on_shutdown() { note("on_shutdown", name); co_return; }
  void post_shutdown() { note("post_shutdown", name); }
  void after_post_shutdown() { note("after_post_shutdown", name); }
  void also_after_post_shutdown() { note("also_after_post_shutdown", name); }
  void after_also_after_post_shutdown() { note("after_also_after_post_shutdown", name); }
};

using example_daemon = systempp::app<daemon_unit<1>, daemon_unit<2>, daemon_unit<3>, also_after_post_shutdown,
                                     after_also_after_post_shutdown>;

template <class App>
int run_script(int body_code = 0) {
  const char* argv[] = {"custom_stage_test", "--log-level", "off", nullptr};
  return systempp::run_script<App>(3, const_cast<char**>(argv), [&](systempp::context&) {
    calls.push_back("main_async");
    return body_code;
  });
}

using who_list = std::vector<std::string_view>;

std::vector<std::string> each(std::string_view stage, const who_list& who) {
  std::vector<std::string> out;
  for (auto w : who) out.push_back(std::string(stage) + ":" + std::string(w));
  return out;
}

std::vector<std::string> join(std::initializer_list<std::vector<std::string>> parts) {
  std::vector<std::string> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

void reset() {
  calls.clear();
  fail_at.reset();
}

}  // namespace

TEST_CASE("systemPY's custom target test: hooks and chained stages run in its order", "[stages]") {
  reset();
  REQUIRE(run_script<example_daemon>() == 0);
  const who_list fwd{"1", "2", "3"}, back{"3", "2", "1"}, all{"*", "*", "*"};
  CHECK(calls == join({each("before_on_init", fwd), each("on_init", fwd), each("after_on_init", fwd),
                       each("before_pre_startup", fwd), each("pre_startup", fwd), each("after_pre_startup", fwd),
                       each("on_startup", fwd), each("before_post_startup", fwd), each("post_startup", fwd),
                       each("after_post_startup", all), {"main_async"}, each("before_pre_shutdown", all),
                       each("pre_shutdown", back), each("on_shutdown", back), each("post_shutdown", back),
                       each("after_post_shutdown", back), each("also_after_post_shutdown", back),
                       each("after_also_after_post_shutdown", back)}));
}

TEST_CASE("a failing before-hook stops its stage, fails with the stage's code, and teardown pairs", "[stages]") {
  reset();
  fail_at = "on_startup:2";  // first check the plain stage's code ...
  const int stage_code = run_script<example_daemon>();
  reset();
  fail_at = "before_post_startup:2";
  const int hook_code = run_script<example_daemon>();
  CHECK(stage_code == static_cast<int>(systempp::exit_code::on_startup_failed));
  CHECK(hook_code == static_cast<int>(systempp::exit_code::post_startup_failed));
  // post_startup never ran; every unit completed on_startup, so every one is stopped.
  CHECK(std::find(calls.begin(), calls.end(), "post_startup:1") == calls.end());
  CHECK(std::find(calls.begin(), calls.end(), "main_async") == calls.end());
  for (auto u : {"1", "2", "3"}) {
    CHECK(std::count(calls.begin(), calls.end(), std::string("on_shutdown:") + u) == 1);
    CHECK(std::count(calls.begin(), calls.end(), std::string("after_also_after_post_shutdown:") + u) == 1);
  }
}

TEST_CASE("a failing after-hook of a backward stage still runs for every unit", "[stages]") {
  reset();
  fail_at = "after_post_shutdown:2";
  CHECK(run_script<example_daemon>() == static_cast<int>(systempp::exit_code::unclean_shutdown));
  CHECK(each("after_post_shutdown", {"3", "2", "1"}) ==
        std::vector<std::string>(calls.end() - 9, calls.end() - 6));
  CHECK(calls.back() == "after_also_after_post_shutdown:1");
}

namespace {

// A custom stage where the issue puts one: after post_startup, before READY.
SYSTEMPP_STAGE(warmup, async, forward, after, systempp::stages::post_startup);

struct cache {
  boost::asio::awaitable<void> warmup(systempp::context&) { note("warmup", "cache"); co_return; }
  void on_shutdown() { note("on_shutdown", "cache"); }
};
struct plain {  // no warmup member: it is skipped, and nothing else changes
  void post_startup() { note("post_startup", "plain"); }
};
using warm_app = systempp::app<plain, cache, warmup>;

using warm_fixture = engine_fixture<warm_app>;

}  // namespace

TEST_CASE("a custom stage runs after its anchor and before READY, and is recorded by name", "[stages]") {
  reset();
  REQUIRE(run_script<warm_app>() == 0);
  CHECK(calls == std::vector<std::string>{"post_startup:plain", "warmup:cache", "main_async", "on_shutdown:cache"});

  warm_fixture f;
  const auto names = f.lc.stage_names();
  REQUIRE(names.size() == systempp::first_custom_stage + 1);
  CHECK(names[systempp::first_custom_stage] == "warmup");
  CHECK(names[static_cast<std::size_t>(systempp::hook_of(systempp::stage::on_init, systempp::stage_place::after))] ==
        "after_on_init");
  CHECK(f.lc.stops_at_failure(static_cast<systempp::stage>(systempp::first_custom_stage)));
  CHECK_FALSE(f.lc.stops_at_failure(systempp::hook_of(systempp::stage::on_exit, systempp::stage_place::before)));
}

TEST_CASE("a failing custom stage fails like its anchor: no READY, the units that started are stopped", "[stages]") {
  reset();
  fail_at = "warmup:cache";
  CHECK(run_script<warm_app>() == static_cast<int>(systempp::exit_code::post_startup_failed));
  CHECK(calls == std::vector<std::string>{"post_startup:plain", "warmup:cache", "on_shutdown:cache"});
}

namespace {

SYSTEMPP_STAGE(first_after, sync, forward, after, systempp::stages::pre_startup);
SYSTEMPP_STAGE(second_after, sync, forward, after, first_after);
struct chained {
  void pre_startup() { note("pre_startup", "c"); }
  void after_pre_startup() { note("after_pre_startup", "c"); }
  void first_after() { note("first_after", "c"); }
  void second_after() { note("second_after", "c"); }
  void post_shutdown() { note("post_shutdown", "c"); }
};
using chained_app = systempp::app<chained, first_after, second_after>;

}  // namespace

TEST_CASE("a failing after-hook of a forward stage stops the custom stages after it", "[stages]") {
  reset();
  fail_at = "after_pre_startup:c";
  CHECK(run_script<chained_app>() == static_cast<int>(systempp::exit_code::pre_startup_failed));
  CHECK(calls == std::vector<std::string>{"pre_startup:c", "after_pre_startup:c", "post_shutdown:c"});
  reset();
  fail_at = "first_after:c";
  CHECK(run_script<chained_app>() == static_cast<int>(systempp::exit_code::pre_startup_failed));
  CHECK(calls == std::vector<std::string>{"pre_startup:c", "after_pre_startup:c", "first_after:c", "post_shutdown:c"});
}
