// `app --workers 0`: every stage in one process, reload in place on SIGHUP.

#include <sys/wait.h>

#include <csignal>

#include "harness.hpp"

using namespace harness;

TEST_CASE("inline: two SIGHUPs then SIGTERM run three startup cycles and two reloads",
          "[inline][signals]") {
  auto s = start(probe_path, {"--workers", "0"});
  REQUIRE(s.wait("ready \\(cycle 1\\)"));
  s.proc.signal(SIGHUP);
  REQUIRE(s.wait("ready \\(cycle 2\\)"));
  s.proc.signal(SIGHUP);
  REQUIRE(s.wait("ready \\(cycle 3\\)"));
  s.proc.signal(SIGTERM);
  auto status = s.proc.wait_exit(15s);
  INFO(s.proc.output());
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));

  for (const char* unit : {"alpha", "beta", "gamma"}) {
    INFO(unit);
    const std::string u = unit;
    CHECK(s.count("on_init " + u + " .* ok") == 1);
    CHECK(s.count("pre_startup " + u + " .* ok") == 3);
    CHECK(s.count("on_startup " + u + " .* ok") == 3);
    CHECK(s.count("post_startup " + u + " .* ok") == 3);
    CHECK(s.count("pre_shutdown " + u + " .* ok") == 3);
    CHECK(s.count("on_shutdown " + u + " .* ok") == 3);
    CHECK(s.count("post_shutdown " + u + " .* ok") == 3);
    CHECK(s.count("on_reload " + u + " .* ok") == 2);
    CHECK(s.count("on_exit " + u + " .* ok") == 1);
  }
  // The reload cycle's order: teardown backward, on_reload, startup forward.
  const auto out = s.proc.output();
  const auto first_reload = out.find("on_reload alpha");
  REQUIRE(first_reload != std::string::npos);
  CHECK(out.rfind("post_shutdown alpha", first_reload) != std::string::npos);
  CHECK(out.rfind("post_shutdown alpha", first_reload) > out.rfind("post_shutdown gamma", first_reload));
  CHECK(out.find("pre_startup alpha", first_reload) < out.find("pre_startup gamma", first_reload));
}

TEST_CASE("inline: a raw co_spawn left running by a unit never resumes after a reload, in the next cycle",
          "[inline][cycle]") {
  pool_name name;
  config_file ticks{name.value + ".ticks"};
  ticks.write("");
  auto s = start(probe_path, {"--workers", "0"}, {{"PROBE_RAW_SPAWN", ticks.path.string()}});
  auto count = [&](const std::string& what) {
    const std::string text = read_file(ticks.path);
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  REQUIRE(s.wait("ready \\(cycle 1\\)"));
  REQUIRE(support::wait_until([&] { return count("cycle 1 tick") >= 3; }, 10s));
  s.proc.signal(SIGHUP);
  REQUIRE(s.wait("ready \\(cycle 2\\)"));
  // The cycle-2 ticker has ticked 20 times: the cycle-1 one, on the same 5 ms period, would
  // have resumed by then had its work survived the end of its cycle.
  REQUIRE(support::wait_until([&] { return count("cycle 2 tick") >= 20; }, 10s));
  INFO(read_file(ticks.path));
  CHECK(count("ran in cycle") == 0);
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}

namespace {

// Whether `sig` is pending for `pid` (sent, its handler not run yet), from /proc.
bool pending(pid_t pid, int sig) {
  const std::string status = read_file("/proc/" + std::to_string(pid) + "/status");
  for (const char* field : {"SigPnd:", "ShdPnd:"}) {
    const auto at = status.find(field);
    if (at == std::string::npos) continue;
    const auto mask = std::stoull(status.substr(at + std::string(field).size()), nullptr, 16);
    if (mask & (1ull << (sig - 1))) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("inline: SIGHUP and SIGUSR1 while on_exit runs are handled, not fatal", "[inline][signals]") {
  // alpha, the first probe, takes on_exit last and hangs there.
  auto s = start(probe_path, {"--workers", "0"}, {{"PROBE_FAULTS", "alpha:on_exit:hang"}});
  REQUIRE(s.wait("ready \\(cycle 1\\)"));
  s.proc.signal(SIGTERM);
  REQUIRE(s.wait("on_exit beta .* ok"));
  const pid_t pid = s.proc.pid();
  for (int sig : {SIGUSR1, SIGHUP}) {
    s.proc.signal(sig);
    // Delivered once it is no longer pending; without a handler it would have ended us.
    REQUIRE(support::wait_until([&] { return !support::pid_alive(pid) || !pending(pid, sig); }, 5s));
    CHECK(support::pid_alive(pid));
  }
  s.proc.signal(SIGKILL);
  const auto status = s.proc.wait_exit(10s);
  REQUIRE(status);
  CHECK(WIFSIGNALED(*status));
  CHECK(WTERMSIG(*status) == SIGKILL);
}

TEST_CASE("inline: the demo app answers GET / with 200 and its message", "[inline][http]") {
  auto s = start(app_path, {"--workers", "0"});
  REQUIRE(s.wait("ready \\(cycle 1\\)"));
  auto r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "hello");
  CHECK(r->header("x-worker-pid") == std::to_string(s.proc.pid()));
  s.proc.signal(SIGTERM);
  auto status = s.proc.wait_exit(15s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
}

TEST_CASE("inline: a request sent around SIGTERM is answered before exit", "[inline][drain]") {
  auto s = start(app_path, {"--workers", "0"});
  REQUIRE(s.wait("ready \\(cycle 1\\)"));
  support::keepalive_client client("127.0.0.1", s.port, 10s);
  REQUIRE(client.get("/healthz"));
  std::optional<support::response> slow;
  std::thread t([&] { slow = client.get("/sleep?ms=500"); });
  // Whether the server has read the request before the signal or reads it during the
  // drain's grace period, it must answer it (with Connection: close).
  s.proc.signal(SIGTERM);
  t.join();
  REQUIRE(slow);
  CHECK(slow->status == 200);
  CHECK_FALSE(slow->keep_alive);
  auto status = s.proc.wait_exit(15s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
}

TEST_CASE("inline: a second SIGINT during a drain exits at once with 130", "[inline][signals]") {
  auto s = start(probe_path, {"--workers", "0"}, {{"PROBE_FAULTS", "beta:on_shutdown:hang"}});
  REQUIRE(s.wait("ready \\(cycle 1\\)"));
  const auto mark = s.proc.output_size();
  s.proc.signal(SIGINT);
  REQUIRE(s.wait("on_shutdown gamma .* ok", 10s, mark));
  s.proc.signal(SIGINT);
  auto status = s.proc.wait_exit(10s);
  INFO(s.proc.output());
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 130));
  CHECK(s.count("on_exit alpha") == 0);
}

TEST_CASE("inline: a unit failing pre_startup stops the start with exit code 4",
          "[inline][failure]") {
  auto p = support::child::spawn(as_test_user_argv({probe_path, "--workers", "0", "--bind", "127.0.0.1:0"}),
                                 {{"PROBE_FAULTS", "beta:pre_startup:throw"}});
  auto status = p.wait_exit(15s);
  INFO(p.output());
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 4));
  CHECK(p.count_lines(std::regex("pre_startup beta .* failed: injected failure")) == 1);
  CHECK(p.count_lines(std::regex("post_shutdown alpha .* ok")) == 1);
  CHECK(p.count_lines(std::regex("post_shutdown beta")) == 0);
  CHECK(p.count_lines(std::regex("on_exit gamma .* ok")) == 1);
}

TEST_CASE("inline: a bad option exits 2 with one line naming it", "[inline][bad_input]") {
  auto p = support::child::spawn(as_test_user_argv({app_path, "--workers", "0", "--graceful-timeout", "never"}));
  auto status = p.wait_exit(10s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 2));
  CHECK(p.output().find("--graceful-timeout") != std::string::npos);
  const std::string out = p.output();
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
}
