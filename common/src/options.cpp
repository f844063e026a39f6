#include "systempp/options.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <iostream>
#include <thread>

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
  1  runtime failure; in a pool: workers had to be killed or failed a shutdown stage
  2  usage or configuration error (a master never respawns it in a loop)
  3  on_init failed            4  pre_startup failed
  5  on_startup failed         6  post_startup failed
  7  a shutdown stage failed (every unit still ran)
  130 stopped at once by a second SIGINT)";

// Seconds as a decimal number ("0.5", "30") -> milliseconds, strictly positive.
CLI::Option* add_seconds(CLI::App& cli, const std::string& flag, std::chrono::milliseconds& out,
                         const std::string& what) {  // NOLINT: also used for sub-commands
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

}  // namespace

command parse_command_line(int argc, const char* const* argv, parse_mode mode) {
  options opts;
  opts.program = argc > 0 ? argv[0] : "app";
  opts.argv.assign(argv, argv + argc);
  opts.workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  CLI::App cli{"A systempp service: a master process and a pool of worker processes."};
  cli.footer(exit_codes_text);
  cli.get_formatter()->column_width(34);

  cli.add_option("-w,--workers", opts.workers, "Worker processes; 0 runs every stage in one process")
      ->check(CLI::Range(0, 2048))
      ->capture_default_str();
  std::vector<std::string> binds;
  cli.add_option("-b,--bind", binds, "[NAME=]HOST:PORT to listen on (repeatable; default http=127.0.0.1:8080)");
  cli.add_option("--name", opts.name, "Pool name (control block and status look-ups)")
      ->check([](const std::string& v) -> std::string {
        if (v.empty() || v.size() > 64) return "must be 1 to 64 characters";
        for (char c : v)
          if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_')
            return "may only contain letters, digits, '-' and '_'";
        return {};
      })
      ->capture_default_str();
  cli.add_option("--pidfile", opts.pidfile, "Write the master's pid here");
  std::string reload_mode_text = "fork";
  cli.add_option("--reload-mode", reload_mode_text, "fork: reload re-forks the master image; exec: re-executes the binary")
      ->check(CLI::IsMember({"fork", "exec"}))
      ->capture_default_str();
  cli.add_option("--reload-surge", opts.reload_surge, "New workers started at once during a reload")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  add_seconds(cli, "--ready-timeout", opts.ready_timeout, "Seconds a new worker may take to become READY");
  add_seconds(cli, "--heartbeat-timeout", opts.heartbeat_timeout, "Seconds without a heartbeat before a worker is killed");
  add_seconds(cli, "--graceful-timeout", opts.graceful_timeout, "Seconds a draining worker may take before SIGKILL");
  add_seconds(cli, "--stage-timeout", opts.stage_timeout, "Seconds one unit may take in one stage");
  add_seconds(cli, "--restart-backoff-max", opts.restart_backoff_max,
              "Longest wait before restarting a worker that keeps failing to start");
  cli.add_option("--max-requests", opts.max_requests, "Recycle a worker after this many requests (0: never)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cli.add_option("--max-requests-jitter", opts.max_requests_jitter, "Random extra requests per worker before recycling")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cli.add_option("-c,--config", opts.config, "Configuration file read by the app's units");
  cli.add_option("--log-level", opts.log_level, "trace, debug, info, warn, error, critical or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  cli.add_option("--log-file", opts.log_file, "Append logs to this file instead of stderr");
  std::string format = "text";
  cli.add_option("--log-format", format, "text or json (one object a line)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  cli.add_option("--metrics", opts.metrics, "HOST:PORT for the master's Prometheus endpoint");

  if (mode == parse_mode::script) cli.allow_extras(true);

  // Control sub-commands: they find a running pool by --name or --pidfile.
  control_command ctl;
  ctl.program = opts.program;
  auto add_selector = [&](CLI::App* sub) {
    auto* n = sub->add_option("--name", ctl.name, "Pool name (default: app)");
    auto* p = sub->add_option("--pidfile", ctl.pidfile, "The master's pidfile");
    n->excludes(p);
  };
  auto add_timeout = [&](CLI::App* sub) {
    add_seconds(*sub, "--timeout", ctl.timeout, "Seconds to wait at most");
  };
  CLI::App* status = nullptr;
  CLI::App* reload = nullptr;
  CLI::App* stop = nullptr;
  CLI::App* scale = nullptr;
  if (mode == parse_mode::serve) {
    status = cli.add_subcommand("status", "Show the pool's master, workers and last reload");
    add_selector(status);
    status->add_flag("--json", ctl.json, "One JSON document instead of a table");
    reload = cli.add_subcommand("reload", "Roll every worker to a new generation (SIGHUP)");
    add_selector(reload);
    reload->add_flag("--wait", ctl.wait, "Wait for the rollout; exit 0 only if it succeeded");
    add_timeout(reload);
    stop = cli.add_subcommand("stop", "Drain and stop the pool (SIGTERM)");
    add_selector(stop);
    stop->add_flag("--fast", ctl.fast, "Fast stop (SIGINT): do not wait for requests");
    add_timeout(stop);
    scale = cli.add_subcommand("scale", "Set the number of workers");
    add_selector(scale);
    scale->add_option("workers", ctl.workers, "Worker count")->required()->check(CLI::Range(1, 2048));
    add_timeout(scale);
  }

  try {
    cli.parse(argc, argv);
    if (mode == parse_mode::script) opts.args = cli.remaining();
    for (const auto& b : binds) {
      auto parsed = parse_bind(b);
      if (auto* err = std::get_if<std::string>(&parsed))
        throw CLI::ValidationError("--bind", fmt::format("'{}': {}", b, *err));
      opts.binds.push_back(std::get<bind_spec>(parsed));
    }
    if (opts.binds.empty()) opts.binds.push_back(bind_spec{"http", "127.0.0.1", 8080});
    if (status && (status->parsed() || reload->parsed() || stop->parsed() || scale->parsed())) {
      ctl.kind = status->parsed()   ? control_kind::status
                 : reload->parsed() ? control_kind::reload
                 : stop->parsed()   ? control_kind::stop
                                    : control_kind::scale;
      if (ctl.name.empty() && ctl.pidfile.empty()) ctl.name = "app";
      return ctl;
    }
    opts.mode = reload_mode_text == "exec" ? reload_mode::exec : reload_mode::fork;
    opts.format = format == "json" ? log_format::json : log_format::text;
  } catch (const CLI::CallForHelp&) {
    std::cout << cli.help();
    return exit_now{0};
  } catch (const CLI::ParseError& e) {
    std::string message = e.what();
    std::replace(message.begin(), message.end(), '\n', ' ');
    std::cerr << opts.program << ": error: " << message << "\n";
    return exit_now{2};
  }
  return serve_command{std::move(opts)};
}

}  // namespace systempp
