// The command line: defaults, values, and one-line errors that name the option.

#include <catch2/catch.hpp>

#include <iostream>
#include <sstream>
#include <vector>

#include <systempp/options.hpp>

namespace {

struct parse_outcome {
  systempp::command cmd;
  std::string err;
};

// Captures std::cerr so the one-line error can be checked.
parse_outcome parse(std::vector<const char*> args) {
  args.insert(args.begin(), "app");
  std::ostringstream captured;
  auto* old = std::cerr.rdbuf(captured.rdbuf());
  auto cmd = systempp::parse_command_line(static_cast<int>(args.size()), args.data());
  std::cerr.rdbuf(old);
  return {std::move(cmd), captured.str()};
}

int exit_code_of(const parse_outcome& p) {
  auto* e = std::get_if<systempp::exit_now>(&p.cmd);
  return e ? e->code : -1;
}

}  // namespace

TEST_CASE("defaults: one listener on 127.0.0.1:8080 and one worker per CPU", "[options]") {
  auto p = parse({});
  REQUIRE(std::holds_alternative<systempp::serve_command>(p.cmd));
  const auto& o = std::get<systempp::serve_command>(p.cmd).opts;
  REQUIRE(o.binds.size() == 1);
  CHECK(o.binds[0].host == "127.0.0.1");
  CHECK(o.binds[0].port == 8080);
  CHECK(o.binds[0].name == "http");
  CHECK(o.workers >= 1);
  CHECK(o.graceful_timeout == std::chrono::seconds(30));
  CHECK(o.name == "app");
}

TEST_CASE("values are parsed, seconds may be fractional", "[options]") {
  auto p = parse({"--workers", "3", "--bind", "api=[::1]:9000", "--bind", "127.0.0.1:0",
                  "--graceful-timeout", "0.25", "--reload-mode", "exec", "--name", "web_1"});
  REQUIRE(std::holds_alternative<systempp::serve_command>(p.cmd));
  const auto& o = std::get<systempp::serve_command>(p.cmd).opts;
  CHECK(o.workers == 3);
  REQUIRE(o.binds.size() == 2);
  CHECK(o.binds[0].name == "api");
  CHECK(o.binds[0].host == "::1");
  CHECK(o.binds[0].port == 9000);
  CHECK(o.binds[1].port == 0);
  CHECK(o.graceful_timeout == std::chrono::milliseconds(250));
  CHECK(o.mode == systempp::reload_mode::exec);
  CHECK(o.name == "web_1");
}

TEST_CASE("a bad value exits 2 with one line naming the option", "[options][bad_input]") {
  struct row {
    std::vector<const char*> args;
    std::string flag;
  };
  const std::vector<row> rows{
      {{"--workers", "-1"}, "--workers"},
      {{"--workers", "abc"}, "--workers"},
      {{"--workers", "100000"}, "--workers"},
      {{"--bind", "localhost"}, "--bind"},
      {{"--bind", "127.0.0.1:70000"}, "--bind"},
      {{"--bind", "::1:80"}, "--bind"},
      {{"--graceful-timeout", "0"}, "--graceful-timeout"},
      {{"--ready-timeout", "-3"}, "--ready-timeout"},
      {{"--heartbeat-timeout", "soon"}, "--heartbeat-timeout"},
      {{"--reload-mode", "spawn"}, "--reload-mode"},
      {{"--reload-surge", "0"}, "--reload-surge"},
      {{"--name", "a/b"}, "--name"},
      {{"--log-level", "loud"}, "--log-level"},
      {{"--log-format", "xml"}, "--log-format"},
      {{"--bogus"}, "--bogus"},
  };
  for (const auto& r : rows) {
    DYNAMIC_SECTION(r.args[0] << " " << (r.args.size() > 1 ? r.args[1] : "")) {
      auto p = parse(r.args);
      CHECK(exit_code_of(p) == 2);
      CHECK(p.err.find(r.flag) != std::string::npos);
      CHECK(p.err.find("app: error:") == 0);
      CHECK(std::count(p.err.begin(), p.err.end(), '\n') == 1);
    }
  }
}

TEST_CASE("--help exits 0 and lists every option with its default", "[options]") {
  std::ostringstream out;
  auto* old = std::cout.rdbuf(out.rdbuf());
  auto p = parse({"--help"});
  std::cout.rdbuf(old);
  CHECK(exit_code_of(p) == 0);
  for (const char* flag : {"--workers", "--bind", "--name", "--pidfile", "--reload-mode",
                           "--reload-surge", "--ready-timeout", "--heartbeat-timeout",
                           "--graceful-timeout", "--stage-timeout", "--max-requests",
                           "--config", "--log-level", "--log-file", "--log-format", "--metrics"})
    CHECK(out.str().find(flag) != std::string::npos);
  CHECK(out.str().find("Exit codes") != std::string::npos);
  CHECK(out.str().find("30") != std::string::npos);
}
