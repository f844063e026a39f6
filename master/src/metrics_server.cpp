#include "systempp/master/metrics_server.hpp"

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <charconv>

#include "systempp/acceptor.hpp"
#include "systempp/errors.hpp"

namespace systempp::master {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

struct metrics_server::impl {
  asio::io_context& io;
  listener where;
  std::function<std::string()> render;
  std::shared_ptr<spdlog::logger> log;
  tcp::acceptor acceptor;

  impl(asio::io_context& i, listener l, std::function<std::string()> r, std::shared_ptr<spdlog::logger> lg)
      : io(i), where(std::move(l)), render(std::move(r)), log(std::move(lg)), acceptor(i) {}

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      if (ec) continue;
      asio::co_spawn(io, serve(std::move(socket)), asio::detached);
    }
  }

  // One request per connection, each step under a deadline: a scrape is small and short.
  asio::awaitable<void> serve(tcp::socket socket) {
    try {
      beast::tcp_stream stream(std::move(socket));
      beast::flat_buffer buffer;
      http::request<http::empty_body> req;
      stream.expires_after(std::chrono::seconds(5));
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
      stream.expires_after(std::chrono::seconds(5));
      co_await http::async_write(stream, res, use_tuple);
      beast::error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    } catch (const std::exception& e) {
      log->warn("metrics: {}", e.what());
    }
  }
};

metrics_server::metrics_server(asio::io_context& io, listener l, std::function<std::string()> render,
                               std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<impl>(io, std::move(l), std::move(render), std::move(log))) {}

metrics_server::~metrics_server() = default;

void metrics_server::start() {
  // The acceptor takes the socket over: nobody else accepts on the metrics listener.
  impl_->acceptor = make_acceptor(impl_->io, std::move(impl_->where.fd), impl_->where.family);
  asio::co_spawn(impl_->io, impl_->accept_loop(), asio::detached);
}

void metrics_server::close_in_child() noexcept {
  if (impl_->acceptor.is_open()) ::close(impl_->acceptor.native_handle());
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
