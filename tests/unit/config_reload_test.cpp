// The configuration file inside the reload transaction: read again and checked before any
// on_reload runs, what ctx.config() returns once it passed, put back when the reload is
// undone.

#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <systempp/app_config.hpp>

#include "engine_fixture.hpp"

namespace {

std::vector<std::string> calls;
bool reject = false;

struct cache {
  static constexpr std::string_view name = "cache";
  struct values {
    int size = 1;
  };
  static constexpr auto config_section =
      systempp::section("cache", systempp::key("size", &values::size, "Entries").range(1, 100));
  values v;
  void on_init(systempp::context& ctx) { v = ctx.config(*this); }
  void on_reload(systempp::context& ctx) {
    calls.push_back("cache");
    v = ctx.config(*this);
  }
};

struct gatekeeper {
  void on_reload() {
    calls.push_back("gatekeeper");
    if (reject) throw std::runtime_error("not now");
  }
};

using app = systempp::app<cache, gatekeeper>;

struct config_engine : engine_fixture<app> {
  std::string path = (std::filesystem::temp_directory_path() /
                      ("systempp_reload_" + std::to_string(::getpid()) + ".toml")).string();
  config_engine() {
    calls.clear();
    reject = false;
    write("[cache]\nsize = 1\n");
    opts.config = path;
    opts.file = std::make_shared<const systempp::config_document>(systempp::read_config_file(path));
    instance.entries().config = opts.file;
    REQUIRE(lc.run(systempp::stage::on_init, ctx).ok);
  }
  ~config_engine() { std::filesystem::remove(path); }
  void write(const std::string& text) const { std::ofstream(path, std::ios::trunc) << text; }
  int current() const { return ctx.config(instance_unit()).size; }
  const cache& instance_unit() const { return ctx.unit<cache>(); }
};

}  // namespace

TEST_CASE("a reload reads the file again: the units see the new values, and an abort puts the old back",
          "[config][reload]") {
  config_engine e;
  e.write("[cache]\nsize = 2\n");
  REQUIRE(e.lc.reload(e.ctx).ok);
  CHECK(e.current() == 2);
  CHECK(e.ctx.unit<cache>().v.size == 2);
  e.lc.abort_reload(e.ctx);  // e.g. the rollout failed
  CHECK(e.current() == 1);
  CHECK(e.ctx.unit<cache>().v.size == 1);
}

TEST_CASE("a unit rejecting the reload puts the previous file back", "[config][reload]") {
  config_engine e;
  e.write("[cache]\nsize = 3\n");
  reject = true;
  CHECK_FALSE(e.lc.reload(e.ctx).ok);
  CHECK(e.current() == 1);
  CHECK(e.ctx.unit<cache>().v.size == 1);
}

TEST_CASE("a committed reload keeps its file, a bad file later fails before any on_reload runs",
          "[config][reload][bad_input]") {
  config_engine e;
  e.write("[cache]\nsize = 4\n");
  REQUIRE(e.lc.reload(e.ctx).ok);
  e.lc.commit_reload(e.ctx);
  calls.clear();
  for (const auto& [text, message] : std::vector<std::pair<std::string, std::string>>{
           {"[cache]\nsize = 500\n", ":2:cache.size: 500 is out of range (1 to 100)"},
           {"[cache]\nsize = 5\n[systempp]\nworkers = \"many\"\n", ":4:systempp.workers: expected an integer, got a string"},
           {"[cache\n", ":1: "}}) {
    e.write(text);
    const auto r = e.lc.reload(e.ctx);
    CHECK_FALSE(r.ok);
    CHECK(r.config_error);
    CHECK(r.error.starts_with(e.path + message));
    CHECK(calls.empty());
    CHECK(e.current() == 4);
    CHECK_FALSE(e.lc.reload_open());
  }
}

TEST_CASE("a script reads its units' sections from the service's file, skipping the pool's keys and other sections",
          "[config][script]") {
  config_engine file;  // only for its temp path
  file.write("[systempp]\nworkers = 3\nlog-level = \"off\"\n[cache]\nsize = 7\n[http]\nport = 1\n");
  int seen = 0;
  const char* argv[] = {"script", "--config", file.path.c_str(), nullptr};
  const int code = systempp::run_script<app>(3, const_cast<char**>(argv), [&](systempp::context& ctx) {
    seen = ctx.config(ctx.unit<cache>()).size;
    return 0;
  });
  CHECK(code == 0);
  CHECK(seen == 7);
}

TEST_CASE("a script's --print-config prints its sections and runs no stage", "[config][script]") {
  config_engine file;
  file.write("[cache]\nsize = 9\n");
  calls.clear();
  bool ran = false;
  const char* argv[] = {"script", "--config", file.path.c_str(), "--print-config", nullptr};
  std::ostringstream out;
  auto* old = std::cout.rdbuf(out.rdbuf());
  const int code = systempp::run_script<app>(4, const_cast<char**>(argv), [&](systempp::context&) {
    ran = true;
    return 0;
  });
  std::cout.rdbuf(old);
  CHECK(code == 0);
  CHECK_FALSE(ran);
  CHECK(out.str().find("[cache]  # unit cache\n# Entries\nsize = 9  # " + file.path + ":2\n") != std::string::npos);
  CHECK(out.str().find("[systempp]\n") != std::string::npos);
  CHECK(out.str().find("workers") == std::string::npos);  // a script has no pool
}
