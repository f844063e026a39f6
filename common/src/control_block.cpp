// The control block: layout helpers, seqlocks and the segment owner. No Asio here: this file
// is linked into `app status`, and into workers before their loop exists.

#include "systempp/control_block.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <new>
#include <system_error>
#include <thread>
#include <utility>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

namespace systempp {

namespace bip = boost::interprocess;

namespace {

/// Where Linux keeps POSIX shared memory; Boost's shm_open names map to files here.
constexpr std::string_view shm_dir = "/dev/shm/";
constexpr std::string_view name_prefix = "systempp.";
constexpr std::size_t max_pool_name = 64;
/// A sanity bound, not a design limit: it keeps a segment under about 3 MB.
constexpr std::uint32_t max_slots = 4096;
/// Seqlock readers give up after this many attempts: a writer that died mid-update leaves
/// the counter odd forever, and status must still answer.
constexpr int max_read_attempts = 1000;

[[noreturn]] void fail(std::string_view name, std::string_view reason) {
  std::string message{"control block "};
  message.append(name).append(": ").append(reason);
  throw control_block_error(message);
}

/// Validates before the name reaches a file name (no '/', no '.', nothing odd in messages).
void check_pool_name(std::string_view pool) {
  if (!valid_pool_name(pool)) {
    throw control_block_error("control block pool \"" + std::string{pool} +
                              "\": invalid pool name (want [A-Za-z0-9_-]{1,64})");
  }
}

std::string errno_text(int err) { return std::system_category().message(err); }

/// Lets mapped_region map a raw fd (an inherited one, or our duplicate of Boost's): any type
/// with get_mapping_handle() and get_mode() is a MemoryMappable to Boost.
class fd_mapping {
 public:
  fd_mapping(int fd, bip::mode_t mode) noexcept : fd_(fd), mode_(mode) {}
  bip::mapping_handle_t get_mapping_handle() const noexcept {
    bip::mapping_handle_t handle{};
    handle.handle = fd_;
    handle.is_xsi = false;
    return handle;
  }
  bip::mode_t get_mode() const noexcept { return mode_; }

 private:
  int fd_;
  bip::mode_t mode_;
};

bip::mode_t to_boost(access mode) noexcept {
  return mode == access::read_only ? bip::read_only : bip::read_write;
}

/// A close-on-exec duplicate: the segment's fd must not leak into exec'd children by
/// accident (the exec-mode spawner passes it on purpose, with dup2).
int dup_cloexec(int fd) noexcept { return ::fcntl(fd, F_DUPFD_CLOEXEC, 0); }

/// The pid in "systempp.<pool>.<pid>", or nothing if `file` is not a segment of `pool`.
std::optional<pid_t> pid_of_segment(std::string_view file, std::string_view pool) {
  if (!file.starts_with(name_prefix)) return std::nullopt;
  file.remove_prefix(name_prefix.size());
  // Pool names cannot contain '.', so "web" never matches a segment of pool "web.x".
  if (!file.starts_with(pool) || file.size() <= pool.size() || file[pool.size()] != '.') {
    return std::nullopt;
  }
  file.remove_prefix(pool.size() + 1);
  pid_t pid = 0;
  const auto* end = file.data() + file.size();
  auto [ptr, ec] = std::from_chars(file.data(), end, pid);
  // pid <= 0 would make kill() address a process group: never treat it as a pid.
  if (ec != std::errc{} || ptr != end || pid <= 0) return std::nullopt;
  return pid;
}

enum class liveness { alive, dead };

liveness probe(pid_t pid) noexcept {
  // EPERM: the process exists but belongs to someone else; only ESRCH proves it is gone.
  return ::kill(pid, 0) == -1 && errno == ESRCH ? liveness::dead : liveness::alive;
}

/// Calls f(file name, pid) for each segment of `pool` in /dev/shm.
template <class F>
void for_each_segment(std::string_view pool, F&& f) {
  check_pool_name(pool);
  std::error_code ec;
  std::filesystem::directory_iterator it{std::filesystem::path{shm_dir}, ec};
  for (; !ec && it != std::filesystem::directory_iterator{}; it.increment(ec)) {
    std::string file = it->path().filename().string();
    if (auto pid = pid_of_segment(file, pool)) f(file, *pid);
  }
}

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
    for (std::size_t st = 0; st < stage_count; ++st) {
      out.stage_us[u][st] = s.stage_us[u][st].load(r);
    }
  }
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
  constexpr auto capacity = control_header::reload_message_size - 1;
  if (message.size() > capacity) {
    auto cut = capacity;
    // Back off over UTF-8 continuation bytes (10xxxxxx) so no character is split.
    while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xc0u) == 0x80u) --cut;
    message = message.substr(0, cut);
  }
  auto& seq = header.reload_message_seq;
  seq.store(seq.load(std::memory_order_relaxed) | 1u, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  // Byte-wise relaxed atomics: a concurrent reader is then a retry, not a data race.
  for (std::size_t i = 0; i < control_header::reload_message_size; ++i) {
    const char c = i < message.size() ? message[i] : '\0';
    std::atomic_ref<char>(header.reload_message[i]).store(c, std::memory_order_relaxed);
  }
  seq.store(seq.load(std::memory_order_relaxed) + 1u, std::memory_order_release);
}

std::string read_reload_message(const control_header& header) {
  std::array<char, control_header::reload_message_size> copy{};
  seqlock_read(header.reload_message_seq, [&] {
    for (std::size_t i = 0; i < copy.size(); ++i) {
      // atomic_ref needs a non-const object; the loads do not write.
      auto& byte = const_cast<char&>(header.reload_message[i]);
      copy[i] = std::atomic_ref<char>(byte).load(std::memory_order_relaxed);
    }
  });
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

bool valid_pool_name(std::string_view pool) noexcept {
  if (pool.empty() || pool.size() > max_pool_name) return false;
  return std::all_of(pool.begin(), pool.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
  });
}

std::string segment_name(std::string_view pool, pid_t master_pid) {
  std::string name{name_prefix};
  name.append(pool).append(".").append(std::to_string(master_pid));
  return name;
}

// ---------------------------------------------------------------------------------------------
// control_segment
// ---------------------------------------------------------------------------------------------

control_segment control_segment::create(std::string_view pool, pid_t master_pid,
                                        std::uint32_t slot_count,
                                        std::span<const std::string> unit_names) {
  check_pool_name(pool);
  std::string name = segment_name(pool, master_pid);
  if (slot_count > max_slots) fail(name, "too many slots: " + std::to_string(slot_count));
  if (unit_names.size() > control_header::max_units) {
    fail(name, "too many units: " + std::to_string(unit_names.size()) + " > " +
                   std::to_string(control_header::max_units));
  }

  const std::size_t size = sizeof(control_header) + std::size_t{slot_count} * sizeof(worker_slot);
  int fd = -1;
  try {
    // 0600: the block tells which pids to signal; no other user may write (or read) it.
    // Boost fchmods after shm_open, so the umask cannot widen or narrow this.
    bip::shared_memory_object shm{bip::create_only, name.c_str(), bip::read_write,
                                  bip::permissions{0600}};
    try {
      shm.truncate(static_cast<bip::offset_t>(size));
      fd = dup_cloexec(shm.get_mapping_handle().handle);
      if (fd == -1) fail(name, "dup: " + errno_text(errno));
    } catch (...) {
      bip::shared_memory_object::remove(name.c_str());
      throw;
    }
  } catch (const bip::interprocess_exception& e) {
    fail(name, std::string{"cannot create: "} + e.what());
  }

  // From here the segment exists under our name: the object owns it, so any throw below
  // removes it again.
  control_segment segment{std::move(name), fd};
  segment.owner_ = true;
  segment.owner_pid_ = ::getpid();
  try {
    segment.region_ = bip::mapped_region{fd_mapping{fd, bip::read_write}, bip::read_write, 0, size};
  } catch (const bip::interprocess_exception& e) {
    fail(segment.name_, std::string{"cannot map: "} + e.what());
  }

  auto* base = static_cast<std::byte*>(segment.region_.get_address());
  auto* header = ::new (base) control_header{};
  auto* slots = reinterpret_cast<worker_slot*>(base + sizeof(control_header));
  // One placement-new per slot: array placement-new may reserve room for a count first.
  for (std::uint32_t i = 0; i < slot_count; ++i) ::new (slots + i) worker_slot{};

  constexpr auto r = std::memory_order_relaxed;
  header->layout_version.store(control_block_layout_version, r);
  header->header_size.store(sizeof(control_header), r);
  header->slot_size.store(sizeof(worker_slot), r);
  header->slot_count.store(slot_count, r);
  header->unit_count.store(static_cast<std::uint32_t>(unit_names.size()), r);
  header->master_pid.store(master_pid, r);
  header->master_state.store(master_state::starting, r);
  for (std::size_t i = 0; i < unit_names.size(); ++i) {
    // Names are for display: a long one is cut rather than refused.
    const auto n = std::min(unit_names[i].size(), control_header::unit_name_size - 1);
    std::memcpy(header->unit_names[i], unit_names[i].data(), n);
  }
  // Last, with release: whoever sees the magic sees a fully initialised header.
  header->magic.store(control_block_magic, std::memory_order_release);

  segment.header_ = header;
  segment.slots_ = slots;
  segment.slot_count_ = slot_count;
  return segment;
}

control_segment::control_segment(std::string name, int fd) noexcept
    : name_(std::move(name)), fd_(fd) {}

control_segment control_segment::attach(std::string_view pool, pid_t master_pid, access mode) {
  check_pool_name(pool);
  std::string name = segment_name(pool, master_pid);
  int fd = -1;
  try {
    bip::shared_memory_object shm{bip::open_only, name.c_str(), to_boost(mode)};
    fd = dup_cloexec(shm.get_mapping_handle().handle);
  } catch (const bip::interprocess_exception& e) {
    fail(name, std::string{"cannot open: "} + e.what());
  }
  if (fd == -1) fail(name, "dup: " + errno_text(errno));
  // Constructed first, so that a failed validation closes the fd in the destructor.
  control_segment segment{std::move(name), fd};
  segment.map_and_validate(mode);
  return segment;
}

control_segment control_segment::attach_fd(int inherited_fd, access mode) {
  // The name only serves messages and adopt(): the kernel knows which file the fd is.
  std::string name = "fd " + std::to_string(inherited_fd);
  char link[256];
  const auto proc = "/proc/self/fd/" + std::to_string(inherited_fd);
  if (const auto n = ::readlink(proc.c_str(), link, sizeof link - 1); n > 0) {
    std::string_view target{link, static_cast<std::size_t>(n)};
    if (target.starts_with(shm_dir) && target.find(' ') == std::string_view::npos) {
      name = target.substr(shm_dir.size());
    }
  }
  const int fd = dup_cloexec(inherited_fd);
  if (fd == -1) fail(name, "dup: " + errno_text(errno));
  control_segment segment{std::move(name), fd};
  segment.map_and_validate(mode);
  return segment;
}

void control_segment::map_and_validate(access mode) {
  struct stat st{};
  if (::fstat(fd_, &st) != 0) fail(name_, "fstat: " + errno_text(errno));
  // Another user's segment could steer us to signal arbitrary pids.
  if (st.st_uid != ::geteuid()) {
    fail(name_, "owned by uid " + std::to_string(st.st_uid) + ", not " +
                    std::to_string(::geteuid()));
  }
  if (!S_ISREG(st.st_mode)) fail(name_, "not a shared memory object");
  const auto size = static_cast<std::size_t>(st.st_size);
  // Check the size before mapping: touching a page past the end of the file is SIGBUS.
  if (st.st_size < 0 || size < sizeof(control_header)) {
    fail(name_, "truncated: " + std::to_string(st.st_size) + " bytes, the header needs " +
                    std::to_string(sizeof(control_header)));
  }
  try {
    region_ = bip::mapped_region{fd_mapping{fd_, to_boost(mode)}, to_boost(mode), 0, size};
  } catch (const bip::interprocess_exception& e) {
    fail(name_, std::string{"cannot map: "} + e.what());
  }

  const auto& h = *static_cast<const control_header*>(region_.get_address());
  constexpr auto r = std::memory_order_relaxed;
  // Acquire pairs with create's release: the fields read below were written before it.
  if (h.magic.load(std::memory_order_acquire) != control_block_magic) fail(name_, "wrong magic");
  if (auto v = h.layout_version.load(r); v != control_block_layout_version) {
    fail(name_, "layout version " + std::to_string(v) + ", this build reads " +
                    std::to_string(control_block_layout_version));
  }
  if (auto hs = h.header_size.load(r); hs != sizeof(control_header)) {
    fail(name_, "header size " + std::to_string(hs) + ", this build has " +
                    std::to_string(sizeof(control_header)));
  }
  if (auto ss = h.slot_size.load(r); ss != sizeof(worker_slot)) {
    fail(name_, "slot size " + std::to_string(ss) + ", this build has " +
                    std::to_string(sizeof(worker_slot)));
  }
  const auto count = h.slot_count.load(r);
  const auto needed = sizeof(control_header) + std::size_t{count} * sizeof(worker_slot);
  if (size < needed) {
    fail(name_, "truncated: " + std::to_string(size) + " bytes, " + std::to_string(count) +
                    " slots need " + std::to_string(needed));
  }
  if (h.unit_count.load(r) > control_header::max_units) fail(name_, "too many units");

  auto* base = static_cast<std::byte*>(region_.get_address());
  // The objects were constructed by the creator in this same memory; we only look at them.
  header_ = std::launder(reinterpret_cast<control_header*>(base));
  slots_ = std::launder(reinterpret_cast<worker_slot*>(base + sizeof(control_header)));
  slot_count_ = count;
}

control_segment::control_segment(control_segment&& other) noexcept
    : name_(std::move(other.name_)),
      fd_(std::exchange(other.fd_, -1)),
      region_(std::move(other.region_)),
      header_(std::exchange(other.header_, nullptr)),
      slots_(std::exchange(other.slots_, nullptr)),
      slot_count_(std::exchange(other.slot_count_, 0)),
      owner_(std::exchange(other.owner_, false)),
      owner_pid_(std::exchange(other.owner_pid_, 0)) {}

control_segment& control_segment::operator=(control_segment&& other) noexcept {
  if (this != &other) {
    close();
    name_ = std::move(other.name_);
    fd_ = std::exchange(other.fd_, -1);
    region_ = std::move(other.region_);
    header_ = std::exchange(other.header_, nullptr);
    slots_ = std::exchange(other.slots_, nullptr);
    slot_count_ = std::exchange(other.slot_count_, 0);
    owner_ = std::exchange(other.owner_, false);
    owner_pid_ = std::exchange(other.owner_pid_, 0);
  }
  return *this;
}

control_segment::~control_segment() { close(); }

void control_segment::close() noexcept {
  region_ = bip::mapped_region{};  // unmaps
  header_ = nullptr;
  slots_ = nullptr;
  slot_count_ = 0;
  if (fd_ != -1) {
    ::close(fd_);
    fd_ = -1;
  }
  if (owner_ && owner_pid_ == ::getpid()) bip::shared_memory_object::remove(name_.c_str());
  owner_ = false;
}

void control_segment::adopt() noexcept {
  owner_ = true;
  owner_pid_ = ::getpid();
}

worker_slot& control_segment::slot(std::uint32_t i) {
  if (i >= slot_count_) throw std::out_of_range("control block " + name_ + ": slot out of range");
  return slots_[i];
}

const worker_slot& control_segment::slot(std::uint32_t i) const {
  if (i >= slot_count_) throw std::out_of_range("control block " + name_ + ": slot out of range");
  return slots_[i];
}

// ---------------------------------------------------------------------------------------------
// Finding segments
// ---------------------------------------------------------------------------------------------

std::size_t remove_stale_segments(std::string_view pool) {
  std::size_t removed = 0;
  for_each_segment(pool, [&](const std::string& file, pid_t pid) {
    if (probe(pid) == liveness::dead && bip::shared_memory_object::remove(file.c_str())) {
      ++removed;
    }
  });
  return removed;
}

std::optional<pid_t> find_live_master(std::string_view pool) {
  std::optional<pid_t> found;
  for_each_segment(pool, [&](const std::string&, pid_t pid) {
    if (!found && probe(pid) == liveness::alive) found = pid;
  });
  return found;
}

}  // namespace systempp
