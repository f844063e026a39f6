#pragma once
/// The demo's HTTP unit: accepts on the listeners the runtime hands it, HTTP/1.1 with
/// keep-alive and pipelining, and drains without dropping an accepted request.

#include <memory>

#include <systempp/systempp.hpp>

#include "settings.hpp"

namespace demo {

class http_server {
 public:
  static constexpr std::string_view name = "http_server";
  using depends_on = systempp::units<settings>;  // reads its values from on_startup on

  http_server();
  ~http_server();

  /// Worker / inline: start accepting on every listener (inherited fds, never bound here).
  boost::asio::awaitable<void> on_startup(systempp::context& ctx);
  /// Stop accepting: close this process's acceptors; the listening socket stays with the
  /// master, so queued connections wait for the other workers.
  void pre_shutdown(systempp::context& ctx);
  /// Finish in-flight requests; keep-alive connections get `Connection: close` on their
  /// next response; idle ones are closed after drain_grace_ms. Completes when no
  /// connection is left.
  boost::asio::awaitable<void> on_shutdown(systempp::context& ctx);

  /// Responses by status class, and how long each took: summed over the pool in /metrics.
  systempp::counter responses_2xx{"demo_http_responses_total", "Responses by status class", {{"class", "2xx"}}};
  systempp::counter responses_4xx{"demo_http_responses_total", "Responses by status class", {{"class", "4xx"}}};
  systempp::counter responses_5xx{"demo_http_responses_total", "Responses by status class", {{"class", "5xx"}}};
  systempp::histogram latency{"demo_http_request_seconds", "From a request read to its response written",
                              {0.001, 0.005, 0.025, 0.1, 0.5, 2.5}};
  void add_metrics(systempp::metric_set& m) { m.add(responses_2xx, responses_4xx, responses_5xx, latency); }

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace demo
