#pragma once
// The worker process as one class, each step of its life a named member, in the order
// nginx's ngx_worker_process_cycle takes them: guard the parent, ignore the pool's
// signals, build the loop, heartbeat, READY, serve, drain, publish the exit.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <atomic>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "systempp/context.hpp"
#include "systempp/control_block.hpp"
#include "systempp/lifecycle.hpp"
#include "systempp/worker/worker_runtime.hpp"

namespace systempp::worker {

/// Publishes the running unit and stage, and each stage's duration, in the worker's
/// record. Worker only.
class slot_observer final : public stage_observer {
 public:
  slot_observer(worker_slot& r, const lifecycle& lc) : r_(r), lc_(lc) {}
  void stage_begin(std::size_t unit, stage s) override;
  void stage_end(std::size_t unit, stage s, std::chrono::microseconds took,
                 stage_outcome outcome) override;

 private:
  void publish(std::size_t unit, stage s);
  worker_slot& r_;
  const lifecycle& lc_;
  std::vector<std::size_t> running_;  ///< units inside the current stage (a level runs at once)
  bool failed_ = false;
};

/// One pool worker, from the moment after fork (or exec) to its exit code. Worker only.
class worker_process {
 public:
  /// Dies with the master: false if the master is already gone. Worker only, first thing
  /// after fork.
  static bool guard_parent(pid_t master_pid) noexcept;
  /// SIG_IGN for the table's ignored rows. Worker only, before the loop exists.
  static void ignore_pool_signals() noexcept;

  /// Builds the logger, the loop, the signal set (then restores the signal mask), the
  /// lifecycle and the context, and marks the record STARTING. Worker only, after
  /// guard_parent; throws config_error when the log file cannot be opened.
  explicit worker_process(launch& l);
  worker_process(const worker_process&) = delete;
  worker_process& operator=(const worker_process&) = delete;

  /// The heartbeat and one cycle; returns the exit code. Worker only, once.
  int run();

 private:
  void start_heartbeat();
  boost::asio::awaitable<void> heartbeat();
  void ask_recycle_if_due();
  void report_ready();
  boost::asio::awaitable<void> serve();
  boost::asio::awaitable<void> read_master();
  boost::asio::awaitable<std::pair<boost::system::error_code, char>> next_message();
  void hand_over(const std::string& index);
  boost::asio::awaitable<void> read_signals();
  void pin_to_cpu(int slot);
  void begin_drain();
  boost::asio::awaitable<void> exit_on_fast_stop_signal();
  boost::asio::awaitable<void> exit_on_fast_stop_message();
  int publish_exit(const cycle_result& result);
  void send(char byte) noexcept;

  const options& opts_;
  worker_slot& record_;
  std::optional<boost::asio::io_context> own_io_;  ///< a forked child's loop (launch::io)
  boost::asio::io_context& io_;
  boost::asio::signal_set signals_;
  boost::asio::posix::stream_descriptor channel_;
  lifecycle lifecycle_;
  slot_observer observer_;
  context ctx_;
  boost::asio::steady_timer beat_;
  std::chrono::milliseconds beat_every_;
  std::uint64_t request_limit_;  ///< 0: --max-requests is off
  /// Resident bytes when READY: over --max-rss, never recycled for it. Written before READY
  /// is published, read by the heartbeat.
  std::atomic<std::uint64_t> rss_at_ready_{0};
  std::uint64_t asked_ms_ = 0;  ///< when this worker last asked to be recycled; 0 never
  bool fast_ = false;  ///< serve ended with a fast stop (SIGQUIT or the master's QUIT)
  std::string role_;              ///< "worker 2", or a dedicated process's unit
  std::string title_;             ///< what ps shows, "worker 2 gen 3 [kvd]"
  std::string inbox_;             ///< bytes read from the channel, not yet taken
  std::deque<unique_fd> handed_;  ///< sockets that came with them, in order
};

}  // namespace systempp::worker
