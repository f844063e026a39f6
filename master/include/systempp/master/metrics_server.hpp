#pragma once
/// The master's Prometheus endpoint (`--metrics HOST:PORT`): GET /metrics answers with the
/// text exposition format, rendered from the control block on the master's loop. At most
/// 64 connections are served at once (more wait in the backlog until one closes), each
/// has 5 s to send its request; an accept error (EMFILE) is logged once and retried after
/// a pause of 100 ms doubling to 1 s, so it cannot spin the master's loop.

#include <functional>
#include <memory>
#include <string>

#include "systempp/listeners.hpp"

namespace boost::asio {
class io_context;
}
namespace spdlog {
class logger;
}

namespace systempp::master {

/// Serves GET /metrics on its own listener. Master only; not thread-safe, lives on the
/// master's loop thread.
class metrics_server {
 public:
  /// Master only. `render` produces the exposition text; it runs on the loop's thread.
  metrics_server(boost::asio::io_context& io, listener l, std::function<std::string()> render,
                 std::shared_ptr<spdlog::logger> log);
  /// Master only: closes the socket (through the acceptor, once started). Connections in
  /// progress end with the loop.
  ~metrics_server();
  /// Starts accepting; connections are served one request each. The acceptor takes the
  /// listener's socket over, so where().fd is empty afterwards. Master only, once.
  void start();
  /// In a forked child: drop the socket without touching the loop (no Asio calls).
  void close_in_child() noexcept;
  /// The listener as bound (address and real port, for the log). Master only.
  const listener& where() const noexcept;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;  ///< shared with the coroutines, which the loop may destroy later
};

/// Parses `--metrics`: "PORT" (loopback) or "HOST:PORT". Throws config_error naming the
/// option.
bind_spec parse_metrics_address(const std::string& text);

}  // namespace systempp::master
