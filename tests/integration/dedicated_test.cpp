// Dedicated processes (a unit with runs_in): the ticker of tests/support/dedicated_app.cpp
// runs in a process of its own that does not serve, is supervised like a worker, and is
// never running twice, not even during a reload.

#include <csignal>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "harness.hpp"

using namespace harness;

namespace {

// The dedicated slot of a pool whose block has 16 serving slots (max(16, 2 * --workers)).
constexpr int ticker_slot = 16;

struct dedicated_pool {
  pool_name name;
  config_file events{name.value + ".events"};
  service s;
  std::optional<systempp::control_segment> seg;

  explicit dedicated_pool(std::vector<std::pair<std::string, std::string>> env = {}, std::vector<std::string> args = {})
      : s(start_app(std::move(env), std::move(args))) {
    seg.emplace(attach(name, s.proc.pid()));
    REQUIRE(wait_ready(*seg, 3).size() == 3);  // two serving workers and the ticker
  }
  service start_app(std::vector<std::pair<std::string, std::string>> env, std::vector<std::string> args) {
    events.write("");
    env.emplace_back("DEDICATED_EVENTS", events.path.string());
    args.insert(args.begin(), {"--workers", "2", "--name", name.value});
    return start(dedicated_path, args, std::move(env));
  }
  pid_t ticker() const {
    const auto ready = ready_workers(*seg);
    auto it = ready.find(ticker_slot);
    return it == ready.end() ? 0 : it->second;
  }
  // The ticker's start and stop lines, in the order they were written ("tick" left out).
  std::vector<std::string> lives() const {
    std::vector<std::string> out;
    std::istringstream in(read_file(events.path));
    for (std::string line; std::getline(in, line);)
      if (!line.starts_with("tick")) out.push_back(line);
    return out;
  }
  bool ticked(pid_t pid) const { return read_file(events.path).find("tick " + std::to_string(pid)) != std::string::npos; }
  ~dedicated_pool() {
    s.proc.signal(SIGTERM);
    s.proc.wait_exit(20s);
  }
};

}  // namespace

TEST_CASE("dedicated: a unit with runs_in runs in one process of its own, which serves no request",
          "[dedicated]") {
  dedicated_pool p;
  const pid_t ticker = p.ticker();
  REQUIRE(ticker > 0);
  CHECK(p.lives() == std::vector<std::string>{"start " + std::to_string(ticker) + " g1"});
  REQUIRE(support::wait_until([&] { return p.ticked(ticker); }, 5s));  // its ctx.spawn task runs
  std::set<std::string> served_by;
  for (int i = 0; i < 20; ++i)
    if (auto r = support::http_get("127.0.0.1", p.s.port, "/")) served_by.insert(r->header("x-worker-pid"));
  CHECK(served_by.size() >= 1);
  CHECK(served_by.count(std::to_string(ticker)) == 0);

  const std::string json = status_output(dedicated_path, p.name, true);
  INFO(json);
  // Valid JSON although a unit's name is not valid UTF-8: the stray byte became U+FFFD.
  const auto parsed = nlohmann::json::parse(json);
  CHECK(parsed["workers"][0]["stage_ms"].contains("odd\xef\xbf\xbdname"));
  CHECK(json.find("\"role\":\"ticker\",\"pid\":" + std::to_string(ticker)) != std::string::npos);
  CHECK(json.find("\"role\":\"serve\"") != std::string::npos);
  const std::string text = status_output(dedicated_path, p.name, false);
  INFO(text);
  CHECK(text.find("workers 2/2  dedicated 1") != std::string::npos);

  p.s.proc.signal(SIGTERM);
  require_exit_0(p.s.proc);
  CHECK(p.lives().back() == "stop " + std::to_string(ticker));
}

TEST_CASE("dedicated: a reload replaces the dedicated process only after the old one stopped",
          "[dedicated][reload]") {
  dedicated_pool p;
  const pid_t before = p.ticker();
  p.s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(*p.seg, 1) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return p.ticker() != 0 && p.ticker() != before; }, 15s));
  const pid_t after = p.ticker();
  // The old ticker's post_shutdown is written before the new one's on_startup: never two.
  CHECK(p.lives() == std::vector<std::string>{"start " + std::to_string(before) + " g1",
                                              "stop " + std::to_string(before),
                                              "start " + std::to_string(after) + " g2"});
}

TEST_CASE("dedicated: a killed dedicated process is replaced and the serving workers are untouched",
          "[dedicated]") {
  dedicated_pool p;
  auto serving = ready_workers(*p.seg);
  const pid_t ticker = p.ticker();
  serving.erase(ticker_slot);
  ::kill(ticker, SIGKILL);
  REQUIRE(support::wait_until([&] { return p.ticker() != 0 && p.ticker() != ticker; }, 15s));
  auto now = ready_workers(*p.seg);
  now.erase(ticker_slot);
  CHECK(now == serving);
  CHECK(p.seg->header().restarts[static_cast<std::size_t>(systempp::restart_reason::crash)].load() == 1);
}

TEST_CASE("dedicated: a new dedicated process that cannot start fails the reload and the old configuration comes back",
          "[dedicated][reload]") {
  dedicated_pool p(std::vector<std::pair<std::string, std::string>>{{"DEDICATED_FAULT", "2"}});
  p.s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(*p.seg, 1) == systempp::reload_outcome::failed);
  const auto message = systempp::read_reload_message(p.seg->header());
  INFO(message);
  CHECK(message.find("on_startup of unit ticker") != std::string::npos);
  // Generation 3 (the previous configuration) brings the ticker back.
  REQUIRE(support::wait_until([&] {
    const auto snap = systempp::read_slot(p.seg->record(ticker_slot, 0));
    const auto other = systempp::read_slot(p.seg->record(ticker_slot, 1));
    return (snap.state == systempp::worker_state::ready && snap.generation == 3) ||
           (other.state == systempp::worker_state::ready && other.generation == 3);
  }, 20s));
}

TEST_CASE("dedicated: in exec mode the dedicated process is a fresh image that runs its unit and is rolled on reload",
          "[dedicated][exec]") {
  dedicated_pool p({}, {"--reload-mode", "exec"});
  const pid_t before = p.ticker();
  REQUIRE(before > 0);
  CHECK(p.lives() == std::vector<std::string>{"start " + std::to_string(before) + " g1"});
  p.s.proc.signal(SIGHUP);
  REQUIRE(wait_reload(*p.seg, 1) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return p.ticker() != 0 && p.ticker() != before; }, 15s));
  CHECK(p.lives().back() == "start " + std::to_string(p.ticker()) + " g2");
}
