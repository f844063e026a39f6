#pragma once
/// What the runtime hands every unit: who and where it runs, the loop, the listeners,
/// options, the logger and typed access to sibling units.

#include <sys/types.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeindex>
#include <typeinfo>
#include <vector>

#include "systempp/config.hpp"
#include "systempp/dependencies.hpp"
#include "systempp/fd.hpp"
#include "systempp/listeners.hpp"
#include "systempp/options.hpp"

namespace boost::asio {
class io_context;
}
namespace spdlog {
class logger;
}

namespace systempp {

/// The kind of process a stage runs in, as ctx.role() reports it:
///   master          pool mode: the supervisor (on_init, on_reload, on_exit)
///   worker          pool mode: a forked or exec'd worker (also in an exec'd image's on_init
///                   and on_exit)
///   inline_process  `--workers 0`: every stage in one process
///   script          systempp::run_script
enum class process_role { master, worker, inline_process, script };

/// "master", "worker", "inline" or "script". Any process.
std::string_view to_string(process_role r) noexcept;

/// A process's health as its units reported it (context::set_unhealthy).
struct health_report {
  bool healthy = true;
  std::string unit;    ///< the first unhealthy unit, in start order
  std::string reason;  ///< what it said
};

/// What context::request_reload and request_stop ask for.
enum class control_request { reload, stop };

namespace detail {
/// A unit object as the runtime sees it: its name and type for lookups. Any process.
struct unit_ref {
  std::string name;
  std::type_index type;
  void* object;
};

/// Demangled type name without namespaces or template arguments ("ns::cache<int>" gives
/// "cache"). Any process.
std::string short_type_name(const std::type_info& type);

/// The unit's name in logs and status: `static constexpr std::string_view name` if the unit
/// has one, otherwise its type name. Logs show it whole; the control block (`app status`,
/// metrics) keeps the first 31 bytes. Any process.
template <class U>
std::string unit_name() {
  if constexpr (requires { std::string_view{U::name}; })
    return std::string(U::name);
  else
    return short_type_name(typeid(U));
}

}  // namespace detail

/// A worker's record in the control block (control_block.hpp).
struct worker_slot;

namespace detail {
/// The tasks units spawned through context::spawn (context.cpp).
class task_group;
/// Which units of this process reported themselves unhealthy (context.cpp).
struct health_board;
}  // namespace detail

/// Per-process view of the runtime. Owned by the runner; units receive it by reference in
/// every stage and may keep the reference for the process's life.
///
/// Each process has its own context: in pool mode the master's (on_init, on_reload,
/// on_exit) and each worker's (pre_startup .. post_shutdown) are different objects, with
/// different roles and loops. A forked worker still holds the master's copy in memory, so
/// a unit that keeps `&ctx` from on_init and uses it in a worker sees the master's role and
/// a loop that nobody runs there: keep the context of the stage you are in (e.g. from
/// on_startup). Not thread-safe: use it on the thread that calls the stages.
class context {
 public:
  /// Built by the runners, one per process (per exec'd image); units never build one.
  context(process_role role, const options& opts, std::shared_ptr<spdlog::logger> log,
          boost::asio::io_context& io, const std::vector<listener>& listeners,
          std::span<const detail::unit_ref> units);

  /// Master, worker, inline process or script.
  process_role role() const noexcept { return role_; }
  /// Worker slot index; -1 outside a pool worker.
  int slot() const noexcept { return slot_; }
  /// Pool generation of this worker: 1 for the first workers, +1 per rollout (reload or
  /// upgrade). 0 in the master, the inline process and a script.
  std::uint64_t generation() const noexcept { return generation_; }
  /// This process's pid (refreshed after fork).
  pid_t pid() const noexcept { return pid_; }

  /// The event loop of this process. Async stages run on it; sync stages run while it is
  /// not running (before it starts or after it stopped). In the master it is the
  /// supervisor's own loop: master stages must not leave work on it. With --threads N it
  /// is run by N threads: work co_spawned on io() may run on any of them at once, so give
  /// each independent piece of state a strand of its own (asio::make_strand(ctx.io()));
  /// accept_loop (helpers.hpp) binds every connection to one. Any thread.
  boost::asio::io_context& io() const noexcept { return *io_; }
  /// The runtime's strand of io(): the async stages, ctx.spawn tasks, the runtime's own
  /// timers and signals run on it, one handler at a time whatever --threads says, so what
  /// a unit touches only from its stages needs no lock. Post here to touch it from a
  /// connection's thread. Any thread.
  const boost::asio::any_io_executor& executor() const noexcept { return executor_; }
  /// The parsed command line (--config, --workers, ...). Any process.
  const options& opts() const noexcept { return *opts_; }
  /// This process's logger ("master", "worker[3] g2", "inline", "script"), honouring
  /// --log-level, --log-file and --log-format. Replaced on SIGUSR1 (log reopen): call log()
  /// each time rather than keeping the reference. Any process.
  spdlog::logger& log() const noexcept { return *log_.load(std::memory_order_acquire); }
  /// (A reference from log() stays valid until the second SIGUSR1 after it was taken.)
  /// The same logger as a shared_ptr, for completion handlers that may outlive the stage.
  /// It keeps the pre-SIGUSR1 logger alive. Any process.
  std::shared_ptr<spdlog::logger> logger_ptr() const noexcept { return log_.load(std::memory_order_acquire); }

  /// Listening sockets bound by the master (inline: by this process; under systemd socket
  /// activation: passed by systemd), in --bind order. Workers inherit the fds, units never
  /// bind. Empty in a script. Do not close these fds: accept on a dup() of them
  /// (make_acceptor in acceptor.hpp).
  const std::vector<listener>& listeners() const noexcept { return *listeners_; }
  /// The listener with this name ("http" unless --bind NAME=... says otherwise); throws
  /// std::out_of_range when there is none. Any process.
  const listener& listener_named(std::string_view name) const;

  /// Connections the master hands this worker for a listener (--accept reuseport: taken
  /// from the queue of a slot no worker serves) go to the taker set for its name.
  /// connection_acceptor sets one while it exists; units rarely need to. Returns a token
  /// for drop_connection_taker; a later set for the same name replaces it. The runtime's
  /// strand only.
  using connection_taker = std::function<void(unique_fd)>;
  std::uint64_t set_connection_taker(const std::string& listener, connection_taker t);
  void drop_connection_taker(const std::string& listener, std::uint64_t token) noexcept;
  /// Runners only, on the runtime's strand: passes a handed-over connection to its taker.
  /// False (and the socket closed) when there is none.
  bool take_connection(const std::string& listener, unique_fd fd);

  /// A sibling unit of this app, by type. Throws std::out_of_range if it is not part of it.
  /// Any process; the object is this process's copy of the unit.
  template <class U>
  U& unit() const {
    return *static_cast<U*>(find_unit(std::type_index(typeid(U))));
  }

  /// The unit U that the calling unit declared in its `depends_on`: `ctx.dependency<settings>(*this)`.
  /// A U it does not depend on is a compile error, and the app checked at compile time that
  /// every dependency is in it, so this lookup cannot fail. Any process.
  template <class U, class Self>
  U& dependency(const Self&) const {
    static_assert(detail::index_in<U, typename detail::dependencies_of<Self>::type>::value != detail::not_found,
                  "systempp: ctx.dependency<U>(*this) names a unit that this unit does not list in depends_on");
    return unit<U>();
  }

  /// The calling unit's settings, from its config section (config.hpp): the file as last
  /// checked (at start, or by the reload in progress or passed), defaults for the keys it
  /// leaves out. `s_ = ctx.config(*this);` in on_init and on_reload. Any process.
  template <class Self>
  auto config(const Self&) const {
    static_assert(detail::has_config_section<Self>,
                  "systempp: ctx.config(*this) needs `static constexpr auto config_section = "
                  "systempp::section(...)` in the unit");
    return Self::config_section.read(config_ ? config_->get() : nullptr);
  }

  /// True once a drain began (SIGTERM, DRAIN command or inline reload): long-running
  /// work should wind down. Worker / inline, any thread.
  bool draining() const noexcept { return draining_.load(std::memory_order_acquire); }

  /// Runs `task` on this process's loop as work of the current cycle: it is cancelled when
  /// the drain starts (its pending operations complete with operation_aborted), and the
  /// cycle waits for it, at most --stage-timeout, after on_shutdown and before the loop
  /// stops and post_shutdown runs. So nothing a unit spawns this way runs after the unit's
  /// post_shutdown. An exception that ends it is logged with the unit's name (a cancellation
  /// only at debug level). Pass the calling unit: `ctx.spawn(*this, poll(ctx))`. In the
  /// master, a task runs until the master stops. On the loop's thread only.
  template <class Self>
  void spawn(const Self&, boost::asio::awaitable<void> task) {
    spawn_task(detail::unit_name<Self>(), std::move(task));
  }
  /// spawn() with the unit's name given. On the loop's thread only.
  void spawn_task(std::string unit, boost::asio::awaitable<void> task);
  /// Tasks spawned and not yet finished. On the loop's thread only.
  std::size_t running_tasks() const noexcept;

  /// Asks for what SIGHUP does (a rolling reload of the pool, a new cycle inline), with
  /// `reason` in the log and in `app status`. From any thread and any process of a pool: a
  /// worker sends it to the master, which coalesces it with other reloads like a SIGHUP. In
  /// a script it is logged and ignored.
  void request_reload(std::string_view reason) const;
  /// Asks for what SIGTERM does (a graceful drain and exit 0), with `reason` in the log. Any
  /// thread, any process, like request_reload.
  void request_stop(std::string_view reason) const;

  /// Reports the calling unit unhealthy, with a one-line reason, until it calls
  /// set_healthy: `ctx.set_unhealthy(*this, "database unreachable")`. A worker's health
  /// shows in `app status` (and --json), in /metrics (systempp_unhealthy_workers) and in
  /// health() (what a /healthz answers from). Any thread.
  template <class Self>
  void set_unhealthy(const Self&, std::string_view reason) {
    report_health(detail::unit_name<Self>(), false, reason);
  }
  /// The calling unit is healthy again. Any thread.
  template <class Self>
  void set_healthy(const Self&) {
    report_health(detail::unit_name<Self>(), true, {});
  }
  /// This process's health: healthy, or the first unhealthy unit and its reason. Any thread.
  health_report health() const;
  /// set_unhealthy/set_healthy with the unit's name given. Any thread.
  void report_health(const std::string& unit, bool healthy, std::string_view reason);

  /// Counts a request in this worker's control-block slot (in flight until request_end).
  /// A no-op outside a pool worker. Worker / inline.
  void request_begin() const noexcept;
  /// The request finished; `failed` counts it as an error too. Pairs with request_begin.
  /// A no-op outside a pool worker. Worker / inline.
  void request_end(bool failed) const noexcept;

  /// This worker's record in the control block, or nullptr outside a pool worker. Worker
  /// only; the runtime writes most fields, see control_block.hpp before writing any.
  worker_slot* slot_record() const noexcept { return slot_record_; }

  // Runtime-side setters: called by the runners only.
  /// Sets role, slot, generation and pid. Runners only (worker start).
  void set_process(process_role role, int slot, std::uint64_t generation, pid_t pid) noexcept;
  /// The loop the next stages run on (the inline runner gives each cycle a fresh one). The
  /// tasks spawned on the previous loop are forgotten: that loop must have been shut down
  /// first, so none of them is still pending. Runners only, between cycles.
  void set_io(boost::asio::io_context& io);
  /// Replaces the logger. Runners only.
  void set_logger(std::shared_ptr<spdlog::logger> log);
  /// SIGUSR1 (logrotate's postrotate): a fresh logger of the same name, so --log-file is
  /// opened again, installed here and returned. If the file cannot be opened the old
  /// logger stays and the error is logged. Runners only, on the loop's thread.
  std::shared_ptr<spdlog::logger> reopen_log();
  /// Set by run_cycle just before pre_shutdown, cleared after post_shutdown. Runners only.
  void set_draining(bool d) noexcept { draining_.store(d, std::memory_order_release); }
  /// The drain started: every spawned task is asked to stop. Runners only, on the loop.
  void cancel_tasks();
  /// Waits until every spawned task has finished, at most `limit`; those still running then
  /// are logged and left to the loop's end. Returns how many. Runners only, on the loop.
  boost::asio::awaitable<std::size_t> join_tasks(std::chrono::milliseconds limit);
  /// Who carries out request_reload/request_stop in this process: it must be callable from
  /// any thread. Runners only, before the units can call it.
  void set_requester(std::function<void(control_request, std::string reason)> r) { requester_ = std::move(r); }
  /// Where config() reads the current file: the app's slot, which a reload replaces.
  /// Runners only, at start.
  void set_config_source(const std::shared_ptr<const config_document>& slot) noexcept { config_ = &slot; }
  /// Connects request_begin/request_end to this worker's record. Runners only (worker).
  void set_slot_record(worker_slot* s) noexcept { slot_record_ = s; }

 private:
  void* find_unit(std::type_index type) const;

  process_role role_;
  int slot_ = -1;
  std::uint64_t generation_ = 0;
  pid_t pid_;
  const options* opts_;
  /// The current logger; the one it replaced stays alive until the next replacement
  /// (retired_log_), so a reference another thread got from log() before a SIGUSR1 stays
  /// valid.
  std::atomic<std::shared_ptr<spdlog::logger>> log_;
  std::shared_ptr<spdlog::logger> retired_log_;  ///< the runtime's strand only
  boost::asio::io_context* io_;
  const std::vector<listener>* listeners_;
  std::span<const detail::unit_ref> units_;
  std::atomic<bool> draining_{false};
  boost::asio::any_io_executor executor_;  ///< a strand of *io_
  worker_slot* slot_record_ = nullptr;
  std::shared_ptr<detail::task_group> tasks_;  ///< made by the first spawn
  std::function<void(control_request, std::string)> requester_;
  std::map<std::string, std::pair<std::uint64_t, connection_taker>, std::less<>> takers_;
  std::uint64_t next_taker_ = 0;
  const std::shared_ptr<const config_document>* config_ = nullptr;
  std::shared_ptr<detail::health_board> health_;
};

}  // namespace systempp
