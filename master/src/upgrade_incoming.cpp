// The new image's side of a master upgrade: from its first instant until it has taken the
// pool over, any failure hands the pool back to the image it came from (upgrade.hpp).

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "systempp/control_block.hpp"
#include "systempp/master/upgrade.hpp"
#include "systempp/pool_registry.hpp"
#include "systempp/protocol.hpp"

extern char** environ;

namespace systempp::master {

namespace {

constexpr int fatal_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};

// Everything a fatal-signal handler needs to exec the previous image, made before it can
// run: the handler only clears close-on-exec, blocks signals and execs (all async-signal-
// safe). One environment per fatal signal, each saying which one it was.
struct prepared_fall_back {
  int image_fd = -1;
  std::vector<int> fds;
  std::vector<std::string> argv;
  std::vector<char*> argv_ptrs;
  std::vector<std::string> env;  ///< environ as it was, without SYSTEMPP_UPGRADE
  std::vector<std::string> handovers;  ///< "SYSTEMPP_UPGRADE=...", one per fatal signal
  std::vector<std::vector<char*>> envps;
};
prepared_fall_back* armed = nullptr;  // set while the handlers are installed

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// `env` plus the handover variable, as execve takes them (both must outlive the result).
std::vector<char*> environment_with(std::vector<std::string>& env, std::string& upgrade) {
  auto out = pointers(env);
  out.insert(out.end() - 1, upgrade.data());
  return out;
}

std::vector<std::string> current_environment() {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  return env;
}

// Returns only when fexecve failed, with the fds and the signal mask as they were.
void exec_previous(int image_fd, const std::vector<int>& fds, char* const* argv, char* const* envp) noexcept {
  for (int fd : fds) ::fcntl(fd, F_SETFD, 0);
  sigset_t all, previous;
  ::sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, &previous);  // kept through exec, as exec_upgrade does
  ::fexecve(image_fd, argv, envp);
  const int err = errno;
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);
  for (int fd : fds) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  errno = err;
}

extern "C" void on_fatal_signal(int sig) {
  constexpr char line[] = "upgrade: the new image died of a fatal signal; handing the pool back\n";
  [[maybe_unused]] auto n = ::write(STDERR_FILENO, line, sizeof line - 1);
  if (prepared_fall_back* p = armed) {
    for (std::size_t i = 0; i < std::size(fatal_signals); ++i)
      if (fatal_signals[i] == sig) exec_previous(p->image_fd, p->fds, p->argv_ptrs.data(), p->envps[i].data());
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void arm(const handover& h, const std::vector<std::string>& argv) {
  if (h.image_fd < 0 || !h.back.empty()) return;  // nothing to go back to, or already back
  static prepared_fall_back p;
  p.image_fd = h.image_fd;
  p.fds = handover_fds(h);
  p.argv = argv;
  p.argv_ptrs = pointers(p.argv);
  p.env = current_environment();
  for (int sig : fatal_signals) {
    handover back = h;
    back.back = fmt::format("the new image died of signal {} ({}) before it took the pool over", sig,
                            ::sigabbrev_np(sig));
    p.handovers.push_back(fmt::format("{}={}", upgrade_env, encode(back)));
  }
  for (auto& text : p.handovers) p.envps.push_back(environment_with(p.env, text));
  armed = &p;
  struct sigaction sa {};
  sa.sa_handler = on_fatal_signal;
  ::sigemptyset(&sa.sa_mask);
  for (int sig : fatal_signals) ::sigaction(sig, &sa, nullptr);
}

void disarm() {
  if (!armed) return;
  for (int sig : fatal_signals) ::signal(sig, SIG_DFL);
  armed = nullptr;
}

bool same_file(int fd, const std::string& path) {
  struct stat a {}, b {};
  return ::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

bool is_listening_socket(int fd) {
  int listening = 0;
  socklen_t len = sizeof listening;
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening == 1;
}

bool is_socket(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

std::optional<incoming_upgrade> incoming_upgrade::take(int argc, const char* const* argv) {
  const char* env = std::getenv(upgrade_env);
  if (!env) return std::nullopt;
  auto h = decode(env);
  ::unsetenv(upgrade_env);  // this image's own children must not see it
  if (!h) {
    std::fprintf(stderr, "upgrade: %s is malformed; the handed-over pool cannot be adopted\n", upgrade_env);
    return std::nullopt;
  }
  // The handed fds must not leak into what this image forks and execs before it adopts them.
  for (int fd : handover_fds(*h)) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  incoming_upgrade in(std::move(*h), std::vector<std::string>(argv, argv + argc));
  arm(in.h_, in.argv_);
  return in;
}

std::string incoming_upgrade::check(std::string_view pool_name) const {
  if (h_.protocol != protocol_version)
    return fmt::format("handed protocol {}, this image speaks {}", h_.protocol, protocol_version);
  if (!same_file(h_.lock_fd, lock_path(pool_name)))
    return fmt::format("fd {} is not the lock of pool '{}'", h_.lock_fd, pool_name);
  try {
    auto block = control_segment::attach_fd(h_.control_fd, access::read_only);
    const auto id = parse_segment_name(block.name());
    if (!id || id->pool != pool_name || id->master_pid != ::getpid())
      return fmt::format("fd {} is not this master's control block of pool '{}'", h_.control_fd, pool_name);
  } catch (const std::exception& e) {
    return e.what();
  }
  for (const auto& l : h_.listeners)
    if (!is_listening_socket(l.fd)) return fmt::format("listener {} (fd {}) is not a listening socket", l.name, l.fd);
  for (const auto& w : h_.workers)
    if (!is_socket(w.channel)) return fmt::format("worker {}'s channel (fd {}) is not a socket", w.pid, w.channel);
  return {};
}

void incoming_upgrade::fall_back(std::string_view why) const {
  std::fprintf(stderr, "upgrade: %.*s\n", static_cast<int>(why.size()), why.data());
  if (returned() || h_.image_fd < 0) return;
  std::fprintf(stderr, "upgrade: handing the pool back to the previous image\n");
  handover back = h_;
  back.back = std::string(why);
  std::string text = fmt::format("{}={}", upgrade_env, encode(back));
  auto env = current_environment();
  auto envp = environment_with(env, text);
  auto args = argv_;
  auto argvp = pointers(args);
  disarm();
  exec_previous(h_.image_fd, handover_fds(h_), argvp.data(), envp.data());
  std::fprintf(stderr, "upgrade: cannot execute the previous image: %s\n", std::strerror(errno));
}

void incoming_upgrade::taken_over() {
  disarm();
  // The block is attached through its own copy; the image is this one's now (pool_setup).
  ::close(h_.control_fd);
  if (h_.image_fd >= 0) ::close(h_.image_fd);
  h_.control_fd = h_.image_fd = -1;
}

}  // namespace systempp::master
