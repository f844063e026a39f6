// The reload transaction (lifecycle::reload, commit_reload, abort_reload): a unit is kept
// before its on_reload runs, and a reload that fails now or later leaves every unit exactly
// as it was.

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <systempp/lifecycle.hpp>
#include <systempp/systempp.hpp>

#include "engine_fixture.hpp"

namespace {

std::vector<std::string> events;
int next_value = 0;          // what a reload loads
std::string reject_in;       // the unit whose on_reload throws
std::string rollback_throws;  // the unit whose rollback_reload throws

// Copyable: the runtime restores it from a copy. It changes itself, then may throw halfway.
struct settings {
  static constexpr std::string_view name = "settings";
  int value = 1;
  std::string source = "start";
  void on_reload() {
    value = next_value;
    if (reject_in == name) throw std::runtime_error("bad value");
    source = "reload";
  }
};

// Not copyable: it rolls back and commits itself.
template <int N>
struct pool {
  static constexpr std::string_view names[] = {"pool_a", "pool_b"};
  static constexpr std::string_view name = names[N];
  std::unique_ptr<int> staged;
  int live = 1;
  void on_reload(systempp::context&) {
    events.push_back(std::string(name) + ":on_reload");
    staged = std::make_unique<int>(next_value);
    if (reject_in == name) throw std::runtime_error("cannot connect");
  }
  void rollback_reload(systempp::context&) {
    events.push_back(std::string(name) + ":rollback");
    staged.reset();
    if (rollback_throws == name) throw std::runtime_error("rollback failed");
  }
  void commit_reload() {
    events.push_back(std::string(name) + ":commit");
    live = *staged;
    staged.reset();
  }
};

// Without on_reload: never kept, never restored.
struct plain {
  int touched = 0;
  void on_init() {}
};

using reloading_app = systempp::app<settings, pool<0>, plain, pool<1>>;

struct fixture : engine_fixture<reloading_app, systempp::process_role::master> {
  fixture() {
    events.clear();
    next_value = 2;
    reject_in.clear();
    rollback_throws.clear();
    REQUIRE(lc.run(systempp::stage::on_init, ctx).ok);
  }
  settings& s() { return ctx.unit<settings>(); }
  pool<0>& a() { return ctx.unit<pool<0>>(); }
  pool<1>& b() { return ctx.unit<pool<1>>(); }
};

}  // namespace

TEST_CASE("a reload rejected by a later unit leaves the earlier ones as they were", "[lifecycle][reload]") {
  fixture f;
  settings* const where = &f.s();
  reject_in = "pool_b";
  const auto r = f.lc.reload(f.ctx);
  CHECK_FALSE(r.ok);
  CHECK(r.error == "unit pool_b, stage on_reload: cannot connect");
  CHECK(f.s().value == 1);
  CHECK(f.s().source == "start");
  CHECK(&f.s() == where);  // restored in place: references to the unit stay valid
  // Every unit whose on_reload ran rolls back, the failing one too, latest first.
  CHECK(events == std::vector<std::string>{"pool_a:on_reload", "pool_b:on_reload", "pool_b:rollback", "pool_a:rollback"});
  CHECK_FALSE(f.a().staged);
  CHECK_FALSE(f.lc.reload_open());
}

TEST_CASE("a unit that changed itself and then threw is restored too", "[lifecycle][reload]") {
  fixture f;
  reject_in = "settings";
  CHECK_FALSE(f.lc.reload(f.ctx).ok);
  CHECK(f.s().value == 1);
  CHECK(events.empty());  // the later units never ran on_reload, so they are not rolled back
}

TEST_CASE("a reload that passed stays open until it is committed", "[lifecycle][reload]") {
  fixture f;
  REQUIRE(f.lc.reload(f.ctx).ok);
  CHECK(f.lc.reload_open());
  CHECK(f.s().value == 2);
  CHECK(f.a().live == 1);  // staged, not live yet
  f.lc.commit_reload(f.ctx);
  CHECK_FALSE(f.lc.reload_open());
  CHECK(f.a().live == 2);
  CHECK(f.b().live == 2);
  CHECK(events == std::vector<std::string>{"pool_a:on_reload", "pool_b:on_reload", "pool_a:commit", "pool_b:commit"});
  f.lc.abort_reload(f.ctx);  // nothing open: nothing happens
  CHECK(f.s().value == 2);
}

TEST_CASE("a reload that passed and is aborted later (its rollout failed) is undone", "[lifecycle][reload]") {
  fixture f;
  REQUIRE(f.lc.reload(f.ctx).ok);
  f.lc.abort_reload(f.ctx);
  CHECK(f.s().value == 1);
  CHECK(f.s().source == "start");
  CHECK(f.a().live == 1);
  CHECK(events == std::vector<std::string>{"pool_a:on_reload", "pool_b:on_reload", "pool_b:rollback", "pool_a:rollback"});
  // The next reload starts from the restored state.
  next_value = 3;
  REQUIRE(f.lc.reload(f.ctx).ok);
  f.lc.commit_reload(f.ctx);
  CHECK(f.s().value == 3);
  CHECK(f.a().live == 3);
}

TEST_CASE("a throwing rollback_reload does not stop the other units from being restored", "[lifecycle][reload]") {
  fixture f;
  rollback_throws = "pool_b";
  REQUIRE(f.lc.reload(f.ctx).ok);
  f.lc.abort_reload(f.ctx);
  CHECK(f.s().value == 1);
  CHECK(events == std::vector<std::string>{"pool_a:on_reload", "pool_b:on_reload", "pool_b:rollback", "pool_a:rollback"});
  CHECK_FALSE(f.lc.reload_open());
}

TEST_CASE("a reload begun while one is open commits the open one first", "[lifecycle][reload]") {
  fixture f;
  REQUIRE(f.lc.reload(f.ctx).ok);
  next_value = 3;
  reject_in = "pool_a";
  CHECK_FALSE(f.lc.reload(f.ctx).ok);
  CHECK(f.s().value == 2);  // back to the committed reload, not to the start
  CHECK(f.a().live == 2);
}
