// --user: a master started as root binds a privileged port and makes the pool's files, then
// its workers (and with --drop-master the master itself) run as another user. Each test
// runs in a network namespace of its own, where port 80 of 127.0.0.1 is free.

#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "harness.hpp"
#include "support/temp_dir.hpp"
#include "systempp/privileges.hpp"

namespace fs = std::filesystem;
using namespace harness;

namespace {

/// For its lifetime, this test process is in a new network namespace with its loopback up
/// (`entered` false when the kernel does not let it: not root); then back in its own. The
/// namespace goes when its last process exits.
struct own_network_namespace {
  systempp::unique_fd home{::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)};
  bool entered = false;
  own_network_namespace() {
    if (::geteuid() != 0 || !home || ::unshare(CLONE_NEWNET) != 0) return;
    entered = true;
    systempp::unique_fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq ifr{};
    std::snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    if (!s || ::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) return;
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    entered = ::ioctl(s.get(), SIOCSIFFLAGS, &ifr) == 0;
  }
  ~own_network_namespace() {
    if (home) ::setns(home.get(), CLONE_NEWNET);
  }
};

/// A field of /proc/PID/status ("Uid", "Gid", "Groups", "CapEff") without its name.
std::string status_field(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with(field + ":")) continue;
    const auto value = line.find_first_not_of(" \t", field.size() + 1);
    return value == std::string::npos ? "" : line.substr(value);
  }
  return "?";
}

/// "U\tU\tU\tU": real, effective, saved and filesystem ids all the same.
std::string all_four(unsigned id) {
  const auto s = std::to_string(id);
  return s + "\t" + s + "\t" + s + "\t" + s;
}

/// Checks that `pid` runs as `who` and nothing more: its ids, its groups, no capability.
void check_runs_as(pid_t pid, const systempp::user_identity& who) {
  INFO("pid " << pid);
  CHECK(status_field(pid, "Uid") == all_four(who.uid));
  CHECK(status_field(pid, "Gid") == all_four(who.gid));
  std::string groups;
  for (gid_t g : who.groups) groups += std::to_string(g) + " ";
  CHECK(status_field(pid, "Groups") == groups);
  CHECK(status_field(pid, "CapEff") == "0000000000000000");
}

uid_t owner_of(const fs::path& p) {
  struct stat st{};
  return ::lstat(p.c_str(), &st) == 0 ? st.st_uid : static_cast<uid_t>(-1);
}

/// `app ARGS` run as `who` (no groups, no capabilities), to its exit: (status, output).
std::pair<int, std::string> run_as(const systempp::user_identity& who, std::vector<std::string> args) {
  std::vector<std::string> argv{"/usr/bin/setpriv", "--reuid=" + std::to_string(who.uid), "--regid=" + std::to_string(who.gid),
                                "--clear-groups", "--inh-caps=-all", app_path};
  argv.insert(argv.end(), args.begin(), args.end());
  auto p = support::child::spawn(argv);
  const auto status = p.wait_exit(60s);
  REQUIRE(status);
  return {*status, p.output()};
}

bool can_run(const own_network_namespace& ns) {
  if (!fs::exists("/usr/bin/setpriv")) {
    WARN("setpriv is not installed: skipped");
    return false;
  }
  if (!ns.entered) {
    WARN("needs root and a network namespace of its own: skipped");
    return false;
  }
  return true;
}

}  // namespace

TEST_CASE("user: started as root with --user nobody, the master binds port 80 and every worker serves as nobody",
          "[user][security]") {
  own_network_namespace ns;
  if (!can_run(ns)) return;
  const auto nobody = systempp::resolve_user("nobody");
  pool_name name;
  support::temp_dir dir("user-" + name.value);
  fs::permissions(dir.path, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                fs::perms::others_read | fs::perms::others_exec);  // as /var/log is
  const auto log = dir.path / "app.log";
  const auto pidfile = dir.path / "app.pid";
  auto p = support::child::spawn({app_path, "--user", "nobody", "--workers", "2", "--name", name.value, "--bind",
                                  "127.0.0.1:80", "--log-file", log.string(), "--pidfile", pidfile.string()});
  auto seg = attach(name, p.pid());
  const auto first = wait_ready(seg, 2);
  INFO(read_file(log));
  REQUIRE(first.size() == 2);
  CHECK(status_field(p.pid(), "Uid") == all_four(0));  // the master stays root
  for (const auto& [slot, pid] : first) check_runs_as(pid, nobody);
  const auto reply = support::http_get("127.0.0.1", 80, "/");
  REQUIRE(reply);
  CHECK(reply->status == 200);

  // The pool's files are nobody's, so nobody's status works; root's does too. The pidfile
  // stays root's (a root `kill $(cat PIDFILE)` must not be steered by the user) and readable.
  const auto block = fs::path(systempp::shm_dir) / systempp::segment_name(name.value, p.pid());
  for (const auto& f : {block, fs::path(systempp::lock_path(name.value)), log}) {
    INFO(f);
    CHECK(owner_of(f) == nobody.uid);
  }
  CHECK(owner_of(pidfile) == 0);
  const std::string master = "master " + std::to_string(p.pid());
  for (const auto& [status, out] : {run_as(nobody, {"status", "--name", name.value}),
                                    run_as(nobody, {"status", "--pidfile", pidfile.string()}),
                                    run_to_exit({"status", "--name", name.value})}) {
    INFO(out);
    CHECK(support::child::exited_with(status, 0));
    CHECK(out.find(master) != std::string::npos);
  }

  // New workers of a reload and a respawn switch user too.
  p.signal(SIGHUP);
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::succeeded);
  REQUIRE(support::wait_until([&] { return settled(seg, 2, 2); }, 20s));
  const auto second = wait_ready(seg, 2);
  for (const auto& [slot, pid] : second) check_runs_as(pid, nobody);
  REQUIRE(::kill(second.at(0), SIGKILL) == 0);
  REQUIRE(support::wait_until([&] {
    const auto now = ready_workers(seg);
    return now.size() == 2 && now.at(0) != second.at(0);
  }, 20s));
  check_runs_as(ready_workers(seg).at(0), nobody);

  // After a rotation the master makes the new log file and gives it to nobody, and the
  // workers, who cannot create files in the directory, write to it.
  fs::rename(log, dir.path / "app.log.1");
  p.signal(SIGUSR1);
  CHECK(support::wait_until([&] {
    const auto text = fs::exists(log) ? read_file(log) : "";
    return text.find("[worker[0] g2] ") != std::string::npos && text.find("[worker[1] g2] ") != std::string::npos;
  }, 10s));
  CHECK(owner_of(log) == nobody.uid);

  p.signal(SIGTERM);
  require_exit_0(p);
  CHECK_FALSE(fs::exists(pidfile));
  CHECK_FALSE(fs::exists(block));
}

TEST_CASE("user: --drop-master: the master too runs as nobody once port 80 is bound, and nobody reloads, upgrades and stops it",
          "[user][security][upgrade]") {
  own_network_namespace ns;
  if (!can_run(ns)) return;
  const auto nobody = systempp::resolve_user("nobody");
  pool_name name;
  support::temp_dir dir("user-" + name.value);
  REQUIRE(::chown(dir.path.c_str(), nobody.uid, nobody.gid) == 0);  // the pidfile is removed as nobody
  const auto pidfile = dir.path / "app.pid";
  binary_copy bin(name.value, app_path);  // where nobody may execute it, for exec mode and the upgrade
  auto p = support::child::spawn({bin.path.string(), "--user", "nobody", "--drop-master", "--reload-mode", "exec", "--workers",
                                  "2", "--name", name.value, "--bind", "127.0.0.1:80", "--pidfile", pidfile.string()});
  auto seg = attach(name, p.pid());
  const auto first = wait_ready(seg, 2);
  INFO(p.output());
  REQUIRE(first.size() == 2);
  check_runs_as(p.pid(), nobody);
  for (const auto& [slot, pid] : first) check_runs_as(pid, nobody);
  const auto reply = support::http_get("127.0.0.1", 80, "/");
  REQUIRE(reply);
  CHECK(reply->status == 200);

  // nobody may signal its own master: reload --wait, an exec-mode rollout as nobody.
  auto [status, out] = run_as(nobody, {"reload", "--wait", "--name", name.value});
  INFO(out);
  CHECK(support::child::exited_with(status, 0));
  for (const auto& [slot, pid] : wait_ready(seg, 2)) {
    CHECK(first.at(slot) != pid);
    check_runs_as(pid, nobody);
  }

  // The upgraded image parses --user nobody as nobody: nothing left to switch.
  p.signal(SIGUSR2);
  REQUIRE(wait_reload(seg, 2) == systempp::reload_outcome::succeeded);
  CHECK(seg.header().master_pid.load() == p.pid());
  check_runs_as(p.pid(), nobody);

  auto [stopped, stop_out] = run_as(nobody, {"stop", "--name", name.value});
  INFO(stop_out);
  CHECK(support::child::exited_with(stopped, 0));
  require_exit_0(p);
  CHECK_FALSE(fs::exists(pidfile));
}

TEST_CASE("user: root without --user or --allow-root, and a user switch without root, exit 2 naming --user",
          "[user][bad_input]") {
  if (::geteuid() != 0 || !fs::exists("/usr/bin/setpriv")) {
    WARN("needs root and setpriv: skipped");
    return;
  }
  pool_name name;
  const std::vector<std::string> pool{"--workers", "1", "--name", name.value, "--bind", "127.0.0.1:0"};
  const auto with = [&](std::vector<std::string> args) {
    args.insert(args.end(), pool.begin(), pool.end());
    return args;
  };
  auto root = support::child::spawn(with({app_path}));
  const auto status = root.wait_exit(20s);
  REQUIRE(status);
  INFO(root.output());
  CHECK(support::child::exited_with(*status, 2));
  CHECK(root.output().find("error: --user: running as root, the workers would serve as root") != std::string::npos);

  const auto nobody = systempp::resolve_user("nobody");
  for (const auto& [args, expect] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--user", "root"}, "error: --user: switching to user root needs root; this process runs as uid 65534"},
           {{"--user", "daemon"}, "error: --user: switching to user daemon needs root"},
       }) {
    auto [code, out] = run_as(nobody, with(args));
    INFO(out);
    CHECK(support::child::exited_with(code, 2));
    CHECK(out.find(expect) != std::string::npos);
  }
  // nobody asking to run as nobody has nothing to switch: it starts.
  auto self = support::child::spawn({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                     "--inh-caps=-all", app_path, "--user", "nobody", "--workers", "1", "--name",
                                     name.value, "--bind", "127.0.0.1:0"});
  REQUIRE(self.wait_for(std::regex(R"(worker\[0\] pid \d+ g1 ready)"), 10s));
  self.signal(SIGTERM);
  require_exit_0(self);
  CHECK(support::shm_segments("systempp." + name.value + ".").empty());
}

TEST_CASE("user: a --log-file path that is a symbolic link is refused, and what it points to is not given away",
          "[user][security]") {
  if (::geteuid() != 0) {
    WARN("needs root: skipped");
    return;
  }
  pool_name name;
  support::temp_dir dir("user-" + name.value);
  const auto victim = dir.path / "victim";
  { std::ofstream(victim) << "root's\n"; }
  fs::permissions(victim, fs::perms::owner_read | fs::perms::owner_write);
  fs::create_symlink(victim, dir.path / "app.log");  // as the user could plant in its log directory
  auto p = support::child::spawn({app_path, "--user", "nobody", "--workers", "1", "--name", name.value, "--bind",
                                  "127.0.0.1:0", "--log-file", (dir.path / "app.log").string()});
  const auto status = p.wait_exit(20s);
  REQUIRE(status);
  INFO(p.output());
  CHECK(support::child::exited_with(*status, 2));
  CHECK(p.output().find("not given to --user") != std::string::npos);
  CHECK(owner_of(victim) == 0);
  CHECK(support::shm_segments("systempp." + name.value + ".").empty());
}

namespace {

/// fs.protected_regular set to `value` for this scope (false when it cannot be written, as
/// in a container with a read-only /proc/sys), then set back.
struct protected_regular {
  std::string before;
  bool set = false;
  explicit protected_regular(const char* value) {
    const char* path = "/proc/sys/fs/protected_regular";
    std::ifstream(path) >> before;
    std::ofstream out(path);
    set = !before.empty() && static_cast<bool>(out << value << std::flush);
  }
  ~protected_regular() {
    if (set) std::ofstream("/proc/sys/fs/protected_regular") << before;
  }
};

}  // namespace

TEST_CASE("user: a second master of a --user pool's name refuses to start, with or without --user and fs.protected_regular",
          "[user][identity][security]") {
  if (::geteuid() != 0) {
    WARN("needs root: skipped");
    return;
  }
  // With it (1 or 2, systemd's default), O_CREAT on another user's file in sticky /dev/shm
  // fails even for root. It is a machine-wide setting: set for this test only, where it can be.
  const bool strict = GENERATE(false, true);
  protected_regular sysctl(strict ? "1" : "0");
  if (!sysctl.set) {
    WARN("fs.protected_regular cannot be set here: skipped");
    return;
  }
  pool_name name;
  auto [s, seg, first] = start_pool(name, 1, {"--user", "nobody"});
  CHECK(owner_of(systempp::lock_path(name.value)) == 65534);
  for (const auto& user : std::vector<std::vector<std::string>>{{"--user", "nobody"}, {"--allow-root"}}) {
    INFO("protected_regular " << strict << ", second master with " << user.front());
    std::vector<std::string> argv{app_path, "--workers", "1", "--name", name.value, "--bind", "127.0.0.1:0"};
    argv.insert(argv.end(), user.begin(), user.end());
    auto second = support::child::spawn(argv);
    const auto status = second.wait_exit(20s);
    if (!status) second.signal(SIGKILL);
    REQUIRE(status);
    INFO(second.output());
    CHECK(support::child::exited_with(*status, 2));
    CHECK(second.output().find("a pool with this name is already running (master pid " + std::to_string(s.proc.pid())) !=
          std::string::npos);
  }
  CHECK(fs::exists(fs::path(systempp::shm_dir) / systempp::segment_name(name.value, s.proc.pid())));
  CHECK(systempp::find_live_master(name.value) == s.proc.pid());
  CHECK(ready_workers(seg) == first);
  s.proc.signal(SIGTERM);
  require_exit_0(s.proc);
}
