// Operability: the Prometheus endpoint, log files reopened on SIGUSR1, JSON logs.

#include <fmt/format.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "support/temp_dir.hpp"
#include <systempp/options.hpp>

using namespace harness;

namespace {

// Every sample line is `name{labels} value`; returns name{labels} -> value.
std::map<std::string, double> parse_prometheus(const std::string& text) {
  static const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})?) (-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?)$)");
  std::map<std::string, double> out;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ")) continue;
    std::smatch m;
    INFO(line);
    REQUIRE(std::regex_match(line, m, sample));
    out[m[1]] = std::stod(m[4]);
  }
  return out;
}

double sample(std::uint16_t mport, const std::string& key) {
  auto r = support::http_get("127.0.0.1", mport, "/metrics");
  REQUIRE(r);
  REQUIRE(r->status == 200);
  const auto samples = parse_prometheus(r->body);
  INFO(r->body);
  REQUIRE(samples.count(key) == 1);
  return samples.at(key);
}

double requests_total(std::uint16_t port) { return sample(port, "systempp_requests_total"); }

// A request is counted once its response is written, which the client may see first:
// waits up to 5 s for the sample to reach `want`, then returns what it is.
double sample_reaching(std::uint16_t mport, const std::string& key, double want) {
  support::wait_until([&] { return sample(mport, key) >= want; }, 5s);
  return sample(mport, key);
}

}  // namespace

TEST_CASE("ops: /metrics is Prometheus text and the request counter never drops across reloads",
          "[ops][metrics]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "2", "--name", name.value, "--metrics", "127.0.0.1:0"});
  const auto mport = metrics_port(s);
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 2).size() == 2);

  auto r = support::http_get("127.0.0.1", mport, "/metrics");
  REQUIRE(r);
  CHECK(r->header("content-type").starts_with("text/plain"));
  const auto samples = parse_prometheus(r->body);
  CHECK(samples.at("systempp_workers{state=\"ready\"}") == 2);
  CHECK(samples.at("systempp_target_workers") == 2);
  CHECK(samples.count("systempp_worker_restarts_total{reason=\"crash\"}") == 1);
  CHECK(samples.count("systempp_reload_last_duration_seconds") == 1);

  const double before = requests_total(mport);
  for (int i = 0; i < 100; ++i) REQUIRE(support::http_get("127.0.0.1", s.port, "/"));
  double last = sample_reaching(mport, "systempp_requests_total", before + 100);
  CHECK(last >= before + 100);

  // Three reloads under load; the counter is sampled throughout and may only grow.
  support::load_options o;
  o.port = s.port;
  o.threads = 8;
  o.max_duration = 60s;
  support::load_generator load(o);
  for (std::uint32_t i = 1; i <= 3; ++i) {
    s.proc.signal(SIGHUP);
    REQUIRE(support::wait_until([&] {
      const double now = requests_total(mport);
      CHECK(now >= last);
      last = now;
      return seg.header().reload_seq.load() >= i &&
             seg.header().reload_outcome.load() == systempp::reload_outcome::succeeded;
    }, 20s, 20ms));
  }
  const auto stats = load.stop();
  CHECK(stats.failures() == 0);
  REQUIRE(support::wait_until([&] { return requests_total(mport) >= before + 100 + static_cast<double>(stats.ok); }, 5s));
  auto missing = support::http_get("127.0.0.1", mport, "/other");
  REQUIRE(missing);
  CHECK(missing->status == 404);
}

TEST_CASE("ops: SIGUSR1 after the log file was renamed writes to a new file", "[ops][logs]") {
  pool_name name;
  const auto dir = std::filesystem::temp_directory_path() / ("logs-" + name.value);
  std::filesystem::create_directories(dir);
  const auto log = dir / "app.log";
  auto p = support::child::spawn(as_test_user_argv({app_path, "--workers", "2", "--name", name.value, "--bind", "127.0.0.1:0",
                                  "--log-file", log.string()}));
  auto seg = attach(name, p.pid());
  REQUIRE(wait_ready(seg, 2).size() == 2);
  REQUIRE(read_file(log).find("[master]") != std::string::npos);

  std::filesystem::rename(log, dir / "app.log.1");  // what logrotate does
  p.signal(SIGUSR1);
  REQUIRE(support::wait_until([&] {
    const auto text = read_file(log);
    return text.find("[master]") != std::string::npos && text.find("[worker[0] g1]") != std::string::npos &&
           text.find("[worker[1] g1]") != std::string::npos;
  }, 10s));
  CHECK(read_file(log).find("SIGUSR1: log reopened") != std::string::npos);
  CHECK(read_file(dir / "app.log.1").find("SIGUSR1: log reopened") == std::string::npos);
  p.signal(SIGTERM);
  auto status = p.wait_exit(20s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
  std::filesystem::remove_all(dir);
}

TEST_CASE("ops: --log-format json writes one JSON object per line", "[ops][logs]") {
  pool_name name;
  // A quote in the configured message ends up in a log message ("configuration reloaded").
  const auto cfg = std::filesystem::temp_directory_path() / (name.value + ".toml");
  { std::ofstream(cfg) << "[demo]\nmessage = 'say \"q\"'\n"; }
  auto s = start(app_path, {"--workers", "1", "--name", name.value, "--log-format", "json", "--config", cfg.string()});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 1).size() == 1);
  s.proc.signal(SIGHUP);
  REQUIRE(s.wait(R"(configuration reloaded: message 'say \\"q\\"')"));
  s.proc.signal(SIGTERM);
  REQUIRE(s.proc.wait_exit(20s));
  std::istringstream lines(s.proc.output());
  std::size_t count = 0;
  for (std::string line; std::getline(lines, line);) {
    INFO(line);
    CHECK(line.starts_with("{\"time\":\""));
    CHECK(line.ends_with("\"}"));
    CHECK(line.find("\"msg\":\"") != std::string::npos);
    // Quotes inside the message are escaped: unescaped quotes come in pairs.
    std::size_t quotes = 0;
    for (std::size_t i = 0; i < line.size(); ++i)
      if (line[i] == '"' && (i == 0 || line[i - 1] != '\\')) ++quotes;
    CHECK(quotes % 2 == 0);
    ++count;
  }
  CHECK(count > 5);
  std::filesystem::remove(cfg);
}


TEST_CASE("ops: the app's counters and histograms count every request once across a killed worker and a reload",
          "[ops][metrics]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "2", "--name", name.value, "--metrics", "127.0.0.1:0"});
  const auto mport = metrics_port(s);
  auto seg = attach(name, s.proc.pid());
  const auto first = wait_ready(seg, 2);
  REQUIRE(first.size() == 2);
  const std::string ok = R"(systempp_http_responses_total{class="2xx"})";
  const std::string missing = R"(systempp_http_responses_total{class="4xx"})";
  const std::string count = "systempp_http_request_seconds_count";
  const std::string inf = R"(systempp_http_request_seconds_bucket{le="+Inf"})";

  for (int i = 0; i < 50; ++i) REQUIRE(support::http_get("127.0.0.1", s.port, "/")->status == 200);
  CHECK(sample_reaching(mport, ok, 50) == 50);
  CHECK(sample_reaching(mport, count, 50) == 50);
  CHECK(sample(mport, inf) == 50);

  // A worker killed outright: what it counted stays in the pool's totals.
  const pid_t victim = first.begin()->second;
  REQUIRE(::kill(victim, SIGKILL) == 0);
  REQUIRE(support::wait_until([&] {
    const auto now = ready_workers(seg);
    return now.size() == 2 && std::none_of(now.begin(), now.end(), [&](const auto& w) { return w.second == victim; });
  }, 15s));
  CHECK(sample(mport, ok) == 50);

  for (int i = 0; i < 30; ++i) REQUIRE(support::http_get("127.0.0.1", s.port, "/nothing-here")->status == 404);
  s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 2); }, 15s));
  CHECK(sample(mport, ok) == 50);
  CHECK(sample_reaching(mport, missing, 30) == 30);
  CHECK(sample_reaching(mport, count, 80) == 80);
  CHECK(sample(mport, inf) == 80);
  CHECK(sample(mport, R"(systempp_http_request_seconds_bucket{le="0.001"})") <= 80);
}

TEST_CASE("ops: a unit reporting itself unhealthy shows in status, --json, /healthz and /metrics", "[ops][health]") {
  pool_name name;
  auto s = start(probe_path, {"--workers", "2", "--name", name.value, "--metrics", "127.0.0.1:0"},
                 {{"PROBE_UNHEALTHY", "beta:database \"main\" unreachable"}});
  const auto mport = metrics_port(s);
  auto seg = attach(name, s.proc.pid());
  const auto ready = wait_ready(seg, 2);
  REQUIRE(ready.size() == 2);
  auto h = support::http_get("127.0.0.1", s.port, "/healthz");
  REQUIRE(h);
  CHECK(h->status == 503);
  CHECK(h->body == "unhealthy: beta: database \"main\" unreachable\n");

  // Both workers said so by the time they were READY.
  const auto text = status_output(probe_path, name, false);
  INFO(text);
  for (const auto& [slot, pid] : ready)
    CHECK(text.find(fmt::format("unhealthy: slot {} pid {}: beta: database \"main\" unreachable", slot, pid)) !=
          std::string::npos);
  const auto json = status_output(probe_path, name, true);
  CHECK(json.find(R"("healthy":false,"unhealthy_unit":"beta","health_reason":"database \"main\" unreachable")") !=
        std::string::npos);
  CHECK(sample(mport, "systempp_unhealthy_workers") == 2);
}

namespace {

/// What `ps` shows as a process's command line (all of /proc/PID/cmdline, NULs as spaces,
/// trailing ones dropped), and what top shows.
std::string title_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(text.begin(), text.end(), '\0', ' ');
  return text.substr(0, text.find_last_not_of(' ') + 1);
}
std::string thread_name_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string text;
  std::getline(in, text);
  return text;
}

}  // namespace

TEST_CASE("ops: ps shows the master and each worker by role, slot, generation and pool, a reload and a drain change it",
          "[ops][title]") {
  pool_name name;
  // Started by a path longer than any title (it is argv[0]), whose end must not show.
  support::temp_dir dir("title-" + name.value);
  const auto long_dir = dir.path / std::string(64, 'd');
  std::filesystem::create_directories(long_dir);
  std::filesystem::create_symlink(app_path, long_dir / "app");
  auto [s, seg, first] = start_pool(name, 2, {}, (long_dir / "app").string());
  const pid_t master = s.proc.pid();
  // The master sets its title once the pool runs: wait for it rather than race it.
  CHECK(support::wait_until([&] { return title_of(master) == fmt::format("app: master [{}] gen 1", name.value); }, 5s));
  CHECK(thread_name_of(master) == "app: master");
  for (const auto& [slot, pid] : first) {
    CHECK(title_of(pid) == fmt::format("app: worker {} gen 1 [{}]", slot, name.value));
    CHECK(thread_name_of(pid) == fmt::format("app: worker {}", slot));
  }

  s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::succeeded);
  const auto second = wait_ready(seg, 2);
  CHECK(support::wait_until([&] { return title_of(master) == fmt::format("app: master [{}] gen 2", name.value); }, 5s));
  for (const auto& [slot, pid] : second)
    CHECK(title_of(pid) == fmt::format("app: worker {} gen 2 [{}]", slot, name.value));

  // A worker draining with a request in flight says so, and so does the master.
  std::optional<support::response> slow;
  std::jthread request([&] { slow = support::http_get("127.0.0.1", s.port, "/sleep?ms=3000", 10s); });
  pid_t busy = 0;
  REQUIRE(support::wait_until([&] {
    for (std::uint32_t i = 0; i < seg.slot_count(); ++i)
      if (const auto r = systempp::read_slot(seg.slot(i)); r.in_flight >= 1) busy = r.pid;
    return busy != 0;
  }, 5s));
  REQUIRE(s.proc.signal(SIGTERM));
  CHECK(support::wait_until([&] { return title_of(busy).ends_with("gen 2 [" + name.value + "] draining"); }, 5s));
  CHECK(support::wait_until([&] { return title_of(master) == fmt::format("app: master [{}] gen 2 draining", name.value); }, 5s));
  request.join();
  REQUIRE(slow);
  CHECK(slow->status == 200);
  require_exit_0(s.proc);
}

namespace {

/// The CPUs `pid` may run on, as the kernel lists them ("0", "0-1").
std::string cpus_allowed(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("Cpus_allowed_list:")) return line.substr(line.find_first_not_of(" \t", 18));
  return "";
}

}  // namespace

TEST_CASE("ops: --cpu-affinity pins each worker slot to its CPU, the same across a reload and a respawn",
          "[ops][affinity]") {
  const auto cpus = systempp::cpu_affinity_cpus("auto");
  REQUIRE_FALSE(cpus.empty());
  pool_name name;
  auto [s, seg, first] = start_pool(name, 2, {"--cpu-affinity", "auto"});
  const auto expected = [&](int slot) { return std::to_string(cpus[static_cast<std::size_t>(slot) % cpus.size()]); };
  for (const auto& [slot, pid] : first) CHECK(cpus_allowed(pid) == expected(slot));
  CHECK(cpus_allowed(s.proc.pid()) == cpus_allowed(::getpid()));  // the master itself is not pinned

  s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::succeeded);
  const auto second = wait_ready(seg, 2);
  for (const auto& [slot, pid] : second) CHECK(cpus_allowed(pid) == expected(slot));

  const pid_t victim = second.at(1);
  REQUIRE(::kill(victim, SIGKILL) == 0);
  REQUIRE(support::wait_until([&] {
    const auto now = ready_workers(seg);
    return now.size() == 2 && now.at(1) != victim;
  }, 20s));
  CHECK(cpus_allowed(ready_workers(seg).at(1)) == expected(1));
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}

TEST_CASE("ops: --max-rss replaces a worker whose memory grew past it, its replacement READY first, and says so",
          "[ops][memory]") {
  pool_name name;
  support::temp_dir dir("rss-" + name.value);
  const auto grow = dir.path / "grow";
  auto s = start(probe_path, {"--workers", "2", "--name", name.value, "--max-rss", "256", "--heartbeat-timeout", "1",
                              "--metrics", "127.0.0.1:0"},
                 {{"PROBE_GROW_FILE", grow.string()}});
  auto seg = attach(name, s.proc.pid());
  const auto first = wait_ready(seg, 2);
  INFO(s.proc.output());
  REQUIRE(first.size() == 2);
  const auto rss_of = [&](pid_t pid) {
    for (std::uint32_t i = 0; i < seg.slot_count(); ++i)
      if (const auto w = systempp::read_slot(seg.slot(i)); w.pid == pid) return w.rss_bytes;
    return std::uint64_t{0};
  };
  REQUIRE(support::wait_until([&] { return rss_of(first.at(0)) > 0 && rss_of(first.at(1)) > 0; }, 5s));
  CHECK(rss_of(first.at(0)) < (std::uint64_t{256} << 20));  // ASan builds start near 70 MiB

  // Worker 0 grows by 400 MiB: it asks, the master starts its replacement, and only
  // once that one is READY is it drained. The slot never has no READY worker.
  const pid_t victim = first.at(0);
  { std::ofstream(grow) << victim << " 400\n"; }
  bool dipped = false;
  REQUIRE(support::wait_until([&] {
    const auto now = ready_workers(seg);
    dipped = dipped || now.size() < 2;
    return now.size() == 2 && now.at(0) != victim && !support::pid_alive(victim);
  }, 20s));
  CHECK_FALSE(dipped);
  CHECK(ready_workers(seg).at(1) == first.at(1));
  CHECK(s.count(R"(\[worker\[0\] g1\] .* resident memory [4-9]\d\d MiB is over --max-rss 256 MiB: asking to be recycled)") == 1);
  CHECK(s.count(fmt::format(R"(worker\[0\] pid {} g1: resident memory [4-9]\d\d MiB passed --max-rss: starting its replacement)",
                            victim)) == 1);
  CHECK(s.count(fmt::format(R"(worker\[0\] pid {} g1 exited with code 0)", victim)) == 1);  // drained, not killed
  const auto& h = seg.header();
  CHECK(h.restarts[static_cast<std::size_t>(systempp::restart_reason::memory)].load() == 1);
  CHECK(h.restarts[static_cast<std::size_t>(systempp::restart_reason::recycle)].load() == 0);

  // Status and metrics show it.
  const auto text = status_output(probe_path, name, false);
  CHECK(text.find("restarts 1 (memory 1)") != std::string::npos);
  CHECK(text.find(" RSS ") != std::string::npos);
  const auto json = nlohmann::json::parse(status_output(probe_path, name, true));
  CHECK(json["restarts_by_reason"]["memory"] == 1);
  for (const auto& w : json["workers"]) CHECK(w["rss_bytes"].get<std::uint64_t>() > 0);
  const auto metrics = support::http_get("127.0.0.1", metrics_port(s), "/metrics");
  REQUIRE(metrics);
  CHECK(metrics->body.find("systempp_worker_restarts_total{reason=\"memory\"} 1\n") != std::string::npos);
  CHECK(metrics->body.find("systempp_worker_resident_memory_max_bytes ") != std::string::npos);
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}

TEST_CASE("ops: a worker already over --max-rss when READY is kept, with one warning, not replaced in a loop",
          "[ops][memory]") {
  pool_name name;
  auto [s, seg, first] = start_pool(name, 1, {"--max-rss", "1", "--heartbeat-timeout", "1"});
  REQUIRE(s.wait(R"(resident memory is \d+ MiB at READY, already over --max-rss 1 MiB: this worker is not recycled)"));
  // Three heartbeats later (one every 250 ms), it is still the same worker.
  const auto beat = [&] { return systempp::read_slot(seg.slot(systempp::record_index(0, 0))).heartbeat_ms; };
  const auto since = beat();
  REQUIRE(support::wait_until([&] { return beat() >= since + 750; }, 5s));
  CHECK(ready_workers(seg) == first);
  CHECK(seg.header().restarts[static_cast<std::size_t>(systempp::restart_reason::memory)].load() == 0);
  CHECK(s.count("asking to be recycled") == 0);
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}
