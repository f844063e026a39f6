// The supervisor policy with dedicated processes (units with runs_in): slots after the
// serving ones, started and replaced like workers, rolled on reload without ever running
// twice unless the unit allows it, and left alone by scaling.

#include "policy_driver.hpp"

using namespace policy_test;
using systempp::master::dedicated_slot;

namespace {

// Two serving workers (slots 0, 1) and one dedicated process in slot 8 (max_workers is 8).
policy_config with_dedicated(bool may_overlap) {
  auto cfg = config(2);
  cfg.dedicated = {dedicated_slot{3, may_overlap}};
  return cfg;
}

constexpr int dedicated_slot_index = 8;

pid_t in_slot(const driver& d, int slot) {
  for (const auto& [pid, w] : d.live)
    if (w.at.slot == slot && w.drains == 0 && !w.killed) return pid;
  return 0;
}

}  // namespace

TEST_CASE("a dedicated process starts with the pool in its own slot and does not gate the pool's READY",
          "[policy][dedicated]") {
  driver d(with_dedicated(false));
  d.start();
  CHECK(d.spawns() == placements{{0, 0, 1}, {1, 0, 1}, {dedicated_slot_index, 0, 1}});
  d.ready(d.last_spawned[0].pid);
  d.ready(d.last_spawned[1].pid);
  const auto announced = d.of_ready();
  REQUIRE(announced.size() == 1);  // both serving workers are READY; the dedicated one is not yet
  CHECK(announced.front().ready == 2);
  REQUIRE(d.policy.dedicated_at(dedicated_slot_index) != nullptr);
  CHECK(d.policy.dedicated_at(dedicated_slot_index)->unit == 3);
  CHECK(d.policy.dedicated_at(1) == nullptr);
}

TEST_CASE("a dedicated process that dies is replaced after the backoff, and scaling leaves it alone",
          "[policy][dedicated]") {
  driver d(with_dedicated(false));
  d.start_ready();
  const pid_t ded = in_slot(d, dedicated_slot_index);
  d.exits(ded, -SIGKILL);
  CHECK(d.last_exit.kind == exit_kind::crashed);
  CHECK(d.spawns() == placements{{dedicated_slot_index, 0, 1}});
  const pid_t again = d.only_spawned();
  d.ready(again);
  const pid_t slot1 = in_slot(d, 1);
  d.scale(1);
  CHECK(d.drained_pids() == pids{slot1});  // only the serving slot above the new count
  d.scale(4);
  CHECK(d.spawns() == placements{{1, 1, 1}, {2, 0, 1}, {3, 0, 1}});
  CHECK(in_slot(d, dedicated_slot_index) == again);
}

TEST_CASE("a reload drains a dedicated process before its replacement starts: never two at once",
          "[policy][dedicated][reload]") {
  driver d(with_dedicated(false));
  const auto first = d.start_ready();
  const pid_t old_ded = in_slot(d, dedicated_slot_index);
  d.reload();
  CHECK(d.spawns() == placements{{0, 1, 2}});  // serving slots: the new worker first
  d.ready(d.only_spawned());
  CHECK(d.spawns() == placements{{1, 1, 2}});
  d.ready(d.only_spawned());
  // The dedicated slot: its process is told to drain and nothing is started beside it.
  CHECK(d.spawns().empty());
  CHECK(d.drained_pids() == pids{first[1], old_ded});
  CHECK_FALSE(d.reload_done().has_value());
  d.exits(old_ded, 0);
  REQUIRE(d.spawns() == placements{{dedicated_slot_index, 0, 2}});
  d.ready(d.only_spawned());
  const auto done = d.reload_done();
  REQUIRE(done.has_value());
  CHECK(done->ok());
}

TEST_CASE("a dedicated unit that allows overlap is rolled like a worker: the new one first",
          "[policy][dedicated][reload]") {
  auto cfg = config(1);
  cfg.dedicated = {dedicated_slot{0, true}};
  driver d(cfg);
  d.start_ready();
  const pid_t old_ded = in_slot(d, dedicated_slot_index);
  d.reload();
  d.ready(d.only_spawned());  // slot 0 switched
  REQUIRE(d.spawns() == placements{{dedicated_slot_index, 1, 2}});
  CHECK(d.live.at(old_ded).drains == 0);  // both run now, as the unit allows
  d.ready(d.only_spawned());
  CHECK(d.drained_pids() == pids{old_ded});
  REQUIRE(d.reload_done().has_value());
  CHECK(d.reload_done()->ok());
}

TEST_CASE("a dedicated process failing to start in a reload rolls the pool back and comes back on the old configuration",
          "[policy][dedicated][reload]") {
  driver d(with_dedicated(false));
  const auto first = d.start_ready();
  const pid_t old_ded = in_slot(d, dedicated_slot_index);
  d.reload(true);
  d.ready(d.only_spawned());  // slot 0 switched to g2
  d.ready(d.only_spawned());  // slot 1 switched to g2; the old dedicated process drains
  for (pid_t old : {first[0], first[1], old_ded}) d.exits(old, 0);
  REQUIRE(d.spawns() == placements{{dedicated_slot_index, 0, 2}});
  d.exits(d.only_spawned(), 5);  // the new dedicated process fails its startup
  CHECK(d.undone());             // the master undoes the reload before anything else forks
  CHECK(d.spawns() == placements{{0, 0, 3}});  // the rollback of the switched slots begins
  d.after(1'000ms);  // past the dedicated slot's backoff
  d.tick();
  CHECK(d.spawns() == placements{{dedicated_slot_index, 0, 3}});  // the previous configuration
}

TEST_CASE("with a surge above the serving workers a dedicated process waits until every serving slot switched",
          "[policy][dedicated][reload]") {
  auto cfg = with_dedicated(false);
  cfg.surge = 8;
  driver d(cfg);
  d.start_ready();
  const pid_t old_ded = in_slot(d, dedicated_slot_index);
  d.reload();
  CHECK(d.spawns() == placements{{0, 1, 2}, {1, 1, 2}});
  CHECK(d.drained_pids().empty());  // the dedicated process is not touched yet
  const auto fresh = d.spawned_pids();
  d.ready(fresh[0]);
  CHECK(d.live.at(old_ded).drains == 0);
  d.ready(fresh[1]);
  CHECK(d.live.at(old_ded).drains == 1);  // both serving slots switched: now it drains
}
