// Fuzzes the reader side of the control block: `app status`, workers and an upgraded master
// attach a segment that another process wrote, so its bytes are untrusted. Any input must
// either be refused with control_block_error at attach or be readable without a crash, a
// hang or a read out of bounds. The reads below are the ones `app status` makes.

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "systempp/control_block.hpp"
#include "systempp/stage.hpp"

namespace {

using namespace systempp;

/// A broken property is a finding: abort, so libFuzzer saves the input.
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "control_block_fuzz: property broken: %s\n", what);
    std::abort();
  }
}

/// One memfd for the whole run: attach_fd needs a real file (fstat, mmap), and a memfd
/// is one without touching /dev/shm or the disk.
int segment_fd() {
  static const int fd = [] {
    const int made = ::memfd_create("systempp-fuzz-segment", MFD_CLOEXEC);
    if (made == -1) {
      std::perror("memfd_create");
      std::abort();
    }
    return made;
  }();
  return fd;
}

/// Replaces the memfd's content with the input; the size of the file is the size of the
/// input, as it would be for a segment that someone truncated or grew.
void fill(int fd, const std::uint8_t* data, std::size_t size) {
  if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    std::perror("ftruncate");
    std::abort();
  }
  std::size_t done = 0;
  while (done < size) {
    const auto n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) {
      std::perror("pwrite");
      std::abort();
    }
    done += static_cast<std::size_t>(n);
  }
}

// Volatile sinks keep the optimiser from dropping reads whose results are unused.
volatile std::size_t sink_size;
volatile std::uint64_t sink_value;

void consume(std::string_view text) {
  std::size_t sum = text.size();
  for (const char c : text) sum += static_cast<unsigned char>(c);
  sink_size = sum;
}

void read_header(const control_header& h) {
  consume(to_string(h.master_state.load()));
  consume(to_string(h.reload_outcome.load()));
  for (std::size_t r = 0; r < restart_reason_count; ++r) {
    consume(to_string(static_cast<restart_reason>(r)));
    sink_value = h.restarts[r].load();
  }
  sink_value = h.master_pid.load() + h.pool_generation.load() + h.target_workers.load() +
               h.reload_seq.load() + h.reload_started_ms.load() + h.reload_duration_ms.load() +
               h.requests_total.load() + h.errors_total.load() + h.master_started_ms.load() +
               h.scale_request.load();

  const std::string message = read_reload_message(h);
  check(message.size() < control_header::reload_message_size + 1, "reload message too long");
  check(message.find('\0') == std::string::npos, "reload message holds a NUL");
  consume(message);

  // Every index a reader could pass, in range or not.
  const std::uint32_t units = h.unit_count.load();
  for (std::uint32_t u = 0; u <= control_header::max_units + 1; ++u) {
    const auto name = unit_name(h, u);
    check(name.size() <= control_header::unit_name_size, "unit name past its array");
    if (u >= units) check(name.empty(), "unit name for an index past unit_count");
    consume(name);
  }
  check(unit_name(h, no_unit).empty(), "unit name for no_unit");
}

void read_slots(const control_segment& seg) {
  const control_header& h = seg.header();
  for (std::uint32_t i = 0; i < seg.slot_count(); ++i) {
    const slot_snapshot w = read_slot(seg.slot(i));
    consume(to_string(w.state));
    consume(to_string(w.command));
    // As `app status` does: the indexes are garbage until checked.
    const auto stage = stage_name(h, w.stage);
    check(stage.size() <= control_header::unit_name_size, "stage name past its array");
    consume(stage);
    consume(unit_name(h, w.unit));
    consume(unit_name(h, w.role));
    std::uint64_t sum = static_cast<std::uint64_t>(w.pid) + w.seq + w.epoch + w.generation +
                        w.in_flight + static_cast<std::uint32_t>(w.exit_status) + w.restarts +
                        w.drain_deadline_ms + w.heartbeat_ms + w.started_ms + w.ready_ms +
                        w.requests + w.errors + (w.consistent ? 1 : 0);
    for (const auto& per_unit : w.stage_us)
      for (const auto us : per_unit) sum += us;
    sink_value = sum;
  }
  // The count was validated against the file size at attach and is cached: one past it
  // must be refused, not read.
  try {
    (void)seg.slot(seg.slot_count());
    check(false, "slot(slot_count()) did not throw");
  } catch (const std::out_of_range&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const int fd = segment_fd();
  fill(fd, data, size);
  try {
    const auto seg = control_segment::attach_fd(fd, access::read_only);
    check(seg.slots().size() == seg.slot_count(), "slots() and slot_count() disagree");
    check(sizeof(control_header) + std::size_t{seg.slot_count()} * sizeof(worker_slot) <= size,
          "attached a segment smaller than its slots");
    read_header(seg.header());
    read_slots(seg);
  } catch (const control_block_error&) {
    // Refusing a bad segment is the expected outcome for most inputs.
  }
  return 0;
}
