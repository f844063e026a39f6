// The tasks a unit spawns for the current cycle (context::spawn): cancelled when the drain
// starts and waited for before post_shutdown, so none runs after its unit stopped.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <list>
#include <optional>

#include "systempp/context.hpp"

namespace systempp {

namespace asio = boost::asio;

class detail::task_group {
 public:
  explicit task_group(asio::any_io_executor ex) : ex_(std::move(ex)) {}

  void spawn(std::string unit, asio::awaitable<void> body, const std::shared_ptr<spdlog::logger>& log) {
    auto it = tasks_.emplace(tasks_.end());
    it->unit = std::move(unit);
    asio::co_spawn(ex_, std::move(body),
                   asio::bind_cancellation_slot(it->cancel.slot(), [this, it, log](std::exception_ptr e) {
                     report(it->unit, e, *log);
                     tasks_.erase(it);
                     if (tasks_.empty() && idle_) idle_->cancel();
                   }));
  }

  void cancel() {
    // A task may finish (and leave the list) inside its own emit: step on first.
    for (auto it = tasks_.begin(); it != tasks_.end();) {
      auto next = std::next(it);
      it->cancel.emit(asio::cancellation_type::terminal);
      it = next;
    }
  }

  asio::awaitable<std::size_t> join(std::chrono::milliseconds limit, spdlog::logger& log) {
    if (!tasks_.empty()) {
      idle_.emplace(ex_, limit);
      co_await idle_->async_wait(asio::as_tuple(asio::use_awaitable));  // cancelled when the last ends
      idle_.reset();
    }
    for (const auto& t : tasks_)
      log.warn("a task of unit {} was still running {} ms after it was asked to stop: left behind", t.unit,
               limit.count());
    co_return tasks_.size();
  }

  std::size_t size() const noexcept { return tasks_.size(); }

 private:
  struct task {
    std::string unit;
    asio::cancellation_signal cancel;
  };

  static void report(const std::string& unit, std::exception_ptr e, spdlog::logger& log) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const boost::system::system_error& err) {
      if (err.code() == asio::error::operation_aborted)
        log.debug("a task of unit {} stopped: cancelled", unit);
      else
        log.error("a task of unit {} failed: {}", unit, err.what());
    } catch (const std::exception& err) {
      log.error("a task of unit {} failed: {}", unit, err.what());
    } catch (...) {
      log.error("a task of unit {} failed: unknown exception", unit);
    }
  }

  asio::any_io_executor ex_;  ///< the runtime's strand: the list is touched there only
  std::list<task> tasks_;
  std::optional<asio::steady_timer> idle_;
};

void context::spawn_task(std::string unit, asio::awaitable<void> task) {
  if (!tasks_) tasks_ = std::make_shared<detail::task_group>(executor_);
  tasks_->spawn(std::move(unit), std::move(task), logger_ptr());
}

std::size_t context::running_tasks() const noexcept { return tasks_ ? tasks_->size() : 0; }

void context::cancel_tasks() {
  if (tasks_) tasks_->cancel();
}

asio::awaitable<std::size_t> context::join_tasks(std::chrono::milliseconds limit) {
  if (!tasks_) co_return 0;
  co_return co_await tasks_->join(limit, log());
}

}  // namespace systempp
