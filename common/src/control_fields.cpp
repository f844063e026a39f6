// The control block's fields: the clock, the seqlocks around a slot's records, the reload
// message and the unit names. No Asio and no allocation on the writers' side: workers write
// here from their loop, the master from its own.

#include <time.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "systempp/control_block.hpp"

namespace systempp {

namespace {

/// Seqlock readers give up after this many attempts: a writer that died mid-update leaves
/// the counter odd forever, and status must still answer.
constexpr int max_read_attempts = 1000;

void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Clock, seqlocks, names
// ---------------------------------------------------------------------------------------------

std::uint64_t monotonic_ms() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000u +
         static_cast<std::uint64_t>(ts.tv_nsec) / 1'000'000u;
}

// The seqlock follows Boehm, "Can seqlocks get along with programming language memory
// models?" (2012): the data fields are atomics accessed relaxed, the writer puts a release
// fence after making the counter odd, the reader an acquire fence before re-reading it.

void begin_update(worker_slot& slot) noexcept {
  // `| 1` rather than `+ 1`: if the previous writer died mid-update the counter is already
  // odd, and the new writer (the master) must leave it odd, not make it even.
  slot.seq.store(slot.seq.load(std::memory_order_relaxed) | 1u, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
}

void end_update(worker_slot& slot) noexcept {
  slot.seq.store(slot.seq.load(std::memory_order_relaxed) + 1u, std::memory_order_release);
}

namespace {

void copy_fields(const worker_slot& s, slot_snapshot& out) noexcept {
  constexpr auto r = std::memory_order_relaxed;
  out.epoch = s.epoch.load(r);
  out.pid = s.pid.load(r);
  out.generation = s.generation.load(r);
  out.state = s.state.load(r);
  out.command = s.command.load(r);
  out.stage = s.stage.load(r);
  out.role = s.role.load(r);
  out.unit = s.unit.load(r);
  out.in_flight = s.in_flight.load(r);
  out.exit_status = s.exit_status.load(r);
  out.restarts = s.restarts.load(r);
  out.drain_deadline_ms = s.drain_deadline_ms.load(r);
  out.heartbeat_ms = s.heartbeat_ms.load(r);
  out.started_ms = s.started_ms.load(r);
  out.ready_ms = s.ready_ms.load(r);
  out.requests = s.requests.load(r);
  out.errors = s.errors.load(r);
  for (std::size_t u = 0; u < worker_slot::max_units; ++u) {
    for (std::size_t st = 0; st < max_stages; ++st) {
      out.stage_us[u][st] = s.stage_us[u][st].load(r);
    }
  }
  out.unhealthy_unit = s.unhealthy_unit.load(r);
  for (std::size_t i = 0; i < worker_slot::health_reason_size; ++i)
    out.health_reason[i] = std::atomic_ref<char>(const_cast<char&>(s.health_reason[i])).load(r);
  out.metrics_digest = s.metrics_digest.load(r);
  for (std::size_t i = 0; i < max_metric_values; ++i) out.app_values[i] = s.app_values[i].load(r);
  out.rss_bytes = s.rss_bytes.load(r);
}

// The longest prefix of `text` within `capacity` bytes that does not split a UTF-8 character.
std::string_view utf8_prefix(std::string_view text, std::size_t capacity) noexcept {
  if (text.size() <= capacity) return text;
  auto cut = capacity;
  // Back off over UTF-8 continuation bytes (10xxxxxx) so no character is split.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xc0u) == 0x80u) --cut;
  return text.substr(0, cut);
}

// Writes `text` and NULs into `bytes`, byte by byte (relaxed atomics: a concurrent reader
// retries instead of racing).
template <std::size_t N>
void store_text(char (&bytes)[N], std::string_view text) noexcept {
  for (std::size_t i = 0; i < N; ++i)
    std::atomic_ref<char>(bytes[i]).store(i < text.size() ? text[i] : '\0', std::memory_order_relaxed);
}

/// The reader side of a seqlock: runs `copy` until it saw no update, at most
/// max_read_attempts times. Returns whether the last copy is consistent.
template <class Copy>
bool seqlock_read(const std::atomic<std::uint32_t>& seq, Copy&& copy) noexcept {
  for (int attempt = 0; attempt < max_read_attempts; ++attempt) {
    const auto before = seq.load(std::memory_order_acquire);
    if (before & 1u) {
      // The writer is inside an update; it may have been preempted, so give it the CPU.
      if (attempt % 16 == 15) std::this_thread::yield(); else cpu_relax();
      continue;
    }
    copy();
    std::atomic_thread_fence(std::memory_order_acquire);
    if (seq.load(std::memory_order_relaxed) == before) return true;
  }
  copy();
  return false;
}

}  // namespace

slot_snapshot read_slot(const worker_slot& slot) noexcept {
  slot_snapshot out;
  out.consistent = seqlock_read(slot.seq, [&] {
    out.seq = slot.seq.load(std::memory_order_relaxed);
    copy_fields(slot, out);
  });
  return out;
}

void write_reload_message(control_header& header, std::string_view message) noexcept {
  message = utf8_prefix(message, control_header::reload_message_size - 1);
  auto& seq = header.reload_message_seq;
  seq.store(seq.load(std::memory_order_relaxed) | 1u, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  store_text(header.reload_message, message);
  seq.store(seq.load(std::memory_order_relaxed) + 1u, std::memory_order_release);
}

void write_health(worker_slot& slot, std::uint32_t unit, std::string_view reason) noexcept {
  slot_update u(slot);
  slot.unhealthy_unit.store(unit, std::memory_order_relaxed);
  store_text(slot.health_reason, utf8_prefix(reason, worker_slot::health_reason_size - 1));
}

std::string read_reload_message(const control_header& header) {
  std::array<char, control_header::reload_message_size> copy{};
  const bool consistent = seqlock_read(header.reload_message_seq, [&] {
    for (std::size_t i = 0; i < copy.size(); ++i) {
      // atomic_ref needs a non-const object; the loads do not write.
      auto& byte = const_cast<char&>(header.reload_message[i]);
      copy[i] = std::atomic_ref<char>(byte).load(std::memory_order_relaxed);
    }
  });
  // A message rewritten through every retry is not shown torn: nothing is shown.
  if (!consistent) return {};
  // A garbage segment may have no NUL: never read past the array.
  return std::string(copy.data(), ::strnlen(copy.data(), copy.size()));
}

std::string_view unit_name(const control_header& header, std::uint32_t index) noexcept {
  const auto count = std::min<std::size_t>(header.unit_count.load(std::memory_order_relaxed),
                                           control_header::max_units);
  if (index >= count) return {};
  const char* name = header.unit_names[index];
  return {name, ::strnlen(name, control_header::unit_name_size)};
}

std::string_view stage_name(const control_header& header, std::uint32_t index) noexcept {
  if (index >= max_stages) return {};
  const char* name = header.stage_names[index];
  return {name, ::strnlen(name, control_header::unit_name_size)};
}

}  // namespace systempp
