// Fuzzes systempp::parse_bind, the parser of `--bind [NAME=]HOST:PORT`. It reports errors
// as a message, never by throwing, so any exception is a finding.

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "systempp/options.hpp"

namespace {

/// A broken property is a finding: abort, so libFuzzer saves the input.
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "bind_fuzz: property broken: %s\n", what);
    std::abort();
  }
}

bool listener_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text{reinterpret_cast<const char*>(data), size};
  const auto parsed = systempp::parse_bind(text);
  if (const auto* error = std::get_if<std::string>(&parsed)) {
    check(!error->empty(), "empty error message");
    return 0;
  }
  const auto& spec = std::get<systempp::bind_spec>(parsed);
  check(!spec.name.empty(), "empty listener name");
  for (const char c : spec.name) check(listener_char(c), "listener name with a bad character");
  check(!spec.host.empty(), "empty host");
  // An IPv6 host is only accepted in brackets, so a ':' in the host means they were there.
  if (spec.host.find(':') != std::string::npos)
    check(text.find("[" + spec.host + "]:") != std::string_view::npos,
          "IPv6 host accepted without brackets");
  return 0;
}
