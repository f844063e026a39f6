// systemd integration: sd_notify messages to a NOTIFY_SOCKET the test owns, and socket
// activation with a listener the test binds and passes as fd 3.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>

#include "harness.hpp"

using namespace harness;

namespace {

// A unix datagram socket standing in for systemd's notification socket.
struct notify_socket {
  int fd = -1;
  std::string path;
  explicit notify_socket(const std::string& name) {
    path = (std::filesystem::temp_directory_path() / ("notify-" + name)).string();
    std::filesystem::remove(path);
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~notify_socket() {
    ::close(fd);
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
  // The next datagram, or nullopt after `timeout`.
  std::optional<std::string> next(std::chrono::milliseconds timeout) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    char buf[4096];
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return std::nullopt;
    return std::string(buf, static_cast<std::size_t>(n));
  }
  // Reads datagrams until one contains `what`; returns it (and everything before it).
  std::optional<std::string> until(const std::string& what, std::vector<std::string>* before = nullptr,
                                   std::chrono::milliseconds timeout = 15s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      auto m = next(left);
      if (!m) return std::nullopt;
      if (m->find(what) != std::string::npos) return m;
      if (before) before->push_back(*m);
    }
  }
};

}  // namespace

TEST_CASE("systemd: READY=1 only once every worker is READY, RELOADING/READY around a reload, STOPPING at drain",
          "[systemd]") {
  pool_name name;
  notify_socket sd(name.value);
  const auto cfg = std::filesystem::temp_directory_path() / (name.value + ".conf");
  { std::ofstream(cfg) << "[demo]\nstartup-delay = 0.3\n"; }
  auto s = start(app_path, {"--workers", "3", "--name", name.value, "--config", cfg.string()},
                 {{"NOTIFY_SOCKET", sd.path}});
  auto seg = attach(name, s.proc.pid());

  std::vector<std::string> early;
  auto ready = sd.until("READY=1", &early);
  REQUIRE(ready);
  // At the moment READY=1 arrives, the control block already shows three READY workers.
  CHECK(ready_workers(seg).size() == 3);
  for (const auto& m : early) CHECK(m.find("READY=1") == std::string::npos);
  CHECK(ready->find("STATUS=") != std::string::npos);

  s.proc.signal(SIGHUP);
  auto reloading = sd.until("RELOADING=1");
  REQUIRE(reloading);
  CHECK(reloading->find("MONOTONIC_USEC=") != std::string::npos);
  auto after = sd.until("READY=1");
  REQUIRE(after);
  CHECK(after->find("STATUS=reload succeeded") != std::string::npos);
  CHECK(seg.header().reload_outcome.load() == systempp::reload_outcome::succeeded);

  s.proc.signal(SIGTERM);
  REQUIRE(sd.until("STOPPING=1"));
  require_exit_0(s.proc);
  std::filesystem::remove(cfg);
}

TEST_CASE("systemd: with socket activation the pool serves on the listener it was given",
          "[systemd]") {
  // ReusePort=yes lets --accept reuseport (the default) add the slots' sockets; without
  // it the pool says so once and every worker accepts on systemd's socket.
  const bool reuse_port = GENERATE(true, false);
  INFO("ReusePort=" << (reuse_port ? "yes" : "no"));
  pool_name name;
  const auto [fd, port] = listen_on_loopback(reuse_port);

  support::spawn_options o;
  o.argv = as_test_user_argv({app_path, "--workers", "2", "--name", name.value, "--bind", "127.0.0.1:1"});
  o.keep_fds = {fd};
  o.listen = support::listen_env::systemd;
  o.listen_fd_names = {"http"};
  auto proc = support::child::spawn(o);
  ::close(fd);  // the pool holds it now
  REQUIRE(proc.wait_for(std::regex("socket activation: 1 listener"), 10s));
  REQUIRE(proc.wait_for(std::regex("listening on 127.0.0.1:" + std::to_string(port) + " \\(http\\)"), 10s));
  auto seg = attach(name, proc.pid());
  REQUIRE(wait_ready(seg, 2).size() == 2);
  // Both workers take connections, from their own sockets or the one (READY in the control
  // block comes before the master has steered connections to the new slot's socket).
  CHECK(answering_workers(port, 2).size() == 2);
  CHECK(proc.count_lines(std::regex("was not bound with SO_REUSEPORT")) == (reuse_port ? 0U : 1U));
  proc.signal(SIGTERM);
  require_exit_0(proc);
}

TEST_CASE("systemd: a ReusePort socket of root's given to a pool running as another user is served as shared",
          "[systemd][accept]") {
  // systemd makes its sockets as root and starts the service as its User=: the kernel does
  // not let that user's sockets join root's SO_REUSEPORT group, so the slots cannot have
  // sockets of their own. One warning, then every worker accepts on the one socket.
  if (::geteuid() != 0 || !std::filesystem::exists("/usr/bin/setpriv")) {
    WARN("needs root and setpriv: skipped");
    return;
  }
  pool_name name;
  const auto [fd, port] = listen_on_loopback(true);

  support::spawn_options o;
  o.argv = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", app_path, "--workers", "2", "--name", name.value, "--bind", "127.0.0.1:1"};
  o.keep_fds = {fd};
  o.listen = support::listen_env::systemd;  // setpriv execs the app: LISTEN_PID still matches
  o.listen_fd_names = {"http"};
  auto proc = support::child::spawn(o);
  ::close(fd);
  REQUIRE(proc.wait_for(std::regex("listening on 127.0.0.1:" + std::to_string(port) + " \\(http\\)"), 10s));
  // The control block is nobody's, and a reader refuses a block another uid owns (that is
  // the point of the check): the log is what this test can read.
  REQUIRE(proc.wait_for(std::regex(R"(worker\[0\] pid \d+ g1 ready)"), 10s));
  REQUIRE(proc.wait_for(std::regex(R"(worker\[1\] pid \d+ g1 ready)"), 10s));
  INFO(proc.output());
  CHECK(answering_workers(port, 2).size() == 2);
  CHECK(proc.count_lines(std::regex("belongs to uid 0, not to this process's 65534")) == 1U);
  // A reload keeps serving on it.
  proc.signal(SIGHUP);
  REQUIRE(proc.wait_for(std::regex("reload done in"), 20s));
  const auto after = support::http_get("127.0.0.1", port, "/");
  REQUIRE(after);
  CHECK(after->status == 200);
  proc.signal(SIGTERM);
  require_exit_0(proc);
}

TEST_CASE("systemd: with WATCHDOG_USEC the master pings WATCHDOG=1 at half the interval",
          "[systemd]") {
  pool_name name;
  notify_socket sd(name.value);
  auto s = start(app_path, {"--workers", "1", "--name", name.value},
                 {{"NOTIFY_SOCKET", sd.path}, {"WATCHDOG_USEC", "400000"}});
  REQUIRE(sd.until("READY=1"));
  // Pings keep coming while the master's loop runs (every 200 ms here).
  for (int i = 0; i < 3; ++i) REQUIRE(sd.until("WATCHDOG=1", nullptr, 2s));
}
