#pragma once
/// What most units repeat, done once: request accounting by scope, a gate that the drain
/// waits on for in-flight work, a periodic task bound to the cycle, and an accept loop that
/// backs off on accept errors. Header-only and not in systempp.hpp (it pulls in Asio's
/// timers and ip::tcp): include it where units use it. All of it runs on the loop's thread
/// of the process that runs the stages (ctx.io()).

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "systempp/acceptor.hpp"
#include "systempp/context.hpp"

namespace systempp {

/// Counts one request in the worker's record for as long as it lives: request_begin at
/// construction, request_end at destruction, as failed when fail() was called or when an
/// exception is unwinding through it. A no-op outside a pool worker.
class request_scope {
 public:
  explicit request_scope(const context& ctx) noexcept : ctx_(ctx), unwinding_(std::uncaught_exceptions()) {
    ctx_.request_begin();
  }
  ~request_scope() { ctx_.request_end(failed_ || std::uncaught_exceptions() > unwinding_); }
  request_scope(const request_scope&) = delete;
  request_scope& operator=(const request_scope&) = delete;
  /// The request failed (an error response): it counts in the worker's errors.
  void fail() noexcept { failed_ = true; }

 private:
  const context& ctx_;
  int unwinding_;
  bool failed_ = false;
};

/// In-flight work that a drain waits for. Each piece of work holds a pass while it runs;
/// close() refuses new passes and waits until the held ones are returned. The gate must
/// outlive its passes. Passes may be taken and returned on any thread; await close() on a
/// strand (a stage's, ctx.executor()), where the last pass's wake-up is posted.
class gate {
 public:
  /// A held pass: true while the gate let it in. Returned when destroyed.
  class pass {
   public:
    pass() = default;
    pass(pass&& other) noexcept : gate_(std::exchange(other.gate_, nullptr)) {}
    pass& operator=(pass&& other) noexcept {
      if (this != &other) {
        release();
        gate_ = std::exchange(other.gate_, nullptr);
      }
      return *this;
    }
    ~pass() { release(); }
    explicit operator bool() const noexcept { return gate_ != nullptr; }

   private:
    friend class gate;
    explicit pass(gate* g) noexcept : gate_(g) {}
    void release() noexcept {
      if (gate_) gate_->returned();
      gate_ = nullptr;
    }
    gate* gate_ = nullptr;
  };

  gate() = default;
  gate(const gate&) = delete;
  gate& operator=(const gate&) = delete;

  /// A pass, or an empty one once the gate is closed (the work should not start).
  pass enter() {
    std::lock_guard lock(mutex_);
    if (closed_) return pass();
    ++held_;
    return pass(this);
  }
  /// Passes held now.
  std::size_t held() const {
    std::lock_guard lock(mutex_);
    return held_;
  }
  bool closed() const {
    std::lock_guard lock(mutex_);
    return closed_;
  }
  /// Closes the gate and waits until every pass is returned, at most `limit`. Returns how
  /// many were still held then (0: all work finished).
  boost::asio::awaitable<std::size_t> close(std::chrono::milliseconds limit) {
    auto timer = std::make_shared<boost::asio::steady_timer>(co_await boost::asio::this_coro::executor, limit);
    bool wait = false;
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
      wait = held_ > 0;
      if (wait) waiter_ = timer;
    }
    if (wait) co_await timer->async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));  // cancelled at 0
    std::lock_guard lock(mutex_);
    waiter_.reset();
    co_return held_;
  }
  /// Opens a closed gate again (the next cycle of an inline process).
  void reopen() {
    std::lock_guard lock(mutex_);
    closed_ = false;
  }

 private:
  // The last pass back wakes close(), on the strand it waits on.
  void returned() noexcept {
    std::lock_guard lock(mutex_);
    if (--held_ == 0 && waiter_)
      boost::asio::post(waiter_->get_executor(), [t = waiter_] { t->cancel(); });
  }

  mutable std::mutex mutex_;
  std::size_t held_ = 0;
  bool closed_ = false;
  std::shared_ptr<boost::asio::steady_timer> waiter_;  ///< close()'s timer while it waits
};

/// Runs `fn` every `interval` as work of the current cycle (ctx.spawn): the first run one
/// interval after the call, the next one interval after the previous ended. It stops when
/// the drain starts, and never runs after the unit's post_shutdown. `fn` is `void()` or
/// `boost::asio::awaitable<void>()`; a run that throws is logged with the unit's name and
/// the task goes on. Call from on_startup or post_startup, on the loop's thread.
template <class Self, class Fn>
void every(context& ctx, const Self&, std::chrono::milliseconds interval, Fn fn) {
  auto task = [](context& ctx, std::string unit, std::chrono::milliseconds interval, Fn fn) -> boost::asio::awaitable<void> {
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
    std::string failure;  // co_await is not allowed in a handler: the catch only notes it
    for (;;) {
      timer.expires_after(interval);
      co_await timer.async_wait(boost::asio::use_awaitable);  // the drain's cancellation ends it here
      try {
        if constexpr (std::is_void_v<std::invoke_result_t<Fn&>>)
          fn();
        else
          co_await fn();
      } catch (const std::exception& e) {
        failure = e.what();
      }
      if (!failure.empty()) {
        const auto state = co_await boost::asio::this_coro::cancellation_state;
        if (state.cancelled() != boost::asio::cancellation_type::none) co_return;  // the drain
        ctx.log().error("a periodic task of unit {} failed: {}; it runs again in {} ms", unit, failure,
                        interval.count());
        failure.clear();
      }
    }
  };
  std::string unit = detail::unit_name<Self>();
  ctx.spawn_task(unit, task(ctx, unit, interval, std::move(fn)));
}

/// Accepts connections on `acceptor` until it is closed (typically in pre_shutdown, with
/// close(on_connection) so a reuseport slot's queue is served too), handing each socket to
/// `on_connection`. Every socket is bound to a strand of its own (its get_executor()):
/// co_spawn the connection's work there, and with --threads N its handlers still run one
/// at a time. An accept that fails for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM)
/// is logged once per run of failures and retried after `backoff` instead of spinning;
/// other errors are retried at once. Run it on the runtime's strand (ctx.executor()),
/// where pre_shutdown closes the acceptor.
template <class OnConnection>
boost::asio::awaitable<void> accept_loop(connection_acceptor& acceptor, OnConnection on_connection,
                                         spdlog::logger& log,
                                         std::chrono::milliseconds backoff = std::chrono::milliseconds(100)) {
  namespace asio = boost::asio;
  bool failing = false;
  while (acceptor.is_open()) {
    auto [ec, socket] = co_await acceptor.accept();
    if (!ec) {
      if (failing) log.info("accept works again");
      failing = false;
      on_connection(std::move(socket));
      continue;
    }
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    const bool shortage = ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
                          ec == asio::error::no_memory || ec.value() == ENFILE;
    if (!shortage) continue;
    if (!failing) log.warn("accept failed: {}; retrying every {} ms", ec.message(), backoff.count());
    failing = true;
    asio::steady_timer pause(co_await asio::this_coro::executor, backoff);
    auto [waited] = co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
    if (waited) co_return;  // cancelled: the cycle is ending
  }
}

}  // namespace systempp
