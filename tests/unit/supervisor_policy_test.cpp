// The supervisor policy, driven without processes or real time: pids are invented, time is
// a number the test moves forward, and every action is checked against what a master
// would see (docs/ARCHITECTURE.md, "Supervision").

#include "policy_driver.hpp"

using namespace policy_test;


// --- starting and crashing ----------------------------------------------------------------

TEST_CASE("starting the pool spawns one generation-1 worker per slot, each in lane 0",
          "[policy]") {
  driver d(config(3));
  d.start();
  CHECK(d.spawns() == placements{{0, 0, 1}, {1, 0, 1}, {2, 0, 1}});
  CHECK(d.last.size() == 3);
  CHECK(d.policy.generation() == 1);
  CHECK(d.policy.ready_count() == 0);
}

TEST_CASE("a READY worker that crashes is respawned at once in its slot, the others untouched",
          "[policy]") {
  driver d(config(3));
  const pids w = d.start_ready();
  d.after(60'000ms);

  d.exits(w[1], -SIGSEGV);
  CHECK(d.spawns() == placements{{1, 0, 1}});
  CHECK(d.last.size() == 1);  // no drain or signal for anyone else
  CHECK(d.last_exit.kind == exit_kind::crashed);

  d.ready(d.only_spawned());
  CHECK(d.nothing());
  CHECK(d.serving_count() == 3);
}

// --- backoff ------------------------------------------------------------------------------

TEST_CASE("a worker that keeps failing before READY is respawned after delays that double up "
          "to backoff_max",
          "[policy]") {
  driver d(config(2));
  d.start();
  const pids first = d.spawned_pids();
  d.ready(first[1]);  // slot 1 serves and must never be touched
  pid_t current = first[0];

  for (const ms expected : {100ms, 200ms, 400ms, 800ms, 1'000ms, 1'000ms}) {
    INFO("expected delay " << expected.count() << " ms");
    d.after(1'000ms);
    d.exits(current, 1);
    CHECK(d.nothing());  // no respawn straight away
    CHECK(d.last_exit.kind == exit_kind::failed_start);
    const time_point when = d.now + expected;
    CHECK(d.deadline() == when);

    d.at(when - 1ms);
    d.tick();
    CHECK(d.nothing());  // never before the delay

    d.at(when);
    d.tick();
    CHECK(d.spawns() == placements{{0, 0, 1}});
    CHECK(d.last.size() == 1);
    current = d.only_spawned();
  }
  CHECK(d.live.at(first[1]).serving());
}

TEST_CASE("a worker that reached READY starts the backoff of its slot over", "[policy]") {
  driver d(config(1));
  d.start();
  pid_t w = d.only_spawned();
  for (int i = 0; i < 3; ++i) {  // three failed starts: the next delay would be 800 ms
    d.exits(w, 1);
    d.at(d.deadline());
    d.tick();
    w = d.only_spawned();
  }
  d.ready(w);
  d.after(10'000ms);
  d.exits(w, 1);  // it served, then fell over: it is replaced at once
  CHECK(d.spawns() == placements{{0, 0, 1}});
  w = d.only_spawned();

  d.exits(w, 1);  // a failed start after a good run waits the first delay again
  CHECK(d.nothing());
  CHECK(d.deadline() == d.now + 100ms);
}

TEST_CASE("a worker that exits with code 2 before READY waits config_error_backoff before the "
          "next spawn",
          "[policy]") {
  driver d(config(1));
  d.start();
  const pid_t w = d.only_spawned();
  d.after(50ms);

  d.exits(w, 2);
  CHECK(d.nothing());
  CHECK(d.last_exit.kind == exit_kind::config_error);
  const time_point when = d.now + 30'000ms;
  CHECK(d.deadline() == when);

  d.at(when - 1ms);
  d.tick();
  CHECK(d.nothing());

  d.at(when);
  d.tick();
  CHECK(d.spawns() == placements{{0, 0, 1}});
}

TEST_CASE("a fork failure backs off like a failed start", "[policy]") {
  driver d(config(1));
  d.fork_failures = 1;
  d.start();
  CHECK(d.last_spawned.empty());
  CHECK(d.deadline() == d.now + 100ms);  // the first delay of a failed start

  d.at(d.now + 99ms);
  d.tick();
  CHECK(d.nothing());
  d.after(1ms);
  d.tick();
  CHECK(d.spawns() == placements{{0, 0, 1}});
}

// --- timeouts -----------------------------------------------------------------------------

TEST_CASE("a worker not READY within ready_timeout gets SIGKILL and then counts as a failed "
          "start",
          "[policy]") {
  driver d(config(2));
  d.start();
  const pids w = d.spawned_pids();
  const time_point started = d.now;
  d.after(1'000ms);
  d.ready(w[1]);

  CHECK(d.deadline() == started + 5'001ms);
  d.at(started + 5'000ms);
  d.tick();
  CHECK(d.nothing());  // exactly at the timeout it still has time

  d.after(1ms);
  d.tick();
  REQUIRE(d.signals().size() == 1);
  CHECK(d.signals()[0].pid == w[0]);
  CHECK(d.signals()[0].sig == SIGKILL);
  CHECK(d.signals()[0].reason == kill_reason::ready_timeout);
  CHECK(d.last.size() == 1);

  d.after(1'000ms);
  d.tick();
  CHECK(d.nothing());  // one SIGKILL, not one per tick

  d.exits(w[0], -SIGKILL);
  CHECK(d.nothing());  // backoff, not an instant respawn
  CHECK(d.last_exit.kind == exit_kind::failed_start);
  CHECK(d.deadline() == d.now + 100ms);
  d.at(d.deadline());
  d.tick();
  CHECK(d.spawns() == placements{{0, 0, 1}});
}

TEST_CASE("a READY worker with a stale heartbeat gets SIGABRT, then SIGKILL after abort_grace",
          "[policy]") {
  driver d(config(2));
  const pids w = d.start_ready();
  const pid_t healthy = w[0];
  const pid_t hung = w[1];
  d.beat(healthy);
  d.beat(hung);
  const time_point last_beat = d.now;

  // The healthy worker beats every second; the hung one stopped.
  while (d.now < last_beat + 10'000ms) {
    d.after(1'000ms);
    d.beat(healthy);
    d.tick();
    CHECK(d.nothing());  // 10 s old is not older than heartbeat_timeout yet
  }
  d.after(1ms);
  d.beat(healthy);
  d.tick();
  REQUIRE(d.signals().size() == 1);
  CHECK(d.signals()[0].pid == hung);
  CHECK(d.signals()[0].sig == SIGABRT);
  CHECK(d.signals()[0].reason == kill_reason::heartbeat_timeout);
  const time_point aborted = d.now;

  // It has abort_grace to write its core and die; then SIGKILL.
  CHECK(d.deadline() == aborted + 3'001ms);
  d.at(aborted + 3'000ms);
  d.beat(healthy);
  d.tick();
  CHECK(d.nothing());  // no second SIGABRT either
  d.after(1ms);
  d.tick();
  CHECK(d.signalled(SIGKILL) == pids{hung});
  CHECK(d.last.size() == 1);

  d.exits(hung, -SIGKILL);
  CHECK(d.spawns() == placements{{1, 0, 1}});  // it had served: replaced at once
}

TEST_CASE("a READY worker with fresh heartbeats gets no action", "[policy]") {
  driver d(config(2));
  const pids w = d.start_ready();
  for (int i = 0; i < 600; ++i) {  // ten minutes, ticking every second
    d.after(1'000ms);
    for (pid_t p : w) d.beat(p);
    d.tick();
    REQUIRE(d.nothing());
  }
}

TEST_CASE("a hung worker that dies of its SIGABRT is replaced at once and never gets SIGKILL",
          "[policy]") {
  driver d(config(1));
  const pid_t w = d.start_ready().front();
  d.beat(w);
  d.after(10'001ms);
  d.tick();
  CHECK(d.signalled(SIGABRT) == pids{w});

  d.after(500ms);
  d.exits(w, -SIGABRT);
  CHECK(d.spawns() == placements{{0, 0, 1}});
  const pid_t next = d.only_spawned();
  d.ready(next);
  d.beat(next);
  d.after(10'000ms);
  d.tick();
  CHECK(d.nothing());  // no late SIGKILL for the old pid, no abort for the new one
}

// --- stopping -----------------------------------------------------------------------------

TEST_CASE("a graceful stop drains every worker with the graceful deadline and finishes after "
          "the last exit",
          "[policy]") {
  driver d(config(3));
  const pids w = d.start_ready();
  d.after(5'000ms);

  d.stop(stop_mode::graceful);
  CHECK(d.drained_pids() == w);
  for (const auto& a : d.drains()) CHECK(a.deadline == d.now + 30'000ms);
  CHECK(d.last.size() == 3);
  CHECK(d.policy.stopping());

  d.after(100ms);
  d.exits(w[0], 0);
  CHECK(d.nothing());
  CHECK(d.last_exit.kind == exit_kind::expected);
  d.exits(w[2], 0);
  CHECK(d.nothing());
  d.exits(w[1], 0);
  CHECK(d.finished());
  CHECK(d.last.size() == 1);
}

TEST_CASE("a worker still draining at the graceful deadline gets SIGKILL", "[policy]") {
  driver d(config(2));
  const pids w = d.start_ready();
  d.stop(stop_mode::graceful);
  const time_point deadline = d.now + 30'000ms;
  d.after(200ms);
  d.exits(w[0], 0);

  CHECK(d.deadline() == deadline + 1ms);
  d.at(deadline);
  d.tick();
  CHECK(d.nothing());
  d.after(1ms);
  d.tick();
  REQUIRE(d.signals().size() == 1);
  CHECK(d.signals()[0].pid == w[1]);
  CHECK(d.signals()[0].sig == SIGKILL);
  CHECK(d.signals()[0].reason == kill_reason::graceful_timeout);

  d.exits(w[1], -SIGKILL);
  CHECK(d.finished());
}

TEST_CASE("a worker that becomes READY after a graceful stop is drained too", "[policy]") {
  driver d(config(2));
  d.start();
  const pids w = d.spawned_pids();
  d.ready(w[0]);
  d.after(100ms);

  d.stop(stop_mode::graceful);
  std::vector<drain_action> drains = d.drains();
  d.after(100ms);
  d.ready(w[1]);  // it was still starting when the stop came
  for (const auto& a : d.drains()) drains.push_back(a);
  CHECK(d.spawns().empty());

  REQUIRE(d.live.at(w[1]).drains == 1);
  for (const auto& a : drains)
    if (a.pid == w[1]) CHECK(a.deadline <= d.now + 30'000ms);
  CHECK(d.serving_count() == 0);

  d.exits(w[0], 0);
  CHECK_FALSE(d.finished());
  d.exits(w[1], 0);
  CHECK(d.finished());
}

TEST_CASE("a worker that crashes during a graceful stop is not respawned", "[policy]") {
  driver d(config(2));
  const pids w = d.start_ready();
  d.stop(stop_mode::graceful);

  d.after(1'000ms);
  d.exits(w[0], -SIGSEGV);
  CHECK(d.nothing());
  d.after(10'000ms);
  d.tick();
  CHECK(d.nothing());  // not after a backoff either
  d.exits(w[1], 1);
  CHECK(d.finished());
  CHECK(d.last.size() == 1);

  d.after(60'000ms);
  d.tick();
  CHECK(d.nothing());
}

TEST_CASE("a stop while every slot waits out a backoff finishes at once", "[policy]") {
  driver d(config(1));
  d.start();
  d.exits(d.only_spawned(), 2);
  d.after(1'000ms);
  d.stop(stop_mode::graceful);
  CHECK(d.finished());
  d.at(d.now + 60'000ms);
  d.tick();
  CHECK(d.nothing());  // and the backoff does not bring a worker back
}

TEST_CASE("a fast stop sends SIGQUIT to every worker, then SIGKILL at the fast-stop deadline",
          "[policy]") {
  driver d(config(3));
  d.start();
  const pids w = d.spawned_pids();
  d.ready(w[0]);
  d.ready(w[1]);  // w[2] is still starting
  d.after(1'000ms);

  d.stop(stop_mode::fast);
  CHECK(d.signalled(SIGQUIT) == w);
  CHECK(d.last.size() == 3);  // no drain, no SIGKILL yet
  const time_point deadline = d.now + 2'000ms;

  d.after(500ms);
  d.exits(w[0], 0);
  CHECK(d.nothing());
  d.ready(w[2]);
  CHECK(d.nothing());  // it already has its SIGQUIT

  CHECK(d.deadline() == deadline + 1ms);
  d.at(deadline);
  d.tick();
  CHECK(d.nothing());
  d.after(1ms);
  d.tick();
  CHECK(d.signalled(SIGKILL) == pids{w[1], w[2]});
  for (const auto& s : d.signals()) CHECK(s.reason == kill_reason::fast_stop_deadline);

  d.exits(w[1], -SIGKILL);
  CHECK(d.nothing());
  d.exits(w[2], -SIGKILL);
  CHECK(d.finished());
}

TEST_CASE("a fast stop during a graceful stop shortens the deadline", "[policy]") {
  driver d(config(2));
  const pids w = d.start_ready();
  d.stop(stop_mode::graceful);
  d.after(1'000ms);

  d.stop(stop_mode::fast);
  CHECK(d.signalled(SIGQUIT) == w);
  d.after(2'001ms);
  d.tick();
  CHECK(d.signalled(SIGKILL) == w);

  d.stop(stop_mode::graceful);  // no way back to a slower stop
  CHECK(d.nothing());
}

// --- rolling reload -----------------------------------------------------------------------

TEST_CASE("a reload with surge 1 replaces one slot at a time and never dips below full "
          "capacity",
          "[policy]") {
  driver d(config(3));
  const pids old = d.start_ready();
  d.capacity_floor = 3;
  d.after(60'000ms);

  d.reload();
  CHECK(d.policy.generation() == 2);
  CHECK(d.policy.reloading());
  CHECK(d.spawns() == placements{{0, 1, 2}});  // lane 0 is the old worker's
  CHECK(d.last.size() == 1);
  const pid_t new0 = d.only_spawned();

  d.after(300ms);
  d.ready(new0);
  CHECK(d.drained_pids() == pids{old[0]});
  CHECK(d.drains()[0].deadline == d.now + 30'000ms);
  CHECK(d.spawns() == placements{{1, 1, 2}});
  CHECK(d.last.size() == 2);
  CHECK_FALSE(d.reload_done());
  const pid_t new1 = d.only_spawned();

  d.after(100ms);
  d.exits(old[0], 0);  // the drained worker leaves; nothing to do
  CHECK(d.nothing());

  d.after(200ms);
  d.ready(new1);
  CHECK(d.drained_pids() == pids{old[1]});
  CHECK(d.spawns() == placements{{2, 1, 2}});
  CHECK(d.last.size() == 2);
  const pid_t new2 = d.only_spawned();

  d.after(300ms);
  d.ready(new2);
  CHECK(d.drained_pids() == pids{old[2]});
  REQUIRE(d.reload_done());
  CHECK(d.reload_done()->ok());
  CHECK(d.last.size() == 2);
  CHECK_FALSE(d.policy.reloading());
  CHECK(d.serving_generations(3) == std::vector<std::uint32_t>{2, 2, 2});

  d.exits(old[1], 0);
  CHECK(d.nothing());
  d.exits(old[2], 0);
  CHECK(d.nothing());
  CHECK(d.last_exit.kind == exit_kind::expected);
}

TEST_CASE("a reload with surge 2 starts two replacements at once", "[policy]") {
  auto cfg = config(3);
  cfg.surge = 2;
  driver e(cfg);
  const pids old = e.start_ready();
  e.capacity_floor = 3;

  e.reload();
  CHECK(e.spawns() == placements{{0, 1, 2}, {1, 1, 2}});
  CHECK(e.last.size() == 2);
  const pids fresh = e.spawned_pids();

  e.after(100ms);
  e.ready(fresh[1]);  // slot 1 is READY first
  CHECK(e.drained_pids() == pids{old[1]});
  CHECK(e.spawns() == placements{{2, 1, 2}});
  const pid_t new2 = e.only_spawned();

  e.ready(fresh[0]);
  CHECK(e.drained_pids() == pids{old[0]});
  CHECK(e.spawns().empty());  // the only slot left is already starting
  CHECK_FALSE(e.reload_done());

  e.ready(new2);
  CHECK(e.drained_pids() == pids{old[2]});
  REQUIRE(e.reload_done());
  CHECK(e.reload_done()->ok());
  CHECK(e.serving_generations(3) == std::vector<std::uint32_t>{2, 2, 2});
}

TEST_CASE("a new-generation worker that exits before READY aborts the rollout and kills the "
          "other starting replacements",
          "[policy]") {
  auto cfg = config(3);
  cfg.surge = 2;
  driver d(cfg);
  const pids old = d.start_ready();
  d.capacity_floor = 3;

  d.reload();
  const pids fresh = d.spawned_pids();
  REQUIRE(fresh.size() == 2);

  d.after(400ms);
  d.exits(fresh[0], 1);  // slot 0's replacement fails in pre_startup
  CHECK(d.signalled(SIGKILL) == pids{fresh[1]});
  CHECK(d.signals().size() == 1);
  CHECK(d.signals()[0].reason == kill_reason::reload_aborted);
  REQUIRE(d.reload_done());
  CHECK_FALSE(d.reload_done()->ok());
  CHECK_THAT(d.reload_done()->message, Catch::Contains("slot 0"));
  CHECK(d.spawns().empty());  // the old slot-0 worker still serves
  CHECK(d.drains().empty());
  CHECK_FALSE(d.policy.reloading());

  d.after(100ms);
  d.exits(fresh[1], -SIGKILL);
  CHECK(d.nothing());  // the rollout is over: no second reload_done, no respawn
  d.after(60'000ms);
  d.tick();
  CHECK(d.nothing());

  for (pid_t p : old) CHECK(d.live.at(p).serving());
  CHECK(d.ever_drained.empty());
}

TEST_CASE("a rollout aborted by a ready timeout leaves the old workers of unswitched slots "
          "serving",
          "[policy]") {
  driver d(config(3));
  const pids old = d.start_ready();
  d.capacity_floor = 3;

  d.reload();
  const pid_t new0 = d.only_spawned();
  d.after(100ms);
  d.ready(new0);  // slot 0 switches
  const pid_t new1 = d.only_spawned();
  const time_point spawned1 = d.now;
  d.exits(old[0], 0);

  d.at(spawned1 + 5'001ms);  // slot 1's replacement never says READY
  d.tick();
  CHECK(d.signalled(SIGKILL) == pids{new1});
  CHECK(d.signals()[0].reason == kill_reason::ready_timeout);
  d.exits(new1, -SIGKILL);
  REQUIRE(d.reload_done());
  CHECK_FALSE(d.reload_done()->ok());
  CHECK(d.spawns().empty());
  CHECK(d.drains().empty());

  d.after(60'000ms);
  d.tick();
  CHECK(d.nothing());
  CHECK(d.ever_drained == std::set<pid_t>{old[0]});  // only the slot that switched
  CHECK(d.live.at(old[1]).serving());
  CHECK(d.live.at(old[2]).serving());
  CHECK(d.serving_generations(3) == std::vector<std::uint32_t>{2, 1, 1});
}

TEST_CASE("a reload during a rollout returns no actions", "[policy]") {
  driver d(config(2));
  d.start_ready();
  d.reload();
  const pid_t new0 = d.only_spawned();

  d.reload();
  CHECK(d.nothing());  // the master coalesces it into one more rollout later
  CHECK(d.policy.generation() == 2);

  d.ready(new0);
  const pid_t new1 = d.only_spawned();
  d.reload();
  CHECK(d.nothing());
  d.ready(new1);
  REQUIRE(d.reload_done());
  CHECK(d.reload_done()->ok());
  CHECK(d.serving_generations(2) == std::vector<std::uint32_t>{2, 2});
}

TEST_CASE("a reload into a slot whose old worker is still draining waits for that lane",
          "[policy]") {
  driver d(config(1));
  const pid_t g1 = d.start_ready().front();
  d.capacity_floor = 1;
  d.reload();
  const pid_t g2 = d.only_spawned();
  d.ready(g2);
  REQUIRE(d.reload_done());  // g1 drains in lane 0, g2 serves in lane 1

  d.reload();
  CHECK(d.spawns().empty());  // both lanes busy: never two draining generations in a slot
  CHECK(d.policy.reloading());

  d.after(1'000ms);
  d.exits(g1, 0);
  CHECK(d.spawns() == placements{{0, 0, 3}});
  const pid_t g3 = d.only_spawned();
  d.ready(g3);
  CHECK(d.drained_pids() == pids{g2});
  REQUIRE(d.reload_done());
  CHECK(d.reload_done()->ok());
}

TEST_CASE("a reload while an old worker is still starting ends with the new generation in every "
          "slot",
          "[policy]") {
  driver d(config(2));
  d.start();
  const pids old = d.spawned_pids();
  d.ready(old[1]);  // slot 0's first worker is still starting

  d.reload();
  CHECK(d.spawns() == placements{{0, 1, 2}});
  const pid_t new0 = d.only_spawned();

  d.after(100ms);
  d.ready(old[0]);  // the old generation gets READY first: it must not drain its successor
  CHECK(d.drains().empty());
  CHECK(d.live.at(new0).drains == 0);
  CHECK_FALSE(d.reload_done());

  d.ready(new0);
  CHECK(d.drained_pids() == pids{old[0]});
  CHECK(d.spawns() == placements{{1, 1, 2}});
  d.ready(d.only_spawned());
  CHECK(d.drained_pids() == pids{old[1]});
  REQUIRE(d.reload_done());
  CHECK(d.reload_done()->ok());
  CHECK(d.serving_generations(2) == std::vector<std::uint32_t>{2, 2});
}

// --- scaling ------------------------------------------------------------------------------

TEST_CASE("scaling up spawns workers into the new slots", "[policy]") {
  driver d(config(2));
  d.start_ready();
  d.capacity_floor = 2;

  d.scale(4);
  CHECK(d.spawns() == placements{{2, 0, 1}, {3, 0, 1}});
  CHECK(d.last.size() == 2);
  CHECK(d.policy.workers() == 4);

  d.scale(100);  // capped at max_workers
  CHECK(d.policy.workers() == 8);
  CHECK(d.spawns() == placements{{4, 0, 1}, {5, 0, 1}, {6, 0, 1}, {7, 0, 1}});
}

TEST_CASE("scaling down drains the highest slots and does not refill them", "[policy]") {
  driver d(config(4));
  const pids w = d.start_ready();

  d.scale(2);
  CHECK(d.drained_pids() == pids{w[2], w[3]});
  CHECK(d.last.size() == 2);
  CHECK(d.policy.workers() == 2);

  d.exits(w[2], 0);
  CHECK(d.nothing());
  d.exits(w[3], 0);
  CHECK(d.nothing());
  d.after(60'000ms);
  d.tick();
  CHECK(d.nothing());
  CHECK(d.serving_count() == 2);
}

TEST_CASE("scaling never goes below one worker", "[policy]") {
  driver d(config(2));
  const pids w = d.start_ready();

  d.scale(0);
  CHECK(d.drained_pids() == pids{w[1]});
  CHECK(d.policy.workers() == 1);

  d.scale(-3);
  CHECK(d.nothing());
  CHECK(d.policy.workers() == 1);
  CHECK(d.live.at(w[0]).serving());
}

// --- recycling ----------------------------------------------------------------------------

TEST_CASE("recycling a worker starts its replacement in the same slot and drains it only once "
          "the replacement is READY",
          "[policy]") {
  driver d(config(2));
  const pids w = d.start_ready();
  d.capacity_floor = 2;

  d.recycle(w[0]);
  CHECK(d.spawns() == placements{{0, 1, 1}});
  CHECK(d.last.size() == 1);  // no drain yet
  const pid_t repl = d.only_spawned();

  d.after(500ms);
  d.tick();
  CHECK(d.nothing());

  d.ready(repl);
  CHECK(d.drained_pids() == pids{w[0]});
  CHECK(d.last.size() == 1);
  d.exits(w[0], 0);
  CHECK(d.nothing());
}

TEST_CASE("a recycle while a replacement is already starting does nothing", "[policy]") {
  driver d(config(1));
  const pid_t w = d.start_ready().front();
  d.recycle(w);
  const pid_t repl = d.only_spawned();

  d.recycle(w);
  CHECK(d.nothing());
  d.recycle(repl);  // not READY yet: nothing to recycle
  CHECK(d.nothing());
  CHECK(d.policy.procs().size() == 2);
}

TEST_CASE("a recycle replacement that fails leaves the recycled worker serving", "[policy]") {
  driver d(config(1));
  const pid_t w = d.start_ready().front();
  d.capacity_floor = 1;
  d.recycle(w);
  const pid_t repl = d.only_spawned();

  d.exits(repl, 1);
  CHECK(d.nothing());
  d.after(60'000ms);
  d.tick();
  CHECK(d.nothing());
  CHECK(d.live.at(w).serving());
  CHECK(d.ever_drained.empty());
}

// --- the master's bookkeeping, decided here ----------------------------------------------

TEST_CASE("READY=1 is due once, when the first full pool is READY, not after later READYs",
          "[policy]") {
  driver d(config(2));
  d.start();
  const pids w = d.spawned_pids();
  d.ready(w[0]);
  CHECK(d.of_ready().empty());
  d.ready(w[1]);
  REQUIRE(d.of_ready().size() == 1);
  CHECK(d.of_ready()[0].ready == 2);
  d.exits(w[0], 1);  // crash and replacement: no second READY=1
  d.ready(d.only_spawned());
  CHECK(d.of_ready().empty());
}

TEST_CASE("a HUP during a rollout is coalesced into one more reload, handed back when it ends",
          "[policy]") {
  driver d(config(1));
  const pids old = d.start_ready();
  REQUIRE(d.policy.request_reload() == reload_request::begin);
  d.reload();
  const pid_t fresh = d.only_spawned();
  CHECK(d.policy.request_reload() == reload_request::coalesced);
  CHECK(d.policy.request_reload() == reload_request::coalesced);  // still one more, not two
  d.ready(fresh);
  REQUIRE(d.reload_done());
  CHECK(d.reload_done()->ok());
  CHECK(d.reload_done()->next_queued);
  d.exits(old[0], 0);  // the drained worker frees its lane
  // The queued reload is the only one: the next rollout ends without another.
  REQUIRE(d.policy.request_reload() == reload_request::begin);
  d.reload();
  d.ready(d.only_spawned());
  REQUIRE(d.reload_done());
  CHECK_FALSE(d.reload_done()->next_queued);
}

TEST_CASE("a HUP during a stop is ignored, and a rejected reload touches nothing", "[policy]") {
  driver d(config(1));
  d.start_ready();
  const auto rejected = d.policy.reject_reload("unit settings, stage on_reload: bad port");
  CHECK(rejected.result == reload_result::rejected);
  CHECK(rejected.message == "unit settings, stage on_reload: bad port");
  CHECK(d.policy.generation() == 1);
  CHECK_FALSE(d.policy.reloading());
  d.stop(stop_mode::graceful);
  CHECK(d.policy.request_reload() == reload_request::ignored);
}

TEST_CASE("a failed reload's message names the worker that failed to start and how", "[policy]") {
  driver d(config(1));
  d.start_ready();
  d.reload();
  const pid_t fresh = d.only_spawned();
  d.live.erase(fresh);
  auto r = d.policy.exited(fresh, 4, d.now, "worker[0] pid 7 g2 (in pre_startup of unit db) exited with code 4");
  const auto done = std::find_if(r.actions.begin(), r.actions.end(),
                                 [](const action& a) { return std::holds_alternative<reload_done_action>(a); });
  REQUIRE(done != r.actions.end());
  const auto& msg = std::get<reload_done_action>(*done).message;
  CHECK_THAT(msg, Catch::StartsWith("new worker in slot 0"));
  CHECK_THAT(msg, Catch::EndsWith("; worker[0] pid 7 g2 (in pre_startup of unit db) exited with code 4"));
}

TEST_CASE("exits are counted by the reason the policy killed for", "[policy]") {
  driver d(config(1));
  d.start();
  const pid_t slow = d.only_spawned();
  d.after(5'001ms);
  d.tick();  // ready timeout: SIGKILL
  d.exits(slow, -SIGKILL);
  CHECK(d.last_exit.restart == systempp::restart_reason::timeout_ready);
  d.at(d.deadline());
  d.tick();
  const pid_t next = d.only_spawned();
  d.ready(next);
  d.exits(next, -SIGSEGV);
  CHECK(d.last_exit.restart == systempp::restart_reason::crash);
  CHECK_FALSE(d.last_exit.unclean);
  CHECK_FALSE(d.policy.unclean());
}

TEST_CASE("a stop is unclean when a worker is killed at the deadline or drains with an error",
          "[policy]") {
  SECTION("killed at the graceful deadline") {
    driver d(config(1));
    d.start_ready();
    d.stop(stop_mode::graceful);
    d.after(30'001ms);
    d.tick();
    CHECK(d.policy.unclean());
  }
  SECTION("drained, then exited 7") {
    driver d(config(1));
    const pids w = d.start_ready();
    d.stop(stop_mode::graceful);
    CHECK_FALSE(d.policy.unclean());
    d.exits(w[0], 7);
    CHECK(d.last_exit.unclean);
    CHECK(d.last_exit.kind == exit_kind::expected);
    CHECK_FALSE(d.last_exit.restart.has_value());
    CHECK(d.policy.unclean());
  }
}

TEST_CASE("the control block's worker states map onto the policy's process states", "[policy]") {
  using systempp::worker_state;
  using systempp::master::policy_state_of;
  using systempp::master::proc_state;
  CHECK(policy_state_of(worker_state::spawned) == proc_state::starting);
  CHECK(policy_state_of(worker_state::starting) == proc_state::starting);
  CHECK(policy_state_of(worker_state::ready) == proc_state::ready);
  CHECK(policy_state_of(worker_state::draining) == proc_state::draining);
  CHECK_FALSE(policy_state_of(worker_state::free));
  CHECK_FALSE(policy_state_of(worker_state::exited));
  CHECK_FALSE(policy_state_of(worker_state::crashed));
}

TEST_CASE("a worker still starting at a fast stop gets SIGQUIT too, and SIGKILL at the deadline",
          "[policy]") {
  driver d(config(2));
  d.start();
  const pids w = d.spawned_pids();
  d.ready(w[0]);
  d.stop(stop_mode::fast);
  CHECK(d.signalled(SIGQUIT) == pids{w[0], w[1]});
  d.ready(w[1]);  // it raced the stop: already told to quit, nothing more
  CHECK(d.nothing());
  d.exits(w[0], 0);
  // w[1] ignores its SIGQUIT: at the deadline it is killed, so the stop can finish.
  d.at(d.deadline());
  d.tick();
  CHECK(d.signalled(SIGKILL) == pids{w[1]});
  CHECK(d.signals()[0].reason == kill_reason::fast_stop_deadline);
  d.exits(w[1], -SIGKILL);
  CHECK(d.finished());
  CHECK(d.policy.unclean());
}

TEST_CASE("an upgrade adopts each worker in the state its record shows", "[policy]") {
  driver d(config(1));
  d.policy.adopt(501, 0, 0, 3, proc_state::draining, d.now);
  d.policy.adopt(502, 0, 1, 4, proc_state::ready, d.now);
  d.live[501] = fake_worker{501, placement{0, 0, 3}, true, 1};
  d.live[502] = fake_worker{502, placement{0, 1, 4}, true};
  CHECK(d.policy.generation() == 4);
  CHECK(d.policy.ready_count() == 1);
  d.exits(501, 0);  // the draining one leaves: expected, nothing to replace
  CHECK(d.nothing());
  CHECK(d.last_exit.kind == exit_kind::expected);
  CHECK_FALSE(d.last_exit.restart.has_value());
  d.exits(502, 1);  // the serving one crashes: replaced at once
  CHECK(d.last_exit.kind == exit_kind::crashed);
  CHECK(d.spawns() == placements{{0, 0, 4}});
}

// --- a reload's success is every slot READY on the new generation ------------------------

TEST_CASE("a reload gives a slot that has no worker (crash-looping) its new-generation worker "
          "at once, and succeeds only when that one is READY",
          "[policy]") {
  driver d(config(2));
  d.start();
  const pids w = d.spawned_pids();
  d.ready(w[0]);
  d.exits(w[1], 1);  // slot 1 fails before READY: it waits out a backoff
  CHECK(d.nothing());
  d.reload();
  CHECK(d.spawns() == placements{{0, 1, 2}});  // slot 0 is replaced as usual
  const pid_t new0 = d.only_spawned();
  d.ready(new0);
  // slot 1 gets its generation-2 worker in its turn, without waiting out its backoff
  CHECK(d.spawns() == placements{{1, 0, 2}});
  CHECK_FALSE(d.reload_done());  // slot 1 has nothing READY yet
  const pid_t new1 = d.only_spawned();
  d.ready(new1);
  REQUIRE(d.reload_done());
  CHECK(d.reload_done()->ok());
}

TEST_CASE("a reload fails, naming the slot, when a crash-looping slot's new worker fails too",
          "[policy]") {
  driver d(config(2));
  d.start();
  const pids w = d.spawned_pids();
  d.ready(w[0]);
  d.exits(w[1], 1);
  d.reload();
  d.ready(d.only_spawned());  // slot 0 switches
  const pid_t new1 = d.only_spawned();  // slot 1's first generation-2 worker
  d.exits(new1, 4);
  REQUIRE(d.reload_done());
  CHECK_FALSE(d.reload_done()->ok());
  CHECK_THAT(d.reload_done()->message, Catch::Contains("slot 1"));
}

TEST_CASE("a new-generation worker respawned during a rollout is waited for, not counted as "
          "switched while it starts",
          "[policy]") {
  driver d(config(2));
  const pids old = d.start_ready();
  d.reload();
  const pid_t new0 = d.only_spawned();
  d.exits(old[1], 1);  // slot 1's old worker crashes: it is respawned on generation 2
  CHECK(d.spawns() == placements{{1, 0, 2}});
  const pid_t respawn = d.only_spawned();
  d.ready(new0);
  CHECK_FALSE(d.reload_done());  // slot 1's generation-2 worker is still starting
  d.ready(respawn);
  REQUIRE(d.reload_done());
  CHECK(d.reload_done()->ok());
  CHECK(d.serving_generations(2) == std::vector<std::uint32_t>{2, 2});
}

// --- a failed reload rolled back (fork mode) -----------------------------------------------

TEST_CASE("a failed rollout rolls its switched slots back to a newer generation of the previous "
          "configuration, without a capacity dip",
          "[policy][rollback]") {
  driver d(config(3));
  const pids old = d.start_ready();
  d.capacity_floor = 3;

  d.reload(true);
  const pid_t new0 = d.only_spawned();
  d.ready(new0);  // slot 0 switches to generation 2
  const pid_t new1 = d.only_spawned();
  d.exits(old[0], 0);
  d.exits(new1, 4);  // slot 1's replacement fails in pre_startup

  // First the master undoes the configuration, then slot 0 gets generation 3 from it.
  REQUIRE(d.undone());
  const auto undo_at = std::find_if(d.last.begin(), d.last.end(), [](const action& a) {
    return std::holds_alternative<systempp::master::reload_undo_action>(a);
  });
  const auto spawn_at = std::find_if(d.last.begin(), d.last.end(), [](const action& a) {
    return std::holds_alternative<spawn_action>(a);
  });
  CHECK(undo_at < spawn_at);
  CHECK(d.spawns() == placements{{0, 0, 3}});
  CHECK_FALSE(d.reload_done());  // the reload ends once the rollback has
  CHECK(d.policy.reloading());
  CHECK(d.policy.generation() == 3);

  const pid_t back0 = d.only_spawned();
  d.ready(back0);
  CHECK(d.drained_pids() == pids{new0});  // the failed generation's worker goes
  REQUIRE(d.reload_done());
  CHECK(d.reload_done()->result == reload_result::failed);
  CHECK(d.reload_done()->generation == 3);
  CHECK_THAT(d.reload_done()->message, Catch::Contains("slot 1") && Catch::Contains("exited with code 4") &&
                                           Catch::Contains("rolled back: generation 3 serves the previous configuration"));
  CHECK(d.serving_generations(3) == std::vector<std::uint32_t>{3, 1, 1});

  // A crash afterwards is respawned from the previous configuration's generation.
  d.capacity_floor = 0;
  d.exits(old[2], -SIGSEGV);
  CHECK(d.spawns() == placements{{2, 0, 3}});
}

TEST_CASE("a failed rollout with nothing switched ends at once, the configuration undone", "[policy][rollback]") {
  driver d(config(2));
  d.start_ready();
  d.reload(true);
  d.exits(d.only_spawned(), 2);
  CHECK(d.undone());
  REQUIRE(d.reload_done());
  CHECK_THAT(d.reload_done()->message, Catch::Contains("no slot had switched"));
  CHECK(d.spawns().empty());
  CHECK_FALSE(d.policy.reloading());
}

TEST_CASE("a rollback whose own worker fails ends the reload, saying both", "[policy][rollback]") {
  driver d(config(2));
  const pids old = d.start_ready();
  d.reload(true);
  const pid_t new0 = d.only_spawned();
  d.ready(new0);
  const pid_t new1 = d.only_spawned();
  d.exits(old[0], 0);
  d.exits(new1, 4);  // slot 1's replacement fails
  const pid_t back0 = d.only_spawned();
  d.exits(back0, 5);  // and so does slot 0's rollback worker
  REQUIRE(d.reload_done());
  CHECK_THAT(d.reload_done()->message, Catch::Contains("exited with code 4") && Catch::Contains("the rollback failed too"));
  CHECK_FALSE(d.policy.reloading());
  CHECK(d.live.at(new0).serving());  // the slot keeps the worker it had
}

TEST_CASE("without roll_back a failed rollout keeps its switched slots (exec mode, upgrades)", "[policy][rollback]") {
  driver d(config(2));
  const pids old = d.start_ready();
  d.reload(false);
  d.ready(d.only_spawned());
  const pid_t new1 = d.only_spawned();
  d.exits(old[0], 0);
  d.exits(new1, 4);
  CHECK_FALSE(d.undone());
  REQUIRE(d.reload_done());
  CHECK(d.serving_generations(2) == std::vector<std::uint32_t>{2, 1});
}

TEST_CASE("steerable: the READY serving slots that beat lately, each with its newest process", "[policy][steer]") {
  driver d(config(3));
  const pids old = d.start_ready();
  const auto beat = [&](const proc& p) {
    const auto it = d.beats.find(p.pid);
    return it == d.beats.end() ? time_point{0} : it->second;
  };
  for (pid_t p : old) d.beat(p);
  CHECK(d.policy.steerable(d.now, 2500ms, beat) ==
        std::vector<systempp::master::serving_process>{{0, old[0]}, {1, old[1]}, {2, old[2]}});

  // Mid-rollout, slot 0 has two READY processes: the new one takes the connections.
  d.reload();
  const pid_t new0 = d.only_spawned();
  d.ready(new0);
  d.beat(new0);
  CHECK(d.policy.steerable(d.now, 2500ms, beat) ==
        std::vector<systempp::master::serving_process>{{0, new0}, {1, old[1]}, {2, old[2]}});

  // Slot 1's worker stops beating: it is left out until it beats again.
  d.after(3000ms);
  for (pid_t p : {new0, old[2]}) d.beat(p);
  CHECK(d.policy.steerable(d.now, 2500ms, beat) == std::vector<systempp::master::serving_process>{{0, new0}, {2, old[2]}});
}
