// --threads N: each worker's loop on N threads, with the stages, the drain and request
// accounting as with one. Built with TSan (scripts/test --sanitize thread) this is the
// race check of the multi-threaded loop.

#include <csignal>
#include <filesystem>
#include <future>
#include <vector>

#include "harness.hpp"

using namespace harness;

namespace {

std::size_t thread_count(pid_t pid) {
  std::size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

std::uint64_t in_flight(const systempp::control_segment& seg) {
  std::uint64_t n = 0;
  for (const auto& w : live_workers(seg)) n += w.in_flight;
  return n;
}

std::uint64_t requests_counted(const systempp::control_segment& seg) {
  std::uint64_t n = seg.header().requests_total.load();
  for (const auto& w : live_workers(seg)) n += w.requests;
  return n;
}

}  // namespace

TEST_CASE("threads: four loop threads per worker serve keep-alive load through a reload and a drain, "
          "failing no request and counting each",
          "[threads][load]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "2", "--threads", "4", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  const auto first = wait_ready(seg, 2);
  REQUIRE(first.size() == 2);
  for (const auto& [slot, pid] : first) CHECK(thread_count(pid) >= 4);

  // A reload drains the first generation while 16 keep-alive clients keep sending.
  auto load = keepalive_load(s.port, 16);
  wait_for_traffic(load);
  s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 2); }, 20s));
  wait_for_traffic(load, load.snapshot().ok + 200);
  const auto stats = load.stop();
  INFO(error_samples(stats));
  CHECK(stats.failures() == 0);
  CHECK(support::wait_until([&] { return in_flight(seg) == 0; }, 10s));
  CHECK(requests_counted(seg) >= stats.ok);

  // SIGTERM with slow requests in flight on several threads: each is answered.
  std::vector<std::future<std::optional<support::response>>> slow;
  for (int i = 0; i < 8; ++i)
    slow.push_back(std::async(std::launch::async, [&] { return support::http_get("127.0.0.1", s.port, "/sleep?ms=700", 20s); }));
  REQUIRE(support::wait_until([&] { return in_flight(seg) == 8; }, 10s));
  s.proc.signal(SIGTERM);
  for (auto& f : slow) {
    const auto r = f.get();
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  require_exit_0(s.proc);
}
