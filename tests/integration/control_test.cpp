// `app status | reload | stop | scale` against a running pool, and against none.

#include <csignal>
#include <filesystem>
#include <fstream>

#include "harness.hpp"

using namespace harness;

namespace {

std::pair<int, std::string> run_app(std::vector<std::string> args) { return run_to_exit(std::move(args)); }

}  // namespace

TEST_CASE("control: status --json lists the READY workers with their fields", "[control][status]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "2", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  const auto ready = wait_ready(seg, 2);
  REQUIRE(ready.size() == 2);
  auto [status, out] = run_app({"status", "--name", name.value, "--json"});
  INFO(out);
  CHECK(support::child::exited_with(status, 0));
  CHECK(out.find("\"master_pid\":" + std::to_string(s.proc.pid())) != std::string::npos);
  CHECK(out.find("\"target_workers\":2") != std::string::npos);
  for (auto [slot, pid] : ready) {
    CHECK(out.find("\"pid\":" + std::to_string(pid)) != std::string::npos);
  }
  std::size_t ready_count = 0;
  for (auto at = out.find("\"state\":\"ready\""); at != std::string::npos; at = out.find("\"state\":\"ready\"", at + 1))
    ++ready_count;
  CHECK(ready_count == 2);
  for (const char* field : {"\"generation\":", "\"uptime_s\":", "\"requests\":", "\"in_flight\":",
                            "\"heartbeat_age_ms\":", "\"restarts\":", "\"stage_ms\":", "\"workers\":["})
    CHECK(out.find(field) != std::string::npos);

  auto [tstatus, table] = run_app({"status", "--name", name.value});
  CHECK(support::child::exited_with(tstatus, 0));
  CHECK(table.find("SLOT") != std::string::npos);
  CHECK(table.find("ready") != std::string::npos);
}

TEST_CASE("control: status against no pool is a clear error with exit 1", "[control][status]") {
  pool_name name;
  auto [status, out] = run_app({"status", "--name", name.value});
  CHECK(support::child::exited_with(status, 1));
  CHECK(out.find("no running pool named '" + name.value + "'") != std::string::npos);
}

TEST_CASE("control: reload --wait succeeds, and fails with the reason for a bad config",
          "[control][reload]") {
  pool_name name;
  const auto cfg = std::filesystem::temp_directory_path() / (name.value + ".conf");
  { std::ofstream(cfg) << "[demo]\nmessage = \"a\"\n"; }
  auto s = start(app_path, {"--workers", "2", "--name", name.value, "--config", cfg.string()});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 2).size() == 2);
  auto [ok_status, ok_out] = run_app({"reload", "--wait", "--name", name.value});
  INFO(ok_out);
  CHECK(support::child::exited_with(ok_status, 0));
  CHECK(seg.header().pool_generation.load() == 2);

  { std::ofstream(cfg) << "[demo]\nmesage = \"typo\"\n"; }
  auto [bad_status, bad_out] = run_app({"reload", "--wait", "--name", name.value});
  INFO(bad_out);
  CHECK(support::child::exited_with(bad_status, 1));
  CHECK(bad_out.find("reload rejected") != std::string::npos);
  CHECK(bad_out.find(":2:demo.mesage: unknown key") != std::string::npos);
  std::filesystem::remove(cfg);
}

TEST_CASE("control: scale N sets the worker count and stop drains the pool", "[control][scale]") {
  pool_name name;
  const auto pidfile = std::filesystem::temp_directory_path() / (name.value + ".pid");
  auto s = start(app_path, {"--workers", "1", "--name", name.value, "--pidfile", pidfile.string()});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 1).size() == 1);
  auto [scale_status, scale_out] = run_app({"scale", "3", "--pidfile", pidfile.string()});
  INFO(scale_out);
  CHECK(support::child::exited_with(scale_status, 0));
  CHECK(wait_ready(seg, 3).size() == 3);
  auto [stop_status, stop_out] = run_app({"stop", "--pidfile", pidfile.string()});
  CHECK(support::child::exited_with(stop_status, 0));
  auto status = s.proc.wait_exit(10s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
}

TEST_CASE("control: a pidfile naming a dead or foreign process is refused, nothing is signalled",
          "[control][bad_input]") {
  pool_name name;
  const auto pidfile = std::filesystem::temp_directory_path() / (name.value + ".pid");
  // pid 1 is alive but no pool's master; a test child is alive and ours but no master.
  auto bystander = support::child::spawn({"/bin/sleep", "30"});
  for (pid_t pid : {pid_t{1}, bystander.pid()}) {
    { std::ofstream(pidfile) << pid << "\n"; }
    for (const char* verb : {"status", "reload", "stop"}) {
      auto [status, out] = run_app({verb, "--pidfile", pidfile.string()});
      INFO(verb << " " << pid << ": " << out);
      CHECK(support::child::exited_with(status, 1));
      CHECK(out.find("is not the master of a systempp pool") != std::string::npos);
    }
  }
  CHECK(support::pid_alive(bystander.pid()));
  std::filesystem::remove(pidfile);
}

TEST_CASE("control: status refuses a garbage, truncated or foreign control block with a clear error",
          "[control][security]") {
  pool_name name;
  // The test process stands in for a live master: it holds the pool's lock, so the segment
  // named after its pid is the one the command attaches.
  auto lock = systempp::pool_lock::acquire(name.value);
  const std::string path = "/dev/shm/" + systempp::segment_name(name.value, ::getpid());
  struct remove_at_end {
    std::string p;
    ~remove_at_end() { std::filesystem::remove(p); }
  } cleanup{path};

  SECTION("garbage") {
    std::ofstream(path) << std::string(4096, 'x');
    std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    auto [status, out] = run_app({"status", "--name", name.value});
    INFO(out);
    CHECK(support::child::exited_with(status, 1));
    CHECK(out.find("wrong magic") != std::string::npos);
  }
  SECTION("truncated") {
    std::ofstream(path) << "short";
    auto [status, out] = run_app({"status", "--name", name.value});
    INFO(out);
    CHECK(support::child::exited_with(status, 1));
    CHECK(out.find("truncated") != std::string::npos);
  }
  SECTION("owned by another user") {
    std::vector<std::string> units{"u"};
    auto seg = systempp::control_segment::create(name.value, ::getpid(), 2, units);
    REQUIRE(::chown(path.c_str(), 65534, 65534) == 0);
    auto [status, out] = run_app({"status", "--name", name.value});
    INFO(out);
    CHECK(support::child::exited_with(status, 1));
    CHECK(out.find("owned by uid 65534") != std::string::npos);
  }
}

TEST_CASE("control: the control block is created with mode 0600", "[control][security]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "1", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 1).size() == 1);
  const auto perms = std::filesystem::status("/dev/shm/" + systempp::segment_name(name.value, s.proc.pid())).permissions();
  CHECK(perms == (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
}

TEST_CASE("control: reload --wait fails when no slot gets a READY worker of the new generation",
          "[control][reload]") {
  // Every worker fails pre_startup: no slot has a serving process when the reload comes.
  pool_name name;
  auto s = start(probe_path, {"--workers", "2", "--name", name.value},
                 {{"PROBE_FAULTS", "beta:pre_startup:throw"}});
  REQUIRE(s.wait(R"(worker\[1\] pid \d+ g1 .*exited with code 4)", 10s));
  auto [status, out] = run_app({"reload", "--wait", "--timeout", "60", "--name", name.value});
  INFO(out);
  CHECK(support::child::exited_with(status, 1));
  CHECK(out.find("reload failed") != std::string::npos);
  CHECK(out.find("g2") != std::string::npos);  // names the new worker that did not start
  CHECK(out.find("succeeded") == std::string::npos);
}

TEST_CASE("control: reload --wait gives up at once when the master dies", "[control][reload]") {
  // The new generation hangs in pre_startup, so the reload is still in progress when the
  // master is killed.
  pool_name name;
  auto s = start(probe_path, {"--workers", "1", "--name", name.value},
                 {{"PROBE_FAULTS", "alpha:pre_startup:hang@gen2"}});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 1).size() == 1);
  auto waiter = support::child::spawn({app_path, "reload", "--wait", "--timeout", "120", "--name", name.value});
  REQUIRE(support::wait_until(
      [&] { return seg.header().reload_outcome.load() == systempp::reload_outcome::in_progress; }, 10s));
  REQUIRE(s.proc.signal(SIGKILL));
  const auto status = waiter.wait_exit(10s);
  REQUIRE(status);
  INFO(waiter.output());
  CHECK(support::child::exited_with(*status, 1));
  CHECK(waiter.output().find("master " + std::to_string(s.proc.pid()) + " is gone") != std::string::npos);
}

TEST_CASE("control: a stale control block whose pid is alive is neither signalled nor blocks a start",
          "[control][identity]") {
  // A valid-looking block left behind, named after a pid that is alive but no master (as
  // after a SIGKILLed master whose pid was reused).
  pool_name name;
  auto bystander = support::child::spawn({"/bin/sleep", "30"});
  {
    const std::vector<std::string> units{"settings", "http"};
    auto stale = systempp::control_segment::create(name.value, bystander.pid(), 2, units);
    stale.disown();
  }
  const std::string stale_name = systempp::segment_name(name.value, bystander.pid());
  REQUIRE(support::shm_segments(stale_name).size() == 1);
  for (const char* verb : {"stop", "reload", "status"}) {
    auto [status, out] = run_app({verb, "--name", name.value});
    INFO(verb << ": " << out);
    CHECK(support::child::exited_with(status, 1));
    CHECK(out.find("no running pool named '" + name.value + "'") != std::string::npos);
  }
  CHECK(support::pid_alive(bystander.pid()));

  // A pool of that name starts, and the stale block is removed.
  auto s = start(app_path, {"--workers", "1", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 1).size() == 1);
  CHECK(support::shm_segments(stale_name).empty());
  CHECK(support::pid_alive(bystander.pid()));
}

TEST_CASE("control: two masters of one name started at the same instant: exactly one runs",
          "[control][identity]") {
  pool_name name;
  std::vector<support::child> masters;
  for (int i = 0; i < 2; ++i)
    masters.push_back(support::child::spawn(as_test_user_argv({app_path, "--bind", "127.0.0.1:0", "--workers", "1", "--name", name.value})));
  // The loser exits 2 at once, naming the winner; the winner keeps running.
  std::optional<std::size_t> loser;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!loser && std::chrono::steady_clock::now() < deadline) {
    for (std::size_t i = 0; i < masters.size() && !loser; ++i)
      if (auto st = masters[i].wait_exit_only(50ms)) {
        INFO(masters[i].output());
        CHECK(support::child::exited_with(*st, 2));
        loser = i;
      }
  }
  REQUIRE(loser);
  auto& winner = masters[1 - *loser];
  const auto said = masters[*loser].wait_for(std::regex(R"(already running \(master pid (\d+)\))"), 5s);
  REQUIRE(said);
  CHECK(said->groups.at(1) == std::to_string(winner.pid()));
  CHECK(support::pid_alive(winner.pid()));
  CHECK(systempp::find_live_master(name.value) == winner.pid());
}

TEST_CASE("control: a master that is pid 1 of a container, SIGKILLed and started again as pid 1, starts",
          "[control][identity]") {
  // Its first life leaves the block systempp.<name>.1 behind, and the second master is pid 1
  // again: only the free lock tells that the block is stale.
  pool_name name;
  auto container = [&] {
    return support::child::spawn(as_test_user_argv({"/usr/bin/unshare", "--pid", "--fork", "--mount-proc", "--kill-child", app_path,
                                  "--bind", "127.0.0.1:0", "--workers", "1", "--name", name.value}));
  };
  const std::string block = systempp::segment_name(name.value, 1);
  {
    auto first = container();
    REQUIRE(first.wait_for(std::regex("listening on"), 10s));
    std::optional<pid_t> master;  // its pid out here
    REQUIRE(support::wait_until([&] { return (master = systempp::find_live_master(name.value)).has_value(); }, 5s));
    REQUIRE(support::shm_segments(block).size() == 1);
    REQUIRE(::kill(*master, SIGKILL) == 0);  // pid 1 dies: the kernel kills its namespace
    REQUIRE(first.wait_exit(10s));
    REQUIRE(support::shm_segments(block).size() == 1);  // left behind
  }
  auto second = container();
  INFO(second.output());
  REQUIRE(second.wait_for(std::regex("listening on"), 10s));
  std::optional<pid_t> master;
  REQUIRE(support::wait_until([&] { return (master = systempp::find_live_master(name.value)).has_value(); }, 5s));
  CHECK(second.output().find("already running") == std::string::npos);
  auto seg = attach(name, 1);  // named after the pid it has in its namespace
  CHECK(wait_ready(seg, 1).size() == 1);
  REQUIRE(::kill(*master, SIGTERM) == 0);
  const auto status = second.wait_exit(20s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
  CHECK(support::shm_segments(block).empty());
}

TEST_CASE("control: a block of another user under the pool's name neither blocks a start nor is trusted",
          "[control][identity][security]") {
  pool_name name;
  const std::string planted = systempp::segment_name(name.value, 1);
  const auto path = std::string(systempp::shm_dir) + planted;
  { std::ofstream(path) << "not a control block\n"; }
  REQUIRE(::chown(path.c_str(), 65534, 65534) == 0);

  auto s = start(app_path, {"--workers", "1", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 1).size() == 1);
  auto [status, out] = run_app({"status", "--name", name.value});
  INFO(out);
  CHECK(support::child::exited_with(status, 0));
  CHECK(out.find("master " + std::to_string(s.proc.pid())) != std::string::npos);
  s.proc.signal(SIGTERM);
  REQUIRE(s.proc.wait_exit(20s));
  CHECK(std::filesystem::exists(path));  // another user's file: neither read nor removed
  std::filesystem::remove(path);
}
