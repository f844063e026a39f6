#pragma once
/// The master's signal table: what each signal does to the pool's master. The worker's is
/// in worker/include/systempp/worker/worker_signals.hpp, the inline process's in
/// common/src/inline_runner.cpp. Adding a signal: a row here, a case in
/// master_process::on_signal, a line in docs/guide.md's signal table.

#include <array>
#include <csignal>

#include "systempp/signal_table.hpp"

namespace systempp::master {

/// What the master does on a signal; one row per signal.
enum class master_signal { reap, drain, fast_stop, reload, scale_up, scale_down, reopen_logs, upgrade };
constexpr std::array<signal_row<master_signal>, 9> master_signals{{
    {SIGCHLD, signal_disposition::handle, master_signal::reap, "reap exited workers, replace them"},
    {SIGTERM, signal_disposition::handle, master_signal::drain, "graceful stop: drain every worker, exit 0"},
    {SIGINT, signal_disposition::handle, master_signal::fast_stop, "fast stop: QUIT to every worker, KILL after 2 s"},
    {SIGQUIT, signal_disposition::handle, master_signal::fast_stop, "fast stop, as SIGINT"},
    {SIGHUP, signal_disposition::handle, master_signal::reload, "on_reload, then a rolling reload"},
    {SIGTTIN, signal_disposition::handle, master_signal::scale_up, "one more worker (or `app scale N`)"},
    {SIGTTOU, signal_disposition::handle, master_signal::scale_down, "one worker fewer"},
    {SIGUSR1, signal_disposition::handle, master_signal::reopen_logs, "reopen the log file, here and in every worker"},
    {SIGUSR2, signal_disposition::handle, master_signal::upgrade, "re-execute the binary in place, keep the workers"},
}};

}  // namespace systempp::master
