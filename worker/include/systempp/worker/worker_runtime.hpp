#pragma once
/// The worker side of the pool: what a forked (or exec'd) worker process runs.

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "systempp/app.hpp"
#include "systempp/control_block.hpp"
#include "systempp/fd.hpp"
#include "systempp/lifecycle.hpp"
#include "systempp/listeners.hpp"
#include "systempp/options.hpp"
#include "systempp/worker/exec_layout.hpp"  // callers of run_exec_worker also ask is_exec_worker

namespace boost::asio {
class io_context;
}

namespace systempp::worker {

/// Bytes on the master <-> worker channel (a socketpair). State lives in the control block;
/// the channel only wakes the other side. Any process (the master writes some, the worker
/// others).
inline constexpr char msg_ready = 'R';  ///< worker -> master: READY (see the slot)
inline constexpr char msg_drain = 'D';  ///< master -> worker: drain now (see the slot's command)
inline constexpr char msg_quit = 'Q';   ///< master -> worker: fast stop
inline constexpr char msg_recycle = 'X';  ///< worker -> master: served --max-requests, replace me
/// worker -> master: its resident memory passed --max-rss (its slot's rss_bytes), replace me
inline constexpr char msg_recycle_memory = 'M';
/// worker -> master: a unit called ctx.request_reload / request_stop; the reason follows,
/// up to 200 bytes, ended by '\n' (which the reason never contains).
inline constexpr char msg_reload_request = 'H';
inline constexpr char msg_stop_request = 'T';
inline constexpr std::size_t max_request_reason = 200;
/// master -> worker: a connection for this worker to serve, its socket attached to this
/// byte (SCM_RIGHTS); the index of its listener follows in decimal (the pool's --bind
/// order, which every worker's listeners keep), ended by '\n' (connection_handover.hpp).
inline constexpr char msg_connection = 'A';

/// Everything a worker needs. Filled by the master's spawner in the forked child, or by
/// run_exec_worker in an exec'd image; read by run() in that worker only.
struct launch {
  const options* opts = nullptr;
  detail::app_units* units = nullptr;
  const std::vector<listener>* listeners = nullptr;
  worker_slot* record = nullptr;  ///< this worker's control-block record
  int slot = 0;                   ///< logical slot, shown in logs and headers
  std::uint32_t generation = 0;
  pid_t master_pid = 0;
  unique_fd channel;              ///< the worker's end of the socketpair
  sigset_t restore_mask;          ///< the signal mask to restore once handlers are set
  /// The loop to run on: an exec'd image's own (made by systempp::main before the units, so
  /// objects the units bind to it are destroyed before it); null in a forked child, which
  /// makes a fresh loop (the master's is not usable after fork, and the child _exits).
  boost::asio::io_context* io = nullptr;
  /// The unit this process is dedicated to, in this image's units (nullopt: serving).
  std::optional<std::size_t> dedicated_unit;
};

/// The unit a worker's record says it is dedicated to (nullopt: a serving worker), found
/// by name among this image's units, which an exec'd image may order differently from the
/// master's. Throws config_error when this image has no such unit. Worker only.
std::optional<std::size_t> dedicated_unit(const control_header& header, const worker_slot& record,
                                          const lifecycle& lc);

/// The exec'd worker image: on_init, the worker cycle, on_exit. Worker only.

int run_exec_worker(const options& opts, detail::app_units& units,
                    boost::asio::io_context& io) noexcept;

/// Runs the worker's cycle: pre_startup, loop with on_startup/post_startup, READY,
/// serve until DRAIN/SIGTERM/master gone, pre_shutdown, on_shutdown, post_shutdown.
/// Returns the exit code. Worker only: call in the child right after fork.
int run(launch& l) noexcept;

}  // namespace systempp::worker
