// --accept: each strategy keeps every connection the kernel accepted through reloads,
// scaling and a killed worker, under keep-alive and connection-close load.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <csignal>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <regex>

#include <fmt/format.h>

#include "harness.hpp"
#include <support/temp_dir.hpp>

using namespace harness;

namespace {

std::size_t ok_so_far(support::load_generator& load) { return load.snapshot().ok; }

}  // namespace

TEST_CASE("accept: reloads, a scale down and up and a killed worker under load lose no connection, with every strategy",
          "[accept][load]") {
  const std::string accept = GENERATE("reuseport", "exclusive", "shared");
  const bool close_each = GENERATE(true, false);
  INFO("--accept " << accept << (close_each ? ", connection-close load" : ", keep-alive load"));
  pool_name name;
  auto s = start(app_path, {"--workers", "4", "--name", name.value, "--accept", accept});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 4).size() == 4);

  auto load = client_load(s.port, 8, close_each);
  wait_for_traffic(load);
  for (std::uint32_t i = 1; i <= 5; ++i) {
    s.proc.signal(SIGHUP);
    REQUIRE(wait_reload(seg, i) == systempp::reload_outcome::succeeded);
  }
  REQUIRE(support::wait_until([&] { return settled(seg, 4, 6); }, 20s));
  // 4 -> 2 -> 6: with reuseport, two slots' sockets stop getting connections and their
  // queues are served by their draining workers; then two slots get sockets of their own.
  REQUIRE(support::child::exited_with(run_to_exit({"scale", "2", "--name", name.value}).first, 0));
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 6); }, 20s));
  wait_for_traffic(load, ok_so_far(load) + 200);
  REQUIRE(support::child::exited_with(run_to_exit({"scale", "6", "--name", name.value}).first, 0));
  REQUIRE(support::wait_until([&] { return settled(seg, 6, 6); }, 20s));
  wait_for_traffic(load, ok_so_far(load) + 200);
  const auto before_kill = load.snapshot();
  INFO(error_samples(before_kill));
  CHECK(before_kill.failures() == 0);

  // A killed worker loses what it had accepted (at most one request per client), never a
  // connection still queued: with reuseport its slot's socket is the master's and waits
  // for the next worker, so no connect fails.
  const pid_t victim = wait_ready(seg, 6).at(1);
  REQUIRE(::kill(victim, SIGKILL) == 0);
  REQUIRE(support::wait_until([&] {
    const auto now = ready_workers(seg);
    return now.size() == 6 && now.at(1) != victim;
  }, 20s));
  wait_for_traffic(load, ok_so_far(load) + 200);
  const auto stats = load.stop();
  INFO(error_samples(stats));
  CHECK(stats.connect_failures == 0);
  CHECK(stats.non_2xx == 0);
  CHECK(stats.connection_errors <= 8);
  CHECK(stats.ok > 1000);
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}

TEST_CASE("accept: reuseport: the connections queued on a slot that a scale-down removes are all answered, by "
          "its draining worker or handed by the master to the serving ones",
          "[accept][reuseport]") {
  pool_name name;
  auto [s, seg, ready] = start_pool(name, 4, {"--accept", "reuseport"});
  // Slot 3's worker stops accepting; new connections are still steered to its socket (a
  // quarter of them, at random) and wait in its queue.
  const pid_t stopped = ready.at(3);
  REQUIRE(::kill(stopped, SIGSTOP) == 0);
  std::vector<std::future<std::optional<support::response>>> clients;
  for (int i = 0; i < 40; ++i)
    clients.push_back(std::async(std::launch::async, [&] { return support::http_get("127.0.0.1", s.port, "/", 10s); }));
  REQUIRE(support::wait_until([&] {
    std::size_t answered = 0;
    for (auto& c : clients) answered += c.wait_for(0s) == std::future_status::ready;
    return answered >= 20;  // the other slots' share, at least
  }, 10s));
  // The slot leaves the pool while its connections wait; then its worker runs again and
  // gets the drain. The master takes what the slot's queue holds (it is no longer
  // served) and hands it to the other workers; what its worker took first, it serves.
  REQUIRE(support::child::exited_with(run_to_exit({"scale", "3", "--name", name.value}).first, 0));
  REQUIRE(::kill(stopped, SIGCONT) == 0);
  std::map<std::string, int> by_worker;
  for (auto& c : clients) {
    const auto r = c.get();
    REQUIRE(r);
    CHECK(r->status == 200);
    ++by_worker[r->header("x-worker-pid")];
  }
  // Its queue was not empty, so the case is tested. How many the master handed over is
  // only in its log.
  std::size_t handed = 0;
  const std::regex line("handed (\\d+) connection\\(s\\) queued on slot 3 of http");
  const auto out = s.proc.output();
  for (auto it = std::sregex_iterator(out.begin(), out.end(), line); it != std::sregex_iterator(); ++it)
    handed += std::stoul((*it)[1]);
  INFO("the stopped worker answered " << by_worker[std::to_string(stopped)] << ", the master handed over " << handed);
  CHECK(by_worker[std::to_string(stopped)] + handed > 0);
  REQUIRE(support::wait_until([&] { return settled(seg, 3, 1); }, 20s));
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}

TEST_CASE("accept: reuseport: the connections queued on a worker that stopped are handed to the others while it "
          "stays stopped, after the master's log was reopened",
          "[accept][reuseport]") {
  pool_name name;
  auto [s, seg, ready] = start_pool(name, 4, {"--accept", "reuseport"});
  // The master's logger is replaced first, twice (SIGUSR1; the first replacement keeps the
  // old one alive until the next): the hand-over logs through the current one.
  for (int i = 0; i < 2; ++i) {
    const auto mark = s.proc.output_size();
    REQUIRE(s.proc.signal(SIGUSR1));
    REQUIRE(s.wait("SIGUSR1: log reopened", 5s, mark));
  }
  const pid_t stopped = ready.at(2);
  REQUIRE(::kill(stopped, SIGSTOP) == 0);
  // A quarter of these land on slot 2's queue before the master notices the missed
  // heartbeats (2.5 s); then it steers around the slot and hands the queue over.
  std::vector<std::future<std::optional<support::response>>> clients;
  for (int i = 0; i < 40; ++i)
    clients.push_back(std::async(std::launch::async, [&] { return support::http_get("127.0.0.1", s.port, "/", 15s); }));
  for (auto& c : clients) {
    const auto r = c.get();
    REQUIRE(r);  // within 15 s, while slot 2's worker is still stopped
    CHECK(r->status == 200);
  }
  CHECK(s.proc.count_lines(std::regex("handed \\d+ connection\\(s\\) queued on slot 2 of http")) >= 1);
  REQUIRE(::kill(stopped, SIGCONT) == 0);
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}

namespace {

/// A connection that has sent nothing yet; its request goes out with ask().
struct silent_client {
  systempp::unique_fd fd;
  std::uint16_t local_port = 0;

  explicit silent_client(std::uint16_t port) : fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
    sockaddr_in me{};
    socklen_t len = sizeof me;
    REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&me), &len) == 0);
    local_port = ntohs(me.sin_port);
    timeval limit{5, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  }
  /// Sends a GET that asks to close, reads to EOF (at most 5 s): the response, if any.
  std::optional<support::response> ask() {
    const std::string req = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return std::nullopt;
    std::string raw;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) raw.append(buf, static_cast<std::size_t>(n));
    auto responses = support::parse_responses(raw);
    if (responses.empty()) return std::nullopt;
    return responses.front();
  }
};

/// The state /proc/net/tcp gives the server's side of a loopback connection from
/// `client_port` to `server_port`: "01" established (accepted or acceptable), "03" still a
/// request the kernel holds (TCP_DEFER_ACCEPT waits for data); "" when not listed.
std::string server_side_state(std::uint16_t server_port, std::uint16_t client_port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // the header
  const auto local = fmt::format("0100007F:{:04X}", server_port);
  const auto remote = fmt::format("0100007F:{:04X}", client_port);
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string sl, l, r, st;
    fields >> sl >> l >> r >> st;
    if (l == local && r == remote) return st;
  }
  return "";
}

}  // namespace

TEST_CASE("accept: the HTTP unit's defer-accept keeps a silent connection in the kernel until its request comes, "
          "0 accepts it at once",
          "[accept][defer]") {
  const int defer = GENERATE(10, 0);
  INFO("defer-accept = " << defer);
  support::temp_dir dir("systempp_defer");
  support::write_file(dir.path / "app.toml", fmt::format("[http]\ndefer-accept = {}\n", defer));
  pool_name name;
  auto s = start(app_path, {"--workers", "2", "--name", name.value, "--config", (dir.path / "app.toml").string()});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 2).size() == 2);
  silent_client c(s.port);
  if (defer) {
    // Held for up to 10 s: a worker is woken once, when the request comes with it.
    CHECK(server_side_state(s.port, c.local_port) == "03");
  } else {
    CHECK(support::wait_until([&] { return server_side_state(s.port, c.local_port) == "01"; }, 5s));
  }
  const auto r = c.ask();
  REQUIRE(r);
  CHECK(r->status == 200);
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}

TEST_CASE("accept: reuseport with defer-accept: connections whose request comes after a scale-down removed their "
          "slot are answered",
          "[accept][defer][reuseport]") {
  support::temp_dir dir("systempp_defer");
  support::write_file(dir.path / "app.toml", "[http]\ndefer-accept = 10\n");
  pool_name name;
  auto s = start(app_path, {"--workers", "4", "--name", name.value, "--config", (dir.path / "app.toml").string()});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 4).size() == 4);
  // 16 connections, each held by the kernel on the slot its SYN was steered to (half of
  // them on slots 2 and 3, at random), until its request comes.
  std::vector<std::unique_ptr<silent_client>> clients;
  for (int i = 0; i < 16; ++i) clients.push_back(std::make_unique<silent_client>(s.port));
  for (const auto& c : clients) CHECK(server_side_state(s.port, c->local_port) == "03");
  REQUIRE(support::child::exited_with(run_to_exit({"scale", "2", "--name", name.value}).first, 0));
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 1); }, 20s));
  // Slots 2 and 3 have no worker now: what their sockets queue, the master hands over.
  std::map<std::string, int> by_slot;
  for (auto& c : clients) {
    const auto r = c->ask();
    REQUIRE(r);
    CHECK(r->status == 200);
    ++by_slot[r->header("x-worker-slot")];
  }
  CHECK(by_slot.size() <= 2);
  CHECK(by_slot.count("2") == 0);
  CHECK(by_slot.count("3") == 0);
  CHECK(s.proc.count_lines(std::regex("handed \\d+ connection\\(s\\) queued on slot [23] of http")) >= 1);
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}
