#include "systempp/master/upgrade.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <cstdlib>

#include "systempp/fd.hpp"
#include "systempp/master/pool_setup.hpp"
#include "systempp/master/reload_report.hpp"
#include "systempp/master/supervisor.hpp"
#include "systempp/master/system_calls.hpp"
#include "systempp/protocol.hpp"

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
  std::string out = fmt::format("protocol={};image={};control={};lock={};listeners=", h.protocol, h.image_fd,
                                h.control_fd, h.lock_fd);
  for (std::size_t i = 0; i < h.listeners.size(); ++i) {
    const auto& l = h.listeners[i];
    out += fmt::format("{}{}:{}:{}", i ? "," : "", l.name, l.fd, l.slot_socket ? "s" : l.bound ? "b" : "a");
  }
  out += ";workers=";
  for (std::size_t i = 0; i < h.workers.size(); ++i) {
    const auto& w = h.workers[i];
    out += fmt::format("{}{}:{}:{}:{}:{}", i ? "," : "", w.pid, w.slot, w.lane, w.generation, w.channel);
  }
  if (!h.back.empty()) {
    std::string why = h.back.substr(0, 300);  // one line, and nothing the parser splits on
    for (char& c : why)
      if (c == ';' || c == '\n' || c == '\0') c = ',';
    out += ";back=" + why;
  }
  return out;
}

namespace {

bool decode_listeners(std::string_view value, handover& h) {
  for (auto item : split(value, ',')) {
    const auto f = split(item, ':');
    handover::listener_fd l;
    if (f.size() != 3 || f[0].empty() || !number(f[1], l.fd) || l.fd < 0 || (f[2] != "b" && f[2] != "a" && f[2] != "s"))
      return false;
    l.name = std::string(f[0]);
    l.bound = f[2] == "b";
    l.slot_socket = f[2] == "s";
    h.listeners.push_back(std::move(l));
  }
  return true;
}

bool decode_workers(std::string_view value, handover& h) {
  for (auto item : split(value, ',')) {
    const auto f = split(item, ':');
    handover::adopted_worker w;
    if (f.size() != 5 || !number(f[0], w.pid) || !number(f[1], w.slot) || !number(f[2], w.lane) ||
        !number(f[3], w.generation) || !number(f[4], w.channel) || w.pid <= 0 || w.channel < 0)
      return false;
    h.workers.push_back(w);
  }
  return true;
}

}  // namespace

std::optional<handover> decode(std::string_view text) {
  handover h;
  const auto parts = split(text, ';');
  // The head, in every version: "protocol=N;image=FD".
  if (parts.size() < 2 || !parts[0].starts_with("protocol=") || !number(parts[0].substr(9), h.protocol) ||
      !parts[1].starts_with("image=") || !number(parts[1].substr(6), h.image_fd) || h.image_fd < -1)
    return std::nullopt;
  if (h.protocol != protocol_version) return h;
  bool have_control = false;
  for (std::size_t i = 2; i < parts.size(); ++i) {
    const auto eq = parts[i].find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    const auto key = parts[i].substr(0, eq);
    const auto value = parts[i].substr(eq + 1);
    bool ok = true;
    if (key == "control")
      ok = have_control = number(value, h.control_fd) && h.control_fd >= 0;
    else if (key == "lock")
      ok = number(value, h.lock_fd) && h.lock_fd >= 0;
    else if (key == "listeners")
      ok = decode_listeners(value, h);
    else if (key == "workers")
      ok = decode_workers(value, h);
    else if (key == "back")
      h.back = value.empty() ? "unknown failure" : std::string(value);
    else
      ok = false;
    if (!ok) return std::nullopt;
  }
  if (!have_control || h.lock_fd < 0) return std::nullopt;
  return h;
}

namespace {

// The child's stdout and stderr, read until both close or the deadline passes; at most
// 4 KiB of each is kept.
struct probe_output {
  std::string out, err;
};

bool read_until(probe_output& got, int out_fd, int err_fd, std::chrono::steady_clock::time_point deadline) {
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  std::string* into[2] = {&got.out, &got.err};
  int open = 2;
  while (open > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    const int n = ::poll(fds, 2, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[512];
      const ssize_t r = ::read(fds[i].fd, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        fds[i].fd = -1;
        --open;
      } else if (into[i]->size() < 4096) {
        into[i]->append(buf, static_cast<std::size_t>(r));
      }
    }
  }
  return true;
}

std::string first_line(std::string_view text) {
  text = text.substr(0, text.find('\n'));
  return text.empty() ? std::string("no message") : std::string(text);
}

}  // namespace

std::string probe_binary(const std::string& path, const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout) {
  if (::access(path.c_str(), X_OK) != 0) return fmt::format("{} is not executable", path);
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return fmt::format("pipe: {}", std::strerror(errno));
  unique_fd out_r(out[0]), out_w(out[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) return fmt::format("pipe: {}", std::strerror(errno));
  unique_fd err_r(err[0]), err_w(err[1]);
  std::vector<std::string> args{path, "--upgrade-version"};
  args.insert(args.end(), argv.size() > 1 ? argv.begin() + 1 : argv.end(), argv.end());
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_w.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_w.get(), STDERR_FILENO);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, path.c_str(), &actions, nullptr, cargs.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return fmt::format("cannot run {}: {}", path, std::strerror(rc));
  out_w.reset();
  err_w.reset();
  // A bounded wait on one child the master itself started; the loop is paused meanwhile,
  // which an operator-triggered upgrade can afford.
  probe_output got;
  const bool finished = read_until(got, out_r.get(), err_r.get(), std::chrono::steady_clock::now() + timeout);
  if (!finished) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!finished) return fmt::format("{} --upgrade-version did not finish within {} ms", path, timeout.count());
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return fmt::format("{} --upgrade-version failed ({} {}): {}", path, WIFEXITED(status) ? "exit" : "signal",
                       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), first_line(got.err));
  const std::string expected = fmt::format("{} {}", protocol_banner, protocol_version);
  if (const auto said = first_line(got.out); said != expected)
    return fmt::format("{} speaks '{}', this master '{}': restart the pool to change protocols", path, said, expected);
  return {};
}

handover describe_pool(int image_fd, int control_fd, int lock_fd, const std::vector<listener>& listeners,
                       const slot_sockets& slots, bool bound, const supervisor& sup) {
  handover h;
  h.protocol = protocol_version;
  h.image_fd = image_fd;
  h.control_fd = control_fd;
  h.lock_fd = lock_fd;
  for (std::size_t i = 0; i < listeners.size(); ++i) {
    h.listeners.push_back({listeners[i].name, listeners[i].fd.get(), bound});
    if (slots.enabled())
      for (const auto& fd : slots.sockets_of(i)) h.listeners.push_back({listeners[i].name, fd.get(), bound, true});
  }
  for (const auto& [pid, w] : sup.table().workers())
    if (w.channel_fd() >= 0) h.workers.push_back({pid, w.slot, w.lane, w.generation, w.channel_fd()});
  return h;
}

std::vector<int> handover_fds(const handover& h) {
  std::vector<int> fds{h.control_fd, h.lock_fd};  // closing the lock's fd at exec would drop the lock
  if (h.image_fd >= 0) fds.push_back(h.image_fd);
  for (const auto& l : h.listeners) fds.push_back(l.fd);
  for (const auto& w : h.workers) fds.push_back(w.channel);
  return fds;
}

std::string exec_upgrade(const handover& h, const std::string& path, const std::vector<std::string>& argv,
                         system_calls& sys) {
  const auto fds = handover_fds(h);
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

void upgrade_master(pool_setup& pool, const options& opts, supervisor& sup, system_calls& sys,
                    reload_report& report, spdlog::logger& log) {
  if (sup.policy().stopping() || sup.policy().reloading()) {
    log.warn("SIGUSR2: a {} is in progress; upgrade not started", sup.policy().stopping() ? "stop" : "rollout");
    return;
  }
  if (auto why = probe_binary(pool.exec_path, opts.argv, std::chrono::seconds(5)); !why.empty())
    return report.ended_at_once(reload_result::rejected, "upgrade refused: " + why);
  log.info("SIGUSR2: upgrading the master in place ({})", pool.exec_path);
  log.flush();
  const auto h = describe_pool(pool.image.get(), pool.segment->fd(), pool.lock->fd(), pool.listeners,
                               pool.slots, pool.origin == listener_origin::bound, sup);
  report.ended_at_once(reload_result::failed, "upgrade failed: " + exec_upgrade(h, pool.exec_path, opts.argv, sys));
}

bool take_over(incoming_upgrade& in, supervisor& sup, reload_report& report, spdlog::logger& log) {
  adopt_workers(in.pool(), sup);
  log.info("upgrade: adopted {} worker(s)", in.pool().workers.size());
  in.taken_over();
  if (!in.returned()) return true;
  report.ended_at_once(reload_result::failed, "upgrade failed: " + in.pool().back + "; back on the previous image");
  return false;
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
