#pragma once
/// Asio acceptors over the listeners the runtime bound. Header-only and left out of
/// systempp.hpp on purpose: only the translation units that accept connections include
/// it, so Asio's ip::tcp is compiled where it is used and nowhere else.

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "systempp/accept_waiter.hpp"
#include "systempp/context.hpp"
#include "systempp/fd.hpp"
#include "systempp/listeners.hpp"

namespace systempp {

/// An acceptor that owns `fd`, a listening socket of `family` (AF_INET or AF_INET6, as in
/// listener::family). For a socket only this acceptor uses, e.g. the master's --metrics
/// endpoint. Any process, on the thread that owns `io`.
inline boost::asio::ip::tcp::acceptor make_acceptor(boost::asio::io_context& io, unique_fd fd,
                                                    int family) {
  using tcp = boost::asio::ip::tcp;
  tcp::acceptor acceptor(io);
  acceptor.assign(family == AF_INET6 ? tcp::v6() : tcp::v4(), fd.get());
  fd.release();  // only once assign succeeded: a throw above still closes the fd
  return acceptor;
}

/// An acceptor on a close-on-exec duplicate of `l`'s socket: closing it (at drain) leaves
/// `l` open, so the master keeps accepting for the other workers and no queued connection
/// is lost. Throws std::system_error when the fd cannot be duplicated. Workers and the
/// inline process, on the thread that owns `io` (typically in on_startup).
inline boost::asio::ip::tcp::acceptor make_acceptor(boost::asio::io_context& io,
                                                    const listener& l) {
  unique_fd copy(::fcntl(l.fd.get(), F_DUPFD_CLOEXEC, 0));
  if (!copy) throw std::system_error(errno, std::generic_category(), "dup listener");
  return make_acceptor(io, std::move(copy), l.family);
}

/// Accepts the connections of one listener as the pool's --accept says (options.hpp,
/// docs/ARCHITECTURE.md "Accepting connections"), for accept_loop (helpers.hpp) and the
/// HTTP server unit. Each socket it returns is bound to a strand of its own with
/// --threads N > 1, to the loop's executor with one thread (which serialises it already).
/// Made and used on the runtime's strand (ctx.executor()), typically made in on_startup and
/// closed in pre_shutdown; it accepts on a duplicate of the listener's fd, so closing it
/// leaves the listener open for the other workers.
/// - shared, reuseport: Asio's async_accept on the worker's loop. With reuseport the
///   listener is this worker's slot's own socket (the master hands each slot its own).
/// - exclusive: a thread of its own waits, woken alone among the pool (accept_waiter.hpp);
///   the loop then accepts without blocking until nothing is left.
class connection_acceptor {
 public:
  using tcp = boost::asio::ip::tcp;

  connection_acceptor(context& ctx, const listener& l)
      : strategy_(ctx.opts().accept),
        family_(l.family),
        threads_(ctx.opts().threads),
        io_(ctx.io()),
        ctx_(ctx),
        name_(l.name),
        acceptor_(ctx.io()),
        signal_(std::make_shared<readiness>(ctx.executor())) {
    if (strategy_ != accept_strategy::exclusive) {
      acceptor_ = make_acceptor(ctx.io(), l);
      take_handed_over();
      return;
    }
    // Not an Asio acceptor: Asio would add the socket to the loop's epoll, and every
    // worker's loop would wake for every connection again.
    exclusive_fd_ = unique_fd(::fcntl(l.fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!exclusive_fd_) throw std::system_error(errno, std::generic_category(), "dup listener");
    waiter_.emplace(exclusive_fd_.get(), [signal = std::weak_ptr<readiness>(signal_), ex = ctx.executor()] {
      boost::asio::post(ex, [signal] {
        if (auto s = signal.lock()) {
          s->ready = true;
          s->wake.cancel();
        }
      });
    });
    take_handed_over();
  }
  ~connection_acceptor() { close(); }
  connection_acceptor(const connection_acceptor&) = delete;
  connection_acceptor& operator=(const connection_acceptor&) = delete;

  bool is_open() const noexcept { return acceptor_.is_open() || exclusive_fd_; }

  /// The next connection; operation_aborted once closed.
  boost::asio::awaitable<std::tuple<boost::system::error_code, tcp::socket>> accept() {
    namespace asio = boost::asio;
    const asio::any_io_executor strand = connection_executor();
    for (;;) {
      if (!signal_->handed.empty()) {
        unique_fd fd = std::move(signal_->handed.front());
        signal_->handed.pop_front();
        co_return adopt(std::move(fd), strand);
      }
      if (!is_open()) co_return std::tuple{boost::system::error_code(asio::error::operation_aborted), tcp::socket(strand)};
      if (strategy_ != accept_strategy::exclusive) {
        signal_->woken = false;
        auto [ec, s] = co_await acceptor_.async_accept(strand, asio::as_tuple(asio::use_awaitable));
        if (ec == asio::error::operation_aborted && std::exchange(signal_->woken, false) && is_open())
          continue;  // ended for a handed-over one
        co_return std::tuple{ec, std::move(s)};
      }
      if (unique_fd fd(::accept4(exclusive_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)); fd)
        co_return adopt(std::move(fd), strand);
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        co_return std::tuple{boost::system::error_code(errno, boost::system::system_category()), tcp::socket(strand)};
      // Nothing left: the waiter may wait again (once per hand-over), and so does the loop.
      if (std::exchange(handed_, false)) waiter_->resume();
      while (!signal_->ready && is_open() && signal_->handed.empty()) {
        signal_->wake.expires_at(asio::steady_timer::time_point::max());
        co_await signal_->wake.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      handed_ = std::exchange(signal_->ready, false) || handed_;
    }
  }

  /// Stops accepting. With reuseport it first hands `take` (a copyable callable taking a
  /// tcp::socket) every connection waiting in this slot's queue: the worker is draining or
  /// being replaced, and when a scale-down removed its slot, nobody else would take them.
  /// Connections the master handed over, before and until this acceptor is destroyed, go
  /// to `take` too. Call it where new connections are still served (pre_shutdown), and
  /// have `take` do what accept_loop's on_connection does.
  template <class Take>
  void close(Take take) {
    if (strategy_ == accept_strategy::reuseport && acceptor_.is_open()) {
      boost::system::error_code ec;
      acceptor_.non_blocking(true, ec);
      for (;;) {
        tcp::socket s(connection_executor());
        acceptor_.accept(s, ec);
        if (!ec) take(std::move(s));
        else if (ec != boost::asio::error::connection_aborted) break;  // empty (would_block), or failing
      }
    }
    auto handed = std::move(signal_->handed);
    close();
    auto hand = [this, take](unique_fd fd) mutable {
      auto [ec, s] = adopt(std::move(fd), connection_executor());
      if (!ec) take(std::move(s));
    };
    for (auto& fd : handed) hand(std::move(fd));
    taker_ = ctx_.set_connection_taker(name_, hand);
  }
  /// Stops accepting; what waits in the queue stays there (for the other workers, or for
  /// the slot's next worker with reuseport). Connections handed over and not yet taken
  /// are closed, and so are those handed over later (the worker logs them).
  void close() noexcept {
    boost::system::error_code ignored;
    if (waiter_) waiter_->stop();
    exclusive_fd_.reset();
    acceptor_.close(ignored);
    signal_->wake.cancel();
    signal_->handed.clear();
    ctx_.drop_connection_taker(name_, taker_);
  }

 private:
  // A connection's own strand when the loop has several threads; with one, the loop itself
  // serialises everything and a strand would only add a dispatch to every operation.
  boost::asio::any_io_executor connection_executor() {
    if (threads_ > 1) return boost::asio::make_strand(io_);
    return io_.get_executor();
  }

  // What the master hands over (a queue nobody else serves) comes out of accept() first.
  // Registered last, so that a constructor that throws leaves nothing registered; close()
  // drops it on the runtime's strand, where it runs, so `this` outlives it.
  void take_handed_over() {
    taker_ = ctx_.set_connection_taker(name_, [this](unique_fd fd) {
      signal_->handed.push_back(std::move(fd));
      signal_->woken = true;
      signal_->wake.cancel();
      boost::system::error_code ignored;
      acceptor_.cancel(ignored);  // a pending accept ends; accept() looks again
    });
  }

  // A connected socket, as accept() returns it.
  std::tuple<boost::system::error_code, tcp::socket> adopt(unique_fd fd, const boost::asio::any_io_executor& ex) {
    boost::system::error_code ec;
    tcp::socket s(ex);
    s.assign(family_ == AF_INET6 ? tcp::v6() : tcp::v4(), fd.get(), ec);
    if (!ec) fd.release();
    return {ec, std::move(s)};
  }

  struct readiness {
    explicit readiness(const boost::asio::any_io_executor& ex) : wake(ex) {}
    boost::asio::steady_timer wake;
    bool ready = false;  ///< the waiter handed over and waits for resume()
    std::deque<unique_fd> handed;  ///< from the master, for accept() to return first
    bool woken = false;  ///< the last cancel of the pending accept was a hand-over's
  };

  accept_strategy strategy_;
  int family_;
  int threads_;
  boost::asio::io_context& io_;
  context& ctx_;
  std::string name_;  ///< the listener's
  std::uint64_t taker_ = 0;  ///< this acceptor's registration with ctx_ (set_connection_taker)
  tcp::acceptor acceptor_;     ///< shared, reuseport
  unique_fd exclusive_fd_;     ///< exclusive: accepted from without Asio's reactor
  std::shared_ptr<readiness> signal_;  ///< the waiter's posts hold it weakly
  std::optional<detail::accept_waiter> waiter_;
  bool handed_ = false;  ///< the waiter is parked until resume()
};

}  // namespace systempp
