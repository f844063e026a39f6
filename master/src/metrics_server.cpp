#include "systempp/master/metrics_server.hpp"

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <chrono>

#include "systempp/acceptor.hpp"
#include "systempp/errors.hpp"

namespace systempp::master {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Bounds that keep a scraper, or anyone else on the port, from taking the master's
// descriptors (which it needs to replace workers) or its loop.
constexpr std::size_t max_connections = 64;  // beyond: not accepted until one closes
constexpr auto request_deadline = std::chrono::seconds(5);  // to read the request, then to write the answer
constexpr auto first_pause = std::chrono::milliseconds(100);  // after an accept error, doubling
constexpr auto longest_pause = std::chrono::seconds(1);

// Shared with every coroutine of the server, so a connection that the loop destroys after
// the server (at exit) still finds its counter.
struct metrics_server::impl {
  asio::io_context& io;
  listener where;
  std::function<std::string()> render;
  std::shared_ptr<spdlog::logger> log;
  tcp::acceptor acceptor;
  asio::steady_timer slot_freed;  ///< cancelled when a connection ends: the accept loop looks again
  std::size_t open_connections = 0;
  std::size_t accept_errors = 0;  ///< of the current run of errors; logged once per run
  bool bound_logged = false;

  impl(asio::io_context& i, listener l, std::function<std::string()> r, std::shared_ptr<spdlog::logger> lg)
      : io(i), where(std::move(l)), render(std::move(r)), log(std::move(lg)), acceptor(i), slot_freed(i) {}

  static asio::awaitable<void> accept_loop(std::shared_ptr<impl> self) {
    auto pause = std::chrono::milliseconds(first_pause);
    for (;;) {
      co_await self->wait_for_a_free_slot();
      auto [ec, socket] = co_await self->acceptor.async_accept(use_tuple);
      if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) co_return;
      if (ec) {
        // EMFILE and the like leave the connection queued and the socket readable: retrying
        // at once would spin the master's loop.
        if (self->accept_errors++ == 0) self->log->warn("metrics: accept: {}; retrying after a pause", ec.message());
        asio::steady_timer wait(self->io, pause);
        co_await wait.async_wait(use_tuple);
        pause = std::min<std::chrono::milliseconds>(pause * 2, longest_pause);
        continue;
      }
      if (self->accept_errors > 0) self->log->info("metrics: accepting again after {} error(s)", self->accept_errors);
      self->accept_errors = 0;
      pause = first_pause;
      ++self->open_connections;
      asio::co_spawn(self->io, serve(self, std::move(socket)), asio::detached);
    }
  }

  asio::awaitable<void> wait_for_a_free_slot() {
    if (open_connections >= max_connections && !bound_logged) {
      bound_logged = true;
      log->warn("metrics: {} connections open, the most served at once; others wait until one closes",
                max_connections);  // once: a busy scraper would repeat it at every connection
    }
    while (open_connections >= max_connections) {
      slot_freed.expires_at(asio::steady_timer::time_point::max());
      co_await slot_freed.async_wait(use_tuple);
    }
  }

  // One request per connection, each step under a deadline: a scrape is small and short.
  static asio::awaitable<void> serve(std::shared_ptr<impl> self, tcp::socket socket) {
    struct closed {  // however the coroutine ends, even destroyed unfinished at exit
      impl& s;
      ~closed() {
        --s.open_connections;
        s.slot_freed.cancel();
      }
    } counted{*self};
    try {
      co_await self->answer(beast::tcp_stream(std::move(socket)));
    } catch (const std::exception& e) {
      self->log->warn("metrics: {}", e.what());
    }
  }

  asio::awaitable<void> answer(beast::tcp_stream stream) {
    beast::flat_buffer buffer;
    http::request<http::empty_body> req;
    stream.expires_after(request_deadline);
    auto [ec, n] = co_await http::async_read(stream, buffer, req, use_tuple);
    if (ec) co_return;
    http::response<http::string_body> res;
    res.version(req.version());
    res.keep_alive(false);
    if (req.method() == http::verb::get && req.target() == "/metrics") {
      res.result(http::status::ok);
      res.set(http::field::content_type, "text/plain; version=0.0.4");
      res.body() = render();
    } else {
      res.result(http::status::not_found);
      res.body() = "try /metrics\n";
    }
    res.prepare_payload();
    stream.expires_after(request_deadline);
    co_await http::async_write(stream, res, use_tuple);
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }
};

metrics_server::metrics_server(asio::io_context& io, listener l, std::function<std::string()> render,
                               std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_shared<impl>(io, std::move(l), std::move(render), std::move(log))) {}

metrics_server::~metrics_server() {
  // The coroutines keep the state alive; the socket goes now, as before.
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
}

void metrics_server::start() {
  // The acceptor takes the socket over: nobody else accepts on the metrics listener.
  impl_->acceptor = make_acceptor(impl_->io, std::move(impl_->where.fd), impl_->where.family);
  asio::co_spawn(impl_->io, impl::accept_loop(impl_), asio::detached);
}

void metrics_server::close_in_child() noexcept {
  // Released, not just closed: after notify_fork the child's copy of the loop has the
  // listener in an epoll instance of its own, and a close would leave it registered there
  // (the master still holds the socket), one more registration per worker for the kernel to
  // walk at each fork.
  boost::system::error_code ignored;
  if (impl_->acceptor.is_open()) ::close(impl_->acceptor.release(ignored));
  impl_->where.fd.reset();
}

const listener& metrics_server::where() const noexcept { return impl_->where; }

bind_spec parse_metrics_address(const std::string& text) {
  unsigned port = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (!text.empty() && ec == std::errc{} && end == text.data() + text.size()) {
    if (port > 65535) throw config_error(fmt::format("--metrics: port '{}' is not from 0 to 65535", text));
    return bind_spec{"metrics", "127.0.0.1", static_cast<std::uint16_t>(port)};
  }
  auto parsed = parse_bind(text);
  if (auto* err = std::get_if<std::string>(&parsed)) throw config_error(fmt::format("--metrics: '{}': {}", text, *err));
  auto spec = std::get<bind_spec>(parsed);
  spec.name = "metrics";
  return spec;
}

}  // namespace systempp::master
