// --reload-on-change: a development pool follows its --config file and its binary (inotify,
// debounced), and what fails to start is rolled back like any failed generation.

#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>

#include "harness.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace harness;

namespace {

std::string body_of_root(std::uint16_t port) {
  const auto r = support::http_get("127.0.0.1", port, "/");
  return r && r->status == 200 ? r->body : "(no answer)";
}

}  // namespace

TEST_CASE("dev reload: a changed --config file reloads the pool once per burst of writes, and a bad one is rejected",
          "[dev_reload][reload]") {
  pool_name name;
  support::temp_dir dir("dev-" + name.value);
  const auto config = dir.path / "app.toml";
  const auto write = [&](const std::string& message) {  // as an editor saves: beside it, renamed over
    { std::ofstream(dir.path / "app.toml.tmp") << "[demo]\nmessage = \"" << message << "\"\n"; }
    fs::rename(dir.path / "app.toml.tmp", config);
  };
  write("one");
  auto [s, seg, first] = start_pool(name, 2, {"--reload-on-change", "--config", config.string()});
  CHECK(body_of_root(s.port) == "one");

  write("two");
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 2); }, 10s));
  CHECK(body_of_root(s.port) == "two");
  CHECK(systempp::read_reload_message(seg.header()).find("--reload-on-change: " + config.string() + " changed") !=
        std::string::npos);

  // Three writes in place, back to back: one reload, of the last content.
  for (const char* m : {"three-a", "three-b", "three"}) std::ofstream(config) << "[demo]\nmessage = \"" << m << "\"\n";
  REQUIRE(wait_reload(seg, 2) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 3); }, 10s));
  CHECK(body_of_root(s.port) == "three");
  const auto serving = wait_ready(seg, 2);

  // Next, a file with a typo. Had the burst made two reloads, reload 3 would be the second
  // of them and succeed; it is this file's, and rejected.
  { std::ofstream(config) << "[demo]\nmesage = \"oops\"\n"; }
  REQUIRE(wait_reload(seg, 3) == systempp::reload_outcome::rejected);
  CHECK(seg.header().reload_seq.load() == 3);
  CHECK(systempp::read_reload_message(seg.header()).find("demo.mesage: unknown key") != std::string::npos);
  CHECK(wait_ready(seg, 2) == serving);
  CHECK(body_of_root(s.port) == "three");
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}

TEST_CASE("dev reload: in exec mode a rebuilt binary goes live with a reload, and a broken build is rolled back",
          "[dev_reload][exec]") {
  pool_name name;
  binary_copy bin(name.value, app_path);
  auto [s, seg, first] = start_pool(name, 2, {"--reload-mode", "exec", "--reload-on-change"}, bin.path.string());

  bin.replace_with_script("#!/bin/sh\nexit 1\n");  // a build that links something broken
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::failed);
  CHECK(wait_ready(seg, 2) == first);
  CHECK(body_of_root(s.port) == "hello");

  bin.replace_with(app_path);  // the fixed build
  REQUIRE(wait_reload(seg, 2) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 3); }, 10s));
  for (const auto& [slot, pid] : wait_ready(seg, 2)) {
    CHECK(pid != first.at(slot));
    CHECK(exe_of(pid) == bin.path.string());  // the new file, where the old ones run a deleted one
  }
  CHECK(body_of_root(s.port) == "hello");
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}

TEST_CASE("dev reload: in fork mode a rebuilt binary upgrades the master in place, and a broken one is refused",
          "[dev_reload][upgrade]") {
  pool_name name;
  binary_copy bin(name.value, app_path);
  auto [s, seg, first] = start_pool(name, 2, {"--reload-on-change"}, bin.path.string());

  bin.replace_with_script("#!/bin/sh\nexit 1\n");
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::rejected);
  CHECK(systempp::read_reload_message(seg.header()).starts_with("upgrade refused: "));
  CHECK(exe_of(s.proc.pid()).ends_with(" (deleted)"));  // still the image it started with
  CHECK(wait_ready(seg, 2) == first);

  bin.replace_with(app_path);
  REQUIRE(wait_reload(seg, 2) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 2); }, 10s));
  CHECK(seg.header().master_pid.load() == s.proc.pid());
  CHECK(exe_of(s.proc.pid()) == bin.path.string());
  for (const auto& [slot, pid] : wait_ready(seg, 2)) CHECK(pid != first.at(slot));
  CHECK(body_of_root(s.port) == "hello");
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}

TEST_CASE("dev reload: --reload-on-change in one process exits 2 naming the option", "[dev_reload][bad_input]") {
  auto [status, out] = run_to_exit(as_test_user({"--workers", "0", "--reload-on-change", "--bind", "127.0.0.1:0"}));
  INFO(out);
  CHECK(support::child::exited_with(status, 2));
  CHECK(out.find("error: --reload-on-change: needs a pool (--workers 1 or more)") != std::string::npos);
}
