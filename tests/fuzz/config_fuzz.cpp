// Fuzzes the configuration file formats: systempp::parse_config (the `key = value` format of
// every unit) and, for inputs it accepts, the demo's demo::load_config on top of it. Bad
// input must be a config_error; accepted input must keep the promises of the format.

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <unordered_set>

#include "settings.hpp"
#include "systempp/config_file.hpp"
#include "systempp/errors.hpp"

namespace {

/// A broken property is a finding: abort, so libFuzzer saves the input.
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "config_fuzz: property broken: %s\n", what);
    std::abort();
  }
}

bool trimmed(std::string_view s) {
  constexpr std::string_view blank = " \t\r";
  return s.empty() ||
         (blank.find(s.front()) == std::string_view::npos &&
          blank.find(s.back()) == std::string_view::npos);
}

void check_entries(const std::vector<systempp::config_entry>& entries) {
  std::unordered_set<std::string_view> keys;
  std::size_t previous_line = 0;
  for (const auto& e : entries) {
    check(!e.key.empty(), "empty key accepted");
    check(trimmed(e.key) && trimmed(e.value), "key or value not trimmed");
    check(e.key.find('=') == std::string::npos, "key holds '='");
    check(e.key.find('\n') == std::string::npos && e.value.find('\n') == std::string::npos,
          "entry spans lines");
    check(e.key.find('\0') == std::string::npos && e.value.find('\0') == std::string::npos,
          "entry holds a NUL");
    check(e.key.front() != '#', "comment line taken as an entry");
    check(e.line > previous_line, "line numbers not increasing");
    previous_line = e.line;
    check(keys.insert(e.key).second, "duplicate key accepted");
  }
}

/// load_config reads a path: a memfd opened through /proc gives it one without a disk.
struct memfd_file {
  int fd = -1;
  std::string path;
};

const memfd_file& demo_config_file() {
  static const memfd_file file = [] {
    const int fd = ::memfd_create("systempp-fuzz-config", MFD_CLOEXEC);
    if (fd == -1) {
      std::perror("memfd_create");
      std::abort();
    }
    return memfd_file{fd, "/proc/self/fd/" + std::to_string(fd)};
  }();
  return file;
}

void load_demo_config(std::string_view text) {
  const auto& file = demo_config_file();
  if (::ftruncate(file.fd, 0) != 0 ||
      ::pwrite(file.fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    std::perror("writing the config memfd");
    std::abort();
  }
  try {
    const auto v = demo::load_config(file.path);
    check(v.startup_delay.count() >= 0 && v.startup_delay.count() <= 600'000,
          "startup_delay_ms out of range");
    check(v.keepalive_timeout.count() >= 0 && v.keepalive_timeout.count() <= 3'600'000,
          "keepalive_timeout_ms out of range");
    check(v.drain_grace.count() >= 0 && v.drain_grace.count() <= 600'000,
          "drain_grace_ms out of range");
  } catch (const systempp::config_error&) {
    // Unknown keys and bad numbers are refused here.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text{reinterpret_cast<const char*>(data), size};
  try {
    check_entries(systempp::parse_config(text, "fuzz.conf"));
  } catch (const systempp::config_error& e) {
    check(std::string_view{e.what()}.starts_with("fuzz.conf:"), "message does not name the file");
    return 0;
  }
  // Only text the generic parser accepts gets past it in load_config.
  load_demo_config(text);
  return 0;
}
