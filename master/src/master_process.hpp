#pragma once
// The master process as one class (master_process.cpp): the owner of the pool's parts, its
// signal dispatch and its tick.

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include <optional>
#include <string_view>

#include "systempp/lifecycle.hpp"
#include "systempp/master/change_watch.hpp"
#include "systempp/master/connection_handover.hpp"
#include "systempp/master/master_process.hpp"
#include "systempp/master/metrics_server.hpp"
#include "systempp/master/pool_setup.hpp"
#include "systempp/master/reload_report.hpp"
#include "systempp/master/supervisor.hpp"
#include "systempp/master/systemd.hpp"

namespace systempp::master {

namespace asio = boost::asio;

class master_process {
 public:
  master_process(const options& opts, detail::app_units& units, asio::io_context& io,
                 std::optional<incoming_upgrade> upgrade)
      : opts_(opts), units_(units), io_(io), upgrade_(std::move(upgrade)), signals_(io_), tick_(io_), watchdog_timer_(io_), retire_(io_), lc_(units), sys_(io) {}

  int run();

 private:
  int open();
  void start_supervisor(int workers, int max_workers);
  int adopted_target() const;
  /// Runs one event's handling; an exception is logged, never let out of the loop (the
  /// pool would be lost with it). Returns false when one was thrown.
  template <class F>
  bool guarded(std::string_view what, F&& handle) noexcept;
  void wait_signal();
  void on_signal(int sig);
  void stop(stop_mode mode, std::string_view why);
  void scale(int sig);
  void requested(control_request what, const std::string& who, std::string_view reason);
  /// `why` starts the log line; `in_status`: it is also appended to the reload's outcome.
  void begin_reload(const std::string& why, bool in_status);
  void begin_rollout(std::string_view why);
  void watch_files();
  void files_changed(const std::vector<std::string>& changed);
  void start_watchdog();
  void steer_connections();
  void show_title();
  void schedule_tick();
  void finish();

  const options& opts_;
  detail::app_units& units_;
  asio::io_context& io_;  ///< made by systempp::main before the units, so it outlives them
  std::optional<incoming_upgrade> upgrade_;  ///< set until this image took over a pool (SIGUSR2)
  asio::signal_set signals_;
  asio::steady_timer tick_;
  asio::steady_timer watchdog_timer_;
  asio::steady_timer retire_;  ///< a stop's wait before it retires the listeners
  lifecycle lc_;
  os_system_calls sys_;
  systemd_notifier notify_;
  std::shared_ptr<spdlog::logger> log_;
  std::optional<metrics_server> metrics_;
  pool_setup pool_;
  std::optional<context> ctx_;
  std::optional<worker_table> table_;
  std::optional<connection_handover> handover_;  ///< --accept reuseport; before table_ goes
  std::optional<supervisor> sup_;
  std::optional<reload_report> report_;
  std::optional<change_watch> watch_;  ///< --reload-on-change
  bool upgrade_pending_ = false;       ///< the binary changed during a rollout (fork mode)
  std::string reload_why_;  ///< the unit's request behind the reload in progress, if any
  std::string title_;       ///< what ps shows now
  bool finished_ = false;
};

template <class F>
bool master_process::guarded(std::string_view what, F&& handle) noexcept {
  try {
    handle();
    return true;
  } catch (const std::exception& e) {
    log_->critical("handling {}: {}", what, e.what());
  } catch (...) {
    log_->critical("handling {}: unknown exception", what);
  }
  return false;
}

}  // namespace systempp::master
