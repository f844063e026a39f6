#include "systempp/master/systemd.hpp"

#include <fcntl.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include <fmt/format.h>

#include <cstdlib>

namespace systempp::master {

systemd_notifier::systemd_notifier() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  enabled_ = socket != nullptr && *socket != '\0';
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
    watchdog_ = std::chrono::milliseconds(std::max<std::uint64_t>(1, usec / 2000));
}

void systemd_notifier::send(const std::string& message) {
  if (enabled_) sd_notify(0, message.c_str());
}

void systemd_notifier::ready(const std::string& s) { send("READY=1\nSTATUS=" + s); }

void systemd_notifier::reloading(const std::string& s) {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const auto usec = static_cast<unsigned long long>(now.tv_sec) * 1'000'000ULL +
                    static_cast<unsigned long long>(now.tv_nsec) / 1000ULL;
  send(fmt::format("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={}", usec, s));
}

void systemd_notifier::stopping(const std::string& s) { send("STOPPING=1\nSTATUS=" + s); }
void systemd_notifier::main_pid(pid_t pid) { send(fmt::format("MAINPID={}", pid)); }
void systemd_notifier::watchdog() { send("WATCHDOG=1"); }

std::vector<listener> activated_listeners() {
  char** names = nullptr;
  const int n = sd_listen_fds_with_names(1, &names);  // 1: our children must not see them
  std::vector<listener> out;
  for (int i = 0; i < n; ++i) {
    const int fd = SD_LISTEN_FDS_START + i;
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    std::string name = names && names[i] ? names[i] : "";
    if (name.empty() || name == "unknown") name = "http";
    out.push_back(adopt_listener(unique_fd(fd), name));
  }
  if (names) {
    for (int i = 0; i < n; ++i) std::free(names[i]);
    std::free(names);
  }
  return out;
}

}  // namespace systempp::master
