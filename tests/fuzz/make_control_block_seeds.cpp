// Writes valid control blocks as seed files for control_block_fuzz:
//   make_control_block_seeds DIR
// Each seed is made by control_segment::create, filled in the way a master and its workers
// would, and copied out byte for byte. Random bytes almost never get past the magic, version
// and size checks; mutating valid segments reaches the readers behind them. The fuzz tests
// run this before each run, so the seeds follow the layout when its version is bumped; the
// copies in corpus/control_block/ are for running the fuzzer by hand.

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "systempp/control_block.hpp"
#include "systempp/stage.hpp"

namespace {

using namespace systempp;

/// The segment's bytes, read through its fd (the mapping is the same memory).
std::vector<char> bytes_of(const control_segment& seg) {
  const auto size = sizeof(control_header) + std::size_t{seg.slot_count()} * sizeof(worker_slot);
  std::vector<char> out(size);
  if (::pread(seg.fd(), out.data(), size, 0) != static_cast<ssize_t>(size))
    throw std::runtime_error("pread of the segment failed");
  return out;
}

void save(const std::filesystem::path& dir, const std::string& file, const control_segment& seg) {
  const auto bytes = bytes_of(seg);
  std::ofstream out(dir / file, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + (dir / file).string());
}

/// Pool names are per process: the seeds' segments never collide with a real pool's.
std::string pool(const char* what) { return std::string{"fuzzseed_"} + what; }

/// A master with no workers and no units yet: the header alone.
void header_only(const std::filesystem::path& dir) {
  auto seg = control_segment::create(pool("empty"), ::getpid(), 0, {});
  save(dir, "header_only.bin", seg);
}

/// One READY worker of the demo's two units after a successful reload.
void one_ready_worker(const std::filesystem::path& dir) {
  const std::vector<std::string> units{"settings", "http_server"};
  auto seg = control_segment::create(pool("one"), ::getpid(), 1, units);
  auto& h = seg.header();
  h.master_state.store(master_state::running);
  h.pool_generation.store(2);
  h.target_workers.store(1);
  h.reload_seq.store(1);
  h.reload_outcome.store(reload_outcome::succeeded);
  h.reload_duration_ms.store(420);
  h.master_started_ms.store(monotonic_ms());
  write_reload_message(h, "reload succeeded: 1 of 1 workers on generation 2");

  auto& w = seg.slot(0);
  {
    slot_update update{w};
    w.epoch.store(3);
    w.pid.store(4242);
    w.generation.store(2);
    w.state.store(worker_state::ready);
    w.heartbeat_ms.store(monotonic_ms());
    w.requests.store(1000);
    w.stage_us[0][0].store(1500);
    w.stage_us[1][3].store(2500);
  }
  save(dir, "one_ready_worker.bin", seg);
}

/// Two slots at the limits: sixteen units with names of the longest length, a worker that
/// died mid-update (odd seq) inside a stage, a draining one, and a failed reload whose
/// message was cut at its 255 bytes.
void two_slots_at_limits(const std::filesystem::path& dir) {
  std::vector<std::string> units;
  for (std::size_t i = 0; i < control_header::max_units; ++i)
    units.push_back("unit_" + std::to_string(i) + std::string(40, 'x'));
  auto seg = control_segment::create(pool("limits"), ::getpid(), 2, units);
  auto& h = seg.header();
  h.master_state.store(master_state::reloading);
  h.reload_outcome.store(reload_outcome::failed);
  h.restarts[static_cast<std::size_t>(restart_reason::crash)].store(7);
  write_reload_message(h, "reload failed: unit settings, stage on_reload: " + std::string(300, 'e'));

  auto& dying = seg.slot(0);
  begin_update(dying);  // never ended: the worker was killed mid-update
  dying.pid.store(100);
  dying.state.store(worker_state::starting);
  dying.stage.store(static_cast<std::uint32_t>(stage::pre_startup));
  dying.unit.store(15);

  auto& draining = seg.slot(1);
  {
    slot_update update{draining};
    draining.pid.store(101);
    draining.state.store(worker_state::draining);
    draining.command.store(worker_command::drain);
    draining.stage.store(static_cast<std::uint32_t>(stage::on_shutdown));
    draining.unit.store(0);
    draining.drain_deadline_ms.store(monotonic_ms() + 30'000);
  }
  save(dir, "two_slots_at_limits.bin", seg);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  try {
    const std::filesystem::path dir{argv[1]};
    std::filesystem::create_directories(dir);
    header_only(dir);
    one_ready_worker(dir);
    two_slots_at_limits(dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
    return 1;
  }
  return 0;
}
