// The command line: defaults, values, and one-line errors that name the option.

#include <sched.h>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include <systempp/options.hpp>

namespace {

struct parse_outcome {
  systempp::command cmd;
  std::string err;
};

int exit_code_of_cmd(const systempp::command& cmd);

// Captures std::cerr so the one-line error can be checked.
parse_outcome parse(std::vector<const char*> args, systempp::parse_mode mode = systempp::parse_mode::serve,
                    const systempp::about& info = {}) {
  // Tests run as root, where serving needs --allow-root unless they say who to run as.
  const bool says = std::any_of(args.begin(), args.end(), [](std::string_view a) {
    return a.starts_with("--user") || a == "--allow-root";
  });
  if (::geteuid() == 0 && mode == systempp::parse_mode::serve && !says) args.insert(args.begin(), "--allow-root");
  args.insert(args.begin(), "app");
  std::ostringstream captured;
  auto* old = std::cerr.rdbuf(captured.rdbuf());
  auto cmd = systempp::parse_command_line(static_cast<int>(args.size()), args.data(), mode, info);
  std::cerr.rdbuf(old);
  return {std::move(cmd), captured.str()};
}

// What parse printed on std::cout (--help, --version).
std::string printed(std::vector<const char*> args, systempp::parse_mode mode, const systempp::about& info,
                    int& code) {
  std::ostringstream out;
  auto* old = std::cout.rdbuf(out.rdbuf());
  code = exit_code_of_cmd(parse(std::move(args), mode, info).cmd);
  std::cout.rdbuf(old);
  return out.str();
}

int exit_code_of_cmd(const systempp::command& cmd) {
  auto* e = std::get_if<systempp::exit_now>(&cmd);
  return e ? e->code : -1;
}
int exit_code_of(const parse_outcome& p) { return exit_code_of_cmd(p.cmd); }

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

TEST_CASE("help: --help exits 0 and lists every option with its default", "[options]") {
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

TEST_CASE("an app's name, description and version show in --help and --version", "[options]") {
  const systempp::about kvd{"kvd", "A key-value store over HTTP.", "1.4.2"};
  int code = -1;
  const auto help = printed({"--help"}, systempp::parse_mode::serve, kvd, code);
  CHECK(code == 0);
  CHECK(help.rfind("A key-value store over HTTP.", 0) == 0);
  CHECK(help.find("Usage: kvd") != std::string::npos);
  CHECK(printed({"--version"}, systempp::parse_mode::serve, kvd, code) == "kvd 1.4.2\n");
  CHECK(code == 0);
  // Without a version there is no --version: an unknown option, exit 2.
  const auto none = parse({"--version"});
  CHECK(exit_code_of(none) == 2);
}

TEST_CASE("a script's --help shows the script's options, not the pool's", "[options]") {
  int code = -1;
  const auto help = printed({"--help"}, systempp::parse_mode::script, {"kvctl", "", ""}, code);
  CHECK(code == 0);
  CHECK(help.find("A script on systempp units") != std::string::npos);
  CHECK(help.find("passed to the script") != std::string::npos);
  for (const char* flag : {"--config", "--log-level", "--stage-timeout"}) CHECK(help.find(flag) != std::string::npos);
  for (const char* flag : {"--workers", "--bind", "--reload-mode", "--metrics", "--pidfile"})
    CHECK(help.find(flag) == std::string::npos);
}

TEST_CASE("a pool option given to a script exits 2 with one line naming it", "[options][bad_input]") {
  for (auto args : {std::vector<const char*>{"--workers", "3", "count"}, std::vector<const char*>{"count", "--bind=x:1"},
                    std::vector<const char*>{"-w", "2"}}) {
    const auto p = parse(args, systempp::parse_mode::script);
    CHECK(exit_code_of(p) == 2);
    CHECK(p.err.find("a pool option; a script does not take it") != std::string::npos);
    CHECK(std::count(p.err.begin(), p.err.end(), '\n') == 1);
  }
  // The script's own arguments pass.
  const auto ok = parse({"--log-level", "warn", "count", "--verbose"}, systempp::parse_mode::script);
  REQUIRE(std::holds_alternative<systempp::serve_command>(ok.cmd));
  CHECK(std::get<systempp::serve_command>(ok.cmd).opts.args == std::vector<std::string>{"count", "--verbose"});
}

namespace {

/// A file in the temp directory for --config, removed at scope exit.
struct toml_file {
  std::string path;
  explicit toml_file(const std::string& text)
      : path((std::filesystem::temp_directory_path() / ("systempp_options_" + std::to_string(::getpid()) + ".toml"))
                 .string()) {
    std::ofstream(path) << text;
  }
  ~toml_file() { std::filesystem::remove(path); }
};

const systempp::setting_row& row(const systempp::options& o, const std::string& key) {
  const auto it = std::find_if(o.settings.begin(), o.settings.end(), [&](const auto& r) { return r.key == key; });
  REQUIRE(it != o.settings.end());
  return *it;
}

}  // namespace

TEST_CASE("[systempp] in the --config file sets runtime options, the command line wins", "[options][config]") {
  toml_file f(
      "[systempp]\nworkers = 3\nname = \"from-file\"\nbind = [\"http=127.0.0.1:9001\", \"admin=[::1]:9002\"]\n"
      "graceful-timeout = 2.5\nlog-level = \"debug\"\n");
  auto p = parse({"--config", f.path.c_str(), "--workers", "5", "--print-config"});
  REQUIRE(std::holds_alternative<systempp::serve_command>(p.cmd));
  const auto& o = std::get<systempp::serve_command>(p.cmd).opts;
  CHECK(o.workers == 5);
  CHECK(o.name == "from-file");
  REQUIRE(o.binds.size() == 2);
  CHECK(o.binds[1].name == "admin");
  CHECK(o.binds[1].host == "::1");
  CHECK(o.binds[1].port == 9002);
  CHECK(o.graceful_timeout == std::chrono::milliseconds(2500));
  CHECK(o.log_level == "debug");
  REQUIRE(o.file);
  // --print-config's rows: each value with where it came from.
  CHECK(row(o, "workers").value == "5");
  CHECK(row(o, "workers").origin == "command line");
  CHECK(row(o, "name").value == "\"from-file\"");
  CHECK(row(o, "name").origin == f.path + ":3");
  CHECK(row(o, "bind").value == "[ \"http=127.0.0.1:9001\", \"admin=[::1]:9002\" ]");
  CHECK(row(o, "heartbeat-timeout").origin == "default");
  CHECK(row(o, "heartbeat-timeout").value == "30");
  CHECK(std::none_of(o.settings.begin(), o.settings.end(), [](const auto& r) { return r.key == "config"; }));
}

TEST_CASE("a bad [systempp] value is refused even where the command line overrides it", "[options][config][bad_input]") {
  toml_file f("[systempp]\nworkers = -1\n");
  auto p = parse({"--config", f.path.c_str(), "--workers", "2"});
  CHECK(exit_code_of(p) == 2);
  CHECK(p.err == "app: error: " + f.path + ":2:systempp.workers: Value -1 not in range 0 to 2048\n");
}

TEST_CASE("a script takes [systempp]'s runtime options and skips the pool's in a shared file", "[options][config]") {
  toml_file f("[systempp]\nworkers = 3\nlog-level = \"warn\"\n");
  auto p = parse({"--config", f.path.c_str()}, systempp::parse_mode::script);
  REQUIRE(std::holds_alternative<systempp::serve_command>(p.cmd));
  CHECK(std::get<systempp::serve_command>(p.cmd).opts.log_level == "warn");
  toml_file typo("[systempp]\nlog-levle = \"warn\"\n");
  auto bad = parse({"--config", typo.path.c_str()}, systempp::parse_mode::script);
  CHECK(exit_code_of(bad) == 2);
  CHECK(bad.err.starts_with("app: error: " + typo.path + ":2:systempp.log-levle: unknown key (runtime options: "));
}

TEST_CASE("a --config file that is not TOML exits 2 naming file and line", "[options][config][bad_input]") {
  toml_file f("[systempp]\nworkers = 3\nworkers = 4\n");
  auto p = parse({"--config", f.path.c_str()});
  CHECK(exit_code_of(p) == 2);
  CHECK(p.err.starts_with("app: error: " + f.path + ":3: "));
  CHECK(std::count(p.err.begin(), p.err.end(), '\n') == 1);
}

TEST_CASE("cpu affinity: auto is the CPUs this process may use, a list is read in order, bad ones are refused "
          "naming the problem",
          "[options]") {
  CHECK(systempp::cpu_affinity_cpus("").empty());
  CHECK(systempp::cpu_affinity_cpus("0") == std::vector<int>{0});
  CHECK(systempp::cpu_affinity_cpus("0-1") == std::vector<int>{0, 1});
  CHECK(systempp::cpu_affinity_cpus("1,0,1") == std::vector<int>{1, 0});
  cpu_set_t mine;
  CPU_ZERO(&mine);
  REQUIRE(::sched_getaffinity(0, sizeof mine, &mine) == 0);
  const auto all = systempp::cpu_affinity_cpus("auto");
  CHECK(static_cast<int>(all.size()) == CPU_COUNT(&mine));
  for (int c : all) CHECK(CPU_ISSET(c, &mine));
  const auto refused = [](const std::string& spec) {
    try {
      systempp::cpu_affinity_cpus(spec);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK_THAT(refused("4096"), Catch::Matchers::Contains("CPU 4096 is out of range"));
  CHECK_THAT(refused("0-x"), Catch::Matchers::Contains("'x' is not a CPU number"));
  CHECK_THAT(refused("1-0"), Catch::Matchers::Contains("empty range"));
  CHECK_THAT(refused("0,,1"), Catch::Matchers::Contains("is not a CPU number"));
}

TEST_CASE("options: --user takes a user and an optional group, by name or number, looked up once by the parser", "[options][user]") {
  const auto nobody = systempp::resolve_user("nobody");
  CHECK(nobody.user == "nobody");
  CHECK(nobody.uid == 65534);
  CHECK(std::find(nobody.groups.begin(), nobody.groups.end(), nobody.gid) != nobody.groups.end());
  const auto by_number = systempp::resolve_user("65534:0");
  CHECK(by_number.user == "nobody");
  CHECK(by_number.gid == 0);
  CHECK(by_number.group == "root");
  const auto unlisted = systempp::resolve_user("4242:4343");  // ids a container's databases lack
  CHECK(unlisted.uid == 4242);
  CHECK(unlisted.gid == 4343);
  CHECK(unlisted.groups == std::vector<gid_t>{4343});
  CHECK_THROWS_WITH(systempp::resolve_user(":root"), "expected USER or USER:GROUP");
  CHECK_THROWS_WITH(systempp::resolve_user("nobody:"), "no group '' on this machine");

  if (::geteuid() != 0) return;  // switching user needs root: the parser refuses it otherwise
  auto p = parse({"--user", "nobody:daemon", "--drop-master"});
  REQUIRE(std::holds_alternative<systempp::serve_command>(p.cmd));
  const auto& o = std::get<systempp::serve_command>(p.cmd).opts;
  REQUIRE(o.run_as);
  CHECK(o.run_as->uid == 65534);
  CHECK(o.run_as->group == "daemon");
  CHECK(o.drop_master);
  CHECK(systempp::pool_owner(o) == 65534);
}
