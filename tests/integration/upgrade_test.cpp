// Master upgrade (SIGUSR2) and exec mode across binaries: the protocol check, a new image
// that fails before or after the exec (the pool is handed back, never lost), and deploys
// that switch a symlink.

#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <support/temp_dir.hpp>
#include <systempp/protocol.hpp>

#include "harness.hpp"

using namespace harness;

namespace {

namespace fs = std::filesystem;

struct temp_dir : support::temp_dir {
  explicit temp_dir(const pool_name& name) : support::temp_dir("upgrade-" + name.value) {}
};

// The port a master that logs to `log` listens on, from its "listening on" line.
std::uint16_t port_in_log(const fs::path& log) {
  const std::regex listening(R"(listening on 127\.0\.0\.1:(\d+))");
  std::smatch m;
  std::string text;
  REQUIRE(support::wait_until([&] {
    text = read_file(log);
    return std::regex_search(text, m, listening);
  }, 10s));
  return static_cast<std::uint16_t>(std::stoi(m[1].str()));
}

// After a refused or handed-back upgrade: a SIGHUP still rolls the pool, and SIGTERM still
// stops it with exit 0 and nothing left behind.
void still_reloads_and_stops(service& s, const systempp::control_segment& seg, const pool_name& name,
                             std::uint32_t next_reload) {
  s.proc.signal(SIGHUP);
  CHECK(wait_reload(seg, next_reload) == systempp::reload_outcome::succeeded);
  CHECK(support::wait_until([&] { return settled(seg, 2, seg.header().pool_generation.load()); }, 15s));
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
  CHECK(support::shm_segments("systempp." + name.value + ".").empty());
}

}  // namespace

TEST_CASE("upgrade: --upgrade-version checks the command line and the log file, then prints the protocol",
          "[upgrade][bad_input]") {
  auto ok = support::child::spawn(as_test_user_argv({app_path, "--workers", "2", "--upgrade-version"}));
  auto status = ok.wait_exit(10s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
  CHECK(ok.output() == std::string(systempp::protocol_banner) + " " + std::to_string(systempp::protocol_version) + "\n");

  pool_name name;
  temp_dir dir(name);
  { std::ofstream(dir.path / "logs") << "a file where the log directory was\n"; }
  auto bad = support::child::spawn(as_test_user_argv({app_path, "--upgrade-version", "--log-file", (dir.path / "logs" / "app.log").string()}));
  status = bad.wait_exit(10s);
  REQUIRE(status);
  INFO(bad.output());
  CHECK(support::child::exited_with(*status, 2));
  CHECK(bad.output().find("--log-file: cannot open") != std::string::npos);
  CHECK(bad.output().find(systempp::protocol_banner) == std::string::npos);
}

TEST_CASE("upgrade: SIGUSR2 under load re-executes the master in place and rolls the workers",
          "[reload][upgrade]") {
  pool_name name;
  binary_copy bin(name.value, app_path);
  auto s = start(bin.path.string(), {"--workers", "2", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  const auto before = wait_ready(seg, 2);
  REQUIRE(before.size() == 2);
  auto load = keepalive_load(s.port, 16);
  wait_for_traffic(load);

  bin.replace_with(probe_path);  // new code for the master and, through it, the workers
  const auto mark = s.proc.output_size();
  s.proc.signal(SIGUSR2);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 2); }, 10s));
  wait_for_traffic(load, load.snapshot().ok + 200);
  const auto stats = load.stop();
  INFO("requests " << stats.requests() << " errors: " << error_samples(stats));
  CHECK(stats.failures() == 0);
  CHECK(support::pid_alive(s.proc.pid()));
  CHECK(seg.header().master_pid.load() == s.proc.pid());
  REQUIRE(s.wait(R"(\[master\] \[)" + std::to_string(s.proc.pid()) + R"(\].*upgrade: adopted 2 worker\(s\))", 5s, mark));
  CHECK(s.wait(R"(\[master\].*on_init alpha .* ok)", 5s, mark));  // the new image ran on_init
  // The old workers drain and exit.
  CHECK(support::wait_until([&] {
    return std::none_of(before.begin(), before.end(), [](auto& kv) { return support::pid_alive(kv.second); });
  }, 10s));

  s.proc.signal(SIGTERM);
  auto status = s.proc.wait_exit(20s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
  CHECK(support::shm_segments("systempp." + name.value + ".").empty());
}

TEST_CASE("upgrade: a binary that fails its version check or speaks another protocol is refused and nothing changes",
          "[reload][upgrade][failure]") {
  const auto [script, why] = GENERATE(table<std::string, std::string>({
      {"#!/bin/sh\necho no such option >&2\nexit 3\n", "--upgrade-version failed (exit 3): no such option"},
      {"#!/bin/sh\necho systempp-protocol 99\n", "speaks 'systempp-protocol 99'"},
  }));
  pool_name name;
  binary_copy bin(name.value, app_path);
  auto s = start(bin.path.string(), {"--workers", "2", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  const auto before = wait_ready(seg, 2);
  REQUIRE(before.size() == 2);
  bin.replace_with_script(script);
  s.proc.signal(SIGUSR2);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::rejected);
  const auto message = systempp::read_reload_message(seg.header());
  INFO(message);
  CHECK(message.starts_with("upgrade refused: "));
  CHECK(message.find(why) != std::string::npos);
  CHECK(exe_of(s.proc.pid()).ends_with(" (deleted)"));  // still the image it started with
  CHECK(wait_ready(seg, 2) == before);
  auto r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->status == 200);
  bin.replace_with(app_path);  // the pool's own forks do not run the binary; HUP works anyway
  still_reloads_and_stops(s, seg, name, 2);
}

TEST_CASE("upgrade: a new binary that cannot open the log file is refused under keep-alive load, status and the log say why",
          "[reload][upgrade][failure]") {
  pool_name name;
  temp_dir dir(name);
  binary_copy bin(name.value, app_path);
  const auto logs = dir.path / "logs";
  fs::create_directory(logs);
  service s{support::child::spawn(as_test_user_argv({bin.path.string(), "--workers", "2", "--name", name.value, "--bind", "127.0.0.1:0",
                                   "--log-file", (logs / "app.log").string()})),
            0};
  s.port = port_in_log(logs / "app.log");
  auto seg = attach(name, s.proc.pid());
  const auto before = wait_ready(seg, 2);
  REQUIRE(before.size() == 2);
  auto load = keepalive_load(s.port, 8);
  wait_for_traffic(load);

  bin.replace_with(probe_path);
  fs::rename(logs, dir.path / "logs.moved");  // the master keeps writing to the moved file
  { std::ofstream(logs) << "a file where the log directory was\n"; }
  s.proc.signal(SIGUSR2);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::rejected);
  const auto message = systempp::read_reload_message(seg.header());
  INFO(message);
  CHECK(message.find("--upgrade-version failed (exit 2)") != std::string::npos);
  CHECK(message.find("--log-file: cannot open") != std::string::npos);
  wait_for_traffic(load, load.snapshot().ok + 200);
  const auto stats = load.stop();
  INFO("requests " << stats.requests() << " errors: " << error_samples(stats));
  CHECK(stats.failures() == 0);
  CHECK(wait_ready(seg, 2) == before);
  CHECK(read_file(dir.path / "logs.moved" / "app.log").find("reload rejected: upgrade refused: ") != std::string::npos);

  // With the directory back, the pool reloads and stops as before.
  fs::remove(logs);
  fs::rename(dir.path / "logs.moved", logs);
  still_reloads_and_stops(s, seg, name, 2);
}

TEST_CASE("upgrade: a new image that fails after the exec hands the pool back to the previous image under load",
          "[reload][upgrade][failure]") {
  const auto [fault, why] = GENERATE(table<std::string, std::string>({
      {"throw", "the new image failed on_init: "},
      {"abort", "died of signal 6 (ABRT) before it took the pool over"},
  }));
  no_core_dumps();
  pool_name name;
  binary_copy bin(name.value, app_path);
  // Only the probe binary reads PROBE_FAULTS: the app it replaces starts and serves.
  auto s = start(bin.path.string(), {"--workers", "2", "--name", name.value},
                 {{"PROBE_FAULTS", "alpha:on_init:" + fault}});
  auto seg = attach(name, s.proc.pid());
  const auto before = wait_ready(seg, 2);
  REQUIRE(before.size() == 2);
  auto load = keepalive_load(s.port, 8);
  wait_for_traffic(load);

  bin.replace_with(probe_path);  // passes --upgrade-version, fails once it runs
  s.proc.signal(SIGUSR2);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::failed);
  const auto message = systempp::read_reload_message(seg.header());
  INFO(message << "\n" << s.proc.output());
  CHECK(message.starts_with("upgrade failed: "));
  CHECK(message.find(why) != std::string::npos);
  CHECK(message.ends_with("; back on the previous image"));
  CHECK(seg.header().master_pid.load() == s.proc.pid());
  CHECK(exe_of(s.proc.pid()).ends_with(" (deleted)"));  // the previous image again
  CHECK(s.wait(R"(\[master\].*upgrade: adopted 2 worker\(s\))", 5s));
  wait_for_traffic(load, load.snapshot().ok + 200);
  const auto stats = load.stop();
  INFO("requests " << stats.requests() << " errors: " << error_samples(stats));
  CHECK(stats.failures() == 0);
  CHECK(wait_ready(seg, 2) == before);  // neither lost nor rolled
  still_reloads_and_stops(s, seg, name, 2);
}

TEST_CASE("upgrade: exec-mode workers and SIGUSR2 follow a symlink switched to another release",
          "[reload][upgrade][exec]") {
  pool_name name;
  temp_dir dir(name);
  fs::create_directories(dir.path / "releases" / "v1");
  fs::create_directories(dir.path / "releases" / "v2");
  fs::copy_file(app_path, dir.path / "releases" / "v1" / "app");
  fs::copy_file(probe_path, dir.path / "releases" / "v2" / "app");
  fs::create_directory_symlink("releases/v1", dir.path / "current");
  auto s = start((dir.path / "current" / "app").string(), {"--workers", "2", "--name", name.value, "--reload-mode", "exec"});
  auto seg = attach(name, s.proc.pid());
  const auto v1 = wait_ready(seg, 2);
  REQUIRE(v1.size() == 2);
  for (const auto& [slot, pid] : v1) CHECK(exe_of(pid).ends_with("/releases/v1/app"));

  // The deploy: a new link renamed over the old one.
  fs::create_directory_symlink("releases/v2", dir.path / "current.next");
  fs::rename(dir.path / "current.next", dir.path / "current");
  s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 2); }, 15s));
  for (const auto& [slot, pid] : ready_workers(seg)) CHECK(exe_of(pid).ends_with("/releases/v2/app"));

  CHECK(exe_of(s.proc.pid()).ends_with("/releases/v1/app"));
  s.proc.signal(SIGUSR2);
  REQUIRE(wait_reload(seg, 2) == systempp::reload_outcome::succeeded);
  CHECK(exe_of(s.proc.pid()).ends_with("/releases/v2/app"));
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}

TEST_CASE("upgrade: an exec-mode worker image handed another protocol refuses to start with exit 1",
          "[exec][upgrade][bad_input]") {
  auto p = support::child::spawn(as_test_user_argv({app_path, "--workers", "2"}),
                                 {{"SYSTEMPP_WORKER", "0:0:1:" + std::to_string(::getpid())}, {"SYSTEMPP_PROTOCOL", "99"}});
  const auto status = p.wait_exit(10s);
  REQUIRE(status);
  INFO(p.output());
  CHECK(support::child::exited_with(*status, 1));
  CHECK(p.output().find("the master speaks systempp protocol 99, this binary " +
                        std::to_string(systempp::protocol_version)) != std::string::npos);
}
