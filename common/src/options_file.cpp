// The [systempp] table of a configuration file as command-line options: one key per long
// option, the value checked by the option itself, the command line winning.

#include "options_file.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <string_view>

#include "systempp/errors.hpp"

namespace systempp::detail {

namespace {

// Options about the command line itself, not the service, and the units' own options: a
// file does not set them.
bool file_settable(const CLI::Option& o) {
  if (o.get_group().starts_with(unit_group(""))) return false;
  static constexpr std::array<std::string_view, 5> not_in_file{"help", "version", "config", "print-config",
                                                               "upgrade-version"};
  const auto& names = o.get_lnames();
  return !names.empty() && std::find(not_in_file.begin(), not_in_file.end(), names.front()) == not_in_file.end();
}

std::vector<const CLI::Option*> settable(const CLI::App& cli) {
  std::vector<const CLI::Option*> out;
  for (const CLI::Option* o : cli.get_options())
    if (file_settable(*o)) out.push_back(o);
  return out;
}

enum class option_type { boolean, integer, number, text, texts };

// From what the parser knows of the option: its value type and how many values it takes.
option_type type_of(const CLI::Option& o) {
  if (o.get_expected_min() == 0) return option_type::boolean;  // a flag: no value
  if (o.get_items_expected_max() > 1) return option_type::texts;
  const auto type = o.get_type_name();
  const auto base = std::string_view(type).substr(0, type.find(':'));
  if (base == "INT" || base == "UINT") return option_type::integer;
  if (base == "FLOAT") return option_type::number;
  return option_type::text;
}

// The entry as the words the option parses from a command line.
std::vector<std::string> words_of(const CLI::Option& o, const config_document::entry& e, const std::string& where) {
  const auto wrong = [&](std::string_view want) {
    return config_error(fmt::format("{}: expected {}, got {}", where, want, e.type));
  };
  const auto& v = e.value;
  switch (type_of(o)) {
    case option_type::boolean:
      if (const auto* b = std::get_if<bool>(&v); b && e.supported) return {*b ? "true" : "false"};
      throw wrong("true or false");
    case option_type::integer:
      if (const auto* i = std::get_if<std::int64_t>(&v); i && e.supported) return {std::to_string(*i)};
      throw wrong("an integer");
    case option_type::number:
      if (const auto* i = std::get_if<std::int64_t>(&v); i && e.supported) return {std::to_string(*i)};
      if (const auto* d = std::get_if<double>(&v); d && e.supported) return {fmt::format("{}", *d)};
      throw wrong("a number");
    case option_type::text:
      if (const auto* s = std::get_if<std::string>(&v); s && e.supported) return {*s};
      throw wrong("a string");
    case option_type::texts:
      if (const auto* s = std::get_if<std::string>(&v); s && e.supported) return {*s};
      if (const auto* a = std::get_if<std::vector<std::string>>(&v); a && e.supported) return *a;
      throw wrong("a string or an array of strings");
  }
  return {};
}

// "--workers: Value 99 not in range 0 to 2048" -> "Value 99 not in range 0 to 2048".
std::string without_flag(std::string message, const CLI::Option& o) {
  for (const auto& prefix : {"--" + o.get_lnames().front() + ": ", o.get_name() + ": "})
    if (message.starts_with(prefix)) return message.substr(prefix.size());
  return message;
}

// --bind's values are parsed after the parser ran; a bad one from the file is named here.
void check_binds(const std::vector<std::string>& words, const std::string& where) {
  for (const auto& w : words) {
    const auto parsed = parse_bind(w);
    if (const auto* err = std::get_if<std::string>(&parsed))
      throw config_error(fmt::format("{}: '{}': {}", where, w, *err));
  }
}

}  // namespace

file_keys apply_runtime_table(CLI::App& cli, const config_document& doc, const std::vector<std::string>& skipped) {
  file_keys taken;
  const auto* table = doc.find("systempp");
  if (!table) return taken;
  for (const auto& e : table->entries) {
    const auto where = fmt::format("{}:{}:systempp.{}", doc.path, e.line, e.key);
    CLI::Option* o = nullptr;
    for (CLI::Option* candidate : cli.get_options())
      if (file_settable(*candidate) && candidate->get_lnames().front() == e.key) o = candidate;
    if (!o) {
      if (std::find(skipped.begin(), skipped.end(), e.key) != skipped.end()) continue;
      std::string keys;
      for (const auto* s : settable(cli)) keys += (keys.empty() ? "" : ", ") + s->get_lnames().front();
      throw config_error(fmt::format("{}: unknown key (runtime options: {})", where, keys));
    }
    const auto words = words_of(*o, e, where);
    if (e.key == "bind") check_binds(words, where);
    if (o->count() > 0) continue;  // the command line wins
    for (const auto& w : words) o->add_result(w);
    try {
      o->run_callback();
    } catch (const CLI::ParseError& err) {
      throw config_error(fmt::format("{}: {}", where, without_flag(err.what(), *o)));
    }
    taken.emplace(e.key, e.line);
  }
  return taken;
}

std::vector<setting_row> setting_rows(const CLI::App& cli, const options& opts, const std::string& path,
                                      const file_keys& from_file) {
  std::vector<setting_row> rows;
  for (const CLI::Option* o : settable(cli)) {
    setting_row row;
    row.key = o->get_lnames().front();
    row.help = o->get_description();
    if (const auto f = from_file.find(row.key); f != from_file.end())
      row.origin = fmt::format("{}:{}", path, f->second);
    else
      row.origin = o->count() > 0 ? "command line" : "default";
    const auto& results = o->results();
    const std::string text = results.empty() ? o->get_default_str() : results.back();
    switch (type_of(*o)) {
      case option_type::boolean: row.value = !results.empty() && CLI::detail::to_flag_value(results.back()) > 0 ? "true" : "false"; break;
      case option_type::integer:
      case option_type::number: row.value = text; break;
      case option_type::text: row.value = to_toml(text); break;
      case option_type::texts: {
        std::vector<std::string> items = results;
        if (row.key == "bind") {
          items.clear();
          for (const auto& b : opts.binds)
            items.push_back(b.host.find(':') == std::string::npos ? fmt::format("{}={}:{}", b.name, b.host, b.port)
                                                                  : fmt::format("{}=[{}]:{}", b.name, b.host, b.port));
        }
        row.value = to_toml(items);
        break;
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace systempp::detail
