#pragma once
/// What the runtime hands every unit: who and where it runs, the loop, the listeners,
/// options, the logger and typed access to sibling units.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeindex>
#include <vector>

#include "systempp/listeners.hpp"
#include "systempp/options.hpp"

namespace boost::asio {
class io_context;
}
namespace spdlog {
class logger;
}

namespace systempp {

/// The kind of process a stage runs in.
enum class process_role { master, worker, inline_process, script };

std::string_view to_string(process_role r) noexcept;

namespace detail {
/// A unit object as the runtime sees it: its name and type for lookups.
struct unit_ref {
  std::string name;
  std::type_index type;
  void* object;
};
}  // namespace detail

struct worker_slot;

/// Per-process view of the runtime. Owned by the runner; units receive it by reference in
/// every stage and may keep the reference for the process's life.
class context {
 public:
  context(process_role role, const options& opts, std::shared_ptr<spdlog::logger> log,
          boost::asio::io_context& io, const std::vector<listener>& listeners,
          std::span<const detail::unit_ref> units);

  /// Master, worker, inline process or script.
  process_role role() const noexcept { return role_; }
  /// Worker slot index; -1 outside a pool worker.
  int slot() const noexcept { return slot_; }
  /// Pool generation of this process (0 outside pool mode, starts at 1 in a pool).
  std::uint64_t generation() const noexcept { return generation_; }
  /// This process's pid (refreshed after fork).
  pid_t pid() const noexcept { return pid_; }

  /// The event loop of this process. Async stages run on it.
  boost::asio::io_context& io() const noexcept { return *io_; }
  const options& opts() const noexcept { return *opts_; }
  spdlog::logger& log() const noexcept { return *log_; }
  std::shared_ptr<spdlog::logger> logger_ptr() const noexcept { return log_; }

  /// Listening sockets bound by the master; fds are inherited, never bound by units.
  const std::vector<listener>& listeners() const noexcept { return *listeners_; }
  /// The listener with this name; throws std::out_of_range when there is none.
  const listener& listener_named(std::string_view name) const;

  /// A sibling unit of this app, by type. Throws std::out_of_range if it is not part of it.
  template <class U>
  U& unit() const {
    return *static_cast<U*>(find_unit(std::type_index(typeid(U))));
  }

  /// True once a drain began (SIGTERM, DRAIN command or inline reload): long-running
  /// work should wind down. Worker / inline.
  bool draining() const noexcept { return draining_; }

  /// Counts a request in this worker's control-block slot (in flight until request_end).
  /// A no-op outside a pool worker. Worker / inline.
  void request_begin() const noexcept;
  /// The request finished; `failed` counts it as an error too.
  void request_end(bool failed) const noexcept;

  /// This worker's record in the control block, or nullptr outside a pool worker.
  worker_slot* slot_record() const noexcept { return slot_record_; }

  // Runtime-side setters: called by the runners only.
  void set_process(process_role role, int slot, std::uint64_t generation, pid_t pid) noexcept;
  void set_logger(std::shared_ptr<spdlog::logger> log) noexcept { log_ = std::move(log); }
  void set_draining(bool d) noexcept { draining_ = d; }
  void set_slot_record(worker_slot* s) noexcept { slot_record_ = s; }

 private:
  void* find_unit(std::type_index type) const;

  process_role role_;
  int slot_ = -1;
  std::uint64_t generation_ = 0;
  pid_t pid_;
  const options* opts_;
  std::shared_ptr<spdlog::logger> log_;
  boost::asio::io_context* io_;
  const std::vector<listener>* listeners_;
  std::span<const detail::unit_ref> units_;
  bool draining_ = false;
  worker_slot* slot_record_ = nullptr;
};

}  // namespace systempp
