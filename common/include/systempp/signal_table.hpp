#pragma once
/// Signal tables: one constexpr table per process role (master, worker, inline) that says
/// what each signal does there, so the signal set a role listens on, the signals it ignores
/// and its dispatcher all come from one list. Adding a signal is a row plus its behaviour.
///
/// A role defines its own `enum class` of actions and a table of rows (any range of
/// signal_row, e.g. a constexpr std::array); `listen()` adds
/// every handled row to an Asio signal_set, `ignore()` sets SIG_IGN for the ignored rows,
/// and `action_of()` maps a delivered signal back to its row's action.

#include <csignal>
#include <optional>
#include <iterator>
#include <type_traits>
#include <string_view>

namespace systempp {

/// How a role treats a signal: handled on its loop, or ignored (SIG_IGN before the loop
/// exists, so a signal sent to the whole process group cannot stop or kill the process).
enum class signal_disposition { handle, ignore };

/// One row: the signal, what the role does with it, and a phrase for logs and docs.
template <class Action>
struct signal_row {
  using action_type = Action;
  int number = 0;
  signal_disposition disposition = signal_disposition::handle;
  Action action{};
  std::string_view what;  ///< e.g. "graceful drain, then exit 0"
};

/// Adds every handled signal of `table` to `set` (a boost::asio::signal_set). Any process,
/// on the thread that owns the loop.
template <class SignalSet, class Table>
void listen(SignalSet& set, const Table& table) {
  for (const auto& row : table)
    if (row.disposition == signal_disposition::handle) set.add(row.number);
}

/// SIG_IGN for every ignored signal of `table`. Any process, before its loop runs.
template <class Table>
void ignore(const Table& table) noexcept {
  for (const auto& row : table)
    if (row.disposition == signal_disposition::ignore) std::signal(row.number, SIG_IGN);
}

/// The row for `sig`, if the table has one. Any process.
template <class Table>
constexpr auto row_of(const Table& table, int sig) noexcept -> decltype(&*std::begin(table)) {
  for (const auto& row : table)
    if (row.number == sig) return &row;
  return nullptr;
}

/// The action for a delivered signal (nullopt: not a handled row of this table).
template <class Table>
constexpr auto action_of(const Table& table, int sig) noexcept
    -> std::optional<typename std::decay_t<decltype(*std::begin(table))>::action_type> {
  const auto* row = row_of(table, sig);
  if (!row || row->disposition != signal_disposition::handle) return std::nullopt;
  return row->action;
}

}  // namespace systempp
