// Reliability under chaos: long reload soaks, random worker kills, signal storms, stopped
// and killed masters, crash loops and slow clients, all against the real binaries.
//
// Waits are on conditions with deadlines. The few real pauses (a master SIGSTOPped for 4 s,
// the cadence of the random kills, a slow client's byte rate, an observation window in which
// nothing may happen) are the behaviour under test and say so where they are.

#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <condition_variable>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "harness.hpp"

using namespace harness;

namespace {

using steady = std::chrono::steady_clock;

long long ms_since(steady::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t).count();
}


// The pids of READY workers that are really alive (a SIGKILLed worker stays READY in the
// block until the master reaps it).
std::set<pid_t> ready_live_pids(const systempp::control_segment& seg) {
  std::set<pid_t> out;
  for (auto [slot, pid] : ready_workers(seg))
    if (support::pid_alive(pid)) out.insert(pid);
  return out;
}

std::array<std::uint64_t, systempp::restart_reason_count> restarts(const systempp::control_segment& seg) {
  std::array<std::uint64_t, systempp::restart_reason_count> out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = seg.header().restarts[i].load();
  return out;
}

// --- load ------------------------------------------------------------------------------


// --- /proc -----------------------------------------------------------------------------

// VmRSS of a process in KiB, or -1 if it cannot be read.
long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
  return -1;
}

// The master's fds and RSS over a few dozen samples: a crash-looping slot makes the fd count
// flicker by the channel of the attempt in flight, so compare the minimum (no attempt alive)
// and report the range.
struct resource_sample {
  std::size_t fds_min = SIZE_MAX, fds_max = 0;
  long rss_min = LONG_MAX, rss_max = 0;
};

resource_sample sample_resources(pid_t pid, int samples = 40) {
  resource_sample r;
  int taken = 0;
  support::wait_until([&] {
    const auto fds = support::count_fds(pid);
    const long rss = rss_kib(pid);
    r.fds_min = std::min(r.fds_min, fds);
    r.fds_max = std::max(r.fds_max, fds);
    r.rss_min = std::min(r.rss_min, rss);
    r.rss_max = std::max(r.rss_max, rss);
    return ++taken >= samples;
  }, 5s, 5ms);
  return r;
}

std::string fd_listing(pid_t pid) {
  std::string out;
  try {
    for (const auto& [fd, target] : support::fd_targets(pid)) out += std::to_string(fd) + "=" + target + " ";
  } catch (const std::exception& e) {
    out = e.what();
  }
  return out;
}

// --- raw sockets -------------------------------------------------------------------------

struct socket_fd {
  int fd = -1;
  socket_fd() = default;
  explicit socket_fd(int f) : fd(f) {}
  socket_fd(socket_fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  socket_fd& operator=(socket_fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd = std::exchange(o.fd, -1);
    }
    return *this;
  }
  socket_fd(const socket_fd&) = delete;
  socket_fd& operator=(const socket_fd&) = delete;
  ~socket_fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  bool valid() const { return fd >= 0; }
};

// A blocking TCP connect to 127.0.0.1:port, bounded by SO_SNDTIMEO (which Linux applies to
// connect). Returns the socket, or an invalid one and the errno.
std::pair<socket_fd, int> connect_local(std::uint16_t port, std::chrono::milliseconds timeout = 2s) {
  socket_fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return {socket_fd{}, errno};
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(s.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(s.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) return {socket_fd{}, errno};
  return {std::move(s), 0};
}

struct temp_file {
  std::filesystem::path path;
  temp_file(const std::string& name, const std::string& text)
      : path(std::filesystem::temp_directory_path() / name) {
    std::ofstream out(path, std::ios::trunc);
    out << text;
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  ~temp_file() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

}  // namespace

// -----------------------------------------------------------------------------------------

TEST_CASE("chaos: fifty rolling reloads under keep-alive load fail nothing and leak no fd, zombie or segment",
          "[chaos][reload_soak]") {
  constexpr std::size_t workers = 4;
  constexpr std::uint32_t reloads = 50;
  pool_name name;
  auto s = start(app_path, {"--workers", std::to_string(workers), "--name", name.value});
  const pid_t master = s.proc.pid();
  {
    auto seg = attach(name, master);
    REQUIRE(wait_ready(seg, workers).size() == workers);

    auto load = keepalive_load(s.port, 16, 80s);
    wait_for_traffic(load);
    const auto fds_before = support::count_fds(master);
    const auto fds_before_list = fd_listing(master);

    const auto started = steady::now();
    for (std::uint32_t i = 1; i <= reloads; ++i) {
      s.proc.signal(SIGHUP);
      INFO("reload " << i);
      REQUIRE(wait_reload(seg, i) == systempp::reload_outcome::succeeded);
    }
    const auto reload_ms = ms_since(started);
    INFO(s.proc.output().substr(s.proc.output().size() > 4000 ? s.proc.output().size() - 4000 : 0));
    REQUIRE(support::wait_until([&] { return settled(seg, workers, reloads + 1); }, 20s));
    const auto stats = load.stop();
    WARN("reload soak: " << reloads << " reloads in " << reload_ms << " ms; requests " << stats.requests()
         << ", ok " << stats.ok << ", failures " << stats.failures() << ", reconnects "
         << stats.reconnects << ", worker pids seen " << stats.pids().size());
    INFO("errors: " << error_samples(stats));
    CHECK(stats.failures() == 0);
    CHECK(stats.ok > 1000);
    CHECK(seg.header().pool_generation.load() == reloads + 1);

    // The last old workers' channels close when the master reaps them: allow it that moment.
    CHECK(support::wait_until([&] { return support::zombie_children_of(master).empty(); }, 2s));
    std::size_t fds_after = 0;
    support::wait_until([&] { fds_after = support::count_fds(master); return fds_after <= fds_before; }, 3s);
    WARN("master fds before " << fds_before << ", after " << fds_after);
    INFO("before: " << fds_before_list);
    INFO("after: " << fd_listing(master));
    CHECK(fds_after == fds_before);
  }
  s.proc.signal(SIGTERM);
  auto status = s.proc.wait_exit(20s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
  CHECK(support::shm_segments("systempp." + name.value + ".").empty());
}

TEST_CASE("chaos: random SIGKILLs of READY workers under load cost at most the killed connections",
          "[chaos][worker_kill]") {
  constexpr std::size_t workers = 4;
  constexpr std::size_t threads = 8;
  pool_name name;
  auto s = start(app_path, {"--workers", std::to_string(workers), "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, workers).size() == workers);
  auto load = keepalive_load(s.port, threads, 40s);
  wait_for_traffic(load);

  std::mt19937 rng(20240611);
  std::size_t kills = 0;
  long long slowest_recovery_ms = 0;
  const auto until = steady::now() + 10s;
  while (steady::now() < until && kills < 40) {
    const auto ready = ready_live_pids(seg);
    REQUIRE(ready.size() == workers);
    std::vector<pid_t> candidates(ready.begin(), ready.end());
    const pid_t victim = candidates[std::uniform_int_distribution<std::size_t>(0, candidates.size() - 1)(rng)];
    const auto killed_at = steady::now();
    REQUIRE(::kill(victim, SIGKILL) == 0);
    ++kills;
    // Back to N READY within the bound, without the victim: a READY worker that dies is
    // replaced at once, no backoff.
    const bool back = support::wait_until([&] {
      const auto now = ready_live_pids(seg);
      return now.size() == workers && now.count(victim) == 0;
    }, 10s);
    slowest_recovery_ms = std::max(slowest_recovery_ms, ms_since(killed_at));
    INFO("kill " << kills << " of pid " << victim);
    INFO(s.proc.output().substr(s.proc.output().size() > 6000 ? s.proc.output().size() - 6000 : 0));
    REQUIRE(back);
    // The kill cadence (about one every 500 ms) is the behaviour under test, not a wait for
    // state: the pool was already confirmed whole above.
    std::this_thread::sleep_until(killed_at + 500ms);
  }
  const auto stats = load.stop();
  WARN("worker kills: " << kills << " kills, requests " << stats.requests() << ", ok " << stats.ok
       << ", failures " << stats.failures() << " (connection errors " << stats.connection_errors
       << ", connect failures " << stats.connect_failures << ", non-2xx " << stats.non_2xx
       << "), slowest recovery " << slowest_recovery_ms << " ms");
  INFO("errors: " << error_samples(stats));
  CHECK(kills >= 10);
  CHECK(stats.failures() <= kills * threads);
  CHECK(stats.non_2xx == 0);
  CHECK(support::pid_alive(s.proc.pid()));
  CHECK_FALSE(s.proc.exit_status());
  CHECK(wait_ready(seg, workers).size() == workers);
  CHECK(seg.header().restarts[static_cast<int>(systempp::restart_reason::crash)].load() == kills);
  auto r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("chaos: a storm of 300 HUP/TTIN/TTOU/USR1 signals under load settles consistently with no failed request",
          "[chaos][signal_storm]") {
  constexpr std::size_t workers = 3;
  pool_name name;
  auto s = start(app_path, {"--workers", std::to_string(workers), "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, workers).size() == workers);
  auto load = keepalive_load(s.port, 8, 80s);
  wait_for_traffic(load);

  const int kinds[] = {SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1};
  std::map<int, int> sent;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> pick(0, 3);
  constexpr int storm = 300;
  const auto started = steady::now();
  for (int i = 0; i < storm; ++i) {
    // Pacing, not synchronisation: spread the storm over about one second (yielding, so the
    // master gets the CPU) instead of letting the kernel coalesce it into a handful.
    const auto slot = started + std::chrono::microseconds(1'000'000LL * i / storm);
    while (steady::now() < slot) std::this_thread::yield();
    const int sig = kinds[pick(rng)];
    REQUIRE(s.proc.signal(sig));
    ++sent[sig];
  }
  const auto storm_ms = ms_since(started);

  const auto& h = seg.header();
  std::uint32_t gen = 0, target = 0;
  const auto settling = steady::now();
  // The last signals may still be pending in the master when the test stops sending, so
  // "settled" must hold for a whole second (and the same generation throughout), not for
  // one sample.
  std::optional<steady::time_point> calm_since;
  std::uint32_t calm_gen = 0;
  const bool calm = support::wait_until([&] {
    gen = h.pool_generation.load();
    target = h.target_workers.load();
    const bool now_calm = h.master_state.load() == systempp::master_state::running &&
                          h.reload_outcome.load() != systempp::reload_outcome::in_progress && target >= 1 &&
                          settled(seg, target, gen);
    if (!now_calm || (calm_since && calm_gen != gen)) {
      calm_since.reset();
      return false;
    }
    if (!calm_since) calm_since = steady::now(), calm_gen = gen;
    return steady::now() - *calm_since >= std::chrono::seconds(1);
  }, 45s, 50ms);
  const auto settle_ms = ms_since(settling);
  const auto stats = load.stop();
  WARN("signal storm: sent HUP " << sent[SIGHUP] << ", TTIN " << sent[SIGTTIN] << ", TTOU " << sent[SIGTTOU]
       << ", USR1 " << sent[SIGUSR1] << " in " << storm_ms << " ms; settled in " << settle_ms
       << " ms at " << target << " worker(s), generation " << gen << " (" << h.reload_seq.load()
       << " rollouts); requests " << stats.requests() << ", failures " << stats.failures());
  INFO("errors: " << error_samples(stats));
  INFO(s.proc.output().substr(s.proc.output().size() > 6000 ? s.proc.output().size() - 6000 : 0));
  REQUIRE(calm);
  CHECK(support::pid_alive(s.proc.pid()));
  CHECK_FALSE(s.proc.exit_status());
  const auto ready = ready_workers(seg);
  CHECK(ready.size() == target);
  CHECK(ready.size() >= 1);
  for (const auto& w : live_workers(seg)) {
    CHECK(w.state == systempp::worker_state::ready);
    CHECK(w.generation == h.pool_generation.load());
  }
  CHECK(h.reload_outcome.load() == systempp::reload_outcome::succeeded);
  CHECK(stats.failures() == 0);
  CHECK(support::wait_until([&] { return support::zombie_children_of(s.proc.pid()).empty(); }, 2s));
  auto r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("chaos: a master SIGSTOPped for 4 s past the heartbeat timeout kills no worker when it resumes",
          "[chaos][master_stop]") {
  constexpr std::size_t workers = 3;
  pool_name name;
  auto s = start(app_path, {"--workers", std::to_string(workers), "--name", name.value,
                            "--heartbeat-timeout", "1"});
  auto seg = attach(name, s.proc.pid());
  const auto before = wait_ready(seg, workers);
  REQUIRE(before.size() == workers);
  const auto restarts_before = restarts(seg);
  auto load = keepalive_load(s.port, 4, 40s);
  wait_for_traffic(load);

  REQUIRE(s.proc.signal(SIGSTOP));
  REQUIRE(support::wait_until([&] {
    auto st = support::read_stat(s.proc.pid());
    return st && st->state == 'T';
  }, 2s));
  const auto ok_at_stop = load.snapshot().ok;
  // The pause IS the behaviour under test: the master stays stopped for 4 heartbeat timeouts
  // while its workers keep beating and serving.
  std::this_thread::sleep_for(4s);
  const auto served_while_stopped = load.snapshot().ok - ok_at_stop;
  const auto mark = s.proc.output_size();
  REQUIRE(s.proc.signal(SIGCONT));

  // The master runs again: its loop has handled a signal sent after the resume.
  REQUIRE(s.proc.signal(SIGUSR1));
  REQUIRE(s.wait("SIGUSR1: log reopened", 5s, mark));
  // Observation window: the overdue heartbeat check runs as soon as the loop does, and then
  // every 250 ms; a kill would be logged within it. Nothing logging is the expected outcome.
  CHECK_FALSE(s.wait("heartbeat timeout|killed by signal|ready timeout", 1500ms, mark));

  const auto after = ready_workers(seg);
  CHECK(after == before);
  CHECK(restarts(seg) == restarts_before);
  wait_for_traffic(load, load.snapshot().ok + 100);
  const auto stats = load.stop();
  WARN("master stop: served " << served_while_stopped << " requests while the master was stopped; "
       << "requests " << stats.requests() << ", failures " << stats.failures());
  INFO("errors: " << error_samples(stats));
  CHECK(served_while_stopped > 0);
  CHECK(stats.failures() == 0);
  auto r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("chaos: a SIGSTOPped worker is killed after the heartbeat timeout and replaced while the others serve",
          "[chaos][worker_stop]") {
  no_core_dumps();
  // With reuseport the stopped worker's own socket keeps the connections the kernel queued
  // there before the master steered around it: they wait for the slot's next worker, so
  // they are answered, late (the known weakness of reuseport); the client waits longer.
  const std::string accept = GENERATE("shared", "exclusive", "reuseport");
  INFO("--accept " << accept);
  const auto client_timeout = accept == "reuseport" ? 10s : 2s;
  constexpr std::size_t workers = 3;
  pool_name name;
  auto s = start(app_path, {"--workers", std::to_string(workers), "--name", name.value,
                            "--heartbeat-timeout", "1", "--accept", accept});
  auto seg = attach(name, s.proc.pid());
  const auto before = wait_ready(seg, workers);
  REQUIRE(before.size() == workers);
  const auto restarts_before = restarts(seg);
  const pid_t victim = before.at(0);
  const std::string who = "worker\\[0\\] pid " + std::to_string(victim) + " g1";

  const auto mark = s.proc.output_size();
  const auto stopped_at = steady::now();
  REQUIRE(::kill(victim, SIGSTOP) == 0);
  // Fresh connections meanwhile: the stopped worker cannot accept, the others must. The wait
  // for the kill line paces the loop and ends it as soon as the kill happens.
  std::size_t ok = 0, failed = 0;
  std::string last_error;
  std::optional<support::line_match> killed;
  for (int i = 0; i < 1000 && !killed && ms_since(stopped_at) < 15'000; ++i) {
    std::string why;
    auto r = support::http_get("127.0.0.1", s.port, "/", client_timeout, &why);
    if (r && r->status == 200 && std::stoi(r->header("x-worker-pid")) != victim) {
      ++ok;
    } else {
      ++failed;
      last_error = r ? "status " + std::to_string(r->status) : why;
    }
    killed = s.wait(who + " .*killed by signal 9", 20ms, mark);
  }
  const auto kill_ms = ms_since(stopped_at);
  WARN("worker stop: killed " << kill_ms << " ms after SIGSTOP; " << ok << " requests ok, " << failed
       << " failed meanwhile");
  {
    INFO(s.proc.output());
    REQUIRE(killed);
  }
  INFO("last error: " << last_error);
  CHECK(failed == 0);
  CHECK(ok > 0);
  CHECK(s.count(who + ": heartbeat timeout: sending ABRT") == 1);
  CHECK(s.count(who + ": heartbeat timeout: sending KILL") == 1);
  CHECK(kill_ms >= 1000);  // not before the heartbeat timeout

  std::map<int, pid_t> after;
  REQUIRE(support::wait_until([&] {
    after = ready_workers(seg);
    return after.size() == workers && after.at(0) != victim && support::pid_alive(after.at(0));
  }, 10s));
  CHECK(after.at(1) == before.at(1));
  CHECK(after.at(2) == before.at(2));
  CHECK_FALSE(support::pid_alive(victim));
  const auto restarts_after = restarts(seg);
  const auto crash = static_cast<std::size_t>(systempp::restart_reason::crash);
  const auto heartbeat = static_cast<std::size_t>(systempp::restart_reason::timeout_heartbeat);
  CHECK(restarts_after[crash] + restarts_after[heartbeat] == restarts_before[crash] + restarts_before[heartbeat] + 1);
  CHECK(restarts_after[heartbeat] == restarts_before[heartbeat] + 1);
  auto r = support::http_get("127.0.0.1", s.port, "/");
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("chaos: after the master is SIGKILLed under load its workers leave and a new master on the same name and port serves",
          "[chaos][master_kill]") {
  constexpr std::size_t workers = 3;
  pool_name name;
  auto s = start(app_path, {"--workers", std::to_string(workers), "--name", name.value});
  const pid_t old_master = s.proc.pid();
  const std::uint16_t port = s.port;
  std::map<int, pid_t> ready;
  {
    auto seg = attach(name, old_master);
    ready = wait_ready(seg, workers);
    REQUIRE(ready.size() == workers);
  }
  const std::string stale = systempp::segment_name(name.value, old_master);
  auto load = keepalive_load(port, 8, 40s);
  wait_for_traffic(load);

  REQUIRE(s.proc.signal(SIGKILL));
  REQUIRE(s.proc.wait_exit_only(5s));
  const auto died = steady::now();
  const bool all_gone = support::wait_until([&] {
    for (auto [slot, pid] : ready)
      if (support::pid_alive(pid)) return false;
    return true;
  }, 2s);
  const auto gone_ms = ms_since(died);
  const auto stats = load.stop();
  WARN("master kill: workers gone " << gone_ms << " ms after the master died; load requests "
       << stats.requests() << ", failures " << stats.failures() << " (expected: the pool is gone)");
  CHECK(all_gone);
  REQUIRE(support::shm_segments(stale).size() == 1);  // left behind by the SIGKILLed master

  // The workers held the listening socket: wait until the port refuses connections.
  REQUIRE(support::wait_until([&] {
    auto [fd, err] = connect_local(port, 500ms);
    return !fd.valid() && err == ECONNREFUSED;
  }, 5s));

  auto second = support::child::spawn(as_test_user_argv({app_path, "--bind", "127.0.0.1:" + std::to_string(port), "--workers",
                                       std::to_string(workers), "--name", name.value}));
  INFO(second.output());
  REQUIRE(second.wait_for(std::regex("removed 1 stale control block"), 10s));
  REQUIRE(second.wait_for(std::regex(R"(listening on 127\.0\.0\.1:)" + std::to_string(port)), 10s));
  auto seg = attach(name, second.pid());
  REQUIRE(wait_ready(seg, workers).size() == workers);
  CHECK(support::shm_segments(stale).empty());
  auto r = support::http_get("127.0.0.1", port, "/");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "hello");

  second.signal(SIGTERM);
  auto status = second.wait_exit(20s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
  CHECK(support::shm_segments("systempp." + name.value + ".").empty());
}

TEST_CASE("chaos: a slot failing pre_startup 200 times leaks no fd or memory in the master and is rate-bounded",
          "[chaos][crash_loop]") {
  constexpr int wanted = 200;
  pool_name name;
  const auto started = steady::now();
  auto s = start(probe_path, {"--workers", "2", "--name", name.value, "--restart-backoff-max", "0.01"},
                 {{"PROBE_FAULTS", "beta:pre_startup:throw@slot1"}});
  const pid_t master = s.proc.pid();
  const std::regex failure(R"(worker\[1\] pid \d+ g1 .* exited with code 4)");

  resource_sample at20, at200;
  std::size_t from = 0;
  std::size_t served = 0;
  std::string first_line, last_line;
  for (int i = 1; i <= wanted; ++i) {
    auto m = s.proc.wait_for(failure, 15s, from);
    INFO("failure " << i);
    REQUIRE(m);
    from = m->end_offset;
    if (i == 1) first_line = m->line;
    last_line = m->line;
    if (i == 20) at20 = sample_resources(master);
    if (i % 10 == 0) {
      // Slot 0 serves throughout.
      auto r = support::http_get("127.0.0.1", s.port, "/");
      INFO("request after failure " << i);
      REQUIRE(r);
      CHECK(r->status == 200);
      CHECK(r->header("x-worker-slot") == "0");
      ++served;
    }
  }
  const auto total_ms = ms_since(started);
  at200 = sample_resources(master);
  const auto counted = s.proc.count_lines(failure);
  long long log_span = log_time_ms(last_line) - log_time_ms(first_line);
  if (log_span < 0) log_span += 24LL * 3600 * 1000;  // the log clock passed midnight
  WARN("crash loop: " << counted << " failures in " << total_ms << " ms (first to " << wanted << "th: "
       << log_span << " ms in the log); master fds " << at20.fds_min << ".." << at20.fds_max << " after 20, "
       << at200.fds_min << ".." << at200.fds_max << " after " << wanted << "; VmRSS " << at20.rss_min << ".."
       << at20.rss_max << " KiB after 20, " << at200.rss_min << ".." << at200.rss_max << " KiB after " << wanted);
  CHECK(counted >= static_cast<std::size_t>(wanted));
  CHECK(at200.fds_min == at20.fds_min);
  CHECK(at200.rss_max - at20.rss_max < 1024);
  // Rate bound: every retry waits at least the 10 ms backoff.
  CHECK(total_ms >= wanted * 10);
  CHECK(log_span >= (wanted - 1) * 10);
  CHECK(served == wanted / 10);
  CHECK(support::pid_alive(master));
  auto seg = attach(name, master);
  const auto ready = ready_workers(seg);
  CHECK(ready.size() == 1);
  CHECK(ready.count(0) == 1);
}

TEST_CASE("chaos: a slow-loris client and 1000 idle connections neither starve other clients nor hold a drain past its bound",
          "[chaos][slow_clients]") {
  constexpr std::size_t idle_count = 1000;
  constexpr auto graceful = 2s;
  // The process (and the pool it starts, which inherits the limit) needs room for the idle
  // connections: raise the soft limit up to the hard one if it is too low.
  rlimit nofile{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &nofile) == 0);
  if (nofile.rlim_cur != RLIM_INFINITY && nofile.rlim_cur < 4096) {
    nofile.rlim_cur = nofile.rlim_max == RLIM_INFINITY ? 4096 : std::min<rlim_t>(4096, nofile.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }

  pool_name name;
  // Idle keep-alive connections are kept for 60 s, so only the drain closes them.
  temp_file cfg(name.value + ".conf", "[http]\nkeepalive-timeout = 60\n");
  auto s = start(app_path, {"--workers", "2", "--name", name.value, "--graceful-timeout", "2",
                            "--config", cfg.path.string()});
  auto seg = attach(name, s.proc.pid());
  const auto ready = wait_ready(seg, 2);
  REQUIRE(ready.size() == 2);
  auto worker_fds = [&] {
    std::size_t n = 0;
    for (auto [slot, pid] : ready) {
      try {
        n += support::count_fds(pid);
      } catch (const std::exception&) {
      }
    }
    return n;
  };
  const auto fds_idle_before = worker_fds();

  // The slow loris: one byte of a request header every 200 ms, bounded by the header's length
  // (about 18 s) and stopped early by the test. The slowness is the behaviour under test.
  std::mutex mutex;
  std::condition_variable cv;
  bool stop = false;
  std::size_t loris_sent = 0;
  bool loris_cut = false;
  socket_fd loris = connect_local(s.port).first;
  REQUIRE(loris.valid());
  const std::string slow_request =
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow-loris\r\nX-Padding: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
  std::thread loris_thread([&] {
    std::unique_lock lock(mutex);
    for (std::size_t i = 0; i < slow_request.size() && !stop; ++i) {
      if (::send(loris.fd, slow_request.data() + i, 1, MSG_NOSIGNAL) != 1) {
        loris_cut = true;
        break;
      }
      ++loris_sent;
      cv.wait_for(lock, 200ms, [&] { return stop; });
    }
  });
  struct joiner {
    std::thread& t;
    std::mutex& m;
    std::condition_variable& cv;
    bool& stop;
    ~joiner() {
      {
        std::lock_guard lock(m);
        stop = true;
      }
      cv.notify_all();
      if (t.joinable()) t.join();
    }
  } join_loris{loris_thread, mutex, cv, stop};

  // 1000 idle connections: connect, then nothing.
  std::vector<socket_fd> idle;
  idle.reserve(idle_count);
  std::size_t connect_errors = 0;
  for (std::size_t i = 0; i < idle_count; ++i) {
    auto [fd, err] = connect_local(s.port);
    if (fd.valid())
      idle.push_back(std::move(fd));
    else
      ++connect_errors;
  }
  CHECK(connect_errors == 0);
  // The workers really hold them (accepted, waiting for a request).
  const bool held = support::wait_until([&] { return worker_fds() >= fds_idle_before + idle.size(); }, 10s, 50ms);
  const auto fds_idle_after = worker_fds();
  CHECK(held);

  // Other clients are served meanwhile.
  std::size_t ok = 0;
  long long slowest_ms = 0;
  std::string why;
  for (int i = 0; i < 20; ++i) {
    const auto t = steady::now();
    auto r = support::http_get("127.0.0.1", s.port, "/", 3s, &why);
    slowest_ms = std::max(slowest_ms, ms_since(t));
    if (r && r->status == 200) ++ok;
  }
  INFO("last error: " << why);
  CHECK(ok == 20);
  {
    std::lock_guard lock(mutex);
    CHECK_FALSE(loris_cut);  // still trickling: its request is in progress during the drain
  }

  const auto term_at = steady::now();
  REQUIRE(s.proc.signal(SIGTERM));
  auto status = s.proc.wait_exit(graceful + 10s);
  const auto drain_ms = ms_since(term_at);
  std::size_t sent_by_then = 0;
  {
    std::lock_guard lock(mutex);
    sent_by_then = loris_sent;
  }
  WARN("slow clients: " << idle.size() << " idle connections held (worker fds " << fds_idle_before << " -> "
       << fds_idle_after << "), " << ok << "/20 other requests ok (slowest " << slowest_ms
       << " ms), slow loris sent " << sent_by_then << "/" << slow_request.size()
       << " bytes; SIGTERM drain took " << drain_ms << " ms, master "
       << (status ? support::child::describe(*status) : std::string("did not exit")));
  INFO(s.proc.output().substr(s.proc.output().size() > 4000 ? s.proc.output().size() - 4000 : 0));
  REQUIRE(status);
  CHECK(drain_ms <= std::chrono::duration_cast<std::chrono::milliseconds>(graceful + 3s).count());
  // 0 if every connection closed in time, 1 if the master had to kill a worker at the
  // graceful deadline (the slow request cannot finish before it): both are bounded drains.
  CHECK((support::child::exited_with(*status, 0) || support::child::exited_with(*status, 1)));
  for (auto [slot, pid] : ready) CHECK_FALSE(support::pid_alive(pid));
  CHECK(support::shm_segments("systempp." + name.value + ".").empty());
}
