// The signal table: what each role listens on, ignores and does, as docs/guide.md states it.

#include <catch2/catch.hpp>

#include <csignal>
#include <set>

#include <systempp/signal_table.hpp>

namespace {

using namespace systempp;

/// Records what listen() adds, as an Asio signal_set would.
struct recording_set {
  std::set<int> added;
  void add(int sig) { added.insert(sig); }
};

std::set<int> listened(signal_role role) {
  recording_set set;
  listen(set, role);
  return set.added;
}

}  // namespace

TEST_CASE("the master listens on every pool signal and ignores none", "[signals]") {
  CHECK(listened(signal_role::master) ==
        std::set<int>{SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGCHLD});
  for (const auto& row : signal_table) CHECK(row.master != signal_effect::ignore);
  CHECK(effect_of(signal_role::master, SIGHUP) == signal_effect::reload);
  CHECK(effect_of(signal_role::master, SIGINT) == signal_effect::fast_stop);
  CHECK(effect_of(signal_role::master, SIGUSR2) == signal_effect::upgrade);
}

TEST_CASE("a worker handles only stop and log signals and ignores what the master coordinates",
          "[signals]") {
  CHECK(listened(signal_role::worker) == std::set<int>{SIGTERM, SIGQUIT, SIGUSR1});
  for (int sig : {SIGHUP, SIGINT, SIGTTIN, SIGTTOU, SIGUSR2, SIGPIPE})
    CHECK(effect_of(signal_role::worker, sig) == signal_effect::ignore);
}

TEST_CASE("the inline process catches pool-only signals instead of dying of them", "[signals]") {
  CHECK(listened(signal_role::inline_process) ==
        std::set<int>{SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2});
  for (int sig : {SIGTTIN, SIGTTOU, SIGUSR2}) CHECK(effect_of(signal_role::inline_process, sig) == signal_effect::pool_only);
  CHECK(effect_of(signal_role::inline_process, SIGINT) == signal_effect::interrupt);
  CHECK(effect_of(signal_role::inline_process, SIGALRM) == signal_effect::none);
}
