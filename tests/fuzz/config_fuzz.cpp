// Fuzzes the configuration file: systempp::parse_config (TOML through toml++) and, for what
// it accepts, check_sections against the demo's sections ([demo], and the HTTP server's
// [http]) and the settings read from them. Bad input must be a config_error naming the file; what passes the check must hold
// values inside every key's declared range.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http_server.hpp"
#include "settings.hpp"
#include "systempp/config.hpp"
#include "systempp/errors.hpp"

namespace {

/// A broken property is a finding: abort, so libFuzzer saves the input.
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "config_fuzz: property broken: %s\n", what);
    std::abort();
  }
}

void check_document(const systempp::config_document& doc) {
  std::size_t previous = 0;
  for (const auto& t : doc.tables) {
    check(t.line >= previous, "table lines not in file order");
    previous = t.line;
    for (const auto& e : t.entries) check(e.line >= t.line, "a key before its table's header");
  }
}

void check_demo_settings(const systempp::config_document& doc) {
  using namespace std::chrono_literals;
  using server = demo::http_server;
  static const std::vector<systempp::section_spec> sections{demo::settings::config_section.spec(),
                                                            server::config_section.spec()};
  try {
    systempp::check_sections(doc, sections, systempp::unknown_tables::refused);
  } catch (const systempp::config_error& e) {
    check(std::string_view{e.what()}.starts_with("fuzz.toml:"), "section error does not name the file");
    return;
  }
  const auto v = demo::settings::config_section.read(&doc);
  check(v.startup_delay >= 0ms && v.startup_delay <= 10min, "startup-delay out of range");
  const auto h = server::config_section.read(&doc);
  check(h.keepalive_timeout >= 1ms && h.keepalive_timeout <= 1h, "keepalive-timeout out of range");
  check(h.drain_grace >= 0ms && h.drain_grace <= 10min, "drain-grace out of range");
  check(h.header_limit >= 1024 && h.header_limit <= (1 << 20), "header-limit out of range");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text{reinterpret_cast<const char*>(data), size};
  systempp::config_document doc;
  try {
    doc = systempp::parse_config(text, "fuzz.toml");
  } catch (const systempp::config_error& e) {
    check(std::string_view{e.what()}.starts_with("fuzz.toml:"), "syntax error does not name the file");
    return 0;
  }
  check_document(doc);
  check_demo_settings(doc);
  return 0;
}
