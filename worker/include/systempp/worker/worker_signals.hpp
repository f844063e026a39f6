#pragma once
/// The worker role's signal table: what each signal does in a pool worker.

#include <csignal>
#include <span>

#include "systempp/signal_table.hpp"

namespace systempp::worker {

/// What a worker does with a signal it handles on its loop.
enum class worker_signal {
  none,         ///< ignored rows: the signal never reaches the loop
  drain,        ///< finish in-flight work, run the shutdown stages, exit
  fast_stop,    ///< exit 0 at once, also in the middle of a drain
  reopen_logs,  ///< logrotate's postrotate: open --log-file again
};

/// One row per signal. The ignored rows exist because the master coordinates reloads and
/// scaling: a terminal's Ctrl-C or a HUP sent to the whole process group must not reach
/// the workers' units. Any process may read it; only a worker acts on it.
inline constexpr signal_row<worker_signal> worker_signal_rows[] = {
    {SIGTERM, signal_disposition::handle, worker_signal::drain, "graceful drain, then exit"},
    {SIGQUIT, signal_disposition::handle, worker_signal::fast_stop, "fast stop: exit 0 at once"},
    {SIGUSR1, signal_disposition::handle, worker_signal::reopen_logs, "reopen the log file"},
    {SIGHUP, signal_disposition::ignore, worker_signal::none, "ignored: the master reloads"},
    {SIGINT, signal_disposition::ignore, worker_signal::none, "ignored: the master stops the pool"},
    {SIGTTIN, signal_disposition::ignore, worker_signal::none, "ignored: the master scales"},
    {SIGTTOU, signal_disposition::ignore, worker_signal::none, "ignored: the master scales"},
    {SIGUSR2, signal_disposition::ignore, worker_signal::none, "ignored: the master upgrades"},
    {SIGPIPE, signal_disposition::ignore, worker_signal::none, "ignored: a write to a closed peer fails instead"},
};

/// The table as listen(), ignore() and action_of() take it. Any process.
inline constexpr std::span<const signal_row<worker_signal>> worker_signals{worker_signal_rows};

}  // namespace systempp::worker
