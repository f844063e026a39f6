// Rolling reload (SIGHUP), its failure modes, scaling and recycling, under real load.

#include <csignal>
#include <filesystem>
#include <fstream>

#include "harness.hpp"

using namespace harness;

namespace {




}  // namespace

TEST_CASE("reload: ten SIGHUPs under keep-alive load fail no request and replace every worker",
          "[reload][load]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "4", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  const auto first = wait_ready(seg, 4);
  REQUIRE(first.size() == 4);

  auto load = keepalive_load(s.port, 32);
  wait_for_traffic(load);
  for (std::uint32_t i = 1; i <= 10; ++i) {
    s.proc.signal(SIGHUP);
    REQUIRE(wait_reload(seg, i) == systempp::reload_outcome::succeeded);
  }
  REQUIRE(support::wait_until([&] { return settled(seg, 4, 11); }, 20s));
  const auto stats = load.stop();
  INFO("requests " << stats.requests() << ", reconnects " << stats.reconnects);
  INFO("errors: " << error_samples(stats));
  CHECK(stats.failures() == 0);
  CHECK(stats.ok > 1000);
  CHECK(seg.header().pool_generation.load() == 11);
  const auto last = wait_ready(seg, 4);
  for (auto [slot, pid] : first)
    for (auto [slot2, pid2] : last) CHECK(pid != pid2);
  // A worker that just exited is a zombie until the master's SIGCHLD handler runs.
  CHECK(support::wait_until([&] { return support::zombie_children_of(s.proc.pid()).empty(); }, 5s));
}

TEST_CASE("reload: a new generation that fails pre_startup leaves the old workers serving",
          "[reload][failure]") {
  pool_name name;
  config_file cfg(name.value);
  const auto docroot = std::filesystem::temp_directory_path();
  cfg.write("[demo]\ndocroot = \"" + docroot.string() + "\"\n");
  auto s = start(app_path, {"--workers", "2", "--name", name.value, "--config", cfg.path.string()});
  auto seg = attach(name, s.proc.pid());
  const auto before = wait_ready(seg, 2);
  REQUIRE(before.size() == 2);

  auto load = keepalive_load(s.port, 8);
  wait_for_traffic(load);
  cfg.write("[demo]\ndocroot = \"/nonexistent/systempp-test\"\n");
  s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::failed);
  REQUIRE(s.wait("reload failed: .*pre_startup of unit settings", 5s));
  const auto msg = systempp::read_reload_message(seg.header());
  CHECK(msg.find("pre_startup of unit settings") != std::string::npos);
  // Keep serving for a while on the old workers, then check nothing failed.
  wait_for_traffic(load, load.snapshot().ok + 200);
  const auto stats = load.stop();
  CHECK(stats.failures() == 0);
  CHECK(wait_ready(seg, 2) == before);
  CHECK(support::pid_alive(s.proc.pid()));
}

TEST_CASE("reload: a configuration that on_reload rejects replaces nothing", "[reload][failure]") {
  pool_name name;
  config_file cfg(name.value);
  cfg.write("[demo]\nmessage = \"one\"\n");
  auto s = start(app_path, {"--workers", "2", "--name", name.value, "--config", cfg.path.string()});
  auto seg = attach(name, s.proc.pid());
  const auto before = wait_ready(seg, 2);
  REQUIRE(before.size() == 2);
  cfg.write("[demo]\nmessage = \"two\"\nbogus = 1\n");
  s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::rejected);
  CHECK(systempp::read_reload_message(seg.header()).find(":3:demo.bogus: unknown key") != std::string::npos);
  CHECK(seg.header().pool_generation.load() == 1);
  CHECK(wait_ready(seg, 2) == before);
  auto r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->body == "one");

  // A valid file afterwards reloads normally and the new message is served.
  cfg.write("[demo]\nmessage = \"three\"\n");
  s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(seg, 2) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 2); }, 10s));
  r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->body == "three");
}

TEST_CASE("reload: the file is read again, a changed [systempp] is reported and left for the next start",
          "[reload][config]") {
  pool_name name;
  config_file cfg(name.value);
  cfg.write("[systempp]\nworkers = 2\n[demo]\nmessage = \"one\"\n");
  auto s = start(app_path, {"--name", name.value, "--config", cfg.path.string()});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 2).size() == 2);  // workers from the file
  cfg.write("[systempp]\nworkers = 3\n[demo]\nmessage = \"two\"\n");
  s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 2); }, 10s));
  CHECK(ready_workers(seg).size() == 2);
  CHECK(s.wait(R"(\[systempp\] changed \(workers\): runtime options apply at the next start or upgrade)", 5s));
  auto r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->body == "two");
}

TEST_CASE("reload: twenty SIGHUPs at once end with N READY workers of one generation",
          "[reload][storm]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "3", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 3).size() == 3);
  for (int i = 0; i < 20; ++i) s.proc.signal(SIGHUP);
  std::uint32_t gen = 0;
  REQUIRE(support::wait_until([&] {
    gen = seg.header().pool_generation.load();
    return seg.header().master_state.load() == systempp::master_state::running &&
           seg.header().reload_outcome.load() == systempp::reload_outcome::succeeded &&
           settled(seg, 3, gen);
  }, 30s));
  CHECK(gen >= 2);
  CHECK(support::pid_alive(s.proc.pid()));
  // A worker that just exited is a zombie until the master's SIGCHLD handler runs.
  CHECK(support::wait_until([&] { return support::zombie_children_of(s.proc.pid()).empty(); }, 5s));
  auto r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("reload: SIGTTIN and SIGTTOU change the worker count, never below one",
          "[reload][scale]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "2", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 2).size() == 2);
  s.proc.signal(SIGTTIN);
  REQUIRE(support::wait_until([&] { return settled(seg, 3, 1); }, 20s));
  CHECK(seg.header().target_workers.load() == 3);
  for (int i = 0; i < 3; ++i) {
    s.proc.signal(SIGTTOU);
    const auto want = std::max(1, 2 - i);
    REQUIRE(support::wait_until([&] { return settled(seg, static_cast<std::size_t>(want), 1); }, 20s));
  }
  CHECK(seg.header().target_workers.load() == 1);
}

TEST_CASE("reload: --max-requests recycles workers under load without failures",
          "[reload][recycle]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "2", "--name", name.value, "--max-requests", "300",
                            "--max-requests-jitter", "50", "--heartbeat-timeout", "0.4"});
  auto seg = attach(name, s.proc.pid());
  const auto first = wait_ready(seg, 2);
  REQUIRE(first.size() == 2);
  auto load = keepalive_load(s.port, 8);
  const auto recycled = [&] {
    return seg.header().restarts[static_cast<int>(systempp::restart_reason::recycle)].load();
  };
  REQUIRE(support::wait_until([&] { return recycled() >= 4; }, 30s));
  const auto stats = load.stop();
  INFO("errors: " << error_samples(stats));
  CHECK(stats.failures() == 0);
  CHECK(stats.pids().size() >= 4);
  CHECK(support::pid_alive(s.proc.pid()));
}

namespace {

// A private copy of a binary that a test may replace in place, as a deploy would.

}  // namespace

TEST_CASE("reload: in exec mode the binary replaced in place is what the new workers run",
          "[reload][exec]") {
  pool_name name;
  binary_copy bin(name.value, app_path);
  auto s = start(bin.path.string(), {"--workers", "2", "--name", name.value, "--reload-mode", "exec"});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 2).size() == 2);
  // on_init runs in every exec'd image (the log may trail the control block: wait for it).
  CHECK(support::wait_until([&] { return s.count(R"(\[worker\[\d\] g1\].*on_init settings .* ok)") == 2; }, 5s));
  CHECK(s.count("on_init alpha") == 0);

  auto load = keepalive_load(s.port, 8);
  wait_for_traffic(load);
  bin.replace_with(probe_path);  // the probe app: the demo's units plus alpha, beta, gamma
  s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 2); }, 10s));
  const auto stats = load.stop();
  CHECK(stats.failures() == 0);
  CHECK(support::wait_until([&] { return s.count(R"(\[worker\[\d\] g2\].*on_init alpha .* ok)") == 2; }, 5s));
  auto r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->header("x-worker-generation") == "2");
}

TEST_CASE("reload: in exec mode a broken new binary is rolled back by the readiness gate",
          "[reload][exec][failure]") {
  pool_name name;
  binary_copy bin(name.value, app_path);
  auto s = start(bin.path.string(), {"--workers", "2", "--name", name.value, "--reload-mode", "exec"});
  auto seg = attach(name, s.proc.pid());
  const auto before = wait_ready(seg, 2);
  REQUIRE(before.size() == 2);
  auto load = keepalive_load(s.port, 8);
  wait_for_traffic(load);
  bin.replace_with_script("#!/bin/sh\necho broken build >&2\nexit 3\n");
  s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::failed);
  CHECK(systempp::read_reload_message(seg.header()).find("exited with code 3") != std::string::npos);
  wait_for_traffic(load, load.snapshot().ok + 200);
  const auto stats = load.stop();
  CHECK(stats.failures() == 0);
  CHECK(wait_ready(seg, 2) == before);
}


TEST_CASE("request: ctx.request_reload from a worker's own thread rolls the pool, the reason in the log and status",
          "[reload][request]") {
  pool_name name;
  auto s = start(probe_path, {"--workers", "2", "--name", name.value}, {{"PROBE_REQUEST", "reload:worker0g1"}});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 2); }, 15s));
  const auto message = systempp::read_reload_message(seg.header());
  INFO(message);
  CHECK(std::regex_search(message, std::regex(R"(generation 2 serving \(reload requested by worker\[0\] pid \d+: probe asked\))")));
  CHECK(s.count(R"(\[master\].*reload requested by worker\[0\] pid \d+: probe asked: reloading)") == 1);
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}

TEST_CASE("request: ctx.request_stop from the master's on_init drains the pool once it started, exit 0",
          "[request]") {
  pool_name name;
  auto s = start(probe_path, {"--workers", "2", "--name", name.value}, {{"PROBE_REQUEST", "stop:master"}});
  require_exit_0(s.proc);
  CHECK(s.count(R"(\[master\].*stop requested by the master: probe asked: draining)") == 1);
  CHECK(support::shm_segments("systempp." + name.value + ".").empty());
}

TEST_CASE("request: ctx.request_stop in the inline process drains it, exit 0", "[request][inline]") {
  auto s = start(probe_path, {"--workers", "0"}, {{"PROBE_REQUEST", "stop:worker-1g0"}});
  require_exit_0(s.proc);
  CHECK(s.count("stop requested: probe asked") == 1);
}
