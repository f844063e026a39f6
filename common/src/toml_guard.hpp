#pragma once
// A scan of configuration text before toml++ 3.3 parses it (toml_guard.cpp). Private to
// the library: config.cpp calls it.

#include <string>
#include <string_view>

namespace systempp {

/// Throws config_error ("ORIGIN:LINE: ...") for text that would make toml++ 3.3 reach
/// undefined behaviour: a non-ASCII character where it asks whether the character is
/// whitespace. Valid TOML passes.
void refuse_what_toml_cannot_read(std::string_view text, const std::string& origin);

}  // namespace systempp
