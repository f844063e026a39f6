// `app --workers N`: a master, N forked workers, the control block, crash handling, drain.

#include <sys/wait.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "harness.hpp"

using namespace harness;

TEST_CASE("pool: N workers become READY in the control block and serve", "[pool]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "3", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  auto ready = wait_ready(seg, 3);
  INFO(s.proc.output());
  REQUIRE(ready.size() == 3);
  CHECK(seg.header().master_pid.load() == s.proc.pid());
  CHECK(seg.header().target_workers.load() == 3);

  std::set<pid_t> worker_pids;
  for (auto [slot, pid] : ready) worker_pids.insert(pid);
  for (int i = 0; i < 20; ++i) {
    auto r = support::http_get("127.0.0.1", s.port, "/");
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "hello");
    const pid_t served_by = std::stoi(r->header("x-worker-pid"));
    CHECK(worker_pids.count(served_by) == 1);
    CHECK(r->header("x-worker-generation") == "1");
  }
  s.proc.signal(SIGTERM);
  auto status = s.proc.wait_exit(20s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
}

TEST_CASE("pool: a SIGKILLed worker is replaced in its slot and the others are untouched",
          "[pool][crash]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "3", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  const auto before = wait_ready(seg, 3);
  REQUIRE(before.size() == 3);

  ::kill(before.at(1), SIGKILL);
  std::map<int, pid_t> after;
  REQUIRE(support::wait_until([&] {
    after = ready_workers(seg);
    return after.size() == 3 && after.at(1) != before.at(1);
  }, 10s));
  CHECK(after.at(0) == before.at(0));
  CHECK(after.at(2) == before.at(2));
  // The log arrives through a pipe, possibly after the control block shows the change.
  CHECK(s.wait("worker\\[1\\] pid " + std::to_string(before.at(1)) + " g1 .*killed by signal 9", 5s));
  CHECK(seg.header().restarts[static_cast<int>(systempp::restart_reason::crash)].load() == 1);
  auto r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("pool: a worker that always fails pre_startup backs off while the others serve",
          "[pool][crash][backoff]") {
  pool_name name;
  auto s = start(probe_path, {"--workers", "2", "--name", name.value},
                 {{"PROBE_FAULTS", "beta:pre_startup:throw@slot1"}});
  // Five failed starts of slot 1: with 100 ms doubling backoff that takes about 1.5 s.
  const std::string failed = R"(worker\[1\] pid \d+ g1 \(in pre_startup of unit beta\) exited with code 4)";
  std::size_t from = 0;
  for (int i = 0; i < 5; ++i) {
    auto m = s.wait(failed, 15s, from);
    INFO(s.proc.output());
    REQUIRE(m);
    from = m->end_offset;
  }
  // The gaps between spawns of slot 1 grow: the master backs off instead of spinning.
  std::vector<long long> spawned_at;
  std::istringstream lines(s.proc.output());
  for (std::string line; std::getline(lines, line);)
    if (std::regex_search(line, std::regex(R"(\[master\].*worker\[1\] pid \d+ g1 spawned)")))
      spawned_at.push_back(log_time_ms(line));
  REQUIRE(spawned_at.size() >= 5);
  for (std::size_t i = 2; i < 5; ++i) {
    INFO("gap " << i);
    CHECK(spawned_at[i] - spawned_at[i - 1] > spawned_at[i - 1] - spawned_at[i - 2]);
  }
  // The master is up and the healthy slot serves.
  CHECK(support::pid_alive(s.proc.pid()));
  auto r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("x-worker-slot") == "0");
}

TEST_CASE("pool: SIGTERM with idle workers exits 0 and leaves no process, segment or pidfile",
          "[pool][drain]") {
  pool_name name;
  const auto pidfile = std::filesystem::temp_directory_path() / (name.value + ".pid");
  auto s = start(app_path, {"--workers", "2", "--name", name.value, "--pidfile", pidfile.string()});
  std::map<int, pid_t> ready;
  {
    auto seg = attach(name, s.proc.pid());
    ready = wait_ready(seg, 2);
    REQUIRE(ready.size() == 2);
  }
  std::ifstream in(pidfile);
  pid_t written = 0;
  REQUIRE(in >> written);
  CHECK(written == s.proc.pid());

  s.proc.signal(SIGTERM);
  auto status = s.proc.wait_exit(20s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
  for (auto [slot, pid] : ready) CHECK_FALSE(support::pid_alive(pid));
  CHECK(support::shm_segments("systempp." + name.value + ".").empty());
  CHECK_FALSE(std::filesystem::exists(pidfile));
}

TEST_CASE("pool: when the master is SIGKILLed every worker exits within 2 s by itself",
          "[pool][crash]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "3", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  const auto ready = wait_ready(seg, 3);
  REQUIRE(ready.size() == 3);
  s.proc.signal(SIGKILL);
  REQUIRE(s.proc.wait_exit(5s));
  const bool all_gone = support::wait_until([&] {
    for (auto [slot, pid] : ready)
      if (support::pid_alive(pid)) return false;
    return true;
  }, 2s);
  CHECK(all_gone);
}

TEST_CASE("pool: a stale control block of a dead master is removed at the next start",
          "[pool][control_block]") {
  pool_name name;
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  REQUIRE(dead > 0);
  ::waitpid(dead, nullptr, 0);
  {
    std::vector<std::string> units{"x"};
    auto stale = systempp::control_segment::create(name.value, dead, 2, units);
    stale.disown();  // left behind, as by a master that was SIGKILLed
  }
  const std::string stale_name = systempp::segment_name(name.value, dead);
  REQUIRE(support::shm_segments(stale_name).size() == 1);

  auto s = start(app_path, {"--workers", "1", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 1).size() == 1);
  CHECK(support::shm_segments(stale_name).empty());
  CHECK(s.count("removed 1 stale control block") == 1);
}

TEST_CASE("pool: a worker whose loop blocks is killed after the heartbeat timeout and replaced",
          "[pool][heartbeat]") {
  no_core_dumps();
  pool_name name;
  auto s = start(probe_path, {"--workers", "1", "--name", name.value, "--heartbeat-timeout", "1",
                              "--graceful-timeout", "1"},
                 {{"PROBE_BLOCK_LOOP_MS", "300"}});
  auto seg = attach(name, s.proc.pid());
  const auto first = wait_ready(seg, 1);
  REQUIRE(first.size() == 1);
  const std::string pid = std::to_string(first.at(0));
  REQUIRE(s.wait("worker\\[0\\] pid " + pid + " g1: heartbeat timeout: sending ABRT", 10s));
  REQUIRE(s.wait("worker\\[0\\] pid " + pid + " g1 .*killed by signal 6", 10s));
  auto next = s.wait(R"(worker\[0\] pid (\d+) g1 spawned)", 10s,
                     s.wait("killed by signal 6", 1s)->end_offset);
  REQUIRE(next);
  CHECK(next->groups.at(1) != pid);
  CHECK(seg.header().restarts[static_cast<int>(systempp::restart_reason::timeout_heartbeat)].load() >= 1);
}

TEST_CASE("pool: a second pool with the same name refuses to start", "[pool][bad_input]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "1", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 1).size() == 1);
  auto second = support::child::spawn(as_test_user_argv({app_path, "--workers", "1", "--name", name.value, "--bind", "127.0.0.1:0"}));
  auto status = second.wait_exit(10s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 2));
  CHECK(second.output().find("--name " + name.value + ": a pool with this name is already running") != std::string::npos);
  CHECK(wait_ready(seg, 1).size() == 1);
}

TEST_CASE("pool: a worker exiting with code 2 is not respawned in a tight loop",
          "[pool][crash][backoff]") {
  pool_name name;
  auto s = start(probe_path, {"--workers", "2", "--name", name.value},
                 {{"PROBE_FAULTS", "beta:pre_startup:config@slot1"}});
  REQUIRE(s.wait(R"(worker\[1\] pid \d+ g1 \(in pre_startup of unit beta\) exited with code 2)", 10s));
  REQUIRE(s.wait(R"(configuration error \(exit 2\): not respawning this slot for 30 s)", 10s));
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 1).size() == 1);
  CHECK(s.count(R"(worker\[1\] pid \d+ g1 spawned)") == 1);
  CHECK(support::pid_alive(s.proc.pid()));
}

TEST_CASE("pool: a drain that overruns --graceful-timeout kills the worker and exits 1",
          "[pool][drain]") {
  pool_name name;
  auto s = start(probe_path, {"--workers", "1", "--name", name.value, "--graceful-timeout", "0.5"},
                 {{"PROBE_FAULTS", "beta:on_shutdown:hang"}});
  auto seg = attach(name, s.proc.pid());
  const auto ready = wait_ready(seg, 1);
  REQUIRE(ready.size() == 1);
  s.proc.signal(SIGTERM);
  auto status = s.proc.wait_exit(15s);
  INFO(s.proc.output());
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 1));
  CHECK(s.count(R"(worker\[0\] pid \d+ g1 \(in on_shutdown of unit beta\): graceful timeout: sending KILL)") == 1);
  CHECK_FALSE(support::pid_alive(ready.at(0)));
  CHECK(support::shm_segments("systempp." + name.value + ".").empty());
}

TEST_CASE("pool: a worker that is not READY within --ready-timeout is killed and retried",
          "[pool][timeout]") {
  pool_name name;
  auto s = start(probe_path, {"--workers", "2", "--name", name.value, "--ready-timeout", "0.5"},
                 {{"PROBE_FAULTS", "gamma:on_startup:hang@slot1"}});
  REQUIRE(s.wait(R"(worker\[1\] pid \d+ g1 \(in on_startup of unit gamma\): ready timeout: sending KILL)", 10s));
  REQUIRE(s.wait(R"(worker\[1\] pid \d+ g1 \(in on_startup of unit gamma\) killed by signal 9)", 10s));
  // Retried after a backoff, and the healthy slot serves meanwhile.
  REQUIRE(s.wait(R"(worker\[1\] pid \d+ g1 spawned)", 10s, s.wait("killed by signal 9", 1s)->end_offset));
  auto r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->header("x-worker-slot") == "0");
}

TEST_CASE("pool: SIGTERM sent to a worker directly drains it, and it is replaced",
          "[pool][drain]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "2", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  const auto before = wait_ready(seg, 2);
  REQUIRE(before.size() == 2);
  // A request in flight on the worker must still be answered.
  support::keepalive_client client("127.0.0.1", s.port, 10s);
  std::optional<support::response> slow;
  pid_t target = 0;
  std::thread t([&] { slow = client.get("/sleep?ms=500"); });
  REQUIRE(support::wait_until([&] {
    for (std::uint32_t i = 0; i < seg.slot_count(); ++i) {
      auto snap = systempp::read_slot(seg.slot(i));
      if (snap.in_flight > 0 && snap.state == systempp::worker_state::ready) target = snap.pid;
    }
    return target != 0;
  }, 5s));
  ::kill(target, SIGTERM);
  t.join();
  REQUIRE(slow);
  CHECK(slow->status == 200);
  CHECK_FALSE(slow->keep_alive);
  CHECK(s.wait("worker\\[\\d\\] pid " + std::to_string(target) + " g1 exited with code 0", 10s));
  std::map<int, pid_t> after;
  REQUIRE(support::wait_until([&] {
    after = ready_workers(seg);
    return after.size() == 2 && std::none_of(after.begin(), after.end(), [&](auto& kv) { return kv.second == target; });
  }, 10s));
}

namespace {

// The object of the worker with `pid` in a `status --json` output ("" when it is not there).
std::string worker_json(const std::string& json, pid_t pid) {
  const auto at = json.find("\"pid\":" + std::to_string(pid) + ",");
  if (at == std::string::npos) return {};
  const auto begin = json.rfind("{\"slot\":", at);
  const auto end = json.find("{\"slot\":", at);
  return begin == std::string::npos ? std::string{} : json.substr(begin, end - begin);
}

// A unit's time in a stage, from a worker's "stage_ms" object; -1 when it has none.
double stage_ms(const std::string& worker, const std::string& unit, const std::string& stage) {
  const std::regex timing("\"" + unit + "\":\\{[^}]*\"" + stage + "\":([0-9.]+)");
  std::smatch m;
  return std::regex_search(worker, m, timing) ? std::stod(m[1].str()) : -1.0;
}

// Milliseconds from the master's spawn of `pid` to its READY, from its control block record.
long long spawn_to_ready_ms(const systempp::control_segment& seg, pid_t pid) {
  for (std::uint32_t i = 0; i < seg.slot_count(); ++i) {
    const auto w = systempp::read_slot(seg.slot(i));
    if (w.pid == pid && w.ready_ms != 0)
      return static_cast<long long>(w.ready_ms) - static_cast<long long>(w.started_ms);
  }
  return -1;
}

}  // namespace

TEST_CASE("pool: a worker runs the on_startup of independent units concurrently",
          "[pool][units]") {
  // alpha, beta and gamma each wait 400 ms in on_startup: one after the other a worker
  // would need at least 1200 ms to become READY, together about 400.
  pool_name name;
  auto s = start(probe_path, {"--workers", "2", "--name", name.value}, {{"PROBE_DELAY", "on_startup:400"}});
  auto seg = attach(name, s.proc.pid());
  const auto ready = wait_ready(seg, 2);
  INFO(s.proc.output());
  REQUIRE(ready.size() == 2);
  const std::string json = status_output(probe_path, name, true);
  INFO(json);
  for (auto [slot, pid] : ready) {
    INFO("worker slot " << slot << " pid " << pid);
    const std::string worker = worker_json(json, pid);
    REQUIRE_FALSE(worker.empty());
    CHECK(worker.find("\"state\":\"ready\"") != std::string::npos);
    for (const char* unit : {"alpha", "beta", "gamma"}) {
      INFO("unit " << unit << ": on_startup " << stage_ms(worker, unit, "on_startup") << " ms");
      CHECK(stage_ms(worker, unit, "on_startup") >= 400.0);
    }
    const long long to_ready = spawn_to_ready_ms(seg, pid);
    INFO("spawn to READY " << to_ready << " ms");
    CHECK(to_ready >= 400);
    CHECK(to_ready < 1200);  // one after the other: at least 3 x 400
  }
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}

TEST_CASE("pool: the app's custom stage is timed per unit in status, like a built-in stage", "[pool][stages]") {
  pool_name name;
  auto s = start(probe_path, {"--workers", "1", "--name", name.value}, {{"PROBE_DELAY", "warmup:150"}});
  auto seg = attach(name, s.proc.pid());
  const auto ready = wait_ready(seg, 1);
  REQUIRE(ready.size() == 1);
  const std::string worker = worker_json(status_output(probe_path, name, true), ready.begin()->second);
  INFO(worker);
  for (const char* unit : {"alpha", "beta", "gamma"}) CHECK(stage_ms(worker, unit, "warmup") >= 150.0);
  const std::string text = status_output(probe_path, name, false);
  INFO(text);
  CHECK(std::regex_search(text, std::regex(R"(\d+\.\d ms  warmup beta)")));
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}
