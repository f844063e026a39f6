#pragma once
/// Configuration: one TOML file (`--config FILE`) for the runtime and the units. The
/// runtime's options may come from its `[systempp]` section (the command line wins); each
/// unit that wants settings declares a section of typed keys with defaults and ranges:
///
///   struct database {
///     struct settings {
///       std::string path = "kv.db";
///       int pool_size = 4;
///       std::chrono::milliseconds timeout{500};
///     };
///     static constexpr auto config_section = systempp::section("database",
///         systempp::key("path", &settings::path, "SQLite file"),
///         systempp::key("pool-size", &settings::pool_size, "Connections").range(1, 64),
///         systempp::key("timeout", &settings::timeout, "Seconds a query may take"));
///     void on_init(systempp::context& ctx) { s_ = ctx.config(*this); }
///     settings s_;
///   };
///
/// The runtime checks the whole file against every section before on_init (and again
/// inside each reload transaction), so ctx.config(*this) only ever returns valid values:
/// an unknown key, a wrong type or a value out of range is one error line naming
/// `FILE:LINE:section.key`, exit code 2 at start, a refused reload later.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace systempp {

/// The largest configuration file the runtime reads (1 MiB).
inline constexpr std::size_t max_config_bytes = std::size_t{1} << 20;

/// A value as a key holds it: boolean, integer, floating-point number, string, or an array
/// of strings. A duration is a number of seconds (integer or float).
using config_value = std::variant<bool, std::int64_t, double, std::string, std::vector<std::string>>;

/// What a key's C++ type takes from the file.
enum class value_kind { boolean, integer, number, seconds, string, strings };

/// One key of a section without its C++ type: what the runtime checks and prints.
struct key_spec {
  std::string_view name;
  std::string_view help;
  value_kind kind = value_kind::string;
  std::int64_t int_min = std::numeric_limits<std::int64_t>::min();  ///< integer only
  std::int64_t int_max = std::numeric_limits<std::int64_t>::max();  ///< integer only
  double min = -std::numeric_limits<double>::infinity();  ///< number and seconds
  double max = std::numeric_limits<double>::infinity();   ///< number and seconds
  config_value fallback;  ///< the default: the settings struct's initial value
};

/// A section a unit declares: its name (the TOML table) and keys.
struct section_spec {
  std::string_view name;
  std::vector<key_spec> keys;
  std::string unit;  ///< the unit that declares it, for messages
};

/// The file as read: its top-level tables and their keys, each with its line. Checked
/// against the sections by check_sections; read-only once made. Any process.
struct config_document {
  /// One key as the file gives it. `supported` is false for a value no key can hold (a
  /// table, a date, an array of numbers): `type` still names it for the error.
  struct entry {
    std::string key;
    config_value value;
    std::string type;  ///< "integer", "string", "table", ...
    std::size_t line = 0;
    bool supported = true;
  };
  struct table {
    std::string name;
    std::size_t line = 0;  ///< of the [header]
    std::vector<entry> entries;
  };

  std::string path;            ///< for messages
  std::vector<entry> top;      ///< keys outside any table (always an error)
  std::vector<table> tables;   ///< in file order

  /// The table with this name, or nullptr.
  const table* find(std::string_view name) const noexcept;
  /// A key of a table, or nullptr.
  const entry* find(std::string_view table, std::string_view key) const noexcept;
};

/// Parses TOML text; throws config_error "ORIGIN:LINE: message" for a syntax error.
/// `origin` names the file in messages. Any process.
config_document parse_config(std::string_view text, std::string origin);

/// Reads and parses a file. Throws config_error naming the file for one that cannot be
/// opened or read, is not a regular file (a directory, FIFO or device is refused without
/// reading from it), or is larger than max_config_bytes; syntax errors as parse_config.
config_document read_config_file(const std::string& path);

/// Whether a table of the file that no section declares is an error.
enum class unknown_tables {
  refused,  ///< the service: a typo in a section name is caught
  ignored,  ///< a script, which often runs a few of the service's units on its file
};

/// Checks the file against the units' sections (and that no two units declare one
/// section): throws config_error for the first problem, "FILE:LINE:section.key: ...".
/// The `[systempp]` table is left to the command-line parser. Any process.
void check_sections(const config_document& doc, std::span<const section_spec> sections,
                    unknown_tables unknown);

/// The value as TOML writes it (`"text"`, `30`, `["a", "b"]`). Any process.
std::string to_toml(const config_value& v);

namespace detail {

template <class T>
struct is_duration : std::false_type {};
template <class R, class P>
struct is_duration<std::chrono::duration<R, P>> : std::true_type {};

/// The kind of a settings member of type T, or a compile error for a type a key cannot
/// hold. Compile time only.
template <class T>
consteval value_kind kind_of() {
  if constexpr (std::is_same_v<T, bool>)
    return value_kind::boolean;
  else if constexpr (std::is_integral_v<T>)
    return value_kind::integer;
  else if constexpr (std::is_floating_point_v<T>)
    return value_kind::number;
  else if constexpr (is_duration<T>::value)
    return value_kind::seconds;
  else if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, std::filesystem::path>)
    return value_kind::string;
  else if constexpr (std::is_same_v<T, std::vector<std::string>>)
    return value_kind::strings;
  else
    static_assert(sizeof(T) == 0,
                  "systempp: a config key holds bool, an integer, a floating-point number, a "
                  "std::chrono::duration, std::string, std::filesystem::path or "
                  "std::vector<std::string>");
}

/// A checked value into a settings member. Any process.
template <class T>
void assign(T& out, const config_value& v) {
  if constexpr (std::is_same_v<T, bool>) {
    out = std::get<bool>(v);
  } else if constexpr (std::is_integral_v<T>) {
    out = static_cast<T>(std::get<std::int64_t>(v));
  } else if constexpr (std::is_floating_point_v<T> || is_duration<T>::value) {
    const double d = std::holds_alternative<double>(v) ? std::get<double>(v)
                                                       : static_cast<double>(std::get<std::int64_t>(v));
    if constexpr (is_duration<T>::value)
      out = std::chrono::round<T>(std::chrono::duration<double>(d));
    else
      out = static_cast<T>(d);
  } else if constexpr (std::is_same_v<T, std::filesystem::path>) {
    out = std::get<std::string>(v);
  } else {
    out = std::get<T>(v);
  }
}

/// A settings member's value as a config_value (the default --print-config shows).
template <class T>
config_value to_value(const T& v) {
  if constexpr (std::is_same_v<T, bool>)
    return v;
  else if constexpr (std::is_integral_v<T>)
    return static_cast<std::int64_t>(v);
  else if constexpr (std::is_floating_point_v<T>)
    return static_cast<double>(v);
  else if constexpr (is_duration<T>::value)
    return std::chrono::duration<double>(v).count();
  else if constexpr (std::is_same_v<T, std::filesystem::path>)
    return v.string();
  else
    return v;
}

/// Why a value of the key's kind is outside its range ("99 is out of range (1 to 64)"), or
/// "" when it is inside. Any process.
std::string range_problem(const key_spec& k, const config_value& v);

/// The key with this name in a checked document, or nullptr. Any process.
const config_value* configured(const config_document* doc, std::string_view section, std::string_view key) noexcept;

}  // namespace detail

namespace detail {
/// Whether keys of type T take a range. Compile time only.
template <class T>
constexpr bool rangeable = kind_of<T>() == value_kind::integer || kind_of<T>() == value_kind::number ||
                           kind_of<T>() == value_kind::seconds;
/// The type range() bounds are given in (a placeholder for types without a range, so that
/// a key_def stays a literal type). Compile time only.
template <class T>
using bound_t = std::conditional_t<rangeable<T>, T, char>;

/// The kind and range of a value of type T (its own limits, narrowed to [lo, hi] when
/// `ranged`), with `value` as the default. Any process.
template <class T>
key_spec spec_of(const T& value, bool ranged, bound_t<T> lo, bound_t<T> hi) {
  key_spec k;
  k.kind = kind_of<T>();
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    using lim = std::numeric_limits<T>;
    constexpr auto i64 = std::numeric_limits<std::int64_t>::max();
    k.int_min = std::is_signed_v<T> ? static_cast<std::int64_t>(lim::min()) : 0;
    k.int_max = static_cast<std::uint64_t>(lim::max()) > static_cast<std::uint64_t>(i64)
                    ? i64
                    : static_cast<std::int64_t>(lim::max());
    if (ranged) {
      k.int_min = std::max<std::int64_t>(k.int_min, static_cast<std::int64_t>(lo));
      k.int_max = std::min<std::int64_t>(k.int_max, static_cast<std::int64_t>(hi));
    }
  } else if constexpr (is_duration<T>::value) {
    k.min = ranged ? std::chrono::duration<double>(lo).count() : 0.0;
    k.max = ranged ? std::chrono::duration<double>(hi).count() : std::chrono::duration<double>(T::max()).count();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (ranged) {
      k.min = static_cast<double>(lo);
      k.max = static_cast<double>(hi);
    }
  }
  k.fallback = to_value(value);
  return k;
}
}  // namespace detail

/// A key of settings struct S held in member `member` (made by systempp::key).
template <class S, class T>
struct key_def {
  std::string_view name;
  T S::*member;
  std::string_view help;
  bool ranged = false;
  detail::bound_t<T> lo{}, hi{};

  /// Values outside [lo, hi] are refused (integers, numbers, durations). Compile time.
  constexpr key_def range(T low, T high) const
    requires detail::rangeable<T>
  {
    key_def k = *this;
    k.ranged = true;
    k.lo = low;
    k.hi = high;
    return k;
  }

  /// The key without its type, the default taken from `defaults`. Any process.
  key_spec spec(const S& defaults) const {
    key_spec k = detail::spec_of<T>(defaults.*member, ranged, lo, hi);
    k.name = name;
    k.help = help;
    return k;
  }
};

/// A key named `name` (as written in the file) for `member` of the settings struct, with
/// a line of help for --print-config. Compile time.
template <class S, class T>
constexpr key_def<S, T> key(std::string_view name, T S::*member, std::string_view help = {}) {
  (void)detail::kind_of<T>();
  return key_def<S, T>{name, member, help};
}

/// A unit's section: `static constexpr auto config_section = systempp::section(...)`.
template <class S, class... Ts>
struct section_def {
  using settings_type = S;
  std::string_view name;
  std::tuple<key_def<S, Ts>...> keys;

  /// The section without its types, for the runtime's checks. Any process.
  section_spec spec() const {
    // Checked here, not in section(): a settings struct nested in the unit is complete (its
    // member initialisers usable) only once the unit is.
    static_assert(std::is_default_constructible_v<S>,
                  "systempp: a config section's settings struct must be default-constructible");
    const S defaults{};
    section_spec s;
    s.name = name;
    std::apply([&](const auto&... k) { (s.keys.push_back(k.spec(defaults)), ...); }, keys);
    return s;
  }

  /// The settings: each key from the checked document, else its default. Any process.
  S read(const config_document* doc) const {
    S out{};
    std::apply([&](const auto&... k) { (read_key(doc, k, out), ...); }, keys);
    return out;
  }

 private:
  template <class T>
  void read_key(const config_document* doc, const key_def<S, T>& k, S& out) const {
    if (const config_value* v = detail::configured(doc, name, k.name)) detail::assign(out.*k.member, *v);
  }
};

/// Declares a section named `name` with these keys, all of one settings struct (which must
/// be default-constructible: its initial values are the defaults; it may be nested in the
/// unit). Compile time.
template <class S, class... Ts>
constexpr section_def<S, Ts...> section(std::string_view name, key_def<S, Ts>... keys) {
  static_assert(sizeof...(Ts) > 0, "systempp: a config section needs at least one key");
  return section_def<S, Ts...>{name, std::tuple<key_def<S, Ts>...>(keys...)};
}

namespace detail {
/// The section U declares, if any: `static constexpr auto config_section = section(...)`.
template <class U>
concept has_config_section = requires { U::config_section.spec(); };
}  // namespace detail

}  // namespace systempp
