// The control block's segment owner: create, attach, validate, remove. No Asio here: this file
// is linked into `app status`, and into workers before their loop exists.

#include "systempp/control_block.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
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

/// A sanity bound, not a design limit: two records for each of the 2,048 serving slots a
/// pool may have and for up to 16 dedicated processes of each of 16 units (about 15 MB).
constexpr std::uint32_t max_slots = 2 * (2048 + 16 * 16);

// How much of `s` fits in a name field of `size` bytes (NUL included) without splitting a
// UTF-8 sequence: the cut backs off over continuation bytes (10xxxxxx).
std::size_t name_prefix(std::string_view s, std::size_t size) {
  std::size_t n = std::min(s.size(), size - 1);
  if (n < s.size())
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

// Names are for display: a long one is cut rather than refused, and a shorter one clears
// what a longer one before it left.
void write_name(char (&field)[control_header::unit_name_size], std::string_view name) {
  std::memset(field, 0, sizeof field);
  std::memcpy(field, name.data(), name_prefix(name, sizeof field));
}

void write_names(control_header& h, std::span<const std::string> units, std::span<const std::string> stages) {
  for (std::size_t i = 0; i < control_header::max_units; ++i) write_name(h.unit_names[i], i < units.size() ? units[i] : "");
  for (std::size_t i = 0; i < max_stages; ++i) write_name(h.stage_names[i], i < stages.size() ? stages[i] : "");
  h.unit_count.store(static_cast<std::uint32_t>(units.size()), std::memory_order_relaxed);
}

[[noreturn]] void fail(std::string_view name, std::string_view reason) {
  std::string message{"control block "};
  message.append(name).append(": ").append(reason);
  throw control_block_error(message);
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

}  // namespace

// ---------------------------------------------------------------------------------------------
// control_segment
// ---------------------------------------------------------------------------------------------

control_segment control_segment::create(std::string_view pool, pid_t master_pid,
                                        std::uint32_t slot_count,
                                        std::span<const std::string> unit_names,
                                        std::span<const std::string> stage_names) {
  check_pool_name(pool);
  std::string name = segment_name(pool, master_pid);
  if (slot_count > max_slots) fail(name, "too many slots: " + std::to_string(slot_count));
  if (unit_names.size() > control_header::max_units) {
    fail(name, "too many units: " + std::to_string(unit_names.size()) + " > " +
                   std::to_string(control_header::max_units));
  }
  if (stage_names.size() > max_stages)
    fail(name, "too many stages: " + std::to_string(stage_names.size()) + " > " + std::to_string(max_stages));

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
  header->master_pid.store(master_pid, r);
  header->master_state.store(master_state::starting, r);
  write_names(*header, unit_names, stage_names);
  // Last, with release: whoever sees the magic sees a fully initialised header.
  header->magic.store(control_block_magic, std::memory_order_release);

  segment.header_ = header;
  segment.slots_ = slots;
  segment.slot_count_ = slot_count;
  return segment;
}

control_segment::control_segment(std::string name, int fd) noexcept
    : name_(std::move(name)), fd_(fd) {}

control_segment control_segment::attach(std::string_view pool, pid_t master_pid, access mode, uid_t owner) {
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
  segment.map_and_validate(mode, owner);
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
  segment.map_and_validate(mode, std::nullopt);
  return segment;
}

void control_segment::map_and_validate(access mode, std::optional<uid_t> owner) {
  struct stat st{};
  if (::fstat(fd_, &st) != 0) fail(name_, "fstat: " + errno_text(errno));
  // Another user's segment could steer us to signal arbitrary pids.
  if (owner && st.st_uid != *owner) {
    fail(name_, "owned by uid " + std::to_string(st.st_uid) + ", not " + std::to_string(*owner));
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

void control_segment::rename(std::span<const std::string> unit_names, std::span<const std::string> stage_names) {
  if (unit_names.size() > control_header::max_units || stage_names.size() > max_stages)
    fail(name_, "too many unit or stage names to rename");
  write_names(header(), unit_names, stage_names);
}

worker_slot& control_segment::slot(std::uint32_t i) {
  if (i >= slot_count_) throw std::out_of_range("control block " + name_ + ": slot out of range");
  return slots_[i];
}

const worker_slot& control_segment::slot(std::uint32_t i) const {
  if (i >= slot_count_) throw std::out_of_range("control block " + name_ + ": slot out of range");
  return slots_[i];
}

}  // namespace systempp
