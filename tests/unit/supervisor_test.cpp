// The master's execution of the policy's actions, with the system calls faked: pids are
// invented, nothing forks, and the fake records every kill and hands out scripted exits.
// The control block and the channels are real, so what a worker would see is checked too.

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <systempp/control_block.hpp>
#include <systempp/master/supervisor.hpp>
#include <systempp/worker/worker_runtime.hpp>

namespace {

using namespace systempp;
using namespace systempp::master;
using namespace std::chrono_literals;

struct fake_system_calls final : system_calls {
  int channel_failures = 0;  ///< the next this-many channel_pair calls fail
  int fork_failures = 0;     ///< the next this-many forks fail
  pid_t next_pid = 4000;
  std::set<pid_t> vanished;  ///< kill() answers ESRCH for these
  std::vector<std::pair<pid_t, int>> kills;
  std::deque<std::pair<pid_t, int>> exits;  ///< what reap_any hands out, in order
  std::map<pid_t, unique_fd> worker_ends;   ///< the channel each "child" got

  int channel_pair(unique_fd& m, unique_fd& w) override {
    if (channel_failures > 0) {
      --channel_failures;
      return EMFILE;
    }
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    m.reset(fds[0]);
    w.reset(fds[1]);
    return 0;
  }
  pid_t fork(const std::function<void()>&, const std::function<int(const sigset_t&)>& child_main) override {
    if (fork_failures > 0) {
      --fork_failures;
      errno = EAGAIN;
      return -1;
    }
    // The "child" runs here, in the test process, so its body can keep its channel end;
    // drop_parent_state is not run (it would close the test's own fds).
    pending_pid_ = next_pid;
    sigset_t none;
    ::sigemptyset(&none);
    child_main(none);
    return next_pid++;
  }
  int kill(pid_t pid, int sig) override {
    kills.emplace_back(pid, sig);
    return vanished.count(pid) ? ESRCH : 0;
  }
  pid_t reap_any(int& status) override {
    if (exits.empty()) return 0;
    auto [pid, st] = exits.front();
    exits.pop_front();
    status = st;
    return pid;
  }
  int exec(const std::string&, const std::vector<std::string>&) override { return ENOENT; }

  pid_t pending_pid_ = 0;
};

int exit_status(int code) { return code << 8; }  // as waitpid reports an exit(code)

/// A master without processes: a real control block and loop, fake system calls.
struct fake_master {
  std::string pool = "svtest_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
  control_segment segment;
  boost::asio::io_context io;
  fake_system_calls sys;
  std::shared_ptr<spdlog::logger> log =
      std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
  worker_table table;
  supervisor sup;
  std::vector<reload_done_action> reloads;
  int pool_ready = 0;
  bool finished = false;

  static inline int counter = 0;

  explicit fake_master(int workers)
      : segment(control_segment::create(pool, ::getpid(), 32, std::vector<std::string>{"unit_a"})),
        table(io, segment, sys, {"unit_a"}, [this](pid_t pid, char byte, std::string_view text) { sup.message(pid, byte, text); }),
        sup(config(workers), table, segment.header(), log, hooks()) {
    sup.set_child([] {}, [this](const spawn_action&, worker_slot&, unique_fd channel, const sigset_t&) {
      sys.worker_ends[sys.pending_pid_] = std::move(channel);
      return 0;
    });
  }

  static policy_config config(int workers) {
    policy_config cfg;
    cfg.workers = workers;
    cfg.max_workers = 8;
    cfg.backoff_initial = 100ms;
    return cfg;
  }
  supervisor_hooks hooks() {
    supervisor_hooks h;
    h.finished = [this] { finished = true; };
    h.reload_done = [this](const reload_done_action& r) { reloads.push_back(r); };
    h.pool_ready = [this](int) { ++pool_ready; };
    return h;
  }

  std::vector<pid_t> pids() const {
    std::vector<pid_t> out;
    for (const auto& [pid, w] : table.workers()) out.push_back(pid);
    return out;
  }
  /// The worker side of the channel says `byte`; the loop delivers it to the supervisor.
  void worker_says(pid_t pid, char byte) {
    REQUIRE(::write(sys.worker_ends.at(pid).get(), &byte, 1) == 1);
    io.poll();
  }
  /// What the master sent to the worker on its channel ("" if nothing).
  std::string worker_heard(pid_t pid) {
    char buf[16];
    const auto n = ::recv(sys.worker_ends.at(pid).get(), buf, sizeof buf, MSG_DONTWAIT);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  }
  void exits(pid_t pid, int status) {
    sys.exits.emplace_back(pid, status);
    sup.reap();
  }
  worker_slot& record_of(pid_t pid) { return table.record(*table.find(pid)); }
};

}  // namespace

TEST_CASE("the supervisor starts one process per slot, each in its own control-block record",
          "[supervisor]") {
  fake_master m(2);
  m.sup.execute(m.sup.policy().start(now_ms()));
  const auto pids = m.pids();
  REQUIRE(pids.size() == 2);
  for (pid_t pid : pids) {
    const worker_handle& w = *m.table.find(pid);
    CHECK(w.lane == 0);
    CHECK(&m.record_of(pid) == &m.segment.slot(record_index(w.slot, w.lane)));
    CHECK(m.record_of(pid).pid.load() == pid);
    CHECK(m.record_of(pid).state.load() == worker_state::spawned);
  }
}

TEST_CASE("a spawn that gets no channel or no fork starts nothing and backs off the slot",
          "[supervisor]") {
  fake_master m(1);
  SECTION("no channel") { m.sys.channel_failures = 1; }
  SECTION("no fork") { m.sys.fork_failures = 1; }
  const auto t0 = now_ms();
  m.sup.execute(m.sup.policy().start(t0));
  CHECK(m.table.size() == 0);
  CHECK(m.sup.policy().procs().empty());
  const auto next = m.sup.policy().next_deadline();
  REQUIRE(next.has_value());
  CHECK(*next >= t0 + 100ms);
  // Once the backoff passed, the slot is filled again.
  m.sup.execute(m.sup.policy().tick(*next, [](const proc&) { return time_point{0}; }));
  CHECK(m.table.size() == 1);
}

TEST_CASE("READY on the channel reaches the policy, and the first full pool is announced once",
          "[supervisor]") {
  fake_master m(2);
  m.sup.execute(m.sup.policy().start(now_ms()));
  const auto pids = m.pids();
  m.worker_says(pids[0], worker::msg_ready);
  CHECK(m.pool_ready == 0);
  m.worker_says(pids[1], worker::msg_ready);
  CHECK(m.sup.policy().ready_count() == 2);
  CHECK(m.pool_ready == 1);
  // A crash and its replacement's READY fill the pool again: no second announcement.
  m.exits(pids[0], exit_status(1));
  const auto replacement = m.pids();
  for (pid_t pid : replacement)
    if (pid != pids[1]) m.worker_says(pid, worker::msg_ready);
  CHECK(m.sup.policy().ready_count() == 2);
  CHECK(m.pool_ready == 1);
}

TEST_CASE("a drain sets the record's command and deadline and wakes the worker with D", "[supervisor]") {
  fake_master m(1);
  m.sup.execute(m.sup.policy().start(now_ms()));
  const pid_t pid = m.pids().at(0);
  m.worker_says(pid, worker::msg_ready);
  m.sup.execute(m.sup.policy().stop(stop_mode::graceful, now_ms()));
  CHECK(m.record_of(pid).command.load() == worker_command::drain);
  CHECK(m.record_of(pid).drain_deadline_ms.load() > 0);
  CHECK(m.worker_heard(pid) == std::string(1, worker::msg_drain));
  CHECK(m.sys.kills.empty());  // a graceful drain sends no signal
}

TEST_CASE("a signal for a pid that vanished is not fatal, the worker stays in the table until reaped",
          "[supervisor]") {
  fake_master m(1);
  m.sup.execute(m.sup.policy().start(now_ms()));
  const pid_t pid = m.pids().at(0);
  m.sys.vanished.insert(pid);
  m.sup.execute(m.sup.policy().stop(stop_mode::fast, now_ms()));
  REQUIRE(m.sys.kills.size() == 1);
  CHECK(m.sys.kills[0] == std::make_pair(pid, SIGQUIT));
  CHECK(m.record_of(pid).command.load() == worker_command::stop_fast);
  CHECK(m.table.size() == 1);
  CHECK_FALSE(m.finished);
  m.exits(pid, SIGKILL);  // status of a process killed by signal 9
  CHECK(m.table.size() == 0);
  CHECK(m.finished);
}

TEST_CASE("a signal for a pid that is not in the table is not sent", "[supervisor]") {
  fake_master m(1);
  m.sup.execute({signal_action{12345, SIGKILL, kill_reason::ready_timeout}});
  CHECK(m.sys.kills.empty());
}

TEST_CASE("reaping skips pids that are not ours and hands each of ours to the policy once", "[supervisor]") {
  fake_master m(1);
  m.sup.execute(m.sup.policy().start(now_ms()));
  const pid_t pid = m.pids().at(0);
  m.worker_says(pid, worker::msg_ready);
  m.sys.exits.emplace_back(99999, exit_status(0));  // e.g. a unit's helper process
  m.sys.exits.emplace_back(pid, exit_status(1));
  m.sys.exits.emplace_back(pid, exit_status(1));    // a duplicate report is not ours any more
  m.sup.reap();
  CHECK(m.sys.exits.empty());
  // The READY worker that died is replaced at once and counted as a crash.
  REQUIRE(m.table.size() == 1);
  CHECK(m.pids().at(0) != pid);
  CHECK(m.segment.header().restarts[static_cast<std::size_t>(restart_reason::crash)].load() == 1);
  CHECK(m.segment.record(0, 0).restarts.load() == 1);  // the slot's own count survives the respawn
}

TEST_CASE("a new worker that dies before READY fails the reload, naming it and how it ended",
          "[supervisor]") {
  fake_master m(1);
  m.sup.execute(m.sup.policy().start(now_ms()));
  m.worker_says(m.pids().at(0), worker::msg_ready);
  m.sup.execute(m.sup.policy().reload(now_ms()));
  REQUIRE(m.table.size() == 2);
  pid_t fresh = 0;
  for (const auto& [pid, w] : m.table.workers())
    if (w.generation == 2) fresh = pid;
  REQUIRE(fresh != 0);
  m.exits(fresh, exit_status(3));
  REQUIRE(m.reloads.size() == 1);
  CHECK(m.reloads[0].result == reload_result::failed);
  CHECK_THAT(m.reloads[0].message, Catch::Contains("worker[0] pid " + std::to_string(fresh) + " g2"));
  CHECK_THAT(m.reloads[0].message, Catch::Contains("exited with code 3"));
  CHECK(m.table.size() == 1);  // the old worker keeps serving
}
