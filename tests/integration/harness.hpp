#pragma once
// Shared steps of the integration tests: start a real binary on a free port (it binds
// 127.0.0.1:0 and logs the port), wait for log lines with deadlines.

#include <catch2/catch.hpp>

#include <chrono>
#include <regex>
#include <string>
#include <vector>

#include <support/http.hpp>
#include <support/proc.hpp>
#include <support/process.hpp>

namespace harness {

using namespace std::chrono_literals;

inline const std::string app_path = SYSTEMPP_APP_PATH;
inline const std::string probe_path = SYSTEMPP_PROBE_PATH;

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

/// Starts `binary` with `args` plus `--bind 127.0.0.1:0`, and waits until it logs the
/// port it listens on.
inline service start(const std::string& binary, std::vector<std::string> args,
                     std::vector<std::pair<std::string, std::string>> env = {}) {
  std::vector<std::string> argv{binary, "--bind", "127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  service s{support::child::spawn(argv, std::move(env)), 0};
  auto m = s.proc.wait_for(std::regex(R"(listening on 127\.0\.0\.1:(\d+))"), 10s);
  INFO(s.proc.output());
  REQUIRE(m);
  s.port = static_cast<std::uint16_t>(std::stoi(m->groups.at(1)));
  return s;
}

}  // namespace harness
