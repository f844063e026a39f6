#pragma once
/// A child process handle for integration tests: it starts a real binary in its own process
/// group, captures everything it prints, and never lets a test leave a process behind.
///
/// Everything here runs in the test process only. A `child` is used from one test thread;
/// `output`, `output_size`, `count_lines` and the `wait_for*` calls may also be called from
/// other threads, since the captured output is guarded by a mutex.

#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace support {

/// Whether `spawn` sets the systemd socket-activation variables for the kept fds.
enum class listen_env {
  none,     ///< pass keep_fds without telling the child about them
  systemd,  ///< set LISTEN_FDS=<count>, LISTEN_PID=<the child's pid>, LISTEN_FDNAMES if named
};

/// What to start and what it inherits.
struct spawn_options {
  /// argv[0] is a path (no PATH search), so a test always runs the binary it built.
  std::vector<std::string> argv;
  /// Added to (or overriding) the test process's environment.
  std::vector<std::pair<std::string, std::string>> env;
  /// keep_fds[i] becomes fd 3+i in the child; every other fd >= 3 is closed.
  std::vector<int> keep_fds;
  /// LISTEN_PID can only be written after fork, which is why this is not just another env pair.
  listen_env listen = listen_env::none;
  /// LISTEN_FDNAMES entries, one per kept fd (joined with ':'); empty leaves it unset.
  std::vector<std::string> listen_fd_names;
};

/// One output line that matched, with the regex's groups.
struct line_match {
  std::string line;                 ///< without the trailing newline
  std::vector<std::string> groups;  ///< groups[0] is the whole match, groups[1] the first capture
  std::size_t end_offset = 0;       ///< output offset just past this line: wait for later lines
};

/// A started process and its process group. Move-only; destroying it kills and reaps the whole
/// group (SIGKILL), so a failing REQUIRE cannot leak a master or its workers.
class child {
 public:
  /// Starts argv with stdin from /dev/null and stdout+stderr captured. Throws
  /// std::system_error when the fork or the exec fails (a bad path fails here, not later).
  static child spawn(std::vector<std::string> argv,
                     std::vector<std::pair<std::string, std::string>> extra_env = {});
  /// Same, with inherited fds (for LISTEN_FDS / socket-activation tests).
  static child spawn(spawn_options options);

  child(child&&) noexcept;
  child& operator=(child&&) noexcept;
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  /// SIGKILLs the group unless the child was already reaped, reaps it, then kills and waits out
  /// any member the group still has; joins the output reader.
  ~child();

  /// The child's pid, which is also its process group id.
  pid_t pid() const;

  /// Everything captured so far (stdout and stderr interleaved as the child wrote them).
  std::string output() const;
  /// Bytes captured so far: pass it as start_offset to wait only for lines printed after now.
  std::size_t output_size() const;
  /// Whether the output pipe reached EOF (every process holding it has exited or closed it).
  bool output_closed() const;

  /// Waits (on a condition variable, no polling) until a complete line at or after
  /// start_offset contains a match (std::regex_search). nullopt on timeout, or once the output
  /// ended without a match. A start_offset in the middle of a line starts the line there.
  std::optional<line_match> wait_for(const std::regex& re, std::chrono::milliseconds timeout,
                                     std::size_t start_offset = 0);
  /// wait_for, returning just the line.
  std::optional<std::string> wait_for_line(const std::regex& re, std::chrono::milliseconds timeout,
                                           std::size_t start_offset = 0);
  /// wait_for, returning just the groups (groups[0] is the whole match).
  std::optional<std::vector<std::string>> wait_for_match(const std::regex& re,
                                                         std::chrono::milliseconds timeout,
                                                         std::size_t start_offset = 0);
  /// Complete lines captured so far that contain a match (the last unterminated line counts
  /// only once the output has ended).
  std::size_t count_lines(const std::regex& re, std::size_t start_offset = 0) const;

  /// Sends sig to the child only (through its pidfd, so a recycled pid is never hit). Returns
  /// false once the child has been reaped or the signal could not be sent.
  bool signal(int sig);
  /// Sends sig to the whole process group (the master and all its workers).
  bool signal_group(int sig);

  /// Waits for the child to exit and reaps it; returns the raw wait status (use exited_with /
  /// killed_by / describe), or nullopt on timeout. Once reaped the status is cached.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  /// Like wait_exit, without waiting for the output pipe to reach EOF.
  std::optional<int> wait_exit_only(std::chrono::milliseconds timeout);
  /// The cached wait status if the child was reaped, without waiting.
  std::optional<int> exit_status() const;

  /// True if status is a normal exit with this code.
  static bool exited_with(int status, int code);
  /// True if status says the process was killed by this signal.
  static bool killed_by(int status, int sig);
  /// "exited with code 3", "killed by signal 9 (KILL)", ... for assertion messages.
  static std::string describe(int status);

 private:
  struct state;
  explicit child(std::unique_ptr<state> s);
  state& st() const;

  std::unique_ptr<state> state_;
};

/// Makes the test process the reaper of its orphaned descendants (PR_SET_CHILD_SUBREAPER), so
/// workers outliving a killed master become our children: tests can then see them with
/// proc.hpp's helpers and ~child reaps them instead of leaving them to pid 1. Call it once,
/// e.g. from the test main. Returns false if the kernel refused.
bool become_subreaper();

/// Polls pred every `step` until it returns true or the deadline passes; pred is evaluated one
/// last time at the deadline. This is the approved way to wait on state nobody notifies us of
/// (a /proc entry, a file, a port): it waits on a condition, never for a fixed time.
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds step = std::chrono::milliseconds{10}) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    const auto now = clock::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(std::min<clock::duration>(step, deadline - now));
  }
}

}  // namespace support
