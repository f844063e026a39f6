#include "process_options.hpp"

#include <sched.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "systempp/privileges.hpp"

namespace systempp {

std::vector<int> cpu_affinity_cpus(const std::string& spec) {
  std::vector<int> out;
  if (spec.empty()) return out;
  const long configured = ::sysconf(_SC_NPROCESSORS_CONF);
  const int count = configured > 0 ? static_cast<int>(std::min<long>(configured, CPU_SETSIZE)) : 1;
  if (spec == "auto") {
    cpu_set_t mine;
    CPU_ZERO(&mine);
    if (::sched_getaffinity(0, sizeof mine, &mine) == 0)
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &mine)) out.push_back(c);
    if (out.empty()) throw std::invalid_argument("no CPU to run on");
    return out;
  }
  const auto number = [&](std::string_view text) {
    int v = -1;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size() || v < 0)
      throw std::invalid_argument(fmt::format("'{}' is not a CPU number (auto, or a list such as 0,2-3)", text));
    if (v >= count)
      throw std::invalid_argument(fmt::format("CPU {} is out of range: this machine has CPUs 0-{}", v, count - 1));
    return v;
  };
  std::string_view rest = spec;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const auto item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    const auto dash = item.find('-');
    const int first = number(item.substr(0, dash));
    const int last = dash == std::string_view::npos ? first : number(item.substr(dash + 1));
    if (last < first) throw std::invalid_argument(fmt::format("'{}' is an empty range", item));
    for (int c = first; c <= last; ++c)
      if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
  }
  return out;
}

namespace detail {

namespace {

// A CLI11 check from a function that throws std::invalid_argument with its complaint.
template <class F>
auto refusing(F&& f) {
  return [f = std::forward<F>(f)](const std::string& value) -> std::string {
    try {
      f(value);
      return {};
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
  };
}

}  // namespace

void add_process_options(CLI::App& cli, options& opts) {
  auto* user = cli.add_option_function<std::string>(
      "--user",
      [&opts](const std::string& spec) {
        opts.user = spec;
        opts.run_as = spec.empty() ? std::nullopt : std::optional(resolve_user(spec));
      },
      "USER[:GROUP] the workers run as, when started as root (the master binds and makes the "
      "pool's files first)");
  user->check(refusing([](const std::string& spec) {
    if (!spec.empty()) resolve_user(spec);
  }));
  cli.add_flag("--allow-root", opts.allow_root, "Let workers run as root (started as root without --user)");
  cli.add_flag("--drop-master", opts.drop_master,
               "With --user: the master too runs as that user once it has bound the listeners");
  cli.add_option_function<double>(
         "--max-rss",
         [&opts](double mib) {
           if (!(mib == 0 || (mib >= 1 && mib <= 1024 * 1024)))
             throw CLI::ValidationError("--max-rss", "must be 0 (off) or a number of MiB from 1 to 1048576");
           opts.max_rss_bytes = static_cast<std::uint64_t>(mib * 1024 * 1024);
         },
         "Recycle a worker whose resident memory passes this many MiB, start-then-drain (0: never)")
      ->default_str("0");
  cli.add_flag("--reload-on-change", opts.reload_on_change,
               "Development: reload when the --config file changes, and run a rebuilt binary (exec mode: a "
               "reload; fork mode: a master upgrade)");
  cli.add_option("--cpu-affinity", opts.cpu_affinity,
                 "Pin each worker to one CPU: auto (one per CPU, in slot order) or a list such as 0,2-3")
      ->check(refusing(cpu_affinity_cpus));
}

}  // namespace detail

}  // namespace systempp
