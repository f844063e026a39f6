#pragma once
/// The demo's routes, served by the library's HTTP server unit (systempp/http.hpp): GET /
/// answers the configured message, /sleep?ms=N waits, /static/ serves files under docroot.
/// Every response carries the worker's pid, slot and generation.

#include <systempp/http.hpp>
#include <systempp/systempp.hpp>

#include "settings.hpp"

namespace demo {

struct web {
  static constexpr std::string_view name = "web";
  using depends_on = systempp::units<settings>;

  /// Worker / inline: the configured start-up delay (a slow warm-up, for tests), before
  /// the server starts accepting.
  boost::asio::awaitable<void> on_startup(systempp::context& ctx);
  /// Called by the server in each worker's on_startup.
  void routes(systempp::http::router& r);

 private:
  systempp::context* ctx_ = nullptr;
};

/// The demo's HTTP server: the library's, serving demo::web's routes.
using http_server = systempp::http::server<web>;

}  // namespace demo
