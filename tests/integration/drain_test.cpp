// The edges of stopping and starting: what a new connection sees during a drain, a stop
// signal the moment the pool starts, a log reopen that fails, and the bounds of the master's
// metrics endpoint (connections, accept errors).

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <systempp/fd.hpp>

#include "harness.hpp"

using namespace harness;

namespace {

namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

// A blocking connect to 127.0.0.1:port, bounded by SO_SNDTIMEO (which Linux applies to
// connect): the socket, or an empty one and the errno.
std::pair<systempp::unique_fd, int> connect_local(std::uint16_t port, std::chrono::milliseconds timeout = 2s) {
  systempp::unique_fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return {systempp::unique_fd{}, errno};
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    return {systempp::unique_fd{}, err};
  }
  return {std::move(s), 0};
}

// A GET held in flight on its own thread (the demo's /sleep) until wait().
struct held_request {
  support::keepalive_client client;
  std::optional<support::response> result;
  std::string error;
  std::atomic<bool> finished{false};
  std::jthread thread;

  held_request(std::uint16_t port, const systempp::control_segment& seg, const std::string& target)
      : client("127.0.0.1", port, 15s) {
    REQUIRE(client.connected());
    thread = std::jthread([this, target] {
      result = client.get(target);
      error = client.last_error();
      finished = true;
    });
    // In flight once a worker counts it in the control block.
    REQUIRE(support::wait_until([&] {
      for (std::uint32_t i = 0; i < seg.slot_count(); ++i)
        if (systempp::read_slot(seg.slot(i)).in_flight >= 1) return true;
      return false;
    }, 5s));
  }
  std::optional<support::response> wait() {
    thread.join();
    INFO(error);
    return result;
  }
};

std::size_t occurrences(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// User plus system CPU time of a process, in clock ticks (/proc/<pid>/stat fields 14, 15).
long cpu_ticks(pid_t pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string field;
  long ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i)
    if (i >= 14) ticks += std::stol(field);
  return ticks;
}

}  // namespace

TEST_CASE("drain: a connection opened during a graceful drain is refused at once while the request in flight completes",
          "[drain][listeners][upgrade]") {
  const bool upgraded = GENERATE(false, true);  // also by a master that took the listeners over (SIGUSR2)
  INFO("after an upgrade: " << upgraded);
  pool_name name;
  auto s = start(app_path, {"--workers", "2", "--name", name.value});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 2).size() == 2);
  if (upgraded) {
    s.proc.signal(SIGUSR2);
    REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::succeeded);
    REQUIRE(support::wait_until([&] { return settled(seg, 2, 2); }, 15s));
  }
  held_request held(s.port, seg, "/sleep?ms=3000");

  REQUIRE(s.proc.signal(SIGTERM));
  const auto signalled = steady::now();
  int last_error = 0;
  const bool refused = support::wait_until([&] {
    auto [fd, err] = connect_local(s.port, 500ms);
    last_error = err;
    return !fd && err == ECONNREFUSED;
  }, 2s);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - signalled).count();
  INFO("last connect errno " << last_error << " after " << took << " ms");
  CHECK(refused);
  CHECK_FALSE(held.finished.load());  // refused during the drain, not once the pool was gone

  const auto r = held.wait();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "slept 3000 ms\n");
  require_exit_0(s.proc);
}

TEST_CASE("drain: with socket activation a stop leaves the socket of systemd listening, so connections wait for the next start",
          "[drain][listeners][systemd]") {
  pool_name name;
  // The test keeps its copy of the socket for the whole test, as systemd does.
  systempp::unique_fd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(sock);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(sock.get(), 128) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(sock.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  const auto port = ntohs(addr.sin_port);

  support::spawn_options o;
  o.argv = as_test_user_argv({app_path, "--workers", "1", "--name", name.value, "--bind", "127.0.0.1:0"});
  o.keep_fds = {sock.get()};
  o.listen = support::listen_env::systemd;
  o.listen_fd_names = {"http"};
  auto p = support::child::spawn(o);
  auto seg = attach(name, p.pid());
  REQUIRE(wait_ready(seg, 1).size() == 1);
  held_request held(port, seg, "/sleep?ms=1000");

  REQUIRE(p.signal(SIGTERM));
  REQUIRE(p.wait_for(std::regex("stop: closed the master's copies of the systemd listeners"), 5s));
  auto [during, err] = connect_local(port);
  INFO("errno " << err);
  CHECK(during);  // queued in systemd's socket, not refused
  const auto r = held.wait();
  REQUIRE(r);
  CHECK(r->status == 200);
  require_exit_0(p);
  auto [after, err_after] = connect_local(port);
  INFO("errno " << err_after);
  CHECK(after);  // the socket still listens: the next start would serve it
}

TEST_CASE("startup: SIGTERM the moment the control block appears stops the pool with exit 0 and no segment left",
          "[startup][signals]") {
  pool_name name;
  const std::string prefix = "systempp." + name.value + ".";
  const auto deadline = steady::now() + 60s;
  int runs = 0;
  for (; runs < 20 && steady::now() < deadline; ++runs) {
    auto p = support::child::spawn(as_test_user_argv({app_path, "--workers", "1", "--name", name.value, "--bind", "127.0.0.1:0"}));
    const fs::path segment = "/dev/shm/" + prefix + std::to_string(p.pid());
    // Looked at without a pause: the window before the master handled signals was that short.
    REQUIRE(support::wait_until([&] { return fs::exists(segment); }, 10s, 0ms));
    REQUIRE(p.signal(SIGTERM));
    INFO("run " << runs);
    require_exit_0(p);
    REQUIRE_FALSE(fs::exists(segment));
  }
  CHECK(runs >= 10);
}

TEST_CASE("logs: after a SIGUSR1 whose log file cannot be reopened, the master still forwards it and workers still obey TERM and QUIT",
          "[logs][signals]") {
  pool_name name;
  const fs::path dir = fs::temp_directory_path() / ("logs-" + name.value);
  const fs::path moved = dir.string() + ".moved";
  struct cleanup {
    fs::path a, b;
    ~cleanup() {
      std::error_code ignored;
      fs::remove_all(a, ignored);
      fs::remove_all(b, ignored);
    }
  } remove_later{dir, moved};
  fs::create_directories(dir);
  auto p = support::child::spawn(as_test_user_argv({app_path, "--workers", "2", "--name", name.value, "--bind", "127.0.0.1:0",
                                  "--log-file", (dir / "app.log").string()}));
  auto seg = attach(name, p.pid());
  const auto ready = wait_ready(seg, 2);
  REQUIRE(ready.size() == 2);

  // A regular file where the directory was: opening dir/app.log fails, also for root.
  fs::rename(dir, moved);
  { std::ofstream(dir) << "not a directory\n"; }
  REQUIRE(p.signal(SIGUSR1));
  const auto old_log = moved / "app.log";
  const std::string kept = "logging on with the old file";
  // One line per process: the master's own, and each worker's after the master forwarded it.
  support::wait_until([&] { return occurrences(read_file(old_log), kept) == 3; }, 10s);
  const auto text = read_file(old_log);
  INFO(text);
  REQUIRE(occurrences(text, kept) == 3);

  // The directory comes back, so replacements can open the log; then each worker is
  // signalled directly: TERM drains one, QUIT stops the other at once.
  fs::remove(dir);
  fs::rename(moved, dir);
  const pid_t drained = ready.at(0), quit = ready.at(1);
  REQUIRE(::kill(drained, SIGTERM) == 0);
  REQUIRE(::kill(quit, SIGQUIT) == 0);
  CHECK(support::wait_until([&] { return !support::pid_alive(drained) && !support::pid_alive(quit); }, 10s));
  CHECK(occurrences(read_file(dir / "app.log"), kept) == 3);
  REQUIRE(p.signal(SIGTERM));
  require_exit_0(p);
}

// A one-worker pool with --metrics on a free port, its worker READY.
service start_with_metrics(const pool_name& name) {
  auto s = start(app_path, {"--workers", "1", "--name", name.value, "--metrics", "127.0.0.1:0"});
  auto seg = attach(name, s.proc.pid());
  REQUIRE(wait_ready(seg, 1).size() == 1);
  return s;
}

TEST_CASE("metrics: idle connections beyond the bound of 64 take no more descriptors of the master and a new scrape is answered once they time out",
          "[metrics][limits]") {
  pool_name name;
  auto s = start_with_metrics(name);
  const auto mport = metrics_port(s);
  const pid_t master = s.proc.pid();
  const std::size_t before = support::count_fds(master);

  std::vector<systempp::unique_fd> idle;
  for (int i = 0; i < 100; ++i) {
    auto [fd, err] = connect_local(mport);
    INFO("connection " << i << ", errno " << err);
    REQUIRE(fd);
    idle.push_back(std::move(fd));
  }
  // The master takes connections up to the bound (it says so), then no more while they stay
  // open: given a second to take another, it must not. Two descriptors of slack for what
  // the master itself opens meanwhile (before the bound it took all 100).
  REQUIRE(s.wait("metrics: 64 connections open", 15s));
  INFO("master fds " << before << " before, " << support::count_fds(master) << " with 100 idle connections");
  CHECK_FALSE(support::wait_until([&] { return support::count_fds(master) > before + 64 + 2; }, 1s));

  // Each idle connection has 5 s to send its request; then a new scrape gets its turn.
  const auto r = support::http_get("127.0.0.1", mport, "/metrics", 15s);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(s.count("metrics: 64 connections open") == 1);  // logged once, not per refused accept
  REQUIRE(s.proc.signal(SIGTERM));
  require_exit_0(s.proc);
}

TEST_CASE("metrics: an accept failing with EMFILE is logged once and retried after a pause instead of spinning the master",
          "[metrics][limits]") {
  pool_name name;
  auto s = start_with_metrics(name);
  const auto mport = metrics_port(s);
  const pid_t master = s.proc.pid();

  // The master's lowest free descriptor number becomes its limit: every new fd fails.
  const auto fds = support::fd_targets(master);
  rlim_t lowest = 0;
  while (fds.count(static_cast<int>(lowest))) ++lowest;
  rlimit old{};
  REQUIRE(::prlimit(master, RLIMIT_NOFILE, nullptr, &old) == 0);
  const rlimit tight{lowest, old.rlim_max};
  REQUIRE(::prlimit(master, RLIMIT_NOFILE, &tight, nullptr) == 0);
  const auto mark = s.proc.output_size();

  std::optional<support::response> scrape;
  std::jthread client([&] { scrape = support::http_get("127.0.0.1", mport, "/metrics", 15s); });
  const auto said_emfile = s.wait("metrics: accept: Too many open files", 5s, mark);
  INFO("limit " << lowest << "; master output since:\n" << s.proc.output().substr(mark));
  REQUIRE(said_emfile);
  // While the limit stays, the loop sleeps between tries: under a quarter second of CPU in one.
  const long ticks = cpu_ticks(master), per_second = ::sysconf(_SC_CLK_TCK);
  CHECK_FALSE(support::wait_until([&] { return cpu_ticks(master) > ticks + per_second / 4; }, 1s));

  REQUIRE(::prlimit(master, RLIMIT_NOFILE, &old, nullptr) == 0);
  client.join();
  const auto accepting = s.wait("metrics: accepting again after", 5s, mark);
  INFO("master output since:\n" << s.proc.output().substr(mark));
  REQUIRE(scrape);
  CHECK(scrape->status == 200);
  CHECK(s.count("metrics: accept: ") == 1);
  CHECK(accepting);
  REQUIRE(s.proc.signal(SIGTERM));
  require_exit_0(s.proc);
}
