#include "support/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <system_error>

#include "support/proc.hpp"
#include "systempp/fd.hpp"

extern char** environ;

namespace support {

namespace {

using clock = std::chrono::steady_clock;

using systempp::unique_fd;

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

int remaining_ms(clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
  return static_cast<int>(std::clamp<std::chrono::milliseconds::rep>(left.count(), 0, 1'000'000));
}

// glibc has no wrapper for these in Debian 12's headers; the syscalls exist since Linux 5.3 / 5.1.
int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

/// Writes the decimal form of v at out (which has room for 20 digits) and a NUL.
/// Async-signal-safe, for use between fork and exec.
void format_pid(char* out, long v) {
  char digits[24];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v > 0);
  while (n > 0) *out++ = digits[--n];
  *out = '\0';
}

/// Calls fn(line_begin, line_end, next_offset) for every complete line of buf from `from`;
/// the unterminated tail counts as a line once the stream has ended. Stops when fn returns true.
template <class Fn>
void for_each_line(const std::string& buf, std::size_t from, bool eof, Fn fn) {
  std::size_t pos = from;
  while (pos < buf.size()) {
    auto nl = buf.find('\n', pos);
    if (nl == std::string::npos) {
      if (!eof) return;
      nl = buf.size();
    }
    const std::size_t next = std::min(nl + 1, buf.size());
    if (fn(std::string_view(buf).substr(pos, nl - pos), next)) return;
    pos = next;
  }
}

}  // namespace

/// Everything the reader thread shares with the handle lives here, behind a stable address, so
/// moving a `child` never moves what the thread points at.
struct child::state {
  pid_t pid_ = -1;
  unique_fd pidfd_;  // empty when the kernel has no pidfd_open; we then poll waitpid
  std::optional<int> status_;

  unique_fd out_read_;
  unique_fd stop_event_;  // written by the destructor to end the reader's poll
  std::thread reader_;
  bool echo_ = false;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::string buffer_;
  bool eof_ = false;

  ~state() {
    kill_and_reap();
    if (stop_event_) {
      const std::uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(stop_event_.get(), &one, sizeof one);
    }
    if (reader_.joinable()) reader_.join();
  }

  void read_loop() {
    std::string chunk(64 * 1024, '\0');
    pollfd fds[2] = {{out_read_.get(), POLLIN, 0}, {stop_event_.get(), POLLIN, 0}};
    for (;;) {
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (fds[1].revents != 0) break;
      if (fds[0].revents == 0) continue;
      const auto n = ::read(out_read_.get(), chunk.data(), chunk.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      if (echo_) {
        std::fprintf(stderr, "[child %d] %.*s", static_cast<int>(pid_), static_cast<int>(n),
                     chunk.data());
      }
      {
        std::lock_guard lock(mutex_);
        buffer_.append(chunk.data(), static_cast<std::size_t>(n));
      }
      cv_.notify_all();
    }
    {
      std::lock_guard lock(mutex_);
      eof_ = true;
    }
    cv_.notify_all();
  }

  bool try_reap(int options) {
    if (status_) return true;
    int st = 0;
    pid_t r;
    do {
      r = ::waitpid(pid_, &st, options);
    } while (r < 0 && errno == EINTR);
    if (r == pid_) status_ = st;
    return status_.has_value();
  }

  void kill_and_reap() {
    if (!status_) {
      // The whole group at once: killing the master first would orphan its workers.
      if (::killpg(pid_, SIGKILL) < 0) ::kill(pid_, SIGKILL);
      try_reap(0);
    }
    // Members that outlived the leader (workers of a master that exited, or that a test
    // orphaned on purpose). If we are a subreaper they are our children: reap those too.
    const auto deadline = clock::now() + std::chrono::seconds(5);
    for (;;) {
      const auto live = group_members(pid_);
      if (!live.empty()) ::killpg(pid_, SIGKILL);
      while (::waitpid(-pid_, nullptr, WNOHANG) > 0) {
      }
      bool ours = false;
      for (pid_t z : zombie_children_of(::getpid())) {
        auto s = read_stat(z);
        if (s && s->pgrp == pid_) ours = true;
      }
      if (live.empty() && !ours) return;
      if (clock::now() >= deadline) {
        std::fprintf(stderr, "support::child: process group %d still has members after SIGKILL\n",
                     static_cast<int>(pid_));
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
};

child::child(std::unique_ptr<state> s) : state_(std::move(s)) {}
child::child(child&&) noexcept = default;
child& child::operator=(child&&) noexcept = default;
child::~child() = default;

child::state& child::st() const {
  if (!state_) throw std::logic_error("support::child used after it was moved from");
  return *state_;
}

child child::spawn(std::vector<std::string> argv,
                   std::vector<std::pair<std::string, std::string>> extra_env) {
  return spawn(spawn_options{std::move(argv), std::move(extra_env), {}, listen_env::none, {}});
}

child child::spawn(spawn_options options) {
  if (options.argv.empty()) throw std::invalid_argument("support::child::spawn: empty argv");

  // Everything the child needs is built before fork: the test process has threads (output
  // readers, load generators), so between fork and exec only async-signal-safe calls are allowed.
  std::vector<char*> argv;
  for (auto& a : options.argv) argv.push_back(a.data());
  argv.push_back(nullptr);

  const bool systemd = options.listen == listen_env::systemd;
  std::vector<std::string> env_strings;
  auto overridden = [&](std::string_view entry) {
    const auto key = entry.substr(0, entry.find('='));
    if (systemd && (key == "LISTEN_FDS" || key == "LISTEN_PID" || key == "LISTEN_FDNAMES"))
      return true;
    return std::any_of(options.env.begin(), options.env.end(),
                       [&](const auto& kv) { return kv.first == key; });
  };
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (!overridden(*e)) env_strings.emplace_back(*e);
  }
  for (const auto& [k, v] : options.env) env_strings.push_back(k + "=" + v);
  std::size_t listen_pid_index = 0;
  if (systemd) {
    env_strings.push_back("LISTEN_FDS=" + std::to_string(options.keep_fds.size()));
    listen_pid_index = env_strings.size();
    env_strings.push_back("LISTEN_PID=" + std::string(24, '0'));  // the pid is written after fork
    if (!options.listen_fd_names.empty()) {
      std::string names = "LISTEN_FDNAMES=";
      for (std::size_t i = 0; i < options.listen_fd_names.size(); ++i) {
        if (i > 0) names += ':';
        names += options.listen_fd_names[i];
      }
      env_strings.push_back(std::move(names));
    }
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  char* listen_pid_value = systemd ? env_strings[listen_pid_index].data() + 11 : nullptr;

  unique_fd dev_null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!dev_null) throw_errno("open /dev/null");
  int out_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) < 0) throw_errno("pipe2");
  unique_fd out_read(out_pipe[0]), out_write(out_pipe[1]);
  // The exec-error pipe is close-on-exec: EOF means exec succeeded, an int means it failed.
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) < 0) throw_errno("pipe2");
  unique_fd err_read(err_pipe[0]), err_write(err_pipe[1]);
  unique_fd stop_event(::eventfd(0, EFD_CLOEXEC));
  if (!stop_event) throw_errno("eventfd");

  // The child first moves every fd it keeps above all of them, so no dup2 onto 0..3+n can
  // clobber a source that is still needed; then close_range sweeps the temporaries and the rest.
  const int keep_count = static_cast<int>(options.keep_fds.size());
  const int err_target = 3 + keep_count;  // close-on-exec, so the exec'd program never sees it
  int high = std::max({dev_null.get(), out_write.get(), err_write.get(), err_target});
  for (int fd : options.keep_fds) high = std::max(high, fd);
  const int temp_base = high + 1;
  const long max_fd = ::sysconf(_SC_OPEN_MAX);  // close_range fallback bound, read pre-fork
  const int null_fd = dev_null.get(), out_fd = out_write.get(), err_fd = err_write.get();
  const int* keep = options.keep_fds.data();
  std::vector<int> temp_keep(options.keep_fds.size());  // allocated here: malloc is unsafe after fork
  int* t_keep = temp_keep.data();

  const pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    auto fail = [&](int err_out) {
      int e = errno;
      [[maybe_unused]] auto n = ::write(err_out, &e, sizeof e);
      ::_exit(127);
    };
    // Own process group: cleanup kills the master and its workers with one killpg.
    ::setpgid(0, 0);
    // Ignored signals and the blocked mask survive exec; the program must start as from a shell.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);

    const int t_null = ::fcntl(null_fd, F_DUPFD, temp_base);
    const int t_out = ::fcntl(out_fd, F_DUPFD, temp_base);
    const int t_err = ::fcntl(err_fd, F_DUPFD_CLOEXEC, temp_base);
    if (t_null < 0 || t_out < 0 || t_err < 0) fail(err_fd);
    for (int i = 0; i < keep_count; ++i) {
      t_keep[i] = ::fcntl(keep[i], F_DUPFD, temp_base);
      if (t_keep[i] < 0) fail(t_err);
    }
    // dup2 clears close-on-exec on the target, which is what makes these survive exec.
    if (::dup2(t_null, 0) < 0 || ::dup2(t_out, 1) < 0 || ::dup2(t_out, 2) < 0) fail(t_err);
    for (int i = 0; i < keep_count; ++i) {
      if (::dup2(t_keep[i], 3 + i) < 0) fail(t_err);
    }
    if (::dup3(t_err, err_target, O_CLOEXEC) < 0) fail(t_err);
    if (::close_range(static_cast<unsigned>(err_target + 1), ~0U, 0) < 0) {
      for (long fd = err_target + 1; fd < max_fd; ++fd) ::close(static_cast<int>(fd));
    }
    if (listen_pid_value != nullptr) format_pid(listen_pid_value, ::getpid());
    ::execve(argv[0], argv.data(), envp.data());
    fail(err_target);
  }

  // Also set the group from this side, so signal_group works even if we outran the child.
  ::setpgid(pid, pid);
  out_write.reset();
  err_write.reset();

  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(err_read.get(), &exec_errno, sizeof exec_errno);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    int ignored = 0;
    while (::waitpid(pid, &ignored, 0) < 0 && errno == EINTR) {
    }
    throw std::system_error(exec_errno, std::generic_category(), "exec " + options.argv[0]);
  }

  auto s = std::make_unique<state>();
  s->pid_ = pid;
  // Not yet reaped, so the pid cannot have been recycled: the pidfd names our child.
  s->pidfd_ = unique_fd(pidfd_open(pid));
  s->out_read_ = std::move(out_read);
  s->stop_event_ = std::move(stop_event);
  const char* echo = std::getenv("SYSTEMPP_TEST_ECHO");
  s->echo_ = echo != nullptr && *echo != '\0' && std::string_view(echo) != "0";
  s->reader_ = std::thread([raw = s.get()] { raw->read_loop(); });
  return child(std::move(s));
}

pid_t child::pid() const { return st().pid_; }

std::string child::output() const {
  auto& s = st();
  std::lock_guard lock(s.mutex_);
  return s.buffer_;
}

std::size_t child::output_size() const {
  auto& s = st();
  std::lock_guard lock(s.mutex_);
  return s.buffer_.size();
}

bool child::output_closed() const {
  auto& s = st();
  std::lock_guard lock(s.mutex_);
  return s.eof_;
}

std::optional<line_match> child::wait_for(const std::regex& re, std::chrono::milliseconds timeout,
                                          std::size_t start_offset) {
  auto& s = st();
  const auto deadline = clock::now() + timeout;
  std::unique_lock lock(s.mutex_);
  std::size_t scanned = start_offset;  // lines before this were already tried
  for (;;) {
    std::optional<line_match> found;
    for_each_line(s.buffer_, scanned, s.eof_, [&](std::string_view line, std::size_t next) {
      std::match_results<std::string_view::const_iterator> m;
      if (std::regex_search(line.begin(), line.end(), m, re)) {
        line_match lm{std::string(line), {}, next};
        for (const auto& g : m) lm.groups.push_back(g.str());
        found = std::move(lm);
        return true;
      }
      scanned = next;
      return false;
    });
    if (found) return found;
    if (s.eof_ || clock::now() >= deadline) return std::nullopt;
    s.cv_.wait_until(lock, deadline);
  }
}

std::optional<std::string> child::wait_for_line(const std::regex& re,
                                                std::chrono::milliseconds timeout,
                                                std::size_t start_offset) {
  auto m = wait_for(re, timeout, start_offset);
  if (!m) return std::nullopt;
  return std::move(m->line);
}

std::optional<std::vector<std::string>> child::wait_for_match(const std::regex& re,
                                                              std::chrono::milliseconds timeout,
                                                              std::size_t start_offset) {
  auto m = wait_for(re, timeout, start_offset);
  if (!m) return std::nullopt;
  return std::move(m->groups);
}

std::size_t child::count_lines(const std::regex& re, std::size_t start_offset) const {
  auto& s = st();
  std::lock_guard lock(s.mutex_);
  std::size_t count = 0;
  for_each_line(s.buffer_, start_offset, s.eof_, [&](std::string_view line, std::size_t) {
    if (std::regex_search(line.begin(), line.end(), re)) ++count;
    return false;
  });
  return count;
}

bool child::signal(int sig) {
  auto& s = st();
  if (s.status_) return false;
  if (s.pidfd_) return pidfd_send_signal(s.pidfd_.get(), sig) == 0;
  return ::kill(s.pid_, sig) == 0;
}

bool child::signal_group(int sig) { return ::killpg(st().pid_, sig) == 0; }

std::optional<int> child::wait_exit_only(std::chrono::milliseconds timeout) {
  auto& s = st();
  const auto deadline = clock::now() + timeout;
  if (s.try_reap(WNOHANG)) return s.status_;
  if (s.pidfd_) {
    // The pidfd turns readable when the child exits: one blocking poll, no busy loop.
    for (;;) {
      pollfd p{s.pidfd_.get(), POLLIN, 0};
      const int r = ::poll(&p, 1, remaining_ms(deadline));
      if (r < 0 && errno == EINTR) continue;
      if (r > 0) return s.try_reap(0) ? s.status_ : std::nullopt;
      return s.try_reap(WNOHANG) ? s.status_ : std::nullopt;
    }
  }
  // Without pidfds: waitpid with a short, growing backoff until the deadline.
  auto step = std::chrono::milliseconds(1);
  while (!s.try_reap(WNOHANG)) {
    if (clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::min<clock::duration>(step, deadline - clock::now()));
    step = std::min(step * 2, std::chrono::milliseconds(20));
  }
  return s.status_;
}

std::optional<int> child::wait_exit(std::chrono::milliseconds timeout) {
  auto status = wait_exit_only(timeout);
  if (!status) return status;
  // The reader thread may still hold the last lines the child wrote: give it a moment to
  // see EOF (bounded, since a surviving grandchild may keep the pipe open).
  auto& s = st();
  std::unique_lock lock(s.mutex_);
  s.cv_.wait_for(lock, std::chrono::seconds(2), [&] { return s.eof_; });
  return status;
}

std::optional<int> child::exit_status() const { return st().status_; }

bool child::exited_with(int status, int code) {
  return WIFEXITED(status) && WEXITSTATUS(status) == code;
}

bool child::killed_by(int status, int sig) {
  return WIFSIGNALED(status) && WTERMSIG(status) == sig;
}

std::string child::describe(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::sigabbrev_np(sig);
    std::string text = "killed by signal " + std::to_string(sig);
    if (name != nullptr) text += std::string(" (") + name + ")";
    if (WCOREDUMP(status)) text += ", core dumped";
    return text;
  }
  if (WIFSTOPPED(status)) return "stopped by signal " + std::to_string(WSTOPSIG(status));
  return "wait status " + std::to_string(status);
}

bool become_subreaper() { return ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0; }

}  // namespace support
