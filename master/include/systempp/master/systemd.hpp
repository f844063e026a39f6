#pragma once
/// The master's side of systemd: sd_notify status messages, the watchdog, and listening
/// sockets passed by socket activation. Every call is a no-op outside systemd.

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "systempp/listeners.hpp"

namespace systempp::master {

class systemd_notifier {
 public:
  /// Master only. Reads NOTIFY_SOCKET and WATCHDOG_USEC once.
  systemd_notifier();

  /// READY=1 with a STATUS= line (the first time every worker is READY, after a reload).
  void ready(const std::string& status);
  /// RELOADING=1 with MONOTONIC_USEC=, as systemd wants it for a reload.
  void reloading(const std::string& status);
  /// STOPPING=1 with a STATUS= line, when a stop begins.
  void stopping(const std::string& status);
  /// After a master upgrade: the pid is unchanged, but systemd is told again.
  void main_pid(pid_t pid);
  /// How often to send WATCHDOG=1 (half of WATCHDOG_USEC), if the watchdog is on.
  std::optional<std::chrono::milliseconds> watchdog_interval() const noexcept { return watchdog_; }
  void watchdog();

 private:
  void send(const std::string& message);
  bool enabled_ = false;
  std::optional<std::chrono::milliseconds> watchdog_;
};

/// Listening sockets passed by systemd (LISTEN_FDS / LISTEN_FDNAMES), made non-blocking
/// and close-on-exec; empty when there are none. Unnamed ones are called "http".
std::vector<listener> activated_listeners();

}  // namespace systempp::master
