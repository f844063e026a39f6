// Files and descriptors: the pidfile is written through a private temp file that nothing
// planted can redirect, a failed write leaves nothing behind, and what the runtime opens
// does not leak into an exec'd image.

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "harness.hpp"
#include <support/temp_dir.hpp>

using namespace harness;
namespace fs = std::filesystem;

namespace {

/// A directory under the system temp dir, removed with everything in it at scope exit.
/// This test's scratch directory, named after the pool.
struct temp_dir : support::temp_dir {
  explicit temp_dir(const pool_name& name) : support::temp_dir("files-" + name.value) {}
};

std::vector<std::string> entries_of(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::size_t lines_containing(const std::string& text, const std::string& word) {
  std::size_t n = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.find(word) != std::string::npos) ++n;
  return n;
}

// The registrations in process `pid`'s epoll instances (/proc/PID/fdinfo) whose descriptor
// it no longer holds: an fd number that is closed, or open on another file (inode and device
// differ). Each reads "fd N: tfd T (inode X)".
std::vector<std::string> stale_epoll_registrations(pid_t pid) {
  std::vector<std::string> stale;
  const auto proc = "/proc/" + std::to_string(pid);
  for (const auto& [fd, target] : support::fd_targets(pid)) {
    if (target != "anon_inode:[eventpoll]") continue;
    std::ifstream info(proc + "/fdinfo/" + std::to_string(fd));
    for (std::string line; std::getline(info, line);) {
      std::istringstream in(line);
      std::string key, word;
      int tfd = -1;
      unsigned long ino = 0, dev = 0;
      if (!(in >> key >> tfd) || key != "tfd:") continue;
      while (in >> word) {
        if (word.starts_with("ino:")) ino = std::stoul(word.substr(4), nullptr, 16);
        if (word.starts_with("sdev:")) dev = std::stoul(word.substr(5), nullptr, 16);
      }
      struct stat st {};
      // fdinfo's sdev is the kernel's encoding: major << 20 | minor.
      const bool held = ::stat((proc + "/fd/" + std::to_string(tfd)).c_str(), &st) == 0 && st.st_ino == ino &&
                        ::major(st.st_dev) == (dev >> 20) && ::minor(st.st_dev) == (dev & 0xfffff);
      if (!held) stale.push_back("fd " + std::to_string(fd) + ": tfd " + std::to_string(tfd) + " (inode " +
                                 std::to_string(ino) + ")");
    }
  }
  return stale;
}

void stop_cleanly(support::child& p) {
  p.signal(SIGTERM);
  auto status = p.wait_exit(20s);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
}

}  // namespace

TEST_CASE("files: a symlink planted at the pidfile's old temp name does not redirect the write",
          "[files][pidfile][security]") {
  pool_name name;
  temp_dir dir(name);
  const auto pidfile = dir.path / "app.pid";
  const auto victim = dir.path / "victim";
  { std::ofstream(victim) << "precious\n"; }
  fs::create_symlink(victim, dir.path / "app.pid.tmp");

  auto s = start(app_path, {"--workers", "1", "--name", name.value, "--pidfile", pidfile.string()});
  const std::string pid_line = std::to_string(s.proc.pid()) + "\n";
  REQUIRE(support::wait_until([&] { return read_file(pidfile) == pid_line; }, 5s));
  CHECK_FALSE(fs::is_symlink(pidfile));
  CHECK(read_file(victim) == "precious\n");
  // Only the planted names and the pidfile: no temp file of the master's own is left.
  CHECK(entries_of(dir.path) == std::vector<std::string>{"app.pid", "app.pid.tmp", "victim"});

  stop_cleanly(s.proc);
  CHECK_FALSE(fs::exists(pidfile));
  CHECK(read_file(victim) == "precious\n");
}

TEST_CASE("files: a pidfile that cannot be written exits 2 and leaves no pidfile or temp file",
          "[files][pidfile][bad_input]") {
  pool_name name;
  temp_dir dir(name);
  const auto pidfile = dir.path / "app.pid";
  fs::create_directory(pidfile);  // the temp file can be written, the rename over it cannot

  auto p = support::child::spawn(as_test_user_argv({app_path, "--workers", "1", "--name", name.value, "--bind", "127.0.0.1:0",
                                  "--pidfile", pidfile.string()}));
  auto status = p.wait_exit(20s);
  REQUIRE(status);
  INFO(p.output());
  CHECK(support::child::exited_with(*status, 2));
  CHECK(lines_containing(p.output(), "error") == 1);
  CHECK(p.output().find("--pidfile " + pidfile.string() + ": ") != std::string::npos);
  CHECK(entries_of(dir.path) == std::vector<std::string>{"app.pid"});
  CHECK(fs::is_empty(pidfile));
  CHECK(support::shm_segments("systempp." + name.value + "." + std::to_string(p.pid())).empty());  // no control block
}

TEST_CASE("files: a master upgrade does not carry the log file's descriptor into the new image",
          "[files][logs][upgrade]") {
  pool_name name;
  temp_dir dir(name);
  const auto log = dir.path / "app.log";
  auto p = support::child::spawn(as_test_user_argv({app_path, "--workers", "1", "--name", name.value, "--bind", "127.0.0.1:0",
                                  "--log-file", log.string()}));
  auto seg = attach(name, p.pid());
  REQUIRE(wait_ready(seg, 1).size() == 1);

  p.signal(SIGUSR2);  // the master execs itself; the new image opens the log again
  REQUIRE(wait_reload(seg, 1) == systempp::reload_outcome::succeeded);
  const auto fds = support::fd_targets(p.pid());
  std::string listing;
  for (const auto& [fd, target] : fds) listing += std::to_string(fd) + " -> " + target + "\n";
  INFO(listing);
  CHECK(std::count_if(fds.begin(), fds.end(), [&](const auto& kv) { return kv.second == log.string(); }) == 1);

  stop_cleanly(p);
}

// A forked worker's copy of the master's loop (Asio's notify_fork) registers the loop's
// descriptors in an epoll instance of the child's own; one the child then closes while the
// master keeps it open (the channels' epoll, the metrics listener) stayed registered there
// for the worker's life, and each later fork made the kernel walk all those copies.
TEST_CASE("files: a worker's epoll instances hold no registration of a descriptor it closed", "[files][workers]") {
  pool_name name;
  auto s = start(app_path, {"--workers", "3", "--name", name.value, "--metrics", "127.0.0.1:0"});
  auto seg = attach(name, s.proc.pid());
  const auto ready = wait_ready(seg, 3);
  REQUIRE(ready.size() == 3);
  for (const auto& [slot, pid] : ready) {
    INFO("worker " << pid << " in slot " << slot);
    CHECK(stale_epoll_registrations(pid) == std::vector<std::string>{});
  }
  stop_cleanly(s.proc);
}

// Not in the ASan+UBSan build: UBSan probes memory through a pipe before each vptr check,
// so with no descriptor left it reports every virtual call as invalid and, built with
// -fno-sanitize-recover, aborts. The plain build runs it.
#ifndef SYSTEMPP_UBSAN
TEST_CASE("files: a start short of descriptors exits 1 at whichever step it runs out, with one line naming it",
          "[files][exit_codes]") {
  pool_name name;
  const std::string app = app_path + " --allow-root --workers 1 --name " + name.value + " --bind 127.0.0.1:0";
  // The descriptor limit is raised one at a time from far too few until the pool starts,
  // so it runs out at every step of the start in turn, whatever the build's own use of
  // descriptors is (a sanitizer's runtime takes some).
  std::set<std::string> steps;
  bool started = false;
  for (int limit = 4; limit <= 64 && !started; ++limit) {
    const std::string script = "ulimit -n " + std::to_string(limit) + " && exec " + app;
    auto p = support::child::spawn(std::vector<std::string>{"/bin/sh", "-c", script});
    while (!started && !p.wait_exit_only(20ms))
      started = p.output().find("listening on") != std::string::npos;
    if (started) {
      p.signal(SIGTERM);
      REQUIRE(p.wait_exit(20s));
      break;
    }
    const auto status = p.wait_exit(20s);
    REQUIRE(status);
    INFO(script << "\n" << p.output());
    CHECK(support::child::exited_with(*status, 1));  // never 2: nothing is wrong with the command line
    CHECK(lines_containing(p.output(), "Too many open files") == 1);
    CHECK(support::shm_segments("systempp." + name.value + ".").empty());  // no control block left
    for (const char* step : {"pool lock", "--bind", "control block"})
      if (p.output().find(step) != std::string::npos) steps.insert(step);
  }
  CHECK(started);
  CHECK(steps == std::set<std::string>{"pool lock", "--bind", "control block"});
}

#endif  // SYSTEMPP_UBSAN

TEST_CASE("files: a start on a full disk exits 1, naming the pidfile", "[files][exit_codes]") {
  pool_name name;
  temp_dir dir(name);
  const std::string d = dir.path.string();
  // A tmpfs of one page, filled, in a mount namespace of its own (nothing outlives the test).
  const std::string script = "mount -t tmpfs -o size=4k tmpfs " + d + " && head -c 4096 /dev/zero > " + d +
                             "/fill && exec " + app_path + " --allow-root --workers 1 --name " + name.value +
                             " --bind 127.0.0.1:0 --pidfile " + d + "/app.pid";
  auto p = support::child::spawn(
      std::vector<std::string>{"/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script});
  const auto status = p.wait_exit(20s);
  REQUIRE(status);
  INFO(p.output());
  CHECK(support::child::exited_with(*status, 1));
  CHECK(lines_containing(p.output(), "No space left on device") == 1);
  CHECK(lines_containing(p.output(), "--pidfile " + d + "/app.pid") == 1);
  CHECK(support::shm_segments("systempp." + name.value + ".").empty());
}
