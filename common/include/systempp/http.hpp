#pragma once
/// An HTTP/1.1 server unit on Boost.Beast. A unit of the app declares the routes; the
/// server does the rest: keep-alive and pipelining, limits (431, 413), timeouts, the
/// framing rules of RFC 9112 (Transfer-Encoding, Host), 404 and 405 with `Allow`, HEAD for
/// every GET route, `/healthz`, an optional access log, request accounting and metrics,
/// and a drain that answers every accepted request.
///
///   struct kv_routes {
///     using depends_on = systempp::units<kv_store>;
///     void routes(systempp::http::router& r) {
///       r.get("/", [](const systempp::http::request& req) {
///         return systempp::http::reply(req, systempp::http::status::ok, "hello\n");
///       });
///     }
///   };
///   using kv_app = systempp::app<kv_store, kv_routes, systempp::http::server<kv_routes>>;
///
/// Settings come from the `[http]` table of --config (see server_settings). Not part of
/// systempp.hpp: include it where the routes are.

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "systempp/config.hpp"
#include "systempp/context.hpp"
#include "systempp/dependencies.hpp"
#include "systempp/metrics.hpp"

namespace systempp::http {

using request = boost::beast::http::request<boost::beast::http::string_body>;
using response = boost::beast::http::response<boost::beast::http::string_body>;
using status = boost::beast::http::status;
using verb = boost::beast::http::verb;

/// A response to `req` (its HTTP version) with this status, body and Content-Type, its
/// Content-Length set. Any thread.
response reply(const request& req, status s, std::string body, std::string_view content_type = "text/plain");

/// What a route runs: `response(const request&)` or `awaitable<response>(const request&)`.
/// A handler runs on its connection's strand (--threads: connections run in parallel);
/// one that throws is answered 500 and logged.
using handler = std::function<boost::asio::awaitable<response>(const request&)>;

/// The routes of a server: a path (exact, or a prefix ending in '/') and a method each.
class router {
 public:
  /// Routes `method` on `path`; a `path` ending in "/*" matches every path under it.
  template <class F>
  router& on(verb method, std::string path, F fn) {
    routes_.push_back({method, std::move(path), wrap(std::move(fn))});
    return *this;
  }
  template <class F>
  router& get(std::string path, F fn) {
    return on(verb::get, std::move(path), std::move(fn));
  }
  template <class F>
  router& post(std::string path, F fn) {
    return on(verb::post, std::move(path), std::move(fn));
  }
  template <class F>
  router& put(std::string path, F fn) {
    return on(verb::put, std::move(path), std::move(fn));
  }
  template <class F>
  router& del(std::string path, F fn) {
    return on(verb::delete_, std::move(path), std::move(fn));
  }
  /// A GET route (HEAD too) whose response never changes: its status, body and
  /// Content-Type are given here. The server prepares the response's bytes when it starts
  /// (the decorator runs then, once per HTTP version and keep-alive choice) and answers
  /// each request with one send of them: no handler call, no response built per request.
  router& fixed(std::string path, status s, std::string body, std::string_view content_type = "text/plain");
  /// Runs on every response before it is written (headers a service sets everywhere); for
  /// a fixed route, once when the server starts.
  router& decorate(std::function<void(response&)> fn) {
    decorate_ = std::move(fn);
    return *this;
  }

  /// What a request finds: its handler, or none and the methods the path takes (404 when
  /// empty, 405 with them in `Allow` otherwise). HEAD finds the GET route. Any thread.
  struct match {
    const handler* found = nullptr;
    int fixed = -1;     ///< a fixed route's index in fixed_replies(), or -1
    std::string allow;  ///< "GET, HEAD, PUT"
  };
  match find(verb method, std::string_view path) const;
  const std::function<void(response&)>& decorator() const noexcept { return decorate_; }

  /// What fixed() was given, in its order.
  struct fixed_reply {
    status code;
    std::string body;
    std::string content_type;
  };
  const std::vector<fixed_reply>& fixed_replies() const noexcept { return fixed_; }

 private:
  struct route {
    verb method;
    std::string path;
    handler fn;
    int fixed = -1;
  };

  template <class F>
  static handler wrap(F fn) {
    if constexpr (std::is_invocable_r_v<boost::asio::awaitable<response>, F&, const request&> &&
                  !std::is_same_v<std::invoke_result_t<F&, const request&>, response>) {
      return handler(std::move(fn));
    } else {
      static_assert(std::is_invocable_r_v<response, F&, const request&>,
                    "systempp: a route is response(const request&) or awaitable<response>(const request&)");
      return [fn = std::move(fn)](const request& req) mutable -> boost::asio::awaitable<response> {
        co_return fn(req);
      };
    }
  }

  std::vector<route> routes_;
  std::vector<fixed_reply> fixed_;
  std::function<void(response&)> decorate_;
};

/// The `[http]` table.
struct server_settings {
  std::string listener = "http";                       ///< which --bind listener to serve
  std::chrono::milliseconds keepalive_timeout{5'000};  ///< idle keep-alive connections close after
  std::chrono::milliseconds drain_grace{1'000};        ///< idle connections stay this long into a drain
  std::chrono::milliseconds request_timeout{30'000};   ///< to read one request, and to write one response
  std::int64_t header_limit = 16 * 1024;               ///< larger headers: 431
  std::int64_t body_limit = 1024 * 1024;               ///< larger bodies: 413
  bool access_log = false;                             ///< one info line per request
  std::string server_name = "systempp";                ///< the Server header
  /// TCP_DEFER_ACCEPT on the listener: a connection is handed to accept() when its first
  /// bytes arrive (one wake-up instead of two), or after this long without any. 0: at once.
  /// It is set on every start, over systemd's DeferAcceptSec= too.
  std::chrono::seconds defer_accept{1};
};

namespace detail {

/// The server's work, in http_server.cpp (the one Beast translation unit).
class server_core;
/// Each function is the unit stage of the same name. Worker / inline.
std::shared_ptr<server_core> make_server_core();
void add_server_metrics(server_core& core, metric_set& m);
boost::asio::awaitable<void> start_server(server_core& core, context& ctx, const server_settings& s, router r);
void stop_accepting(server_core& core);
boost::asio::awaitable<void> finish_connections(server_core& core);

}  // namespace detail

/// The HTTP server unit. `Routes` is a unit of the app with `void routes(http::router&)`,
/// called in each worker's on_startup (after Routes's own on_startup: the server depends
/// on it). At most one server per app (it owns the `[http]` table).
template <class Routes>
class server {
 public:
  static constexpr std::string_view name = "http_server";
  using depends_on = units<Routes>;
  static constexpr auto config_section = section(
      "http", key("listener", &server_settings::listener, "The --bind listener to serve"),
      key("keepalive-timeout", &server_settings::keepalive_timeout, "Seconds an idle keep-alive connection stays open")
          .range(std::chrono::milliseconds(1), std::chrono::hours(1)),
      key("drain-grace", &server_settings::drain_grace, "Seconds idle connections stay open once a drain began")
          .range(std::chrono::milliseconds(0), std::chrono::minutes(10)),
      key("request-timeout", &server_settings::request_timeout,
          "Seconds to read one request (headers and body), and to write one response")
          .range(std::chrono::milliseconds(1), std::chrono::hours(1)),
      key("header-limit", &server_settings::header_limit, "Bytes of request headers; more is answered 431")
          .range(std::int64_t{1024}, std::int64_t{1} << 20),
      key("body-limit", &server_settings::body_limit, "Bytes of request body; more is answered 413")
          .range(std::int64_t{0}, std::int64_t{1} << 30),
      key("access-log", &server_settings::access_log, "Log one line per request (info level)"),
      key("server-name", &server_settings::server_name, "The Server header"),
      key("defer-accept", &server_settings::defer_accept,
          "Seconds a new connection may wait for its first bytes before it is accepted (TCP_DEFER_ACCEPT; 0: at once)")
          .range(std::chrono::seconds(0), std::chrono::seconds(60)));

  server() : core_(detail::make_server_core()) {}

  void add_metrics(metric_set& m) { detail::add_server_metrics(*core_, m); }
  /// Worker / inline: the settings of this cycle, the routes, then accepting.
  boost::asio::awaitable<void> on_startup(context& ctx) {
    router r;
    ctx.dependency<Routes>(*this).routes(r);
    co_await detail::start_server(*core_, ctx, ctx.config(*this), std::move(r));
  }
  /// Stop accepting (the master keeps the listening socket for the other workers); idle
  /// keep-alive connections get `drain-grace` more, busy ones `Connection: close`.
  void pre_shutdown(context&) { detail::stop_accepting(*core_); }
  /// Completes when every connection is closed, each accepted request answered.
  boost::asio::awaitable<void> on_shutdown(context&) { co_await detail::finish_connections(*core_); }

 private:
  std::shared_ptr<detail::server_core> core_;
};

}  // namespace systempp::http
