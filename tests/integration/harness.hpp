#pragma once
// Shared steps of the integration tests: start a real binary on a free port (it binds
// 127.0.0.1:0 and logs the port), wait for log lines with deadlines.

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <sstream>

#include <systempp/control_block.hpp>

#include <support/http.hpp>
#include <support/proc.hpp>
#include <support/process.hpp>

namespace harness {

using namespace std::chrono_literals;

inline const std::string app_path = SYSTEMPP_APP_PATH;
inline const std::string probe_path = SYSTEMPP_PROBE_PATH;
inline const std::string dedicated_path = SYSTEMPP_DEDICATED_PATH;

/// A running service: the child process and its HTTP port.
struct service {
  support::child proc;
  std::uint16_t port = 0;

  /// Waits for a log line matching `pattern` after `from` (an output offset).
  std::optional<support::line_match> wait(const std::string& pattern,
                                          std::chrono::milliseconds timeout = 10s,
                                          std::size_t from = 0) {
    return proc.wait_for(std::regex(pattern), timeout, from);
  }
  std::size_t count(const std::string& pattern) const {
    return proc.count_lines(std::regex(pattern));
  }
};

/// `args` with --allow-root in front when the tests run as root and `args` say nothing of
/// the user (a pool refuses to serve as root without it).
inline std::vector<std::string> as_test_user(std::vector<std::string> args) {
  const bool says = std::any_of(args.begin(), args.end(), [](const std::string& a) {
    return a.starts_with("--user") || a == "--allow-root";
  });
  if (::geteuid() == 0 && !says) args.insert(args.begin(), "--allow-root");
  return args;
}

/// A whole command line with as_test_user applied to the arguments of the test binary in
/// it: argv[0], or the first of app, probe or dedicated after a wrapper (unshare, setpriv).
inline std::vector<std::string> as_test_user_argv(std::vector<std::string> argv) {
  auto binary = std::find_if(argv.begin(), argv.end(), [](const std::string& a) {
    return a == app_path || a == probe_path || a == dedicated_path;
  });
  if (binary == argv.end()) binary = argv.begin();
  const auto at = static_cast<std::size_t>(binary - argv.begin()) + 1;
  auto rest = as_test_user(std::vector<std::string>(argv.begin() + static_cast<std::ptrdiff_t>(at), argv.end()));
  argv.resize(at);
  argv.insert(argv.end(), rest.begin(), rest.end());
  return argv;
}

/// Starts `binary` with `args` plus `--bind 127.0.0.1:0` (and as_test_user's flag), and
/// waits until it logs the port it listens on.
inline service start(const std::string& binary, std::vector<std::string> args,
                     std::vector<std::pair<std::string, std::string>> env = {}) {
  std::vector<std::string> argv{binary, "--bind", "127.0.0.1:0"};
  args = as_test_user(std::move(args));
  argv.insert(argv.end(), args.begin(), args.end());
  service s{support::child::spawn(argv, std::move(env)), 0};
  auto m = s.proc.wait_for(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"), 10s);
  INFO(s.proc.output());
  REQUIRE(m);
  s.port = static_cast<std::uint16_t>(std::stoi(m->groups.at(1)));
  return s;
}

/// The port of the master's /metrics, from its log line ("metrics on http://...").
inline std::uint16_t metrics_port(service& s) {
  auto m = s.wait(R"(metrics on http://127\.0\.0\.1:(\d+)/metrics)");
  REQUIRE(m);
  return static_cast<std::uint16_t>(std::stoi(m->groups.at(1)));
}

/// A pool name unique to this test process; removes any segment left under it (a master
/// the test SIGKILLed) when the test ends.
struct pool_name {
  std::string value;
  pool_name() {
    static std::atomic<int> counter{0};
    value = "t" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
  }
  ~pool_name() {
    try {
      systempp::remove_stale_segments(value, 0, systempp::readable_owner(value));
      if (!systempp::find_live_master(value)) ::unlink(systempp::lock_path(value).c_str());
    } catch (...) {
    }
  }
  pool_name(const pool_name&) = delete;
  pool_name& operator=(const pool_name&) = delete;
};

/// The control block of a running pool, attached read-only.
inline systempp::control_segment attach(const pool_name& name, pid_t master) {
  std::optional<systempp::control_segment> seg;
  std::string error;
  support::wait_until([&] {
    try {
      // A pool run with --user has its files given to that user.
      seg.emplace(systempp::control_segment::attach(name.value, master, systempp::access::read_only,
                                                    systempp::readable_owner(name.value)));
      return true;
    } catch (const std::exception& e) {
      error = e.what();
      return false;
    }
  }, 5s);
  INFO(error);
  REQUIRE(seg);
  return std::move(*seg);
}

/// Pids of the READY workers in the control block, by logical slot.
inline std::map<int, pid_t> ready_workers(const systempp::control_segment& seg) {
  std::map<int, pid_t> out;
  for (std::uint32_t i = 0; i < seg.slot_count(); ++i) {
    auto snap = systempp::read_slot(seg.slot(i));
    if (snap.state == systempp::worker_state::ready) out[static_cast<int>(i / 2)] = snap.pid;
  }
  return out;
}

/// `<binary> status --name N [--json]`, which must succeed; returns its output.
inline std::string status_output(const std::string& binary, const pool_name& name, bool json) {
  std::vector<std::string> args{binary, "status", "--name", name.value};
  if (json) args.push_back("--json");
  auto p = support::child::spawn(args);
  const auto status = p.wait_exit(20s);
  INFO(p.output());
  REQUIRE(status);
  REQUIRE(support::child::exited_with(*status, 0));
  return p.output();
}

/// Waits until exactly `n` workers are READY; returns them by slot.
inline std::map<int, pid_t> wait_ready(const systempp::control_segment& seg, std::size_t n,
                                       std::chrono::milliseconds timeout = 15s) {
  std::map<int, pid_t> ready;
  support::wait_until([&] { ready = ready_workers(seg); return ready.size() == n; }, timeout);
  return ready;
}

/// A pool of `binary` (the demo app unless given) with its control block attached and
/// every worker READY.
struct running_pool {
  service svc;
  systempp::control_segment seg;
  std::map<int, pid_t> ready;  ///< by slot
};

inline running_pool start_pool(const pool_name& name, std::size_t workers, std::vector<std::string> extra_args = {},
                               const std::string& binary = app_path) {
  std::vector<std::string> args{"--workers", std::to_string(workers), "--name", name.value};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  auto svc = start(binary, args);
  auto seg = attach(name, svc.proc.pid());
  auto ready = wait_ready(seg, workers);
  INFO(svc.proc.output());
  REQUIRE(ready.size() == workers);
  return running_pool{std::move(svc), std::move(seg), std::move(ready)};
}

/// Workers that are alive (not zombies) and starting, READY or draining.
inline std::vector<systempp::slot_snapshot> live_workers(const systempp::control_segment& seg) {
  std::vector<systempp::slot_snapshot> out;
  for (std::uint32_t i = 0; i < seg.slot_count(); ++i) {
    auto snap = systempp::read_slot(seg.slot(i));
    if (snap.pid > 0 && (snap.state == systempp::worker_state::ready ||
                         snap.state == systempp::worker_state::starting ||
                         snap.state == systempp::worker_state::draining) &&
        support::pid_alive(snap.pid))
      out.push_back(snap);
  }
  return out;
}

// True when exactly n workers live, all READY and of generation `gen`.
inline bool settled(const systempp::control_segment& seg, std::size_t n, std::uint32_t gen) {
  auto live = live_workers(seg);
  if (live.size() != n) return false;
  for (const auto& w : live)
    if (w.state != systempp::worker_state::ready || w.generation != gen) return false;
  return true;
}

// Waits for the reload numbered `seq` to end; returns its outcome.
inline systempp::reload_outcome wait_reload(const systempp::control_segment& seg, std::uint32_t seq,
                                     std::chrono::milliseconds timeout = 20s) {
  const auto& h = seg.header();
  support::wait_until([&] {
    return h.reload_seq.load() >= seq && h.reload_outcome.load() != systempp::reload_outcome::in_progress;
  }, timeout);
  return h.reload_outcome.load();
}

/// Load on 127.0.0.1:port from `threads` clients, bounded by `max_duration` whatever the
/// test does: keep-alive, or (`close_each`) every request on a new connection.
inline support::load_generator client_load(std::uint16_t port, std::size_t threads, bool close_each,
                                           std::chrono::milliseconds max_duration = 90s) {
  support::load_options o;
  o.port = port;
  o.threads = threads;
  o.max_duration = max_duration;
  o.request_timeout = 5s;
  o.close_each = close_each;
  return support::load_generator(o);
}

/// Keep-alive load (client_load).
inline support::load_generator keepalive_load(std::uint16_t port, std::size_t threads,
                                              std::chrono::milliseconds max_duration = 90s) {
  return client_load(port, threads, false, max_duration);
}

/// Runs `app <args>` (a control command) to completion; returns (exit status, output).
inline std::pair<int, std::string> run_to_exit(std::vector<std::string> args) {
  args.insert(args.begin(), app_path);
  auto p = support::child::spawn(args);
  auto status = p.wait_exit(60s);
  REQUIRE(status);
  return {*status, p.output()};
}

/// Waits until the load has had `ok` successful requests (traffic is flowing).
inline void wait_for_traffic(support::load_generator& load, std::size_t ok = 200) {
  REQUIRE(support::wait_until([&] { return load.snapshot().ok >= ok; }, 15s));
}

/// The load's first few failure reasons, for a test's INFO.
inline std::string error_samples(const support::load_stats& stats) {
  std::string out;
  for (const auto& e : stats.error_samples) out += e + "; ";
  return out;
}

/// Milliseconds since midnight of a log line's timestamp ("2026-11-24T20:26:11.024 ...").
inline long long log_time_ms(const std::string& line) {
  const auto t = line.find('T');
  if (t == std::string::npos || line.size() < t + 13) return -1;
  const int h = std::stoi(line.substr(t + 1, 2));
  const int m = std::stoi(line.substr(t + 4, 2));
  const int sec = std::stoi(line.substr(t + 7, 2));
  const int milli = std::stoi(line.substr(t + 10, 3));
  return ((h * 60LL + m) * 60 + sec) * 1000 + milli;
}

/// Where /proc says a process's executable is (" (deleted)" when the path was replaced).
inline std::string exe_of(pid_t pid) {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec).string();
}

/// A copy of a binary in its own directory, to be replaced under a running pool.
struct binary_copy {
  std::filesystem::path dir;
  std::filesystem::path path;
  explicit binary_copy(const std::string& name, const std::string& from) {
    dir = std::filesystem::temp_directory_path() / ("systempp-" + name);
    std::filesystem::create_directories(dir);
    path = dir / "app";
    std::filesystem::copy_file(from, path, std::filesystem::copy_options::overwrite_existing);
  }
  // Replaces the binary the way deploy tools do: write beside it, then rename over it.
  void replace_with(const std::string& from) const {
    const auto next = dir / "app.next";
    std::filesystem::copy_file(from, next, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::rename(next, path);
  }
  void replace_with_script(const std::string& text) const {
    const auto next = dir / "app.next";
    {
      std::ofstream out(next);
      out << text;
    }
    std::filesystem::permissions(next, std::filesystem::perms::owner_all);
    std::filesystem::rename(next, path);
  }
  ~binary_copy() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

/// A configuration file for --config, rewritten by the test and removed at scope exit.
struct config_file {
  std::filesystem::path path;
  explicit config_file(const std::string& name)
      : path(std::filesystem::temp_directory_path() / (name + ".conf")) {}
  void write(const std::string& text) const {
    std::ofstream out(path, std::ios::trunc);
    out << text;
  }
  ~config_file() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

/// A file's whole content, byte for byte ("" when it cannot be read).
inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Waits (20 s at most) for `p` to exit, and checks it exited 0, showing its output if not.
inline void require_exit_0(support::child& p) {
  const auto status = p.wait_exit(std::chrono::seconds(20));
  INFO(p.output());
  REQUIRE(status);
  INFO(support::child::describe(*status));
  CHECK(support::child::exited_with(*status, 0));
}

/// A listening TCP socket on 127.0.0.1 and a free port, made by the test (as systemd or
/// another program would), SO_REUSEPORT if asked. The caller closes `fd`.
struct loopback_socket {
  int fd = -1;
  std::uint16_t port = 0;
};
inline loopback_socket listen_on_loopback(bool reuse_port, int backlog = 128) {
  loopback_socket s{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), 0};
  REQUIRE(s.fd >= 0);
  const int one = 1;
  if (reuse_port) REQUIRE(::setsockopt(s.fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(s.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(s.fd, backlog) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(s.fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  s.port = ntohs(addr.sin_port);
  return s;
}

/// The X-Worker-Pid of the workers that answer GET / on `port`, asked until `want` of them
/// answered (at most 2000 requests and 10 s); every answer must be a 200. Which worker takes
/// a connection is the kernel's choice, hence asking until, not a fixed count.
inline std::set<std::string> answering_workers(std::uint16_t port, std::size_t want) {
  std::set<std::string> pids;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  for (int i = 0; i < 2000 && pids.size() < want && std::chrono::steady_clock::now() < deadline; ++i) {
    auto r = support::http_get("127.0.0.1", port, "/");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    pids.insert(r->header("x-worker-pid"));
  }
  return pids;
}

/// Keeps workers that abort from writing core files.
inline void no_core_dumps() {
  rlimit none{0, 0};
  ::setrlimit(RLIMIT_CORE, &none);
}

}  // namespace harness
