// Options a unit adds to the command line (command_line.hpp): parsed with the runtime's,
// stored in the unit, listed under the unit in --help, refused in one line when bad.

#include <catch2/catch.hpp>

#include <chrono>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <systempp/systempp.hpp>

namespace {

struct store {
  static constexpr std::string_view name = "store";
  std::string db = "kv.db";
  int shards = 4;
  bool verbose = false;
  std::chrono::milliseconds pause{250};
  std::vector<std::string> peers;
  void add_options(systempp::command_line& cli) {
    cli.add("--db", db, "SQLite file");
    cli.add("--shards", shards, "Shards").range(1, 64);
    cli.add("--verbose", verbose, "Log every query");
    cli.add("--pause", pause, "Seconds between batches");
    cli.add("--peer", peers, "Another node (repeatable)");
  }
};

struct greedy {
  int workers = 1;
  void add_options(systempp::command_line& cli) { cli.add("--workers", workers, "Mine"); }
};

struct parsed {
  int code = -1;
  std::string out, err;
};

/// Parses args for App's units the way systempp::main would.
template <class App>
parsed parse(std::vector<const char*> args, systempp::parse_mode mode = systempp::parse_mode::serve) {
  static systempp::app_instance<App> instance;  // the unit the options write into
  args.insert(args.begin(), "app");
  std::ostringstream out, err;
  auto* old_out = std::cout.rdbuf(out.rdbuf());
  auto* old_err = std::cerr.rdbuf(err.rdbuf());
  const auto cmd = systempp::parse_command_line(static_cast<int>(args.size()), args.data(), mode, {},
                                                instance.entries().options);
  std::cout.rdbuf(old_out);
  std::cerr.rdbuf(old_err);
  const auto* stop = std::get_if<systempp::exit_now>(&cmd);
  return {stop ? stop->code : 0, out.str(), err.str()};
}

}  // namespace

TEST_CASE("a unit's options land in the unit, those not given keep the unit's defaults", "[options][unit_options]") {
  std::string db;
  int shards = 0;
  bool verbose = false;
  std::chrono::milliseconds pause{};
  std::vector<std::string> peers;
  const char* argv[] = {"script", "--log-level", "off", "--db", "/tmp/x.db", "--verbose", "--pause", "1.5",
                        "--peer", "a:1", "--peer", "b:2", "rest", nullptr};
  const int code = systempp::run_script<systempp::app<store>>(13, const_cast<char**>(argv), [&](systempp::context& ctx) {
    const auto& s = ctx.unit<store>();
    db = s.db;
    shards = s.shards;
    verbose = s.verbose;
    pause = s.pause;
    peers = s.peers;
    return static_cast<int>(ctx.opts().args.size());
  });
  CHECK(code == 1);  // "rest" is left to the script
  CHECK(db == "/tmp/x.db");
  CHECK(shards == 4);
  CHECK(verbose);
  CHECK(pause == std::chrono::milliseconds(1500));
  CHECK(peers == std::vector<std::string>{"a:1", "b:2"});
}

TEST_CASE("help: --help lists a unit's options under the unit, with their defaults", "[options][unit_options]") {
  const auto p = parse<systempp::app<store>>({"--help"});
  CHECK(p.code == 0);
  const auto group = p.out.find("Options of unit store:");
  REQUIRE(group != std::string::npos);
  CHECK(p.out.find("--shards", group) != std::string::npos);
  CHECK(p.out.find("=4", group) != std::string::npos);
  CHECK(p.out.find("Log every query", group) != std::string::npos);
}

TEST_CASE("a bad value for a unit's option exits 2 with one line naming it", "[options][unit_options][bad_input]") {
  const auto range = parse<systempp::app<store>>({"--shards", "99"});
  CHECK(range.code == 2);
  CHECK(range.err == "app: error: --shards: 99 is out of range (1 to 64)\n");
  const auto word = parse<systempp::app<store>>({"--shards", "many"});
  CHECK(word.code == 2);
  CHECK(word.err.find("--shards") != std::string::npos);
  CHECK(std::count(word.err.begin(), word.err.end(), '\n') == 1);
  const auto pause = parse<systempp::app<store>>({"--pause", "-1"});
  CHECK(pause.err == "app: error: --pause: -1 is below the least value, 0 seconds\n");
}

TEST_CASE("a unit's option that clashes with the runtime's exits 2 naming it", "[options][unit_options][bad_input]") {
  const auto p = parse<systempp::app<greedy>>({});
  CHECK(p.code == 2);
  CHECK(p.err.starts_with("app: error: unit greedy adds the option '--workers': "));
  CHECK(std::count(p.err.begin(), p.err.end(), '\n') == 1);
}
