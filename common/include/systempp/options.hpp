#pragma once
/// The runtime's command line: one parser for every runner and sub-command.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace systempp {

enum class reload_mode { fork, exec };
enum class log_format { text, json };

/// One `--bind [NAME=]HOST:PORT` value.
struct bind_spec {
  std::string name;  ///< listener name units look up; "http" when not given
  std::string host;  ///< numeric address or host name; "[::1]" is given as "::1"
  std::uint16_t port = 0;  ///< 0 asks the kernel for a free port
};

/// Parses "[NAME=]HOST:PORT"; returns an error message (without the option name) on failure.
std::variant<bind_spec, std::string> parse_bind(std::string_view text);

/// Options of the serving command (`app [options]`). Defaults are the documented ones.
struct options {
  int workers = 0;  ///< 0 = inline (one process); the parser defaults it to the CPU count
  std::vector<bind_spec> binds;
  std::string name = "app";
  std::string pidfile;
  reload_mode mode = reload_mode::fork;
  int reload_surge = 1;
  std::chrono::milliseconds ready_timeout{30'000};
  std::chrono::milliseconds heartbeat_timeout{30'000};
  std::chrono::milliseconds graceful_timeout{30'000};
  std::chrono::milliseconds stage_timeout{30'000};
  std::chrono::milliseconds restart_backoff_max{10'000};  ///< cap of the failed-start backoff
  std::uint64_t max_requests = 0;
  std::uint64_t max_requests_jitter = 0;
  std::string config;
  std::string log_level = "info";
  std::string log_file;
  log_format format = log_format::text;
  std::string metrics;
  std::string program;  ///< argv[0], for exec mode and messages
  std::vector<std::string> args;  ///< positional arguments left for a script's body
  std::vector<std::string> argv;  ///< the whole command line, to exec workers and upgrades
};

/// What the command line asked for.
struct serve_command {
  options opts;
};
/// `app status|reload|stop|scale`: talk to a running pool.
enum class control_kind { status, reload, stop, scale };
struct control_command {
  control_kind kind = control_kind::status;
  std::string name;     ///< --name; "app" when neither --name nor --pidfile is given
  std::string pidfile;  ///< --pidfile
  bool json = false;    ///< status --json
  bool wait = false;    ///< reload --wait
  bool fast = false;    ///< stop --fast
  int workers = 0;      ///< scale N
  std::chrono::milliseconds timeout{300'000};  ///< --timeout for --wait, stop and scale
  std::string program;
};
struct exit_now {
  int code;  ///< `--help` printed (0) or a usage error was reported (2)
};
using command = std::variant<serve_command, control_command, exit_now>;

enum class parse_mode {
  serve,   ///< `app [options]`: the service
  script,  ///< run_script: runtime options, the rest left in options::args
};

/// Parses argv. Prints help or a one-line error itself ("app: error: --workers: ..."), and
/// returns exit_now for those cases. Runs in the launching process only.
command parse_command_line(int argc, const char* const* argv, parse_mode mode = parse_mode::serve);

}  // namespace systempp
