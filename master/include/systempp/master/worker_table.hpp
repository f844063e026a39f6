#pragma once
/// The master's one table of worker processes, indexed by pid, with each process's slot,
/// lane, generation and channel. It spawns (through system_calls), reaps, and talks to the
/// workers over their channels and their control-block records; it makes no decisions
/// (those are supervisor_policy's). Master only.

#include <sys/types.h>

#include <boost/asio/posix/stream_descriptor.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "systempp/control_block.hpp"
#include "systempp/fd.hpp"
#include "systempp/master/supervisor_policy.hpp"
#include "systempp/master/system_calls.hpp"

namespace boost::asio {
class io_context;
}

namespace systempp::master {

/// The master's end of a worker's socketpair, watched on the loop. Defined in
/// worker_table.cpp, so that only that file compiles Asio's descriptor code.
struct worker_channel;

/// One live worker process of this master.
struct worker_handle {
  pid_t pid = 0;
  int slot = 0;
  int lane = 0;
  std::uint32_t generation = 0;
  std::unique_ptr<worker_channel> channel;

  worker_handle() noexcept;
  worker_handle(pid_t pid, int slot, int lane, std::uint32_t generation, std::unique_ptr<worker_channel> channel) noexcept;
  worker_handle(worker_handle&&) noexcept;
  worker_handle& operator=(worker_handle&&) noexcept;
  ~worker_handle();
  /// The channel's fd (-1: none), for the upgrade's hand-over.
  int channel_fd() const noexcept;
};

/// What a forked child runs: where it was placed, its own record, its end of the channel,
/// and the signal mask to restore once its handlers exist. Returns the child's exit code.
using child_main = std::function<int(const spawn_action& a, worker_slot& record, unique_fd channel, const sigset_t& mask)>;
/// A message a worker sent on its channel: a byte (READY, recycle), or a request byte with
/// the text that followed it up to '\n' (worker_runtime.hpp).
using message_handler = std::function<void(pid_t pid, char byte, std::string_view text)>;

/// A reaped worker: its handle (removed from the table) and its wait status.
struct reaped_worker {
  worker_handle handle;
  int status = 0;
  bool clean() const noexcept;      ///< exited with code 0
  int code() const noexcept;        ///< the exit code, or -signal
  std::string describe() const;     ///< "exited with code 3", "killed by signal 9 (KILL)"
};

class worker_table {
 public:
  /// `unit_names` in declaration order, whole (the block keeps only a prefix of each).
  worker_table(boost::asio::io_context& io, control_segment& segment, system_calls& sys,
               std::vector<std::string> unit_names, message_handler on_message);
  ~worker_table();

  /// Resets the record of a.slot/a.lane and starts a process in it. In the child,
  /// `drop_parent_state` runs first (the table then closes the other workers' channels),
  /// then `body`. Returns the pid, or -errno when no process could be started.
  pid_t spawn(const spawn_action& a, const std::function<void()>& drop_parent_state, const child_main& body);
  /// A worker the previous master image started (upgrade): its channel fd is taken over.
  void adopt(pid_t pid, int slot, int lane, std::uint32_t generation, int channel_fd);

  /// Sets the record's command (and drain deadline), then wakes the worker with `byte`.
  /// A pid that is not in the table is ignored.
  void command(pid_t pid, worker_command c, char byte, std::uint64_t drain_deadline_ms = 0);
  /// kill(2) of a worker in the table: 0, or the errno (ESRCH for a pid not in it).
  int signal(pid_t pid, int sig);
  /// The next exited worker of this table; pids that are not ours (a unit's helper) are
  /// reaped and skipped. Folds its counters into the header and writes its final state.
  std::optional<reaped_worker> reap();

  const worker_handle* find(pid_t pid) const;
  worker_slot& record(const worker_handle& w) { return segment_.record(w.slot, w.lane); }
  worker_slot& record(int slot, int lane) { return segment_.record(slot, lane); }
  /// "worker[2] pid 123 g3 (in pre_startup of unit db)": where a worker is, for the log.
  std::string where(const worker_handle& w) const;
  const std::map<pid_t, worker_handle>& workers() const noexcept { return workers_; }
  std::size_t size() const noexcept { return workers_.size(); }
  /// The app's metrics, whose values reap() folds into the totals. Master only, at start.
  void set_metrics(const detail::metric_registry* m) noexcept { metrics_ = m; }

  /// Watches `fd` (which the caller keeps open) in the channels' epoll, level-triggered:
  /// `readable` runs on the loop while it has something to read. Again for the same fd
  /// replaces the callback; unwatch ends it. Throws std::system_error.
  void watch(int fd, std::function<void()> readable);
  void unwatch(int fd) noexcept;
  /// Sends a worker `bytes` (at most 512), with `fd` attached to the first (SCM_RIGHTS),
  /// whole or not at all, without blocking. False when the worker is not in the table or
  /// its channel did not take it (full, or the kernel's limit of descriptors in flight).
  bool send_with_fd(pid_t pid, std::string_view bytes, int fd);

 private:
  void watch_channels();
  void read_channel(pid_t pid);
  std::unique_ptr<worker_channel> open_channel(pid_t pid, int fd);

  boost::asio::io_context& io_;
  control_segment& segment_;
  system_calls& sys_;
  std::vector<std::string> unit_names_;
  message_handler on_message_;
  std::map<pid_t, worker_handle> workers_;
  const detail::metric_registry* metrics_ = nullptr;
  /// An epoll instance with every worker's channel, itself watched by the loop.
  boost::asio::posix::stream_descriptor channels_;
  bool waiting_ = false;  ///< a wait on channels_ is pending
  std::map<int, std::function<void()>> watched_;  ///< watch(): by fd
};

}  // namespace systempp::master
