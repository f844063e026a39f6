// The configuration file between the command line and the units (app_config.hpp).

#include "systempp/app_config.hpp"

#include <fmt/format.h>

#include <iostream>
#include <optional>

#include "systempp/errors.hpp"

namespace systempp::detail {

namespace {

// One `key = value  # origin` line, with the help above it.
void describe_key(std::string& out, std::string_view key, const std::string& value, std::string_view origin,
                  std::string_view help) {
  if (!help.empty()) out += fmt::format("# {}\n", help);
  out += fmt::format("{} = {}  # {}\n", key, value, origin);
}

}  // namespace

std::vector<section_spec> sections_of(const app_units& app) {
  std::vector<section_spec> out;
  for (const auto& u : app.units)
    if (u.config) out.push_back(*u.config);
  return out;
}

std::optional<int> install_config(const options& opts, app_units& app, unknown_tables unknown) {
  if (!app.metrics.error.empty()) {
    std::cerr << opts.program << ": error: " << app.metrics.error << "\n";
    return to_int(exit_code::usage);
  }
  try {
    const auto sections = sections_of(app);
    if (opts.file) check_sections(*opts.file, sections, unknown);
  } catch (const config_error& e) {
    std::cerr << opts.program << ": error: " << e.what() << "\n";
    return to_int(exit_code::usage);
  }
  app.config = opts.file;
  if (!opts.print_config) return std::nullopt;
  std::cout << describe_config(opts, app) << std::flush;
  return 0;
}

std::shared_ptr<const config_document> reread_config(const options& opts, const app_units& app) {
  auto doc = std::make_shared<const config_document>(read_config_file(opts.config));
  check_runtime_section(*doc);
  check_sections(*doc, sections_of(app), unknown_tables::refused);
  return doc;
}

std::string describe_config(const options& opts, const app_units& app) {
  std::string out = fmt::format("# The configuration this app runs with ({}); each value says where it came from.\n",
                                opts.config.empty() ? "no --config file" : opts.config);
  out += "\n[systempp]\n";
  for (const auto& row : opts.settings) describe_key(out, row.key, row.value, row.origin, row.help);
  for (const auto& s : sections_of(app)) {
    out += fmt::format("\n[{}]  # unit {}\n", s.name, s.unit);
    for (const auto& k : s.keys) {
      const auto* e = app.config ? app.config->find(s.name, k.name) : nullptr;
      describe_key(out, k.name, to_toml(e ? e->value : k.fallback),
                   e ? fmt::format("{}:{}", opts.config, e->line) : std::string("default"), k.help);
    }
  }
  return out;
}

}  // namespace systempp::detail
