// A line echo service built on systempp: three units, a pool of workers, reload and drain.
//
//   echo_service --workers 4 --bind 127.0.0.1:7000 --config echo.toml
//   printf 'hi\n' | nc 127.0.0.1 7000        ->  "echo: hi"
//
// echo.toml holds `[echo]` and `prefix = "echo: "` (the default). SIGHUP re-reads it and
// rolls the workers; SIGTERM lets every connection finish its current line, then stops.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <systempp/acceptor.hpp>
#include <systempp/helpers.hpp>
#include <systempp/systempp.hpp>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

/// Configuration: the [echo] section of --config, read in the master at start and again
/// on each reload (the runtime checked the file first).
struct settings {
  static constexpr std::string_view name = "settings";
  struct values {
    std::string prefix = "echo: ";
  };
  static constexpr auto config_section =
      systempp::section("echo", systempp::key("prefix", &values::prefix, "Put in front of every echoed line"));
  values v;

  void on_init(systempp::context& ctx) { v = ctx.config(*this); }
  void on_reload(systempp::context& ctx) { v = ctx.config(*this); }
};

/// Counts connections per worker and reports them when the worker stops.
struct connection_stats {
  static constexpr std::string_view name = "connection_stats";
  std::atomic<std::uint64_t> opened{0};
  void post_shutdown(systempp::context& ctx) { ctx.log().info("served {} connection(s)", opened.load()); }
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
      // Accepts as --accept says, on our own copy of the socket: closing it at drain
      // leaves the master's open. Accept errors (out of descriptors) are logged once and
      // retried after a pause. Each connection runs on its own strand (--threads N); the
      // accept loop on the runtime's, where pre_shutdown closes the acceptor.
      auto& a = acceptors_.emplace_back(ctx, l);
      asio::co_spawn(ctx.executor(), systempp::accept_loop(a, [this](tcp::socket s) { take(std::move(s)); }, ctx.log()),
                     asio::detached);
    }
    co_return;
  }

  /// Stop accepting; the master keeps the listening socket for the other workers.
  void pre_shutdown(systempp::context&) {
    // With --accept reuseport, what waits in this worker's own queue is served too.
    for (auto& a : acceptors_) a.close([this](tcp::socket s) { take(std::move(s)); });
    // Idle connections are woken so they can close; busy ones finish their line first.
    // Each is told on its own strand, where its socket is used.
    std::lock_guard lock(sockets_mutex_);
    for (const auto& s : sockets_) asio::post(s->get_executor(), [s] { s->cancel(); });
  }

  /// Completes when the last connection is closed (at most --stage-timeout).
  asio::awaitable<void> on_shutdown(systempp::context& ctx) {
    // Gone before the gate closes: a connection the master hands over from now on is
    // closed and logged by the runtime, not given a pass the gate refuses.
    acceptors_.clear();
    if (const auto left = co_await connections_.close(ctx.opts().stage_timeout))
      ctx.log().warn("{} connection(s) still open at the deadline", left);
  }
  /// Ready for the next cycle (the inline process reloads in place).
  void post_shutdown() { connections_.reopen(); }

 private:
  void take(tcp::socket s) {
    const auto strand = s.get_executor();
    asio::co_spawn(strand, serve(std::move(s), connections_.enter()), asio::detached);
  }

  asio::awaitable<void> serve(tcp::socket accepted, systempp::gate::pass held) {
    if (!held) co_return;  // the drain began: not served
    const auto owned = std::make_shared<tcp::socket>(std::move(accepted));
    tcp::socket& socket = *owned;
    {
      std::lock_guard lock(sockets_mutex_);
      sockets_.push_back(owned);
    }
    ctx_->dependency<connection_stats>(*this).opened++;
    const auto& cfg = ctx_->dependency<settings>(*this);
    std::string buffer;
    // A connection taken once the drain began (--accept reuseport: it waited in this
    // worker's own queue) gets the whole lines its client already sent answered, then closes.
    const bool swept = ctx_->draining();
    while (!ctx_->draining() || (swept && take_sent_line(socket, buffer))) {
      auto [ec, n] = co_await asio::async_read_until(socket, asio::dynamic_buffer(buffer), '\n', use_tuple);
      if (ec) break;
      systempp::request_scope request(*ctx_);  // counted in the worker's record
      std::string reply = cfg.v.prefix + buffer.substr(0, n);
      buffer.erase(0, n);
      auto [wec, written] = co_await asio::async_write(socket, asio::buffer(reply), use_tuple);
      if (wec) {
        request.fail();
        break;
      }
    }
    boost::system::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    std::lock_guard lock(sockets_mutex_);
    sockets_.remove(owned);
  }

  /// Moves what the client already sent into `buffer` without waiting; true if a whole
  /// line is there (then the read below completes at once).
  static bool take_sent_line(tcp::socket& socket, std::string& buffer) {
    boost::system::error_code ec;
    if (const auto n = socket.available(ec); !ec && n > 0) {
      const auto old = buffer.size();
      buffer.resize(old + n);
      buffer.resize(old + socket.read_some(asio::buffer(buffer.data() + old, n), ec));
    }
    return buffer.find('\n') != std::string::npos;
  }

  systempp::context* ctx_ = nullptr;
  std::list<systempp::connection_acceptor> acceptors_;
  std::mutex sockets_mutex_;  // connections run on strands of their own
  std::list<std::shared_ptr<tcp::socket>> sockets_;
  systempp::gate connections_;  // each connection holds a pass; the drain waits for them
};

// The order here does not matter: echo_server declares what it needs.
using echo_app = systempp::app<echo_server, settings, connection_stats>;

int main(int argc, char** argv) {
  return systempp::main<echo_app>(argc, argv, {"echo_service", "A line echo service on systempp.", "1.0.0"});
}
