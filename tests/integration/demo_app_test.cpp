// The demo app (`app/`): its endpoints, configuration file, keep-alive, pipelining, bad
// input, static files and its behaviour during a drain, driven over real sockets against a
// real pool.

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "harness.hpp"
#include <support/temp_dir.hpp>

using namespace harness;

namespace {

namespace fs = std::filesystem;

/// SIGTERMs the master and requires a clean exit (code 0) within a deadline.
void require_clean_exit(service& s) {
  REQUIRE(s.proc.signal(SIGTERM));
  const auto status = s.proc.wait_exit(20s);
  INFO(s.proc.output());
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
}

/// A scratch directory and file writing, shared with the other tests.
struct temp_dir : support::temp_dir {
  temp_dir() : support::temp_dir("systempp_demo") {}
};
using support::write_file;

std::string get_request(const std::string& target, const std::string& connection = "keep-alive") {
  return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: " + connection + "\r\n\r\n";
}

/// One GET sent byte for byte (no client-side normalisation of `..` or `%2e`), on a fresh
/// connection that asks to be closed; the parsed response, or nullopt.
std::optional<support::response> raw_get(std::uint16_t port, const std::string& target) {
  std::string error;
  auto raw = support::raw_exchange("127.0.0.1", port, get_request(target, "close"), 5s,
                                   support::raw_options{support::after_write::keep_open, 1}, &error);
  INFO("target " << target << ", error '" << error << "'");
  if (!raw) return std::nullopt;
  auto responses = support::parse_responses(*raw);
  if (responses.empty()) return std::nullopt;
  return responses.front();
}

/// What the server sent back for bytes written verbatim on a fresh connection, read until
/// the server closes it or 5 s pass.
struct raw_reply {
  std::vector<support::response> responses;
  bool closed_by_server = false;  ///< the read ended by EOF, not by our timeout
  std::string raw;
};

raw_reply send_raw(std::uint16_t port, const std::string& bytes) {
  std::string error;
  auto raw = support::raw_exchange("127.0.0.1", port, bytes, 5s, {}, &error);
  INFO("error '" << error << "'");
  REQUIRE(raw);
  return raw_reply{support::parse_responses(*raw), error.empty(), *raw};
}

/// A complete request that must never be answered when it arrives as another request's body.
const std::string smuggled = "GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

std::set<pid_t> pids_of(const std::map<int, pid_t>& ready) {
  std::set<pid_t> out;
  for (auto [slot, pid] : ready) out.insert(pid);
  return out;
}

/// Lines of the captured output that contain `needle`.
std::vector<std::string> lines_with(const std::string& output, const std::string& needle) {
  std::vector<std::string> out;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);)
    if (line.find(needle) != std::string::npos) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE("demo: a pool answers /, /healthz, /sleep and unknown paths with worker headers",
          "[demo][http]") {
  pool_name name;
  auto p = start_pool(name, 2);
  const auto workers = pids_of(p.ready);
  const auto port = p.svc.port;

  struct expectation {
    std::string target;
    int status;
    std::string body;  ///< "" means: not checked
  };
  const std::vector<expectation> cases{
      {"/", 200, "hello"},
      {"/healthz", 200, "ok\n"},
      {"/sleep?ms=50", 200, "slept 50 ms\n"},
      {"/sleep?ms=abc", 400, ""},
      {"/sleep?ms=70000", 400, ""},
      {"/sleep", 400, ""},
      {"/nope", 404, ""},
      {"/static/anything", 404, ""},  // no docroot configured
  };
  for (const auto& c : cases) {
    INFO("GET " << c.target);
    std::string error;
    auto r = support::http_get("127.0.0.1", port, c.target, 5s, &error);
    INFO(error);
    REQUIRE(r);
    CHECK(r->status == c.status);
    if (!c.body.empty()) CHECK(r->body == c.body);
    const std::string pid = r->header("x-worker-pid");
    REQUIRE_FALSE(pid.empty());
    CHECK(workers.count(std::stoi(pid)) == 1);
    const std::string slot = r->header("x-worker-slot");
    CHECK((slot == "0" || slot == "1"));
    CHECK(r->header("x-worker-generation") == "1");
  }
  require_clean_exit(p.svc);
}

TEST_CASE("demo: --config sets the message that GET / answers with", "[demo][config]") {
  temp_dir dir;
  const auto config = dir.path / "demo.conf";
  write_file(config, "# the demo's greeting\n[demo]\nmessage = \"custom text from the config\"\n");
  pool_name name;
  auto p = start_pool(name, 1, {"--config", config.string()});
  auto r = support::http_get("127.0.0.1", p.svc.port, "/");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "custom text from the config");
  require_clean_exit(p.svc);
}

TEST_CASE("demo: --print-config shows the merged configuration with each value's origin and starts nothing",
          "[demo][config]") {
  temp_dir dir;
  const auto config = dir.path / "demo.toml";
  write_file(config, "[systempp]\nworkers = 3\nready-timeout = 2.5\n\n[demo]\nmessage = \"from the file\"\n");
  pool_name name;
  auto proc = support::child::spawn({app_path, "--config", config.string(), "--workers", "2", "--name", name.value,
                                     "--print-config"});
  const auto status = proc.wait_exit(10s);
  const std::string out = proc.output();
  INFO(out);
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
  CHECK(out.find("workers = 2  # command line\n") != std::string::npos);
  CHECK(out.find("ready-timeout = 2.5  # " + config.string() + ":3\n") != std::string::npos);
  CHECK(out.find("heartbeat-timeout = 30  # default\n") != std::string::npos);
  CHECK(out.find("[demo]  # unit settings\n") != std::string::npos);
  CHECK(out.find("message = \"from the file\"  # " + config.string() + ":6\n") != std::string::npos);
  CHECK(out.find("[http]  # unit http_server\n") != std::string::npos);
  CHECK(out.find("keepalive-timeout = 5.0  # default\n") != std::string::npos);
  CHECK(out.find("# Seconds an idle keep-alive connection stays open\n") != std::string::npos);
  CHECK(support::shm_segments("systempp." + name.value + ".").empty());
  // What it prints is a configuration file the app takes as it is.
  const auto printed = dir.path / "printed.toml";
  write_file(printed, out);
  auto again = support::child::spawn({app_path, "--config", printed.string(), "--print-config"});
  const auto again_status = again.wait_exit(10s);
  INFO(again.output());
  REQUIRE(again_status);
  CHECK(support::child::exited_with(*again_status, 0));
  CHECK(again.output().find("workers = 2  # " + printed.string()) != std::string::npos);
}

TEST_CASE("demo: a bad --config stops the start with exit 2, one error naming file:line and key, "
          "and no segment",
          "[demo][config][bad_input]") {
  temp_dir dir;
  struct bad_case {
    std::string what;
    fs::path file;
    std::string content;  ///< written unless the case is about an unreadable file
    std::string expected;
  };
  const auto unknown = dir.path / "unknown.conf";
  const auto bad_number = dir.path / "bad_number.conf";
  const auto missing = dir.path / "missing.conf";
  const std::vector<bad_case> cases{
      {"an unknown key", unknown, "[demo]\nmessage = \"hi\"\ncolour = \"blue\"\n",
       unknown.string() + ":3:demo.colour: unknown key"},
      {"a bad number", bad_number, "[demo]\nmessage = \"hi\"\n\n[http]\ndrain-grace = \"12x\"\n",
       bad_number.string() + ":5:http.drain-grace: expected a number of seconds, got a string"},
      {"an unreadable file", missing, "", missing.string() + ": cannot read"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    if (!c.content.empty()) write_file(c.file, c.content);
    pool_name name;
    auto proc = support::child::spawn(as_test_user_argv({app_path, "--workers", "2", "--name", name.value, "--bind",
                                       "127.0.0.1:0", "--config", c.file.string()}));
    const auto status = proc.wait_exit(10s);
    const std::string out = proc.output();
    INFO(out);
    REQUIRE(status);
    CHECK(support::child::exited_with(*status, 2));
    // The framework logs the failed stage and then the failed start; both must carry the same
    // single-line message, and nothing else may be reported as an error.
    const auto errors = lines_with(out, " error: ");
    CHECK_FALSE(errors.empty());
    for (const auto& line : errors) CHECK(line.find(c.expected) != std::string::npos);
    CHECK(lines_with(out, "terminate").empty());
    CHECK(support::shm_segments("systempp." + name.value + ".").empty());
  }
}

TEST_CASE("demo: one keep-alive connection carries 20 requests to the same worker",
          "[demo][http][keepalive]") {
  pool_name name;
  auto p = start_pool(name, 2);
  support::keepalive_client client("127.0.0.1", p.svc.port, 5s);
  REQUIRE(client.connected());
  std::set<std::string> served_by;
  for (int i = 0; i < 20; ++i) {
    INFO("request " << i);
    auto r = client.get("/");
    INFO(client.last_error());
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->keep_alive);
    served_by.insert(r->header("x-worker-pid"));
  }
  CHECK(served_by.size() == 1);
  CHECK(client.connected());
  // An idle client that never reads would hold the drain until the server's close timeout.
  client.disconnect();
  require_clean_exit(p.svc);
}

TEST_CASE("demo: pipelined requests are answered in request order", "[demo][http][pipelining]") {
  pool_name name;
  auto p = start_pool(name, 2);
  // The slow request first: a server that answered as handlers finish would reorder.
  const std::string bytes = get_request("/sleep?ms=100") + get_request("/") + get_request("/healthz");
  std::string error;
  auto raw = support::raw_exchange("127.0.0.1", p.svc.port, bytes, 5s,
                                   support::raw_options{support::after_write::keep_open, 3}, &error);
  INFO("error '" << error << "'");
  REQUIRE(raw);
  const auto responses = support::parse_responses(*raw);
  INFO(*raw);
  REQUIRE(responses.size() == 3);
  CHECK(responses[0].status == 200);
  CHECK(responses[0].body == "slept 100 ms\n");
  CHECK(responses[1].status == 200);
  CHECK(responses[1].body == "hello");
  CHECK(responses[2].status == 200);
  CHECK(responses[2].body == "ok\n");
  for (const auto& r : responses) CHECK(r.keep_alive);
  require_clean_exit(p.svc);
}

// The header lines of the first response in `raw` (status line excluded), in order.
std::vector<std::string> header_lines(const std::string& raw) {
  std::vector<std::string> out;
  std::istringstream in(raw.substr(0, raw.find("\r\n\r\n")));
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) out.push_back(line.substr(0, line.find('\r')));
  return out;
}

// Without the values that differ from one route to the other.
std::vector<std::string> header_names(const std::string& raw) {
  auto lines = header_lines(raw);
  for (auto& l : lines) l = l.substr(0, l.find(':'));
  return lines;
}

TEST_CASE("demo: the fixed route / answers 1.0 and 1.1, keep-alive or close, GET and HEAD as a handler would",
          "[demo][http][fixed]") {
  pool_name name;
  auto p = start_pool(name, 1);
  const auto port = p.svc.port;

  // The same header fields as a route with a handler (/sleep, through the decorator too).
  const auto fixed = send_raw(port, get_request("/", "close"));
  const auto handled = send_raw(port, get_request("/sleep?ms=0", "close"));
  INFO(fixed.raw << "\n---\n" << handled.raw);
  REQUIRE(fixed.responses.size() == 1);
  CHECK(fixed.raw.starts_with("HTTP/1.1 200 OK\r\n"));
  CHECK(fixed.responses[0].body == "hello");
  CHECK(fixed.closed_by_server);
  CHECK(header_names(fixed.raw) == header_names(handled.raw));
  CHECK(fixed.responses[0].header("connection") == "close");

  // HTTP/1.0: closed unless asked to keep the connection, then said so in the response.
  const auto old = send_raw(port, "GET / HTTP/1.0\r\n\r\n");
  INFO(old.raw);
  REQUIRE(old.responses.size() == 1);
  CHECK(old.raw.starts_with("HTTP/1.0 200 OK\r\n"));
  CHECK(old.responses[0].header("connection").empty());
  CHECK(old.closed_by_server);
  const auto old_kept = send_raw(port, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n");
  INFO(old_kept.raw);
  REQUIRE(old_kept.responses.size() == 2);
  CHECK(old_kept.responses[0].header("connection") == "keep-alive");
  CHECK(old_kept.responses[1].body == "ok\n");
  CHECK(old_kept.closed_by_server);

  // HEAD: GET's header, Content-Length included, and no body: the next response follows at once.
  const auto head = send_raw(port, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + get_request("/", "close"));
  INFO(head.raw);
  const auto second = head.raw.find("HTTP/1.1", 1);
  REQUIRE(second != std::string::npos);
  CHECK(head.raw.substr(second - 4, 4) == "\r\n\r\n");
  auto head_lines = header_lines(head.raw);
  auto get_lines = header_lines(head.raw.substr(second));
  CHECK(std::find(head_lines.begin(), head_lines.end(), "Content-Length: 5") != head_lines.end());
  std::erase(get_lines, "Connection: close");
  CHECK(head_lines == get_lines);
  CHECK(head.raw.ends_with("\r\n\r\nhello"));
  require_clean_exit(p.svc);
}

TEST_CASE("demo: a malformed request gets 400 and a closed connection while others are served",
          "[demo][http][bad_input]") {
  pool_name name;
  auto p = start_pool(name, 2);
  support::keepalive_client other("127.0.0.1", p.svc.port, 5s);
  auto before = other.get("/");
  REQUIRE(before);
  CHECK(before->status == 200);

  std::string error;
  // No stop_after_responses: the exchange ends only when the server closes the connection.
  auto raw = support::raw_exchange("127.0.0.1", p.svc.port, "GARBAGE\r\n\r\n", 5s, {}, &error);
  REQUIRE(raw);
  INFO(*raw);
  CHECK(error.empty());  // "" means it ended by EOF: the server closed, not our timeout
  const auto responses = support::parse_responses(*raw);
  REQUIRE(responses.size() == 1);
  CHECK(responses[0].status == 400);
  CHECK_FALSE(responses[0].keep_alive);

  // The other client, connected all along, is still served, and so is a new one.
  auto after = other.get("/");
  INFO(other.last_error());
  REQUIRE(after);
  CHECK(after->status == 200);
  CHECK(after->header("x-worker-pid") == before->header("x-worker-pid"));
  auto fresh = support::http_get("127.0.0.1", p.svc.port, "/");
  REQUIRE(fresh);
  CHECK(fresh->status == 200);
  CHECK(wait_ready(p.seg, 2) == p.ready);  // no worker crashed on the garbage
  other.disconnect();
  require_clean_exit(p.svc);
}

TEST_CASE("demo: a request with 20 KiB of headers gets 431", "[demo][http][bad_input]") {
  pool_name name;
  auto p = start_pool(name, 1);
  const std::string bytes = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + std::string(20 * 1024, 'a') +
                            "\r\n\r\n";
  std::string error;
  auto raw = support::raw_exchange("127.0.0.1", p.svc.port, bytes, 5s, {}, &error);
  REQUIRE(raw);
  INFO("error '" << error << "'");
  const auto responses = support::parse_responses(*raw);
  INFO(raw->substr(0, 500));
  REQUIRE(responses.size() == 1);
  CHECK(responses[0].status == 431);
  CHECK_FALSE(responses[0].keep_alive);
  auto r = support::http_get("127.0.0.1", p.svc.port, "/");
  REQUIRE(r);
  CHECK(r->status == 200);
  require_clean_exit(p.svc);
}

TEST_CASE("demo: /static serves files under docroot and refuses every way out of it",
          "[demo][http][static]") {
  temp_dir dir;
  const auto root = dir.path / "root";
  fs::create_directories(root / "sub");
  write_file(root / "file.txt", "static content\n");
  write_file(root / "sub" / "nested.txt", "nested\n");
  const std::string secret_text = "the secret outside docroot\n";
  write_file(dir.path / "secret", secret_text);
  fs::create_symlink("/etc/passwd", root / "link");
  fs::create_symlink(dir.path / "secret", root / "secret_link");
  const auto config = dir.path / "demo.conf";
  write_file(config, "[demo]\ndocroot = \"" + root.string() + "\"\n");

  pool_name name;
  auto p = start_pool(name, 1, {"--config", config.string()});

  auto file = raw_get(p.svc.port, "/static/file.txt");
  REQUIRE(file);
  CHECK(file->status == 200);
  CHECK(file->body == "static content\n");
  CHECK(file->header("content-type") == "text/plain");
  auto nested = raw_get(p.svc.port, "/static/sub/nested.txt");
  REQUIRE(nested);
  CHECK(nested->status == 200);
  CHECK(nested->body == "nested\n");

  struct refusal {
    std::string target;
    int status;
  };
  const std::vector<refusal> refusals{
      {"/static/../secret", 404},
      {"/static/sub/../../secret", 404},
      {"/static/%2e%2e/secret", 404},
      {"/static/%2E%2E/secret", 404},
      {"/static/a%2fb", 400},
      {"/static/..%2fsecret", 400},
      {"/static/link", 404},
      {"/static/secret_link", 404},
      {"/static/missing.txt", 404},
      {"/static/sub", 404},
  };
  for (const auto& r : refusals) {
    INFO("GET " << r.target);
    auto res = raw_get(p.svc.port, r.target);
    REQUIRE(res);
    CHECK(res->status == r.status);
    CHECK(res->body.find("secret outside") == std::string::npos);
    CHECK(res->body.find("root:") == std::string::npos);
  }
  require_clean_exit(p.svc);
}

TEST_CASE("demo: a request in flight during SIGTERM completes with 200 and the pool exits 0",
          "[demo][drain]") {
  pool_name name;
  auto p = start_pool(name, 2);
  support::keepalive_client client("127.0.0.1", p.svc.port, 15s);
  REQUIRE(client.connected());

  std::optional<support::response> result;
  std::string error;
  std::jthread request([&] {
    result = client.get("/sleep?ms=2000");
    error = client.last_error();
  });
  // The request is in flight once a worker counts it in the control block.
  const bool in_flight = support::wait_until([&] {
    for (std::uint32_t i = 0; i < p.seg.slot_count(); ++i)
      if (systempp::read_slot(p.seg.slot(i)).in_flight >= 1) return true;
    return false;
  }, 5s);
  REQUIRE(in_flight);
  REQUIRE(p.svc.proc.signal(SIGTERM));
  request.join();

  INFO(error);
  REQUIRE(result);
  CHECK(result->status == 200);
  CHECK(result->body == "slept 2000 ms\n");
  CHECK_FALSE(result->keep_alive);
  const auto status = p.svc.proc.wait_exit(20s);
  INFO(p.svc.proc.output());
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
}

TEST_CASE("demo: a drain under keep-alive load drops no request and closes every connection",
          "[demo][drain][load]") {
  pool_name name;
  auto p = start_pool(name, 4);

  constexpr std::size_t thread_count = 32;
  constexpr std::size_t max_requests = 5000;
  constexpr auto max_duration = 10s;
  struct client_result {
    std::atomic<std::size_t> ok{0};
    std::atomic<bool> done{false};
    std::size_t failures = 0;
    bool ended_by_close = false;
    std::string error;
  };
  std::vector<client_result> results(thread_count);
  const auto port = p.svc.port;
  std::vector<std::jthread> threads;
  for (std::size_t t = 0; t < thread_count; ++t) {
    threads.emplace_back([&r = results[t], port, max_duration] {
      const auto deadline = std::chrono::steady_clock::now() + max_duration;
      support::keepalive_client client("127.0.0.1", port, 5s);
      if (!client.connected()) {
        ++r.failures;
        r.error = "connect: " + client.last_error();
      }
      // Never reconnects: a request lost on a dropped connection must show up as a failure.
      for (std::size_t n = 0; client.connected() && n < max_requests &&
                              std::chrono::steady_clock::now() < deadline;
           ++n) {
        auto res = client.get("/");
        if (!res) {
          ++r.failures;
          r.error = client.last_error();
          break;
        }
        if (res->status < 200 || res->status >= 300) {
          ++r.failures;
          r.error = "status " + std::to_string(res->status);
        } else {
          ++r.ok;
        }
        if (!res->keep_alive) {
          r.ended_by_close = true;
          break;
        }
      }
      r.done = true;
    });
  }

  const bool warmed_up = support::wait_until([&] {
    for (const auto& r : results)
      if (r.ok < 5 || r.done) return false;
    return true;
  }, 10s);
  REQUIRE(warmed_up);
  REQUIRE(p.svc.proc.signal(SIGTERM));
  threads.clear();  // joins

  std::size_t requests = 0, failures = 0, ended_by_close = 0;
  for (std::size_t t = 0; t < thread_count; ++t) {
    const auto& r = results[t];
    requests += r.ok + r.failures;
    failures += r.failures;
    if (r.ended_by_close) ++ended_by_close;
    INFO("thread " << t << ": " << r.ok << " ok, " << r.failures << " failed, last error '"
                   << r.error << "'");
    CHECK(r.failures == 0);
    CHECK(r.ended_by_close);
  }
  const auto status = p.svc.proc.wait_exit(20s);
  INFO(p.svc.proc.output());
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
  WARN("drain under load: " << requests << " requests over " << thread_count << " connections, "
                            << failures << " failures, " << ended_by_close
                            << " connections ended by Connection: close");
  CHECK(failures == 0);
  CHECK(ended_by_close == thread_count);
}

TEST_CASE("demo: 8 workers share fresh connections among at least 3 of them",
          "[demo][http][balance]") {
  pool_name name;
  auto p = start_pool(name, 8);
  const auto workers = pids_of(p.ready);
  std::set<pid_t> served_by;
  for (int i = 0; i < 200; ++i) {
    INFO("request " << i);
    std::string error;
    auto r = support::http_get("127.0.0.1", p.svc.port, "/", 5s, &error);
    INFO(error);
    REQUIRE(r);
    CHECK(r->status == 200);
    const pid_t pid = std::stoi(r->header("x-worker-pid"));
    CHECK(workers.count(pid) == 1);
    served_by.insert(pid);
  }
  CHECK(served_by.size() >= 3);
  require_clean_exit(p.svc);
}

TEST_CASE("demo: /healthz answers 503 with Connection: close during a drain",
          "[demo][drain][healthz]") {
  temp_dir dir;
  const auto config = dir.path / "demo.conf";
  write_file(config, "[http]\ndrain-grace = 3\n");
  pool_name name;
  auto p = start_pool(name, 1, {"--config", config.string()});

  support::keepalive_client client("127.0.0.1", p.svc.port, 5s);
  auto healthy = client.get("/healthz");
  REQUIRE(healthy);
  CHECK(healthy->status == 200);
  CHECK(healthy->keep_alive);
  const pid_t worker = std::stoi(healthy->header("x-worker-pid"));

  // The client is idle now. Drain, and wait until the worker says it is draining.
  REQUIRE(p.svc.proc.signal(SIGTERM));
  const bool draining = support::wait_until([&] {
    for (std::uint32_t i = 0; i < p.seg.slot_count(); ++i) {
      const auto snap = systempp::read_slot(p.seg.slot(i));
      if (snap.pid == worker && snap.state == systempp::worker_state::draining) return true;
    }
    return false;
  }, 2s);
  REQUIRE(draining);

  auto during = client.get("/healthz");
  INFO(client.last_error());
  REQUIRE(during);
  CHECK(during->status == 503);
  CHECK(during->body == "draining\n");
  CHECK_FALSE(during->keep_alive);
  CHECK(during->header("connection") == "close");
  const auto status = p.svc.proc.wait_exit(20s);
  INFO(p.svc.proc.output());
  REQUIRE(status);
  CHECK(support::child::exited_with(*status, 0));
}

TEST_CASE("demo: a transfer coding other than chunked gets 501 or 400, a closed connection, and "
          "its body is never answered as a request",
          "[demo][http][bad_input][smuggling]") {
  pool_name name;
  auto p = start_pool(name, 1);
  struct refused_case {
    std::string version;
    std::string fields;  ///< the Transfer-Encoding line(s), each ending in CRLF
    int status;
    std::string body = smuggled;
  };
  const std::vector<refused_case> cases{
      {"HTTP/1.1", "Transfer-Encoding: gzip\r\n", 501},
      {"HTTP/1.1", "Transfer-Encoding: xchunked\r\n", 501},
      {"HTTP/1.1", "Transfer-Encoding: identity\r\n", 501},
      {"HTTP/1.1", "Transfer-Encoding: gzip, chunked\r\n", 501},
      {"HTTP/1.1", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", 501},
      {"HTTP/1.1", "Transfer-Encoding: chunked, gzip\r\n", 400},
      {"HTTP/1.1", "Transfer-Encoding: chunked, chunked\r\n", 400},
      {"HTTP/1.1", "Transfer-Encoding: \"chunked\"\r\n", 400},
      {"HTTP/1.1", "Transfer-Encoding: ,\r\n", 400},
      {"HTTP/1.1", "Transfer-Encoding: chunked;x=1\r\n", 400},
      {"HTTP/1.1", "Transfer-Encoding: gzip\r\nContent-Length: " + std::to_string(smuggled.size()) + "\r\n",
       501},
      // Valid chunks: a server that reads them answers 200 and closes, as HTTP/1.0 does.
      {"HTTP/1.0", "Transfer-Encoding: chunked\r\n", 400, "5\r\nhello\r\n0\r\n\r\n" + smuggled},
  };
  for (const auto& c : cases) {
    INFO(c.version << " with " << c.fields);
    // A server that ignores the coding answers the body as a second request; one that reads
    // it as chunked fails on it with a 400, not the 501 a coding it lacks deserves.
    const auto reply = send_raw(p.svc.port, "GET / " + c.version + "\r\nHost: 127.0.0.1\r\n" + c.fields +
                                                "\r\n" + c.body);
    INFO(reply.raw);
    CHECK(reply.closed_by_server);
    CHECK(reply.responses.size() == 1);
    if (reply.responses.empty()) continue;
    CHECK(reply.responses[0].status == c.status);
    CHECK_FALSE(reply.responses[0].keep_alive);
    if (c.version == "HTTP/1.1") CHECK(reply.responses[0].header("connection") == "close");
  }
  auto after = support::http_get("127.0.0.1", p.svc.port, "/");
  REQUIRE(after);
  CHECK(after->status == 200);
  require_clean_exit(p.svc);
}

TEST_CASE("demo: a chunked request body is read as the body and the next request is answered",
          "[demo][http][smuggling]") {
  pool_name name;
  auto p = start_pool(name, 1);
  const std::vector<std::string> codings{"chunked", "Chunked"};
  for (const auto& coding : codings) {
    INFO("Transfer-Encoding: " << coding);
    const auto reply = send_raw(p.svc.port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: " + coding +
                                                "\r\n\r\n5\r\nhello\r\n0\r\n\r\n" +
                                                get_request("/healthz", "close"));
    INFO(reply.raw);
    CHECK(reply.closed_by_server);
    REQUIRE(reply.responses.size() == 2);
    CHECK(reply.responses[0].status == 200);
    CHECK(reply.responses[0].body == "hello");
    CHECK(reply.responses[0].keep_alive);
    CHECK(reply.responses[1].status == 200);
    CHECK(reply.responses[1].body == "ok\n");
  }
  require_clean_exit(p.svc);
}

TEST_CASE("demo: an HTTP/1.1 request without exactly one Host gets 400 and a closed connection, "
          "while HTTP/1.0 may omit it",
          "[demo][http][bad_input]") {
  pool_name name;
  auto p = start_pool(name, 1);
  const std::vector<std::string> host_cases{"", "Host: 127.0.0.1\r\nHost: example.com\r\n"};
  for (const auto& host_lines : host_cases) {
    INFO("Host lines: '" << host_lines << "'");
    const auto reply = send_raw(p.svc.port, "GET / HTTP/1.1\r\n" + host_lines + "\r\n" + smuggled);
    INFO(reply.raw);
    CHECK(reply.closed_by_server);
    CHECK(reply.responses.size() == 1);
    if (reply.responses.empty()) continue;
    CHECK(reply.responses[0].status == 400);
    CHECK(reply.responses[0].header("connection") == "close");
  }
  const auto old_client = send_raw(p.svc.port, "GET / HTTP/1.0\r\n\r\n");
  INFO(old_client.raw);
  CHECK(old_client.closed_by_server);
  REQUIRE(old_client.responses.size() == 1);
  CHECK(old_client.responses[0].status == 200);
  CHECK(old_client.responses[0].body == "hello");
  require_clean_exit(p.svc);
}

TEST_CASE("demo: a 405 names the accepted methods in Allow, a path no route serves is a 404", "[demo][http]") {
  pool_name name;
  auto p = start_pool(name, 1);
  const auto missing = send_raw(p.svc.port, "OPTIONS /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  REQUIRE(missing.responses.size() == 1);
  CHECK(missing.responses[0].status == 404);
  const std::vector<std::string> requests{"DELETE /", "POST /healthz", "PUT /static/x"};
  for (const auto& method : requests) {
    INFO(method);
    const auto reply = send_raw(p.svc.port, method + " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                     "Content-Length: 0\r\nConnection: close\r\n\r\n");
    INFO(reply.raw);
    REQUIRE(reply.responses.size() == 1);
    CHECK(reply.responses[0].status == 405);
    CHECK(reply.responses[0].header("allow") == "GET, HEAD");
  }
  require_clean_exit(p.svc);
}
