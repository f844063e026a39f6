#include "systempp/master/upgrade.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <cstdlib>
#include <thread>

#include "systempp/master/supervisor.hpp"
#include "systempp/master/system_calls.hpp"

extern char** environ;

namespace systempp::master {

namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (!s.empty()) {
    const auto at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) break;
    s.remove_prefix(at + 1);
  }
  return out;
}

template <class T>
bool number(std::string_view s, T& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && ec == std::errc{} && end == s.data() + s.size();
}

}  // namespace

std::string encode(const handover& h) {
  std::string out = fmt::format("control={};", h.control_fd);
  if (h.lock_fd >= 0) out += fmt::format("lock={};", h.lock_fd);
  out += "listeners=";
  for (std::size_t i = 0; i < h.listeners.size(); ++i)
    out += fmt::format("{}{}:{}", i ? "," : "", h.listeners[i].name, h.listeners[i].fd);
  out += ";workers=";
  for (std::size_t i = 0; i < h.workers.size(); ++i) {
    const auto& w = h.workers[i];
    out += fmt::format("{}{}:{}:{}:{}:{}", i ? "," : "", w.pid, w.slot, w.lane, w.generation, w.channel);
  }
  return out;
}

std::optional<handover> decode(std::string_view text) {
  handover h;
  bool have_control = false;
  for (auto part : split(text, ';')) {
    const auto eq = part.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    const auto key = part.substr(0, eq);
    const auto value = part.substr(eq + 1);
    if (key == "control") {
      if (!number(value, h.control_fd) || h.control_fd < 0) return std::nullopt;
      have_control = true;
    } else if (key == "lock") {
      if (!number(value, h.lock_fd) || h.lock_fd < 0) return std::nullopt;
    } else if (key == "listeners") {
      for (auto item : split(value, ',')) {
        const auto colon = item.rfind(':');
        handover::listener_fd l;
        if (colon == std::string_view::npos || !number(item.substr(colon + 1), l.fd) || l.fd < 0)
          return std::nullopt;
        l.name = std::string(item.substr(0, colon));
        h.listeners.push_back(std::move(l));
      }
    } else if (key == "workers") {
      for (auto item : split(value, ',')) {
        const auto f = split(item, ':');
        handover::adopted_worker w;
        if (f.size() != 5 || !number(f[0], w.pid) || !number(f[1], w.slot) || !number(f[2], w.lane) ||
            !number(f[3], w.generation) || !number(f[4], w.channel) || w.pid <= 0 || w.channel < 0)
          return std::nullopt;
        h.workers.push_back(w);
      }
    } else {
      return std::nullopt;
    }
  }
  if (!have_control) return std::nullopt;
  return h;
}

std::optional<handover> take_handover() {
  const char* env = std::getenv(upgrade_env);
  if (!env) return std::nullopt;
  auto h = decode(env);
  ::unsetenv(upgrade_env);
  return h;
}

std::string check_binary(const std::string& path, std::chrono::milliseconds timeout) {
  if (::access(path.c_str(), X_OK) != 0) return fmt::format("{} is not executable", path);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  char* argv[] = {const_cast<char*>(path.c_str()), const_cast<char*>("--help"), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, path.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return fmt::format("cannot run {}: {}", path, std::strerror(rc));
  // A bounded wait on one child the master itself started; the loop is paused meanwhile,
  // which an operator-triggered upgrade can afford.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (auto step = std::chrono::milliseconds(1);; step = std::min(step * 2, std::chrono::milliseconds(50))) {
    int status = 0;
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
      return fmt::format("{} --help failed (status {})", path, status);
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return fmt::format("{} --help did not finish within {} ms", path, timeout.count());
    }
    std::this_thread::sleep_for(step);
  }
}

handover describe_pool(int control_fd, int lock_fd, const std::vector<listener>& listeners, const supervisor& sup) {
  handover h;
  h.control_fd = control_fd;
  h.lock_fd = lock_fd;
  for (const auto& l : listeners) h.listeners.push_back({l.name, l.fd.get()});
  for (const auto& [pid, w] : sup.table().workers())
    if (w.channel_fd() >= 0) h.workers.push_back({pid, w.slot, w.lane, w.generation, w.channel_fd()});
  return h;
}

std::string exec_upgrade(const handover& h, const std::string& path, const std::vector<std::string>& argv,
                         system_calls& sys) {
  std::vector<int> fds{h.control_fd};
  if (h.lock_fd >= 0) fds.push_back(h.lock_fd);  // closing it at exec would drop the lock
  for (const auto& l : h.listeners) fds.push_back(l.fd);
  for (const auto& w : h.workers) fds.push_back(w.channel);
  for (int fd : fds) ::fcntl(fd, F_SETFD, 0);
  ::setenv(upgrade_env, encode(h).c_str(), 1);
  sigset_t all, previous;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &previous);

  const int err = sys.exec(path, argv);
  // Still the old image: undo and keep serving.
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  ::unsetenv(upgrade_env);
  for (int fd : fds) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fmt::format("exec {} failed: {}", path, std::strerror(err));
}

void upgrade_master(int control_fd, int lock_fd, const std::vector<listener>& listeners, const std::string& path,
                    const std::vector<std::string>& argv, supervisor& sup, system_calls& sys, spdlog::logger& log) {
  if (sup.policy().stopping() || sup.policy().reloading()) {
    log.warn("SIGUSR2: a {} is in progress; upgrade not started", sup.policy().stopping() ? "stop" : "rollout");
    return;
  }
  if (auto why = check_binary(path, std::chrono::seconds(5)); !why.empty()) {
    log.error("SIGUSR2: upgrade refused: {}", why);
    return;
  }
  log.info("SIGUSR2: upgrading the master in place ({})", path);
  log.flush();
  const auto why = exec_upgrade(describe_pool(control_fd, lock_fd, listeners, sup), path, argv, sys);
  log.error("SIGUSR2: {}; the current master keeps running", why);
}

void adopt_workers(const handover& h, supervisor& sup) {
  sup.policy().ready_announced();
  for (const auto& w : h.workers) {
    // Its record says where it was: starting, serving or draining. One that is no live
    // process any more is still taken into the table, so its exit is reaped.
    std::optional<proc_state> state;
    try {
      state = policy_state_of(sup.table().record(w.slot, w.lane).state.load());
    } catch (const std::out_of_range&) {  // not a record of this block: not ours to adopt
      ::close(w.channel);
      continue;
    }
    if (state) sup.policy().adopt(w.pid, w.slot, w.lane, w.generation, *state, now_ms());
    sup.table().adopt(w.pid, w.slot, w.lane, w.generation, w.channel);
  }
  sup.reap();  // a worker that exited while the images changed is reaped now
}

}  // namespace systempp::master
