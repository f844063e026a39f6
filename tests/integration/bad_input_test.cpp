// Bad input: every bad option or configuration value stops the start with exit code 2 and
// one error line naming the option or key, and leaves nothing behind.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>
#include <fstream>

#include "harness.hpp"

using namespace harness;

namespace {

struct outcome {
  int status = -1;
  std::string output;
};

outcome run_app(const std::vector<std::string>& args) {
  std::vector<std::string> argv{app_path};
  const auto given = as_test_user(args);
  argv.insert(argv.end(), given.begin(), given.end());
  auto p = support::child::spawn(argv);
  auto status = p.wait_exit(20s);
  REQUIRE(status);
  // Nothing of the pool may outlive the refusal: not one process of its group.
  CHECK(support::group_members(p.pid()).empty());
  return {*status, p.output()};
}

std::size_t error_lines(const std::string& out) {
  std::size_t n = 0;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);)
    if (line.find("error") != std::string::npos) ++n;
  return n;
}

}  // namespace

TEST_CASE("bad input: every bad option value exits 2 naming the option, leaving nothing behind",
          "[bad_input]") {
  pool_name name;
  const auto pidfile = std::filesystem::temp_directory_path() / (name.value + ".pid");
  // A regular file where a directory should be: nothing can be created below it, even as
  // root. A merely missing directory is refused too, and never created.
  const auto missing_dir = std::filesystem::temp_directory_path() / (name.value + "-not-a-dir");
  { std::ofstream(missing_dir) << "x"; }
  struct row {
    std::vector<std::string> args;
    std::string names;  ///< what the error line must contain
  };
  const std::vector<row> rows{
      {{"--workers", "-1"}, "--workers"},
      {{"--workers", "many"}, "--workers"},
      {{"--workers", "99999999999"}, "--workers"},
      {{"--bind", "127.0.0.1:70000"}, "--bind"},
      {{"--bind", "127.0.0.1:http"}, "--bind"},
      {{"--bind", "localhost"}, "--bind"},
      {{"--graceful-timeout", "0"}, "--graceful-timeout"},
      {{"--ready-timeout", "-1"}, "--ready-timeout"},
      {{"--heartbeat-timeout", "1e9"}, "--heartbeat-timeout"},
      {{"--stage-timeout", "soon"}, "--stage-timeout"},
      {{"--reload-mode", "spawn"}, "--reload-mode"},
      {{"--reload-surge", "0"}, "--reload-surge"},
      {{"--max-requests", "-5"}, "--max-requests"},
      {{"--cpu-affinity", "4096"}, "--cpu-affinity"},
      {{"--cpu-affinity", "0-x"}, "--cpu-affinity"},
      {{"--user", "no-such-user"}, "--user: no user 'no-such-user' on this machine"},
      {{"--user", "nobody:no-such-group"}, "--user: no group 'no-such-group' on this machine"},
      {{"--user", "root"}, "--user: the workers would run as root; add --allow-root"},
      {{"--drop-master"}, "--drop-master: needs --user"},
      {{"--max-rss", "0.5"}, "--max-rss: must be 0 (off) or a number of MiB from 1 to 1048576"},
      {{"--max-rss", "lots"}, "--max-rss"},
      {{"--name", "../etc"}, "--name"},
      {{"--log-level", "loud"}, "--log-level"},
      {{"--log-format", "xml"}, "--log-format"},
      {{"--metrics", "127.0.0.1:99999"}, "--metrics"},
      {{"--log-file", (missing_dir / "app.log").string()}, "--log-file"},
      {{"--log-file", (missing_dir.string() + ".d/logs/app.log")}, "does not exist"},  // not created
      {{"--pidfile", (missing_dir / "app.pid").string()}, "--pidfile"},
      {{"--config", (missing_dir / "app.conf").string()}, "app.conf"},
  };
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    std::vector<std::string> args{"--workers", "2", "--name", name.value, "--bind", "127.0.0.1:0"};
    if (r.args.front() != "--pidfile") args.insert(args.end(), {"--pidfile", pidfile.string()});
    args.insert(args.end(), r.args.begin(), r.args.end());
    // Section names must be the same on every pass: no per-run paths in them.
    DYNAMIC_SECTION("row " << i << ": " << r.args[0]) {
      auto o = run_app(args);
      INFO(o.output);
      CHECK(support::child::exited_with(o.status, 2));
      CHECK(error_lines(o.output) == 1);
      CHECK(o.output.find(r.names) != std::string::npos);
      CHECK(support::shm_segments("systempp." + name.value + ".").empty());
      CHECK_FALSE(std::filesystem::exists(pidfile));
    }
  }
  CHECK_FALSE(std::filesystem::exists(missing_dir.string() + ".d"));
  std::filesystem::remove(missing_dir);
}

TEST_CASE("bad input: a bad configuration file exits 2 naming file, line and key", "[bad_input]") {
  pool_name name;
  const auto cfg = std::filesystem::temp_directory_path() / (name.value + ".toml");
  struct row {
    std::string text;
    std::string expect;
  };
  const std::vector<row> rows{
      {"[demo]\nmessage = \"hi\"\ncolour = \"red\"\n",
       ":3:demo.colour: unknown key (the section has: message, docroot, startup-delay)"},
      {"[demo]\nstartup-delay = \"soon\"\n", ":2:demo.startup-delay: expected a number of seconds, got a string"},
      {"[http]\ndrain-grace = -1\n", ":2:http.drain-grace: -1 is out of range (0 to 600 seconds)"},
      {"[http]\nheader-limit = 10\n", ":2:http.header-limit: 10 is out of range (1024 to 1048576)"},
      {"[demo]\nmessage = [\"a\", 1]\n", ":2:demo.message: expected a string, got an array"},
      {"just words\n", ":1: "},
      {"[dmeo]\nmessage = \"x\"\n", ":1: [dmeo]: no unit of this app reads this section (sections: demo, http)"},
      {"message = \"x\"\n", ":1:message: a key outside any section"},
      {"[systempp]\nworkers = 99999\n", ":2:systempp.workers: Value 99999 not in range 0 to 2048"},
      {"[systempp]\nworkers = 2.5\n", ":2:systempp.workers: expected an integer, got a float"},
      {"[systempp]\nuser = \"no-such-user\"\n", ":2:systempp.user: no user 'no-such-user' on this machine"},
      {"[systempp]\nallow-root = 1\n", ":2:systempp.allow-root: expected true or false, got an integer"},
      {"[systempp]\nready-timeout = \"slow\"\n", ":2:systempp.ready-timeout: expected a number, got a string"},
      {"[systempp]\nworkerz = 1\n", ":2:systempp.workerz: unknown key (runtime options: stage-timeout,"},
      {"[systempp]\nbind = [\"nope\"]\n", ":2:systempp.bind: 'nope': expected HOST:PORT"},
      {"[systempp]\nlog-level = \"loud\"\n", ":2:systempp.log-level: loud not in {"},
  };
  for (const auto& r : rows) {
    { std::ofstream(cfg) << r.text; }
    DYNAMIC_SECTION(r.expect) {
      auto o = run_app({"--workers", "2", "--name", name.value, "--bind", "127.0.0.1:0", "--config", cfg.string()});
      INFO(o.output);
      CHECK(support::child::exited_with(o.status, 2));
      CHECK(error_lines(o.output) == 1);
      CHECK(o.output.find(cfg.string() + r.expect) != std::string::npos);
      CHECK(support::shm_segments("systempp." + name.value + ".").empty());
    }
  }
  std::filesystem::remove(cfg);
}

TEST_CASE("bad input: a --config path that is a directory exits 2 naming the file", "[bad_input]") {
  pool_name name;
  // Read as an empty file before, so the pool started and served the defaults.
  struct scoped_dir {
    std::filesystem::path path;
    ~scoped_dir() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  } dir{std::filesystem::temp_directory_path() / (name.value + ".conf.d")};
  std::filesystem::create_directory(dir.path);
  auto o = run_app({"--workers", "1", "--name", name.value, "--bind", "127.0.0.1:0", "--config", dir.path.string()});
  INFO(o.output);
  CHECK(support::child::exited_with(o.status, 2));
  CHECK(error_lines(o.output) == 1);
  CHECK(o.output.find(dir.path.string() + ": not a regular file (a directory)") != std::string::npos);
}

TEST_CASE("bad input: an address in use exits 2 naming --bind", "[bad_input]") {
  pool_name name;
  const auto held = listen_on_loopback(false, 8);
  const int fd = held.fd;
  const std::string port = std::to_string(held.port);
  auto o = run_app({"--workers", "1", "--name", name.value, "--bind", "127.0.0.1:" + port});
  ::close(fd);
  INFO(o.output);
  CHECK(support::child::exited_with(o.status, 2));
  CHECK(o.output.find("--bind 127.0.0.1:" + port + ": bind: Address already in use") != std::string::npos);
  CHECK(support::shm_segments("systempp." + name.value + ".").empty());
}

TEST_CASE("bad input: a privileged port without permission fails with a clear message",
          "[bad_input][security]") {
  if (!std::filesystem::exists("/usr/bin/setpriv")) {
    WARN("setpriv is not installed: skipped");
    return;
  }
  pool_name name;
  // Drop to nobody, without capabilities, as a service manager would for a plain user.
  auto p = support::child::spawn({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                  "--inh-caps=-all", "--bounding-set=-all", app_path, "--workers", "1",
                                  "--name", name.value, "--bind", "127.0.0.1:81"});
  auto status = p.wait_exit(20s);
  REQUIRE(status);
  INFO(p.output());
  CHECK(support::child::exited_with(*status, 2));
  CHECK(p.output().find("--bind 127.0.0.1:81: bind: Permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)") !=
        std::string::npos);
}
