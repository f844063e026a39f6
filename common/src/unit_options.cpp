// The options units add (command_line.hpp) as CLI11 options: typed by their kind, checked
// against their range, stored in the unit through the option's setter.

#include <fmt/format.h>

#include <cmath>
#include <cstdint>

#include "options_file.hpp"
#include "systempp/errors.hpp"
#include "systempp/command_line.hpp"

namespace systempp::detail {

namespace {

// Stores the value once it is inside the option's range; otherwise the parser reports
// "--flag: <why>" and the command exits 2.
void store(const option_spec& o, const config_value& v) {
  if (const auto problem = range_problem(o.spec, v); !problem.empty()) throw CLI::ValidationError(o.flag, problem);
  o.set(v);
}

// The option as CLI11's, typed by its kind.
CLI::Option* add_typed(CLI::App& cli, const option_spec& o) {
  CLI::Option* added = nullptr;
  switch (o.spec.kind) {
      case value_kind::boolean:
        added = cli.add_flag_function(o.flag, [&o](std::int64_t) { store(o, true); }, o.help);
        break;
      case value_kind::integer:
        added = cli.add_option_function<std::int64_t>(o.flag, [&o](std::int64_t v) { store(o, v); }, o.help);
        break;
      case value_kind::number:
      case value_kind::seconds:
        added = cli.add_option_function<double>(o.flag, [&o](double v) { store(o, v); }, o.help);
        break;
      case value_kind::string:
        added = cli.add_option_function<std::string>(o.flag, [&o](const std::string& v) { store(o, v); }, o.help);
        break;
      case value_kind::strings:
        added = cli.add_option_function<std::vector<std::string>>(
            o.flag, [&o](const std::vector<std::string>& v) { store(o, v); }, o.help);
        break;
    }
  return added;
}

}  // namespace

void add_unit_options(CLI::App& cli, std::span<const option_spec> options) {
  for (const option_spec& o : options) {
    CLI::Option* added = nullptr;
    try {
      added = add_typed(cli, o);
    } catch (const CLI::ConstructionError& e) {  // a clash, or a malformed flag
      throw config_error(fmt::format("unit {} adds the option '{}': {}", o.unit, o.flag, e.what()));
    }
    added->group(unit_group(o.unit));
    if (o.spec.kind == value_kind::strings) added->allow_extra_args(false);  // one value per --flag
    if (o.spec.kind != value_kind::boolean) added->default_str(to_toml(o.spec.fallback));
  }
}

std::string unit_group(std::string_view unit) { return fmt::format("Options of unit {}", unit); }

}  // namespace systempp::detail
