#pragma once
/// A small `key = value` configuration format for units: one pair per line, `#` starts a
/// comment line, blank lines are ignored, whitespace around key and value is trimmed, a
/// UTF-8 byte order mark at the start is skipped.
/// For units to call from any stage (typically on_init and on_reload), in any process.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace systempp {

/// One `key = value` line, in file order.
struct config_entry {
  /// The text before the first '=', trimmed; never empty.
  std::string key;
  /// The text after the first '=', trimmed; may be empty or contain '='.
  std::string value;
  std::size_t line = 0;  ///< 1-based, for error messages
};

/// The largest configuration file read_config_file accepts (1 MiB).
inline constexpr std::size_t max_config_bytes = std::size_t{1} << 20;

/// Parses text; throws config_error "FILE:LINE: message" for a line without '=' or with an
/// empty key, or a key given twice. `origin` names the file in messages.
std::vector<config_entry> parse_config(std::string_view text, std::string_view origin);

/// Reads and parses a file. Throws config_error naming the file for one that cannot be
/// opened or read, is not a regular file (a directory, FIFO or device is refused without
/// reading from it), or is larger than max_config_bytes; parse errors as parse_config.
std::vector<config_entry> read_config_file(const std::string& path);

}  // namespace systempp
