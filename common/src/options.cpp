#include "systempp/options.hpp"

#include "options_file.hpp"
#include "process_options.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <charconv>
#include <cmath>
#include <iostream>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "systempp/config.hpp"
#include "systempp/errors.hpp"

namespace systempp {

std::variant<bind_spec, std::string> parse_bind(std::string_view text) {
  bind_spec spec;
  spec.name = "http";
  if (auto eq = text.find('='); eq != std::string_view::npos) {
    spec.name = std::string(text.substr(0, eq));
    text.remove_prefix(eq + 1);
    if (spec.name.empty()) return std::string("empty listener name before '='");
    for (char c : spec.name)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_')
        return std::string("a listener name may only contain letters, digits, '-' and '_'");
  }
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::string("expected HOST:PORT");
  std::string_view host = text.substr(0, colon);
  std::string_view port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return std::string("an IPv6 address must be written in brackets, e.g. [::1]:8080");
  }
  if (host.empty()) return std::string("missing host before ':'");
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || value > 65535)
    return fmt::format("port '{}' is not a number from 0 to 65535", port);
  spec.host = std::string(host);
  spec.port = static_cast<std::uint16_t>(value);
  return spec;
}

namespace {

constexpr const char* exit_codes_text = R"(Exit codes:
  0  clean exit
  1  runtime failure (also a start short of fds, disk or memory); in a pool: workers
     had to be killed or failed a shutdown stage
  2  usage or configuration error (a master never respawns it in a loop)
  3  on_init failed            4  pre_startup failed
  5  on_startup failed         6  post_startup failed
  7  a shutdown stage failed (every unit still ran)
  130 stopped at once by a second SIGINT)";

// Seconds as a decimal number ("0.5", "30") -> milliseconds, strictly positive.
CLI::Option* add_seconds(CLI::App& cli, const std::string& flag, std::chrono::milliseconds& out,
                         const std::string& what) {
  auto* opt = cli.add_option_function<double>(
      flag,
      [&out, flag](double seconds) {
        if (!std::isfinite(seconds) || seconds <= 0 || seconds > 86'400)
          throw CLI::ValidationError(flag, "must be a number of seconds above 0 and at most 86400");
        out = std::chrono::milliseconds(static_cast<long long>(std::llround(seconds * 1000)));
        if (out.count() == 0) out = std::chrono::milliseconds(1);
      },
      what);
  opt->default_str(fmt::format("{}", static_cast<double>(out.count()) / 1000.0));
  return opt;
}

// An option whose value is checked and whose default --help shows.
template <class T, class Check>
void add_checked(CLI::App& cli, const std::string& flag, T& out, const std::string& what,
                 Check&& check) {
  cli.add_option(flag, out, what)->check(std::forward<Check>(check))->capture_default_str();
}

}  // namespace

namespace {

std::string check_pool_name(const std::string& v) {
  if (v.empty() || v.size() > 64) return "must be 1 to 64 characters";
  for (char c : v)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_')
      return "may only contain letters, digits, '-' and '_'";
  return {};
}

// The timeouts, all given in seconds.
struct seconds_option {
  const char* flag;
  std::chrono::milliseconds options::*field;
  const char* what;
};
constexpr seconds_option seconds_options[] = {
    {"--ready-timeout", &options::ready_timeout, "Seconds a new worker may take to become READY"},
    {"--heartbeat-timeout", &options::heartbeat_timeout,
     "Seconds without a heartbeat before a worker is killed"},
    {"--graceful-timeout", &options::graceful_timeout,
     "Seconds a draining worker may take before SIGKILL"},
    {"--restart-backoff-max", &options::restart_backoff_max,
     "Longest wait before restarting a worker that keeps failing to start"},
};

// Option values that are words on the command line and enums in `options`.
struct word_values {
  std::vector<std::string> binds;
  std::string reload_mode = "fork";
  std::string accept = "reuseport";
  std::string log_format = "text";
};

// What a script takes too: its configuration, its logs and its stage timeout.
void add_runtime_options(CLI::App& cli, options& opts, word_values& words) {
  add_seconds(cli, "--stage-timeout", opts.stage_timeout, "Seconds one unit may take in one stage");
  cli.add_option("-c,--config", opts.config, "TOML file: [systempp] for these options, a section per unit");
  cli.add_flag("--print-config", opts.print_config,
               "Print the configuration (file, command line, defaults) with each value's origin and exit");
  add_checked(cli, "--log-level", opts.log_level,
              "trace, debug, info, warn, error, critical or off",
              CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  cli.add_option("--log-file", opts.log_file, "Append logs to this file instead of stderr");
  add_checked(cli, "--log-format", words.log_format, "text or json (one object a line)",
              CLI::IsMember({"text", "json"}));
}

// What only a pool (or the inline process) takes: workers, listeners, supervision.
void add_pool_options(CLI::App& cli, options& opts, word_values& words) {
  add_checked(cli, "-w,--workers", opts.workers,
              "Worker processes; 0 runs every stage in one process", CLI::Range(0, max_pool_workers));
  add_checked(cli, "--threads", opts.threads,
              "Threads running each worker's loop (the stages stay on one strand)", CLI::Range(1, 256));
  cli.add_option("-b,--bind", words.binds,
                 "[NAME=]HOST:PORT to listen on (repeatable; default http=127.0.0.1:8080)");
  add_checked(cli, "--name", opts.name, "Pool name (control block and status look-ups)",
              check_pool_name);
  cli.add_option("--pidfile", opts.pidfile, "Write the master's pid here");
  add_checked(cli, "--reload-mode", words.reload_mode,
              "fork: reload re-forks the master image; exec: re-executes the binary",
              CLI::IsMember({"fork", "exec"}));
  add_checked(cli, "--accept", words.accept,
              "reuseport: a socket per worker slot; exclusive: one socket, one worker woken; "
              "shared: one socket, every worker woken",
              CLI::IsMember({"reuseport", "exclusive", "shared"}));
  add_checked(cli, "--reload-surge", opts.reload_surge,
              "New workers started at once during a reload", CLI::Range(1, 4096));
  for (const auto& s : seconds_options) add_seconds(cli, s.flag, opts.*s.field, s.what);
  add_checked(cli, "--max-requests", opts.max_requests,
              "Recycle a worker after this many requests (0: never)", CLI::NonNegativeNumber);
  add_checked(cli, "--max-requests-jitter", opts.max_requests_jitter,
              "Random extra requests per worker before recycling", CLI::NonNegativeNumber);
  cli.add_option("--metrics", opts.metrics, "HOST:PORT for the master's Prometheus endpoint");
  detail::add_process_options(cli, opts);
}

// The pool's own long options, without "--": what a script skips in a service's file.
std::vector<std::string> pool_keys() {
  CLI::App pool;
  options ignored;
  word_values words;
  add_pool_options(pool, ignored, words);
  std::vector<std::string> keys;
  for (const CLI::Option* o : pool.get_options())
    if (!o->get_lnames().empty()) keys.push_back(o->get_lnames().front());
  return keys;
}

// A script leaves unknown arguments to its body, but a pool option there is a mistake
// (`kvctl --workers 3 count`): the flag it names, or "" when there is none.
std::string pool_option_among(const std::vector<std::string>& args) {
  CLI::App pool;
  options ignored;
  word_values words;
  add_pool_options(pool, ignored, words);
  for (const auto& arg : args) {
    const auto flag = arg.substr(0, arg.find('='));
    for (const CLI::Option* o : pool.get_options()) {
      for (const auto& l : o->get_lnames())
        if (flag == "--" + l) return flag;
      for (const auto& sn : o->get_snames())
        if (flag == "-" + sn) return flag;
    }
  }
  return {};
}

// The control sub-commands, one row each, in --help order.
struct control_row {
  control_kind kind;
  const char* name;
  const char* what;
  const char* flag;  ///< the sub-command's own switch, or nullptr
  bool control_command::*flag_field;
  const char* flag_what;
  bool waits;  ///< takes --timeout
};
constexpr control_row control_rows[] = {
    {control_kind::status, "status", "Show the pool's master, workers and last reload", "--json",
     &control_command::json, "One JSON document instead of a table", false},
    {control_kind::reload, "reload", "Roll every worker to a new generation (SIGHUP)", "--wait",
     &control_command::wait, "Wait for the rollout; exit 0 only if it succeeded", true},
    {control_kind::stop, "stop", "Drain and stop the pool (SIGTERM)", "--fast",
     &control_command::fast, "Fast stop (SIGINT): do not wait for requests", true},
    {control_kind::scale, "scale", "Set the number of workers", nullptr, nullptr, nullptr, true},
};

// Adds the control sub-commands; they find a running pool by --name or --pidfile. Returns
// them in control_rows order.
std::vector<CLI::App*> add_control_commands(CLI::App& cli, control_command& ctl) {
  std::vector<CLI::App*> subs;
  for (const auto& row : control_rows) {
    CLI::App* sub = cli.add_subcommand(row.name, row.what);
    auto* name = sub->add_option("--name", ctl.name, "Pool name (default: app)");
    name->excludes(sub->add_option("--pidfile", ctl.pidfile, "The master's pidfile"));
    if (row.flag) sub->add_flag(row.flag, ctl.*row.flag_field, row.flag_what);
    if (row.kind == control_kind::scale)
      sub->add_option("workers", ctl.workers, "Worker count")->required()->check(CLI::Range(1, max_pool_workers));
    if (row.waits) add_seconds(*sub, "--timeout", ctl.timeout, "Seconds to wait at most");
    subs.push_back(sub);
  }
  return subs;
}

// The serve options from their words; throws CLI::ValidationError for a bad --bind.
void finish_serve_options(options& opts, const word_values& words) {
  for (const auto& b : words.binds) {
    auto parsed = parse_bind(b);
    if (auto* err = std::get_if<std::string>(&parsed))
      throw CLI::ValidationError("--bind", fmt::format("'{}': {}", b, *err));
    opts.binds.push_back(std::get<bind_spec>(parsed));
  }
  if (opts.binds.empty()) opts.binds.push_back(bind_spec{"http", "127.0.0.1", 8080});
  opts.mode = words.reload_mode == "exec" ? reload_mode::exec : reload_mode::fork;
  opts.format = words.log_format == "json" ? log_format::json : log_format::text;
  for (auto s : {accept_strategy::reuseport, accept_strategy::exclusive, accept_strategy::shared})
    if (words.accept == to_string(s)) opts.accept = s;
}

}  // namespace

std::string_view to_string(accept_strategy s) noexcept {
  switch (s) {
    case accept_strategy::reuseport: return "reuseport";
    case accept_strategy::exclusive: return "exclusive";
    case accept_strategy::shared: return "shared";
  }
  return "?";
}

command parse_command_line(int argc, const char* const* argv, parse_mode mode, const about& info,
                           std::span<const option_spec> unit_options) {
  options opts;
  opts.program = argc > 0 ? argv[0] : "app";
  opts.argv.assign(argv, argv + argc);
  opts.workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  const bool script = mode == parse_mode::script;
  std::string description(info.description);
  if (description.empty())
    description = script ? "A script on systempp units: on_init, startup, the script, shutdown, on_exit."
                         : "A systempp service: a master process and a pool of worker processes.";
  const std::string name = info.name.empty() ? std::filesystem::path(opts.program).filename().string()
                                             : std::string(info.name);
  CLI::App cli{description, name};
  cli.footer(script ? "Arguments that are not options above are passed to the script (ctx.opts().args).\n" +
                          std::string(exit_codes_text)
                    : std::string(exit_codes_text));
  cli.get_formatter()->column_width(34);
  if (!info.version.empty()) cli.set_version_flag("--version", name + " " + std::string(info.version));
  word_values words;
  add_runtime_options(cli, opts, words);
  if (!script) add_pool_options(cli, opts, words);
  if (script) cli.allow_extras(true);
  control_command ctl;
  ctl.program = opts.program;
  const auto subs = mode == parse_mode::serve ? add_control_commands(cli, ctl)
                                              : std::vector<CLI::App*>{};
  if (mode == parse_mode::serve)
    cli.add_flag("--upgrade-version", opts.upgrade_version,
                 "Check the other options and the log file, print the protocol version and exit");

  try {
    detail::add_unit_options(cli, unit_options);
    cli.parse(argc, argv);
    if (script) {
      opts.args = cli.remaining();
      if (const auto flag = pool_option_among(opts.args); !flag.empty())
        throw CLI::ValidationError(flag, "a pool option; a script does not take it");
    }
    detail::file_keys from_file;
    if (!opts.config.empty()) {
      opts.file = std::make_shared<const config_document>(read_config_file(opts.config));
      check_runtime_section(*opts.file);  // every key, also those the command line overrides
      from_file = detail::apply_runtime_table(cli, *opts.file, script ? pool_keys() : std::vector<std::string>{});
    }
    finish_serve_options(opts, words);
    if (opts.print_config) opts.settings = detail::setting_rows(cli, opts, opts.config, from_file);
    for (std::size_t i = 0; i < subs.size(); ++i) {
      if (!subs[i]->parsed()) continue;
      ctl.kind = control_rows[i].kind;
      if (ctl.name.empty() && ctl.pidfile.empty()) ctl.name = "app";
      return ctl;
    }
    if (!script && !opts.print_config) {
      if (auto problem = run_as_problem(opts); !problem.empty()) throw config_error(problem);
      if (opts.reload_on_change && opts.workers == 0)
        throw config_error("--reload-on-change: needs a pool (--workers 1 or more); one process cannot replace itself");
    }
  } catch (const CLI::CallForHelp&) {
    std::cout << cli.help();
    return exit_now{0};
  } catch (const CLI::CallForVersion&) {
    std::cout << name << " " << info.version << "\n";
    return exit_now{0};
  } catch (const CLI::ParseError& e) {
    std::string message = e.what();
    std::replace(message.begin(), message.end(), '\n', ' ');
    std::cerr << opts.program << ": error: " << message << "\n";
    return exit_now{2};
  } catch (const config_error& e) {
    std::cerr << opts.program << ": error: " << e.what() << "\n";
    return exit_now{2};
  }
  return serve_command{std::move(opts)};
}

void check_runtime_section(const config_document& doc) {
  CLI::App cli;
  options scratch;
  word_values words;
  add_runtime_options(cli, scratch, words);
  add_pool_options(cli, scratch, words);
  detail::apply_runtime_table(cli, doc, {});
}

}  // namespace systempp
