#pragma once
/// The demo's configuration unit: reads `--config FILE` in on_init, re-reads it on reload.

#include <chrono>
#include <filesystem>
#include <string>

#include <systempp/systempp.hpp>

namespace demo {

/// Values of the configuration file; the defaults apply without --config.
struct config_values {
  std::string message = "hello";
  std::filesystem::path docroot;  ///< empty: /static/ is not served
  std::chrono::milliseconds startup_delay{0};
  std::chrono::milliseconds keepalive_timeout{5'000};
  std::chrono::milliseconds drain_grace{1'000};
};

/// Parses a configuration file; throws systempp::config_error naming file, line and key.
config_values load_config(const std::string& path);

struct settings {
  static constexpr std::string_view name = "settings";

  /// Master (or inline/script), once: a bad file stops the start with exit code 2.
  void on_init(systempp::context& ctx);
  /// Master, on SIGHUP: a bad file rejects the reload and keeps the current values.
  void on_reload(systempp::context& ctx);
  /// Each worker: a configured docroot must be a readable directory.
  void pre_startup(systempp::context& ctx);

  const config_values& values() const noexcept { return values_; }

 private:
  config_values values_;
};

}  // namespace demo
