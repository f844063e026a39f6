#pragma once
/// The runtime's command line: one parser for every runner and sub-command.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "systempp/privileges.hpp"

namespace systempp {

struct config_document;  // config.hpp
struct option_spec;      // command_line.hpp

/// One runtime option as `--print-config` shows it.
struct setting_row {
  std::string key;     ///< the long flag without "--", as in [systempp]
  std::string value;   ///< as TOML writes it
  std::string origin;  ///< "command line", "FILE:LINE" or "default"
  std::string help;
};

/// The most workers a pool can have (--workers, SIGTTIN, `app scale`). The control block is
/// sized at start for max(16, 2 * --workers) slots, capped here.
inline constexpr int max_pool_workers = 2048;

/// --reload-mode: `fork` (default) forks new workers from the master image, so a reload
/// picks up configuration but not code; `exec` fork+execs the binary on disk for every new
/// worker, so a reload also picks up a new binary.
enum class reload_mode { fork, exec };
/// --accept: how the workers share a listener's new connections (docs/ARCHITECTURE.md,
/// "Accepting connections"). `reuseport`: one SO_REUSEPORT socket per worker slot, made
/// and held by the master, new connections steered to the serving slots; `exclusive`: the
/// one shared socket, each worker woken alone (EPOLLEXCLUSIVE, from a thread of its own);
/// `shared`: the one socket in every worker's loop, every idle worker woken.
enum class accept_strategy { reuseport, exclusive, shared };
/// The strategy's name as --accept takes it.
std::string_view to_string(accept_strategy s) noexcept;
/// --log-format: text lines, or one JSON object a line.
enum class log_format { text, json };

/// One `--bind [NAME=]HOST:PORT` value.
struct bind_spec {
  std::string name;  ///< listener name units look up; "http" when not given
  std::string host;  ///< numeric address or host name; "[::1]" is given as "::1"
  std::uint16_t port = 0;  ///< 0 asks the kernel for a free port
};

/// Parses "[NAME=]HOST:PORT"; returns an error message (without the option name) on failure.
/// Pure; any process.
std::variant<bind_spec, std::string> parse_bind(std::string_view text);

/// Options of the serving command (`app [options]`). Defaults are the documented ones.
/// Parsed once in the launching process (and again in an exec'd worker image or an
/// upgraded master, from the same argv); read-only afterwards, in every process.
struct options {
  int workers = 0;  ///< 0 = inline (one process); the parser defaults it to the CPU count
  /// --threads: threads that run each worker's (or the inline process's) loop.
  int threads = 1;
  /// --bind, in order; the parser puts http=127.0.0.1:8080 here when none is given.
  std::vector<bind_spec> binds;
  /// --name: the pool's name, for the control block and `app status --name`.
  std::string name = "app";
  /// --pidfile: where the master writes its pid; empty for none.
  std::string pidfile;
  /// --reload-mode.
  reload_mode mode = reload_mode::fork;
  /// --accept.
  accept_strategy accept = accept_strategy::reuseport;
  /// --reload-surge: slots rolled at the same time during a reload.
  int reload_surge = 1;
  /// --ready-timeout: a new worker not READY by then is killed (master).
  std::chrono::milliseconds ready_timeout{30'000};
  /// --heartbeat-timeout: a READY worker without a heartbeat this long gets SIGABRT (master).
  std::chrono::milliseconds heartbeat_timeout{30'000};
  /// --graceful-timeout: a draining worker still alive after this gets SIGKILL (master).
  std::chrono::milliseconds graceful_timeout{30'000};
  /// --stage-timeout: how long one unit may take in one stage (every process).
  std::chrono::milliseconds stage_timeout{30'000};
  std::chrono::milliseconds restart_backoff_max{10'000};  ///< cap of the failed-start backoff
  /// --max-requests: a worker asks to be replaced after this many requests; 0 never.
  std::uint64_t max_requests = 0;
  /// --max-requests-jitter: up to this many extra requests, different per worker.
  std::uint64_t max_requests_jitter = 0;
  /// --max-rss: a worker whose resident memory passes this many bytes asks to be replaced;
  /// 0 (not given) never. Given in MiB.
  std::uint64_t max_rss_bytes = 0;
  /// --reload-on-change: the master watches the binary and the --config file and rolls the
  /// pool when one changes (a reload; an upgrade for the binary in fork mode).
  bool reload_on_change = false;
  /// --cpu-affinity: "" (off), "auto" or a list such as "0,2-3"; cpu_affinity_cpus says
  /// which CPU each slot is pinned to.
  std::string cpu_affinity;
  /// --user: "" or USER[:GROUP], whom the workers run as; run_as is who that is, looked up
  /// by the parser.
  std::string user;
  std::optional<user_identity> run_as;
  /// --allow-root: workers may run as root (with no --user, or --user root).
  bool allow_root = false;
  /// --drop-master: with --user, the master too switches once it has bound the listeners
  /// and made the pool's files, before on_init.
  bool drop_master = false;
  /// --config: the TOML file of the runtime ([systempp]) and the units (config.hpp).
  std::string config;
  /// That file as read at start, its [systempp] table already merged into the fields here
  /// (the command line wins); null without --config. Read again at each reload.
  std::shared_ptr<const config_document> file;
  /// --print-config: print the merged configuration, with where each value came from, and
  /// exit.
  bool print_config = false;
  /// Every runtime option with its value and origin, for --print-config.
  std::vector<setting_row> settings;
  /// --log-level: trace, debug, info, warn, error, critical or off.
  std::string log_level = "info";
  /// --log-file: append here instead of writing to stderr; empty for stderr.
  std::string log_file;
  /// --log-format.
  log_format format = log_format::text;
  /// --metrics: HOST:PORT (or PORT, on 127.0.0.1) of the master's /metrics; empty for none.
  std::string metrics;
  /// --upgrade-version: check this command line and the log file, print the runtime's
  /// protocol version ("systempp-protocol N") and exit; what a master asks a new binary
  /// before it upgrades to it.
  bool upgrade_version = false;
  std::string program;  ///< argv[0], for exec mode and messages
  std::vector<std::string> args;  ///< positional arguments left for a script's body
  std::vector<std::string> argv;  ///< the whole command line, to exec workers and upgrades
};

/// What the command line asked for.
/// serve_command: run the service (pool, inline or exec'd worker) with these options.
struct serve_command {
  options opts;
};
/// `app status|reload|stop|scale`: talk to a running pool.
enum class control_kind { status, reload, stop, scale };
/// A control sub-command and its arguments. Runs in a separate process (an operator's shell,
/// ExecReload=), never inside the pool.
struct control_command {
  control_kind kind = control_kind::status;
  std::string name;     ///< --name; "app" when neither --name nor --pidfile is given
  std::string pidfile;  ///< --pidfile
  bool json = false;    ///< status --json
  bool wait = false;    ///< reload --wait
  bool fast = false;    ///< stop --fast
  int workers = 0;      ///< scale N
  std::chrono::milliseconds timeout{300'000};  ///< --timeout for --wait, stop and scale
  /// argv[0], for messages.
  std::string program;
};
/// The parser already did everything: printed --help or a usage error. Return `code`.
struct exit_now {
  int code;  ///< `--help` printed (0) or a usage error was reported (2)
};
/// One of the three, as parse_command_line returns it.
using command = std::variant<serve_command, control_command, exit_now>;

/// What an app says about itself on the command line: `--help` starts with the name and
/// the description, and `--version` prints "<name> <version>" (it exists only when a
/// version is given). Empty fields keep the runtime's defaults.
struct about {
  std::string_view name;         ///< e.g. "kvd"; default: the program's file name
  std::string_view description;  ///< one line for --help
  std::string_view version;      ///< e.g. "1.4.2"
};

/// Which command line to accept.
enum class parse_mode {
  serve,   ///< `app [options]`: the service
  script,  ///< run_script: runtime options, the rest left in options::args
};

/// --cpu-affinity's CPUs, in the order slots take them (slot k gets the (k mod n)-th):
/// "auto" is every CPU this process may run on, in order; a list is "0,2-3" (a CPU given
/// twice counts once). Empty for "". Throws std::invalid_argument saying what is wrong
/// with `spec` (a CPU this machine has not, a malformed range). Any process.
std::vector<int> cpu_affinity_cpus(const std::string& spec);

/// Parses argv, then reads the --config file (if any) and takes the runtime options its
/// [systempp] table gives that the command line does not. Prints help or a one-line error
/// itself ("app: error: --workers: ...", "app: error: FILE:LINE:systempp.workers: ..."),
/// and returns exit_now for those cases. Runs in the launching process only.
/// `unit_options` are the options the app's units added (command_line.hpp); parsed values
/// are stored through them.
command parse_command_line(int argc, const char* const* argv, parse_mode mode = parse_mode::serve,
                           const about& info = {}, std::span<const option_spec> unit_options = {});

/// Checks the [systempp] table of a configuration file read again (a reload): throws
/// config_error "FILE:LINE:systempp.KEY: ..." for what the command line parser would refuse.
/// The values are not applied: runtime options change at the next start or upgrade. Master
/// and inline process.
void check_runtime_section(const config_document& doc);

}  // namespace systempp
