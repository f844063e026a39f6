#pragma once
/// The signal table: one row per signal, one column per process role, saying what the
/// signal does there. The master, the workers and the inline process each build their
/// signal set, their SIG_IGN list and their dispatcher from their column, so a signal's
/// behaviour everywhere is read in one line (as in docs/guide.md, "Signals").
///
/// Adding a signal: a row here, then a `case` for its effect in the dispatcher of each role
/// that handles it (master_process::on_signal, worker_process::serve, inline_runner.cpp),
/// then the guide's table.

#include <array>
#include <csignal>
#include <optional>
#include <string_view>

namespace systempp {

/// What a signal does in one role.
enum class signal_effect {
  none,         ///< not listened on: the role never gets it, or the kernel's default applies
  ignore,       ///< SIG_IGN: the master coordinates this, a worker must not react
  reap,         ///< SIGCHLD: reap exited workers and replace them
  drain,        ///< graceful stop: finish in-flight work, run the shutdown stages
  interrupt,    ///< inline SIGINT: drain; a second one during the drain exits at once
  fast_stop,    ///< stop at once (the master: QUIT to workers, KILL after the deadline)
  reload,       ///< on_reload, then a new cycle (inline) or a rolling reload (master)
  scale_up,     ///< one worker more (or `app scale N`)
  scale_down,   ///< one worker fewer
  reopen_logs,  ///< logrotate's postrotate: open --log-file again
  upgrade,      ///< re-execute the master in place, keeping the workers
  pool_only,    ///< a pool-mode signal in the inline process: logged and ignored
};

/// The roles that have a column.
enum class signal_role { master, worker, inline_process };

struct signal_row {
  int number = 0;
  signal_effect master = signal_effect::none;
  signal_effect worker = signal_effect::none;
  signal_effect inline_process = signal_effect::none;

  constexpr signal_effect in(signal_role r) const noexcept {
    return r == signal_role::master ? master : r == signal_role::worker ? worker : inline_process;
  }
};

namespace signal_rows {
using enum signal_effect;  // the rows read as the guide's table does
// clang-format off
inline constexpr std::array<signal_row, 10> rows{{
  //  signal    master        worker        inline
    {SIGTERM, drain,       drain,       drain},
    {SIGINT,  fast_stop,   ignore,      interrupt},
    {SIGQUIT, fast_stop,   fast_stop,   fast_stop},
    {SIGHUP,  reload,      ignore,      reload},
    {SIGTTIN, scale_up,    ignore,      pool_only},
    {SIGTTOU, scale_down,  ignore,      pool_only},
    {SIGUSR1, reopen_logs, reopen_logs, reopen_logs},
    {SIGUSR2, upgrade,     ignore,      pool_only},
    {SIGCHLD, reap,        none,        none},
    {SIGPIPE, none,        ignore,      none},
}};
// clang-format on
}  // namespace signal_rows

/// Every signal any role handles or ignores. Any process.
inline constexpr const auto& signal_table = signal_rows::rows;

/// What `signal` does in `role` (none for a signal without a row). Any process.
constexpr signal_effect effect_of(signal_role role, int signal) noexcept {
  for (const auto& row : signal_table)
    if (row.number == signal) return row.in(role);
  return signal_effect::none;
}

/// Adds every signal that `role` handles on its loop to `set` (a boost::asio::signal_set).
/// On the thread that owns the loop.
template <class SignalSet>
void listen(SignalSet& set, signal_role role) {
  for (const auto& row : signal_table) {
    const auto e = row.in(role);
    if (e != signal_effect::none && e != signal_effect::ignore) set.add(row.number);
  }
}

/// SIG_IGN for every signal that `role` ignores. Before the role's loop runs.
inline void ignore_signals(signal_role role) noexcept {
  for (const auto& row : signal_table)
    if (row.in(role) == signal_effect::ignore) std::signal(row.number, SIG_IGN);
}

}  // namespace systempp
