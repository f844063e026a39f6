#include "systempp/config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <algorithm>
#include <sstream>

// Compiled into this file alone: Debian's package also ships a shared libtomlplusplus, and
// linking it would make every program built on the installed (static) systempp need it too.
#define TOML_HEADER_ONLY 1
// toml++ 3.3 guards some of its parser's preconditions with assertions only, and malformed
// table headers such as `[[[1]]]` or a NUL after `[` break one (found by tests/fuzz; fixed
// upstream after 3.3, marzer/tomlplusplus#301): an abort with assertions on, and with
// NDEBUG under clang an assumption that does not hold (undefined behaviour). Here each such
// check throws, in every build and with every compiler, and parse_config refuses the file. NDEBUG is dropped for toml++'s sake only: this
// file has no assert of its own, and no other file includes toml++.
#undef NDEBUG
// (A check inside one of toml++'s noexcept functions still ends the process, as the
// assertion would have; none of those has been seen to fail.)
namespace systempp::detail {
struct toml_check_failed {};
[[noreturn]] void fail_toml_check() { throw toml_check_failed{}; }
}  // namespace systempp::detail
#define TOML_ASSERT(expr) ((expr) ? static_cast<void>(0) : ::systempp::detail::fail_toml_check())
#include <toml++/toml.h>

#include "systempp/errors.hpp"
#include "systempp/fd.hpp"

#include "toml_guard.hpp"

namespace systempp {

namespace {

// What a path that is not a regular file is, for the error line.
const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "an unknown kind of file";
}

config_error too_large(const std::string& path) {
  return config_error(fmt::format("{}: larger than the 1 MiB limit", path));
}

// Reads to EOF, never more than max_config_bytes: the size fstat reported may be stale, and
// files in /proc report 0 whatever they hold.
std::string read_bounded(int fd, const std::string& path) {
  std::string text;
  char buf[16 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw config_error(fmt::format("{}: read error: {}", path, std::strerror(errno)));
    if (n == 0) return text;
    if (text.size() + static_cast<std::size_t>(n) > max_config_bytes) throw too_large(path);
    text.append(buf, static_cast<std::size_t>(n));
  }
}

// The name of a TOML node's type, for "expected ..., got ..." lines.
std::string type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::string: return "a string";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

// A key and its value as the runtime keeps them; a value no key can hold is kept by type.
config_document::entry to_entry(const toml::key& key, const toml::node& node) {
  config_document::entry e;
  e.key = std::string(key.str());
  e.type = type_name(node.type());
  e.line = key.source().begin.line ? key.source().begin.line : node.source().begin.line;
  if (const auto* b = node.as_boolean()) {
    e.value = b->get();
  } else if (const auto* i = node.as_integer()) {
    e.value = i->get();
  } else if (const auto* f = node.as_floating_point()) {
    e.value = f->get();
  } else if (const auto* s = node.as_string()) {
    e.value = s->get();
  } else if (const auto* a = node.as_array(); a && (a->empty() || a->is_homogeneous(toml::node_type::string))) {
    std::vector<std::string> items;
    for (const auto& item : *a) items.push_back(item.as_string()->get());
    e.value = std::move(items);
    e.type = "an array of strings";
  } else {
    e.supported = false;
  }
  return e;
}

std::string_view expected(value_kind k) {
  switch (k) {
    case value_kind::boolean: return "a boolean (true or false)";
    case value_kind::integer: return "an integer";
    case value_kind::number: return "a number";
    case value_kind::seconds: return "a number of seconds";
    case value_kind::string: return "a string";
    case value_kind::strings: return "an array of strings";
  }
  return "a value";
}

bool fits(value_kind k, const config_value& v) {
  switch (k) {
    case value_kind::boolean: return std::holds_alternative<bool>(v);
    case value_kind::integer: return std::holds_alternative<std::int64_t>(v);
    case value_kind::number:
    case value_kind::seconds:
      return std::holds_alternative<std::int64_t>(v) || std::holds_alternative<double>(v);
    case value_kind::string: return std::holds_alternative<std::string>(v);
    case value_kind::strings: return std::holds_alternative<std::vector<std::string>>(v);
  }
  return false;
}

// "a, b and c" of the names, for the lines that list what would have been accepted.
template <class Range, class Name>
std::string names_of(const Range& items, Name name) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + std::string(name(item));
  return out.empty() ? "none" : out;
}

void check_entry(const std::string& path, const section_spec& s, const config_document::entry& e) {
  const auto where = fmt::format("{}:{}:{}.{}", path, e.line, s.name, e.key);
  const auto k = std::find_if(s.keys.begin(), s.keys.end(), [&](const key_spec& k) { return k.name == e.key; });
  if (k == s.keys.end())
    throw config_error(fmt::format("{}: unknown key (the section has: {})", where,
                                   names_of(s.keys, [](const key_spec& k) { return k.name; })));
  if (!e.supported || !fits(k->kind, e.value))
    throw config_error(fmt::format("{}: expected {}, got {}", where, expected(k->kind), e.type));
  if (const auto problem = detail::range_problem(*k, e.value); !problem.empty())
    throw config_error(fmt::format("{}: {}", where, problem));
}

// Programming errors of the app itself, reported like bad configuration.
void check_declarations(std::span<const section_spec> sections) {
  for (std::size_t i = 0; i < sections.size(); ++i) {
    if (sections[i].name == "systempp")
      throw config_error(fmt::format("unit {} declares the config section [systempp], which is the runtime's",
                                     sections[i].unit));
    for (std::size_t j = i + 1; j < sections.size(); ++j)
      if (sections[i].name == sections[j].name)
        throw config_error(fmt::format("units {} and {} both declare the config section [{}]",
                                       sections[i].unit, sections[j].unit, sections[i].name));
  }
}

}  // namespace

const config_document::table* config_document::find(std::string_view name) const noexcept {
  for (const auto& t : tables)
    if (t.name == name) return &t;
  return nullptr;
}

const config_document::entry* config_document::find(std::string_view table, std::string_view key) const noexcept {
  const auto* t = find(table);
  if (!t) return nullptr;
  for (const auto& e : t->entries)
    if (e.key == key) return &e;
  return nullptr;
}

config_document parse_config(std::string_view text, std::string origin) {
  refuse_what_toml_cannot_read(text, origin);
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    throw config_error(fmt::format("{}:{}: {}", origin, e.source().begin.line, e.description()));
  } catch (const detail::toml_check_failed&) {
    throw config_error(fmt::format("{}: not valid TOML: the parser stopped at one of its own checks (a malformed "
                                   "table header or key?)",
                                   origin));
  }
  config_document doc;
  doc.path = std::move(origin);
  for (const auto& [key, node] : root) {
    const auto* t = node.as_table();
    if (!t) {
      doc.top.push_back(to_entry(key, node));
      continue;
    }
    config_document::table table{std::string(key.str()), key.source().begin.line, {}};
    for (const auto& [k, v] : *t) table.entries.push_back(to_entry(k, v));
    doc.tables.push_back(std::move(table));
  }
  // toml++ keeps keys sorted; errors and --print-config follow the file instead.
  const auto by_line = [](const auto& a, const auto& b) { return a.line < b.line; };
  std::stable_sort(doc.top.begin(), doc.top.end(), by_line);
  std::stable_sort(doc.tables.begin(), doc.tables.end(), by_line);
  for (auto& t : doc.tables) std::stable_sort(t.entries.begin(), t.entries.end(), by_line);
  return doc;
}

void check_sections(const config_document& doc, std::span<const section_spec> sections,
                    unknown_tables unknown) {
  check_declarations(sections);
  if (!doc.top.empty()) {
    const auto& e = doc.top.front();
    throw config_error(fmt::format("{}:{}:{}: a key outside any section (runtime options go under "
                                   "[systempp], a unit's under its own section)",
                                   doc.path, e.line, e.key));
  }
  for (const auto& table : doc.tables) {
    if (table.name == "systempp") continue;
    const auto s = std::find_if(sections.begin(), sections.end(),
                                [&](const section_spec& s) { return s.name == table.name; });
    if (s != sections.end()) {
      for (const auto& e : table.entries) check_entry(doc.path, *s, e);
    } else if (unknown == unknown_tables::refused) {
      throw config_error(fmt::format("{}:{}: [{}]: no unit of this app reads this section (sections: {})",
                                     doc.path, table.line, table.name,
                                     names_of(sections, [](const section_spec& s) { return s.name; })));
    }
  }
}

std::string to_toml(const config_value& v) {
  std::ostringstream out;
  std::visit(
      [&out](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        // Basic "..." strings, whatever they hold: the forms TOML readers know best.
        constexpr auto flags = toml::format_flags::allow_unicode_strings;
        if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          toml::array a;
          for (const auto& s : x) a.push_back(s);
          out << toml::toml_formatter(a, flags);
        } else {
          out << toml::toml_formatter(toml::value<T>(x), flags);
        }
      },
      v);
  return out.str();
}

namespace detail {

std::string range_problem(const key_spec& k, const config_value& v) {
  if (k.kind == value_kind::integer) {
    const auto i = std::get<std::int64_t>(v);
    if (i < k.int_min || i > k.int_max) return fmt::format("{} is out of range ({} to {})", i, k.int_min, k.int_max);
    return {};
  }
  if (k.kind != value_kind::number && k.kind != value_kind::seconds) return {};
  const double d = std::holds_alternative<double>(v) ? std::get<double>(v)
                                                     : static_cast<double>(std::get<std::int64_t>(v));
  if (!std::isfinite(d)) return "must be a finite number";
  const char* unit = k.kind == value_kind::seconds ? " seconds" : "";
  if (d < k.min && k.max >= 1e15) return fmt::format("{} is below the least value, {}{}", d, k.min, unit);
  if (d < k.min || d > k.max)
    return fmt::format("{} is out of range ({} to {}{})", d, k.min, k.max,
                       k.kind == value_kind::seconds ? " seconds" : "");
  return {};
}

const config_value* configured(const config_document* doc, std::string_view section,
                               std::string_view key) noexcept {
  const auto* e = doc ? doc->find(section, key) : nullptr;
  return e ? &e->value : nullptr;
}

}  // namespace detail

config_document read_config_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below like any
  // file that is not regular (a directory would read as empty, /dev/zero without end).
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd) throw config_error(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    throw config_error(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
  if (!S_ISREG(st.st_mode))
    throw config_error(fmt::format("{}: not a regular file ({})", path, kind_of(st.st_mode)));
  if (st.st_size > static_cast<off_t>(max_config_bytes)) throw too_large(path);
  return parse_config(read_bounded(fd.get(), path), path);
}

}  // namespace systempp
