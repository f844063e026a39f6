// The control block: pinned layout, create/attach across processes, validation of foreign
// segments, ownership of the name, stale-segment cleanup and the seqlocks.

#include "systempp/control_block.hpp"
#include "systempp/errors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <boost/interprocess/shared_memory_object.hpp>
#include <catch2/catch.hpp>

namespace bip = boost::interprocess;
using namespace systempp;

namespace {

/// A pool name no other test (or parallel test process) uses.
std::string unique_pool() {
  static int counter = 0;
  return "cbtest_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
}

bool shm_exists(const std::string& name) {
  struct stat st{};
  return ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

/// Removes a segment by name when the test ends, whatever the test did with it.
struct shm_cleanup {
  std::string name;
  ~shm_cleanup() { bip::shared_memory_object::remove(name.c_str()); }
};

/// Runs `body` in a forked child that reports through its exit code (0 = success); the
/// child never returns into Catch, and _exit skips every destructor of the parent's state.
template <class F>
int run_in_child(F&& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 1;
    try {
      code = body();
    } catch (...) {
      code = 99;
    }
    ::_exit(code);
  }
  REQUIRE(pid > 0);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

/// A pid that certainly belonged to a process that is gone: a reaped child's.
pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  REQUIRE(pid > 0);
  REQUIRE(::waitpid(pid, nullptr, 0) == pid);
  return pid;
}

/// A shared-memory object with arbitrary bytes, made by hand (not a control block).
void make_raw_segment(const std::string& name, const std::vector<unsigned char>& bytes) {
  bip::shared_memory_object shm{bip::create_only, name.c_str(), bip::read_write,
                                bip::permissions{0600}};
  if (bytes.empty()) return;  // Boost's truncate (posix_fallocate) refuses length 0
  shm.truncate(static_cast<bip::offset_t>(bytes.size()));
  const int fd = shm.get_mapping_handle().handle;
  REQUIRE(::pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
}

const std::vector<std::string> units{"settings", "database", "http_server"};

}  // namespace

// These numbers are what the current layout produces. They are pinned on purpose: a layout
// change must break this test, as a reminder to bump control_block_layout_version (the
// shared-memory format is read by other builds after a master upgrade).
TEST_CASE("the control block layout is pinned", "[control_block]") {
  CHECK(control_block_layout_version == 5);
  CHECK(sizeof(control_header) == 3520);
  CHECK(alignof(control_header) == 64);
  CHECK(sizeof(worker_slot) == 4352);
  CHECK(alignof(worker_slot) == 64);

  CHECK(offsetof(control_header, magic) == 0);
  CHECK(offsetof(control_header, layout_version) == 4);
  CHECK(offsetof(control_header, header_size) == 8);
  CHECK(offsetof(control_header, slot_size) == 12);
  CHECK(offsetof(control_header, slot_count) == 16);
  CHECK(offsetof(control_header, master_pid) == 24);
  CHECK(offsetof(control_header, master_state) == 28);
  CHECK(offsetof(control_header, reload_outcome) == 44);
  CHECK(offsetof(control_header, reload_started_ms) == 56);
  CHECK(offsetof(control_header, requests_total) == 72);
  CHECK(offsetof(control_header, restarts) == 88);
  CHECK(offsetof(control_header, reload_message) == 136);
  CHECK(offsetof(control_header, unit_names) == 392);
  CHECK(offsetof(control_header, master_started_ms) == 904);
  CHECK(offsetof(control_header, scale_request) == 912);
  CHECK(offsetof(control_header, stage_names) == 916);
  CHECK(offsetof(control_header, app_metrics_digest) == 2456);
  CHECK(offsetof(control_header, app_totals) == 2464);

  CHECK(offsetof(worker_slot, seq) == 0);
  CHECK(offsetof(worker_slot, epoch) == 4);
  CHECK(offsetof(worker_slot, pid) == 8);
  CHECK(offsetof(worker_slot, state) == 16);
  CHECK(offsetof(worker_slot, command) == 20);
  CHECK(offsetof(worker_slot, stage) == 24);
  CHECK(offsetof(worker_slot, exit_status) == 36);
  CHECK(offsetof(worker_slot, drain_deadline_ms) == 48);
  CHECK(offsetof(worker_slot, heartbeat_ms) == 56);
  CHECK(offsetof(worker_slot, errors) == 88);
  CHECK(offsetof(worker_slot, stage_us) == 96);
  CHECK(offsetof(worker_slot, role) == 3168);
  CHECK(offsetof(worker_slot, unhealthy_unit) == 3172);
  CHECK(offsetof(worker_slot, health_reason) == 3176);
  CHECK(offsetof(worker_slot, metrics_digest) == 3272);
  CHECK(offsetof(worker_slot, app_values) == 3280);
  CHECK(offsetof(worker_slot, rss_bytes) == 4304);
}

TEST_CASE("states and outcomes print as lower-case words", "[control_block]") {
  CHECK(to_string(worker_state::free) == "free");
  CHECK(to_string(worker_state::starting) == "starting");
  CHECK(to_string(worker_state::crashed) == "crashed");
  CHECK(to_string(master_state::reloading) == "reloading");
  CHECK(to_string(master_state::stopped) == "stopped");
  CHECK(to_string(reload_outcome::in_progress) == "in_progress");
  CHECK(to_string(reload_outcome::rejected) == "rejected");
  CHECK(to_string(worker_command::stop_fast) == "stop_fast");
  CHECK(to_string(restart_reason::timeout_heartbeat) == "timeout_heartbeat");
  // A garbage value read from a foreign segment must not index past a table.
  CHECK(to_string(static_cast<worker_state>(1234)) == "unknown");
}

TEST_CASE("pool names are limited to characters safe in a file name", "[control_block]") {
  CHECK(valid_pool_name("web"));
  CHECK(valid_pool_name("My_pool-2"));
  CHECK(valid_pool_name(std::string(64, 'a')));
  CHECK_FALSE(valid_pool_name(""));
  CHECK_FALSE(valid_pool_name(std::string(65, 'a')));
  CHECK_FALSE(valid_pool_name("a.b"));
  CHECK_FALSE(valid_pool_name("a/b"));
  CHECK_FALSE(valid_pool_name("a b"));
  CHECK(segment_name("web", 123) == "systempp.web.123");
  CHECK_THROWS_AS(control_segment::create("a.b", ::getpid(), 1, units), control_block_error);
}

TEST_CASE("monotonic_ms does not go backwards", "[control_block]") {
  const auto a = monotonic_ms();
  const auto b = monotonic_ms();
  CHECK(a > 0);
  CHECK(b >= a);
}

TEST_CASE("a created block starts with identity filled in and every slot free",
          "[control_block]") {
  auto seg = control_segment::create(unique_pool(), ::getpid(), 3, units);
  const auto& h = seg.header();
  CHECK(h.magic.load() == control_block_magic);
  CHECK(h.layout_version.load() == control_block_layout_version);
  CHECK(h.header_size.load() == sizeof(control_header));
  CHECK(h.slot_size.load() == sizeof(worker_slot));
  CHECK(h.slot_count.load() == 3);
  CHECK(h.master_pid.load() == ::getpid());
  CHECK(h.master_state.load() == master_state::starting);
  CHECK(h.unit_count.load() == 3);
  CHECK(unit_name(h, 0) == "settings");
  CHECK(unit_name(h, 2) == "http_server");
  CHECK(unit_name(h, 3).empty());
  CHECK(seg.slot_count() == 3);
  CHECK(seg.slots().size() == 3);
  for (const auto& s : seg.slots()) {
    CHECK(s.state.load() == worker_state::free);
    CHECK(s.stage.load() == no_stage);
    CHECK(s.unit.load() == no_unit);
  }
  CHECK(reinterpret_cast<std::uintptr_t>(&seg.slot(1)) % 64 == 0);
  CHECK_THROWS_AS(seg.slot(3), std::out_of_range);
  CHECK(seg.owns_segment());
  // The fd stays open (and close-on-exec) while the object lives.
  const int flags = ::fcntl(seg.fd(), F_GETFD);
  CHECK(flags != -1);
  CHECK((flags & FD_CLOEXEC) != 0);
}

TEST_CASE("too many units or slots are refused at create", "[control_block]") {
  const std::vector<std::string> many(control_header::max_units + 1, "u");
  CHECK_THROWS_AS(control_segment::create(unique_pool(), ::getpid(), 1, many),
                  control_block_error);
  CHECK_THROWS_AS(control_segment::create(unique_pool(), ::getpid(), 1'000'000, units),
                  control_block_error);
}

TEST_CASE("a long unit name is cut to fit its field", "[control_block]") {
  const std::vector<std::string> names{std::string(40, 'x')};
  auto seg = control_segment::create(unique_pool(), ::getpid(), 1, names);
  CHECK(unit_name(seg.header(), 0) == std::string(31, 'x'));
}

TEST_CASE("an upgraded master's rename replaces every unit and stage name, clearing the leftovers",
          "[control_block]") {
  const std::vector<std::string> units{"settings", "a_long_unit_name"}, stages{"on_init", "warmup_stage"};
  auto seg = control_segment::create(unique_pool(), ::getpid(), 1, units, stages);
  seg.rename(std::vector<std::string>{"db"}, std::vector<std::string>{"on_init"});
  CHECK(unit_name(seg.header(), 0) == "db");
  CHECK(unit_name(seg.header(), 1).empty());  // unit_count is 1 now
  CHECK(std::string_view(seg.header().unit_names[1], 1) == std::string_view("\0", 1));
  CHECK(stage_name(seg.header(), 0) == "on_init");
  CHECK(stage_name(seg.header(), 1).empty());
  CHECK_THROWS_AS(seg.rename(std::vector<std::string>(17, "u"), {}), control_block_error);
}

TEST_CASE("a long unit or stage name is cut before a UTF-8 character, never inside it", "[control_block]") {
  // 30 bytes, then "é" (2 bytes) across the 31-byte limit: the cut drops the whole "é".
  const std::string name = std::string(30, 'x') + "\xc3\xa9tail";
  const std::vector<std::string> names{name};
  auto seg = control_segment::create(unique_pool(), ::getpid(), 1, names, names);
  CHECK(unit_name(seg.header(), 0) == std::string(30, 'x'));
  CHECK(stage_name(seg.header(), 0) == std::string(30, 'x'));
}

TEST_CASE("a forked child attaches, writes its slot, and the parent sees the values",
          "[control_block]") {
  const auto pool = unique_pool();
  auto seg = control_segment::create(pool, ::getpid(), 2, units);
  seg.header().pool_generation.store(7);

  const int code = run_in_child([&] {
    seg.disown();  // the child must never remove the master's segment
    auto mine = control_segment::attach(pool, ::getppid(), access::read_write);
    if (mine.header().pool_generation.load() != 7) return 2;
    if (mine.slot_count() != 2 || unit_name(mine.header(), 1) != "database") return 3;
    auto& s = mine.slot(1);
    {
      slot_update update{s};
      s.state.store(worker_state::ready);
      s.stage.store(static_cast<std::uint32_t>(stage::post_startup));
      s.unit.store(2);
    }
    s.requests.store(42);
    s.heartbeat_ms.store(monotonic_ms());
    s.stage_us[2][static_cast<std::size_t>(stage::on_startup)].store(1500);
    return 0;
  });
  REQUIRE(code == 0);

  const auto snap = read_slot(seg.slot(1));
  CHECK(snap.consistent);
  CHECK(snap.seq % 2 == 0);
  CHECK(snap.state == worker_state::ready);
  CHECK(snap.stage == static_cast<std::uint32_t>(stage::post_startup));
  CHECK(snap.unit == 2);
  CHECK(snap.requests == 42);
  CHECK(snap.heartbeat_ms > 0);
  CHECK(snap.stage_us[2][static_cast<std::size_t>(stage::on_startup)] == 1500);
  CHECK(read_slot(seg.slot(0)).state == worker_state::free);
}

TEST_CASE("a read-only attach sees the master's values", "[control_block]") {
  const auto pool = unique_pool();
  auto seg = control_segment::create(pool, ::getpid(), 1, units);
  seg.header().master_state.store(master_state::running);
  seg.slot(0).pid.store(4242);

  auto view = control_segment::attach(pool, ::getpid(), access::read_only);
  CHECK_FALSE(view.owns_segment());
  CHECK(view.name() == segment_name(pool, ::getpid()));
  CHECK(view.header().master_state.load() == master_state::running);
  CHECK(read_slot(view.slot(0)).pid == 4242);
}

TEST_CASE("attach_fd maps an inherited fd and names the segment", "[control_block]") {
  const auto pool = unique_pool();
  auto seg = control_segment::create(pool, ::getpid(), 2, units);
  seg.slot(1).requests.store(9);

  // As an exec'd worker receives it: a plain inherited fd.
  const int inherited = ::dup(seg.fd());
  REQUIRE(inherited != -1);
  {
    auto worker = control_segment::attach_fd(inherited, access::read_write);
    CHECK(worker.name() == seg.name());
    CHECK(worker.slot_count() == 2);
    CHECK(worker.fd() != inherited);  // works on its own duplicate
    CHECK(worker.slot(1).requests.load() == 9);
    worker.slot(1).requests.store(10);
  }
  CHECK(seg.slot(1).requests.load() == 10);
  CHECK(shm_exists(seg.name()));               // an attacher never removes the name
  CHECK(::fcntl(inherited, F_GETFD) != -1);    // the caller's fd is still the caller's
  ::close(inherited);
}

TEST_CASE("attach_fd validates like attach", "[control_block]") {
  const auto pool = unique_pool();
  const auto name = segment_name(pool, ::getpid());
  shm_cleanup cleanup{name};
  make_raw_segment(name, std::vector<unsigned char>(4096, 0xab));
  bip::shared_memory_object shm{bip::open_only, name.c_str(), bip::read_only};
  CHECK_THROWS_WITH(control_segment::attach_fd(shm.get_mapping_handle().handle,
                                               access::read_only),
                    Catch::Contains("wrong magic"));
  CHECK_THROWS_AS(control_segment::attach_fd(-1, access::read_only), control_block_error);
}

TEST_CASE("attach rejects segments that are not this build's control block",
          "[control_block]") {
  const auto pool = unique_pool();
  const auto pid = ::getpid();
  const auto name = segment_name(pool, pid);

  SECTION("missing") {
    CHECK_THROWS_WITH(control_segment::attach(pool, pid, access::read_only),
                      Catch::StartsWith("control block " + name + ": cannot open"));
  }
  SECTION("wrong magic") {
    auto seg = control_segment::create(pool, pid, 1, units);
    seg.header().magic.store(0xdeadbeef);
    CHECK_THROWS_WITH(control_segment::attach(pool, pid, access::read_only),
                      "control block " + name + ": wrong magic");
  }
  SECTION("wrong layout version") {
    auto seg = control_segment::create(pool, pid, 1, units);
    seg.header().layout_version.store(control_block_layout_version + 1);
    CHECK_THROWS_WITH(control_segment::attach(pool, pid, access::read_only),
                      Catch::Contains("layout version"));
  }
  SECTION("wrong slot size") {
    auto seg = control_segment::create(pool, pid, 1, units);
    seg.header().slot_size.store(sizeof(worker_slot) + 64);
    CHECK_THROWS_WITH(control_segment::attach(pool, pid, access::read_only),
                      Catch::Contains("slot size"));
  }
  SECTION("slot count larger than the segment") {
    auto seg = control_segment::create(pool, pid, 1, units);
    seg.header().slot_count.store(1000);
    CHECK_THROWS_WITH(control_segment::attach(pool, pid, access::read_only),
                      Catch::Contains("truncated"));
  }
  SECTION("segment cut short after creation") {
    auto seg = control_segment::create(pool, pid, 4, units);
    REQUIRE(::ftruncate(seg.fd(), sizeof(control_header) + sizeof(worker_slot)) == 0);
    CHECK_THROWS_WITH(control_segment::attach(pool, pid, access::read_only),
                      Catch::Contains("truncated"));
  }
  SECTION("empty segment") {
    shm_cleanup cleanup{name};
    make_raw_segment(name, {});
    CHECK_THROWS_WITH(control_segment::attach(pool, pid, access::read_only),
                      Catch::Contains("truncated"));
  }
  SECTION("shorter than a header") {
    shm_cleanup cleanup{name};
    make_raw_segment(name, std::vector<unsigned char>(10, 0x42));
    CHECK_THROWS_WITH(control_segment::attach(pool, pid, access::read_write),
                      Catch::Contains("truncated"));
  }
  SECTION("garbage") {
    shm_cleanup cleanup{name};
    std::vector<unsigned char> bytes(64 * 1024);
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i * 131);
    make_raw_segment(name, bytes);
    CHECK_THROWS_AS(control_segment::attach(pool, pid, access::read_only), control_block_error);
  }
  SECTION("the right magic over garbage") {
    shm_cleanup cleanup{name};
    std::vector<unsigned char> bytes(sizeof(control_header), 0xff);
    std::memcpy(bytes.data(), &control_block_magic, sizeof control_block_magic);
    make_raw_segment(name, bytes);
    CHECK_THROWS_WITH(control_segment::attach(pool, pid, access::read_only),
                      Catch::Contains("layout version"));
  }
  CHECK_FALSE(shm_exists(name));
}

TEST_CASE("the segment is created with mode 0600", "[control_block]") {
  auto seg = control_segment::create(unique_pool(), ::getpid(), 1, units);
  struct stat st{};
  REQUIRE(::stat(("/dev/shm/" + seg.name()).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(st.st_uid == ::geteuid());
}

TEST_CASE("creating a segment that exists fails and leaves the existing one alone",
          "[control_block]") {
  const auto pool = unique_pool();
  auto seg = control_segment::create(pool, ::getpid(), 1, units);
  CHECK_THROWS_AS(control_segment::create(pool, ::getpid(), 1, units), control_block_error);
  CHECK(shm_exists(seg.name()));
}

TEST_CASE("the owner's destructor removes the segment", "[control_block]") {
  std::string name;
  {
    auto seg = control_segment::create(unique_pool(), ::getpid(), 1, units);
    name = seg.name();
    REQUIRE(shm_exists(name));
  }
  CHECK_FALSE(shm_exists(name));
}

TEST_CASE("a disowned segment survives its object", "[control_block]") {
  std::string name;
  {
    auto seg = control_segment::create(unique_pool(), ::getpid(), 1, units);
    name = seg.name();
    seg.disown();
    CHECK_FALSE(seg.owns_segment());
  }
  shm_cleanup cleanup{name};
  CHECK(shm_exists(name));
}

TEST_CASE("moving the owner moves the duty to remove", "[control_block]") {
  std::string name;
  {
    auto seg = control_segment::create(unique_pool(), ::getpid(), 1, units);
    name = seg.name();
    {
      auto moved = std::move(seg);
      CHECK(moved.owns_segment());
      CHECK(moved.header().magic.load() == control_block_magic);
    }
    CHECK_FALSE(shm_exists(name));
  }
  CHECK_FALSE(shm_exists(name));
}

TEST_CASE("a forked child destroying its copy of the owner does not remove the segment",
          "[control_block]") {
  auto seg = control_segment::create(unique_pool(), ::getpid(), 1, units);
  const int code = run_in_child([&] {
    { auto copy = std::move(seg); }  // runs the destructor in the child, without disown()
    return 0;
  });
  REQUIRE(code == 0);
  CHECK(shm_exists(seg.name()));
}

TEST_CASE("an adopted segment is removed by its adopter", "[control_block]") {
  const auto pool = unique_pool();
  auto seg = control_segment::create(pool, ::getpid(), 1, units);
  seg.disown();  // as the old master image would, before re-executing
  const auto name = seg.name();
  {
    auto upgraded = control_segment::attach_fd(seg.fd(), access::read_write);
    upgraded.adopt();
  }
  CHECK_FALSE(shm_exists(name));
}

TEST_CASE("remove_stale_segments removes the pool's segments except the lock holder's",
          "[control_block]") {
  const auto pool = unique_pool();
  std::string stale_name;
  {
    auto stale = control_segment::create(pool, ::getppid(), 1, units);  // a live pid, not the master
    stale.disown();
    stale_name = stale.name();
  }
  shm_cleanup stale_cleanup{stale_name};
  auto live = control_segment::create(pool, ::getpid(), 1, units);
  // Another pool whose name extends ours must not be touched.
  const auto other_pool = pool + "_x";
  auto other = control_segment::create(other_pool, dead_pid(), 1, units);
  REQUIRE(shm_exists(stale_name));

  CHECK(remove_stale_segments(pool, ::getpid()) == 1);
  CHECK_FALSE(shm_exists(stale_name));
  CHECK(shm_exists(live.name()));
  CHECK(shm_exists(other.name()));
  CHECK(remove_stale_segments(pool, ::getpid()) == 0);
  CHECK_THROWS_AS(remove_stale_segments("bad/name"), control_block_error);
  // A master that holds the lock and has no block yet keeps none, not even one named
  // after its own pid (left by its previous life with the same pid).
  live.disown();
  shm_cleanup live_cleanup{live.name()};
  CHECK(remove_stale_segments(pool, keep_none) == 1);
  CHECK_FALSE(shm_exists(live.name()));
}

TEST_CASE("the master is the process holding the pool's lock, whatever pids the segments name",
          "[control_block]") {
  const auto pool = unique_pool();
  struct unlink_lock {
    std::string path;
    ~unlink_lock() { ::unlink(path.c_str()); }
  } cleanup{lock_path(pool)};
  auto segment = control_segment::create(pool, ::getpid(), 1, units);  // a live pid, no lock
  CHECK_FALSE(find_live_master(pool).has_value());

  // A child takes the lock and holds it until told to go.
  int ready[2], go[2];
  REQUIRE(::pipe(ready) == 0);
  REQUIRE(::pipe(go) == 0);
  const pid_t child = ::fork();
  if (child == 0) {
    char byte = 'E';
    std::optional<pool_lock> lock;
    try {
      lock.emplace(pool_lock::acquire(pool));
      byte = 'L';
    } catch (...) {
    }
    [[maybe_unused]] auto w = ::write(ready[1], &byte, 1);
    [[maybe_unused]] auto r = ::read(go[0], &byte, 1);
    ::_exit(0);
  }
  // Whatever happens below, the child is released and reaped.
  struct release_child {
    int go;
    pid_t pid;
    release_child(int g, pid_t p) : go(g), pid(p) {}
    release_child(const release_child&) = delete;
    ~release_child() {
      [[maybe_unused]] auto w = ::write(go, "x", 1);
      ::waitpid(pid, nullptr, 0);
    }
  };
  std::optional<release_child> release(std::in_place, go[1], child);
  char byte = 0;
  REQUIRE(::read(ready[0], &byte, 1) == 1);
  REQUIRE(byte == 'L');
  CHECK(find_live_master(pool) == child);
  try {
    pool_lock::acquire(pool);
    FAIL("a second lock holder");
  } catch (const config_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("already running (master pid " + std::to_string(child) + ")"));
  }
  release.reset();
  CHECK_FALSE(find_live_master(pool).has_value());  // the lock went with the process
  for (int fd : {ready[0], ready[1], go[0], go[1]}) ::close(fd);
}

TEST_CASE("read_slot returns consistent snapshots while a worker process keeps updating",
          "[control_block]") {
  const auto pool = unique_pool();
  auto seg = control_segment::create(pool, ::getpid(), 1, units);
  auto& slot = seg.slot(0);
  auto& go = seg.header().target_workers;  // a start flag the child waits on
  auto& stop = seg.header().scale_request;  // the parent has read enough
  auto& written = seg.header().pool_generation;  // the child's last update

  const pid_t child = ::fork();
  if (child == 0) {
    // The writer: every update keeps stage, unit and in_flight derived from one counter. It
    // goes on until the parent has read (bounded, should the parent stall).
    while (go.load() == 0) {
    }
    for (std::uint32_t i = 1; stop.load() == 0 && i <= 50'000'000; ++i) {
      begin_update(slot);
      slot.in_flight.store(i, std::memory_order_relaxed);
      slot.stage.store(i % stage_count, std::memory_order_relaxed);
      slot.unit.store(i % 16, std::memory_order_relaxed);
      slot.requests.store(std::uint64_t{i} * 3, std::memory_order_relaxed);
      end_update(slot);
      written.store(i);
    }
    ::_exit(0);
  }
  REQUIRE(child > 0);
  go.store(1);
  while (written.load() == 0) {
  }

  // Every read overlaps the writer: 20,000 reads, of which at least 100 consistent.
  int consistent = 0;
  int torn = 0;
  for (long reads = 0; reads < 20'000 || (consistent < 100 && reads < 50'000'000); ++reads) {
    const auto s = read_slot(slot);
    if (!s.consistent) continue;
    ++consistent;
    const auto i = s.in_flight;
    if (i != 0 && (s.stage != i % stage_count || s.unit != i % 16 || s.requests != i * 3ull)) ++torn;
  }
  stop.store(1);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(torn == 0);
  CHECK(consistent >= 100);
  const auto last = read_slot(slot);
  CHECK(last.consistent);
  CHECK(last.in_flight == written.load());
  CHECK(last.requests == std::uint64_t{written.load()} * 3);
}

TEST_CASE("a writer that died mid-update leaves a readable slot that the master can repair",
          "[control_block]") {
  auto seg = control_segment::create(unique_pool(), ::getpid(), 1, units);
  auto& slot = seg.slot(0);
  begin_update(slot);  // ...and the worker is SIGKILLed here
  slot.state.store(worker_state::draining);

  const auto stuck = read_slot(slot);  // must return, not spin forever
  CHECK_FALSE(stuck.consistent);
  CHECK(stuck.state == worker_state::draining);

  {
    slot_update update{slot};  // the master, now the slot's only writer
    slot.state.store(worker_state::crashed);
  }
  const auto repaired = read_slot(slot);
  CHECK(repaired.consistent);
  CHECK(repaired.state == worker_state::crashed);
  CHECK(repaired.seq % 2 == 0);
}

TEST_CASE("the reload message round-trips and is cut at a character boundary",
          "[control_block]") {
  auto seg = control_segment::create(unique_pool(), ::getpid(), 1, units);
  auto& h = seg.header();
  CHECK(read_reload_message(h).empty());

  write_reload_message(h, "reload failed: unit database, stage pre_startup: refused");
  CHECK(read_reload_message(h) == "reload failed: unit database, stage pre_startup: refused");
  CHECK(h.reload_message_seq.load() % 2 == 0);

  write_reload_message(h, "ok");  // a shorter message leaves no tail of the longer one
  CHECK(read_reload_message(h) == "ok");

  CHECK(read_reload_message(h).size() <= 255);
  write_reload_message(h, std::string(300, 'a'));
  CHECK(read_reload_message(h) == std::string(255, 'a'));

  // 254 ASCII bytes then "é" (2 bytes): byte 255 would split it, so it is dropped whole.
  write_reload_message(h, std::string(254, 'a') + "\xc3\xa9" + "tail");
  CHECK(read_reload_message(h) == std::string(254, 'a'));
}

TEST_CASE("read_reload_message never tears while the master rewrites it", "[control_block]") {
  auto seg = control_segment::create(unique_pool(), ::getpid(), 1, units);
  auto& h = seg.header();
  auto& go = h.target_workers;      // the parent tells the writer to start ...
  auto& stop = h.scale_request;     // ... and to stop once it has read enough
  auto& written = h.pool_generation;  // how many rewrites the writer made
  const pid_t child = ::fork();
  if (child == 0) {
    while (go.load() == 0) {
    }
    // A pause between rewrites, as in real life (one message per reload): back-to-back
    // rewrites could exhaust the reader's bounded retries (it then returns "", never a torn
    // copy, which this test would not see either way).
    const timespec pause{0, 20'000};
    for (std::uint32_t i = 0; stop.load() == 0 && i < 1'000'000; ++i) {
      write_reload_message(h, std::string(i % 2 ? 200 : 100, i % 2 ? 'x' : 'y'));
      written.store(i + 1);
      ::nanosleep(&pause, nullptr);
    }
    ::_exit(0);
  }
  REQUIRE(child > 0);
  go.store(1);
  // Every read below overlaps the writer, which only stops once they are done: at least
  // 3,000 reads and 50 rewrites while reading (bounded, should the writer stall).
  while (written.load() == 0) {
  }
  const auto before = written.load();
  int torn = 0;
  for (long reads = 0; reads < 3'000 || (written.load() < before + 50 && reads < 50'000'000); ++reads) {
    const auto m = read_reload_message(h);
    if (!m.empty() && m != std::string(200, 'x') && m != std::string(100, 'y')) ++torn;
  }
  const auto during = written.load() - before;
  stop.store(1);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(torn == 0);
  CHECK(during >= 50);
}
