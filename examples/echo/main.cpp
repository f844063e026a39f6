// A line echo service built on systempp: three units, a pool of workers, reload and drain.
//
//   echo_service --workers 4 --bind 127.0.0.1:7000 --config echo.conf
//   printf 'hi\n' | nc 127.0.0.1 7000        ->  "echo: hi"
//
// echo.conf holds `prefix = echo: ` (the default). SIGHUP re-reads it and rolls the
// workers; SIGTERM lets every connection finish its current line, then stops.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include <list>
#include <optional>
#include <systempp/acceptor.hpp>
#include <systempp/config_file.hpp>
#include <systempp/systempp.hpp>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

/// Configuration: the prefix put in front of every echoed line.
struct settings {
  static constexpr std::string_view name = "settings";
  std::string prefix = "echo: ";

  void on_init(systempp::context& ctx) { load(ctx); }
  void on_reload(systempp::context& ctx) { load(ctx); }

 private:
  void load(systempp::context& ctx) {
    if (ctx.opts().config.empty()) return;
    std::string next = "echo: ";
    for (const auto& e : systempp::read_config_file(ctx.opts().config)) {
      if (e.key != "prefix")
        throw systempp::config_error(ctx.opts().config + ":" + std::to_string(e.line) + ": unknown key '" + e.key + "'");
      next = e.value + " ";
    }
    prefix = next;  // only once the whole file is valid
  }
};

/// Counts connections per worker and reports them when the worker stops.
struct connection_stats {
  static constexpr std::string_view name = "connection_stats";
  std::uint64_t opened = 0;
  void post_shutdown(systempp::context& ctx) { ctx.log().info("served {} connection(s)", opened); }
};

/// The TCP service: accepts on the listeners the master bound, echoes lines. It starts
/// after the units it uses and stops before them.
class echo_server {
 public:
  static constexpr std::string_view name = "echo_server";
  using depends_on = systempp::units<settings, connection_stats>;

  asio::awaitable<void> on_startup(systempp::context& ctx) {
    ctx_ = &ctx;
    for (const auto& l : ctx.listeners()) {
      // Our own copy of the socket: closing it at drain leaves the master's open.
      auto& a = acceptors_.emplace_back(systempp::make_acceptor(ctx.io(), l));
      asio::co_spawn(ctx.io(), accept_loop(a), asio::detached);
    }
    co_return;
  }

  /// Stop accepting; the master keeps the listening socket for the other workers.
  void pre_shutdown(systempp::context&) {
    for (auto& a : acceptors_) a.close();
    // Idle connections are woken so they can close; busy ones finish their line first.
    for (auto* s : sockets_) s->cancel();
  }

  /// Completes when the last connection is closed.
  asio::awaitable<void> on_shutdown(systempp::context& ctx) {
    all_closed_.emplace(ctx.io());
    while (!sockets_.empty()) {
      all_closed_->expires_at(asio::steady_timer::time_point::max());
      co_await all_closed_->async_wait(use_tuple);  // cancelled by the last connection
    }
    acceptors_.clear();
  }

 private:
  asio::awaitable<void> accept_loop(tcp::acceptor& a) {
    for (;;) {
      auto [ec, socket] = co_await a.async_accept(use_tuple);
      if (!ec) asio::co_spawn(ctx_->io(), serve(std::move(socket)), asio::detached);
      if (!a.is_open()) co_return;
    }
  }

  asio::awaitable<void> serve(tcp::socket socket) {
    sockets_.push_back(&socket);
    ctx_->dependency<connection_stats>(*this).opened++;
    const auto& cfg = ctx_->dependency<settings>(*this);
    std::string buffer;
    while (!ctx_->draining()) {
      auto [ec, n] = co_await asio::async_read_until(socket, asio::dynamic_buffer(buffer), '\n', use_tuple);
      if (ec) break;
      ctx_->request_begin();
      std::string reply = cfg.prefix + buffer.substr(0, n);
      buffer.erase(0, n);
      auto [wec, written] = co_await asio::async_write(socket, asio::buffer(reply), use_tuple);
      ctx_->request_end(static_cast<bool>(wec));
      if (wec) break;
    }
    boost::system::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    sockets_.remove(&socket);
    if (sockets_.empty() && all_closed_) all_closed_->cancel();
  }

  systempp::context* ctx_ = nullptr;
  std::list<tcp::acceptor> acceptors_;
  std::list<tcp::socket*> sockets_;
  std::optional<asio::steady_timer> all_closed_;
};

// The order here does not matter: echo_server declares what it needs.
using echo_app = systempp::app<echo_server, settings, connection_stats>;

int main(int argc, char** argv) { return systempp::main<echo_app>(argc, argv); }
