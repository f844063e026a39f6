#pragma once
/// The demo's configuration unit: the [demo] section of `--config FILE`, read in on_init
/// and again on reload (the runtime has checked the file by then). The HTTP server's own
/// settings (keep-alive, drain grace, limits) are the library's [http] section.

#include <chrono>
#include <filesystem>
#include <string>

#include <systempp/systempp.hpp>

namespace demo {

/// The [demo] section; the defaults apply without --config.
struct config_values {
  std::string message = "hello";
  std::filesystem::path docroot;  ///< empty: /static/ is not served
  std::chrono::milliseconds startup_delay{0};
};

struct settings {
  static constexpr std::string_view name = "settings";
  static constexpr auto config_section = systempp::section(
      "demo", systempp::key("message", &config_values::message, "What GET / answers"),
      systempp::key("docroot", &config_values::docroot, "Directory served under /static/ (empty: none)"),
      systempp::key("startup-delay", &config_values::startup_delay, "Seconds each worker waits in on_startup")
          .range(std::chrono::milliseconds(0), std::chrono::minutes(10)));

  /// Master (or inline/script), once.
  void on_init(systempp::context& ctx) { values_ = ctx.config(*this); }
  /// Master, on SIGHUP, with the file the reload read again.
  void on_reload(systempp::context& ctx);
  /// Each worker: a configured docroot must be a readable directory.
  void pre_startup(systempp::context& ctx);

  const config_values& values() const noexcept { return values_; }

 private:
  config_values values_;
};

}  // namespace demo
