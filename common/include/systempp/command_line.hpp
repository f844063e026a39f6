#pragma once
/// Options a unit adds to the app's command line (CLI11 parses them with the runtime's):
///
///   struct kv_store {
///     std::string db = "kv.db";
///     bool verbose = false;
///     int shards = 4;
///     void add_options(systempp::command_line& cli) {
///       cli.add("--db", db, "SQLite file");
///       cli.add("--verbose", verbose, "Log every query");     // a bool is a flag
///       cli.add("--shards", shards, "Shards").range(1, 64);
///     }
///   };
///
/// add_options runs once per process image, before the command line is parsed; the values
/// land in the unit's members, so every stage (and every forked worker) sees them. --help
/// lists them under the unit's name. A bad value is one line naming the option, exit 2.

#include <functional>
#include <string>
#include <vector>

#include "systempp/config.hpp"

namespace systempp {

/// One option a unit added, without its C++ type.
struct option_spec {
  std::string flag;  ///< "--db" (or "-d,--db")
  std::string help;
  std::string unit;  ///< the unit that added it: --help's group
  key_spec spec;     ///< kind, range and default (its name and help are unused)
  std::function<void(const config_value&)> set;  ///< stores a checked value in the member
};

/// What a unit's add_options receives. Launching process (and an exec'd image).
class command_line {
 public:
  /// The option just added, to narrow its range.
  template <class T>
  class added {
   public:
    added(option_spec& o, T& out) : o_(o), out_(out) {}
    /// Values outside [lo, hi] are refused (integers, numbers, durations).
    added& range(T lo, T hi)
      requires detail::rangeable<T>
    {
      o_.spec = detail::spec_of<T>(out_, true, lo, hi);
      return *this;
    }

   private:
    option_spec& o_;
    T& out_;
  };

  /// Adds `flag` for `out`, whose current value is the default: a flag for bool, one value
  /// for a number, duration (in seconds) or string, repeatable for std::vector<std::string>.
  template <class T>
  added<T> add(std::string flag, T& out, std::string help) {
    options_.push_back(option_spec{std::move(flag), std::move(help), unit_, detail::spec_of<T>(out, false, {}, {}),
                                   [&out](const config_value& v) { detail::assign(out, v); }});
    return added<T>(options_.back(), out);
  }

  /// Every option added so far. Runtime only.
  std::vector<option_spec>& options() noexcept { return options_; }
  /// The unit whose add_options runs next. Runtime only.
  void set_unit(std::string unit) { unit_ = std::move(unit); }

 private:
  std::vector<option_spec> options_;
  std::string unit_;
};

namespace detail {
/// U adds options: `void add_options(systempp::command_line&)`.
template <class U>
concept adds_options = requires(U& u, command_line& cli) { u.add_options(cli); };
}  // namespace detail

}  // namespace systempp
