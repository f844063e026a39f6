// A reload is a transaction: a reload that is rejected, or whose rollout fails, leaves the
// master and the pool on the last configuration that passed, whatever happens afterwards.

#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>

#include "harness.hpp"

using namespace harness;

namespace {

// The probe app (settings, alpha, beta, gamma, http) reading its faults from a file the
// test rewrites; --config holds the message "/" answers with.
struct probe_pool {
  pool_name name;
  config_file cfg{name.value};
  config_file faults{name.value + ".faults"};
  service s = start_probe();
  std::optional<systempp::control_segment> seg;

  service start_probe() {
    cfg.write("[demo]\nmessage = \"one\"\n");
    faults.write("\n");
    return start(probe_path, {"--workers", "2", "--name", name.value, "--config", cfg.path.string()},
                 {{"PROBE_FAULTS_FILE", faults.path.string()}});
  }
  probe_pool() {
    seg.emplace(attach(name, s.proc.pid()));
    REQUIRE(wait_ready(*seg, 2).size() == 2);
  }
  // What "/" answers on fresh connections, `n` times: which messages the pool serves.
  std::set<std::string> messages(int n = 20) {
    std::set<std::string> seen;
    for (int i = 0; i < n; ++i)
      if (auto r = support::http_get("127.0.0.1", s.port, "/")) seen.insert(r->body);
    return seen;
  }
  // SIGKILLs both workers and waits until both slots are READY again, with new pids.
  void respawn_all() {
    const auto before = wait_ready(*seg, 2);
    REQUIRE(before.size() == 2);
    for (auto [slot, pid] : before) ::kill(pid, SIGKILL);
    REQUIRE(support::wait_until([&] {
      auto now = ready_workers(*seg);
      if (now.size() != 2) return false;
      for (auto [slot, pid] : now)
        if (before.at(slot) == pid) return false;
      return true;
    }, 20s));
  }
  ~probe_pool() {
    s.proc.signal(SIGTERM);
    s.proc.wait_exit(20s);
  }
};

// (slot, generation) of every READY worker.
std::set<std::pair<int, std::uint32_t>> ready_generations(const systempp::control_segment& seg) {
  std::set<std::pair<int, std::uint32_t>> out;
  for (std::uint32_t i = 0; i < seg.slot_count(); ++i) {
    const auto snap = systempp::read_slot(seg.slot(i));
    if (snap.state == systempp::worker_state::ready) out.insert({static_cast<int>(i / 2), snap.generation});
  }
  return out;
}

}  // namespace

TEST_CASE("transaction: a reload rejected by the second unit leaves the first as before, also for respawned workers",
          "[reload][transaction]") {
  probe_pool p;
  p.cfg.write("[demo]\nmessage = \"two\"\n");  // settings (first) loads it; beta (later) rejects the reload
  p.faults.write("beta:on_reload:throw\n");
  p.s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(*p.seg, 1) == systempp::reload_outcome::rejected);
  CHECK(systempp::read_reload_message(p.seg->header()).find("unit beta, stage on_reload") != std::string::npos);
  CHECK(p.s.wait(R"(\[master\].*reload undone: \d+ unit\(s\) as before)", 5s));
  p.faults.write("\n");
  p.respawn_all();  // forked from the master: they show what it holds
  CHECK(p.messages() == std::set<std::string>{"one"});
}

TEST_CASE("transaction: after a rollout fails its readiness gate, respawned workers run the previous configuration",
          "[reload][transaction]") {
  probe_pool p;
  // on_reload accepts it; every new worker's pre_startup rejects the docroot.
  p.cfg.write("[demo]\nmessage = \"two\"\ndocroot = \"/nonexistent/systempp-test\"\n");
  p.s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(*p.seg, 1) == systempp::reload_outcome::failed);
  const auto message = systempp::read_reload_message(p.seg->header());
  INFO(message);
  CHECK(message.find("pre_startup of unit settings") != std::string::npos);
  CHECK(message.find("no slot had switched: the previous configuration serves") != std::string::npos);
  // Before, the master kept the rejected configuration and a respawn crash-looped on it,
  // leaving a 2-worker pool at 1.
  p.respawn_all();
  CHECK(wait_ready(*p.seg, 2).size() == 2);
  CHECK(p.messages() == std::set<std::string>{"one"});
}

TEST_CASE("transaction: a rollout failing after a slot switched rolls that slot back under keep-alive load",
          "[reload][transaction][load]") {
  probe_pool p;
  auto load = keepalive_load(p.s.port, 8);
  wait_for_traffic(load);
  p.cfg.write("[demo]\nmessage = \"two\"\n");
  p.faults.write("alpha:pre_startup:throw@slot1\n");  // slot 0 switches, slot 1 fails
  p.s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(*p.seg, 1) == systempp::reload_outcome::failed);
  const auto message = systempp::read_reload_message(p.seg->header());
  INFO(message);
  CHECK(message.find("slot 1") != std::string::npos);
  CHECK(message.find("rolled back: generation 3 serves the previous configuration") != std::string::npos);
  CHECK(p.seg->header().pool_generation.load() == 3);
  // Slot 0 went 1 -> 2 -> 3 (the previous configuration again); slot 1 kept generation 1.
  REQUIRE(support::wait_until([&] {
    return live_workers(*p.seg).size() == 2 &&
           ready_generations(*p.seg) == std::set<std::pair<int, std::uint32_t>>{{0, 3}, {1, 1}};
  }, 15s));
  wait_for_traffic(load, load.snapshot().ok + 200);
  const auto stats = load.stop();
  INFO("requests " << stats.requests() << " errors: " << error_samples(stats));
  CHECK(stats.failures() == 0);
  CHECK(p.messages() == std::set<std::string>{"one"});

  // Once the fault is gone, the same configuration reloads.
  p.faults.write("\n");
  p.s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(*p.seg, 2) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(*p.seg, 2, 4); }, 15s));
  CHECK(p.messages() == std::set<std::string>{"two"});
}

TEST_CASE("transaction: a new worker failing the app's custom stage fails the rollout like a built-in stage",
          "[reload][transaction][stages]") {
  probe_pool p;
  const auto before = wait_ready(*p.seg, 2);
  p.faults.write("beta:warmup:throw@gen2\n");  // warmup: after post_startup, before READY
  p.s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(*p.seg, 1) == systempp::reload_outcome::failed);
  const auto message = systempp::read_reload_message(p.seg->header());
  INFO(message);
  CHECK(message.find("warmup of unit beta") != std::string::npos);
  CHECK(message.find("no slot had switched: the previous configuration serves") != std::string::npos);
  CHECK(wait_ready(*p.seg, 2) == before);  // the same workers serve
  CHECK(p.messages() == std::set<std::string>{"one"});
}
