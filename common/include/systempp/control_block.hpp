#pragma once
/// The control block's segment: create, attach, validate, remove. The layout is in
/// control_layout.hpp, the fields' readers and writers in control_fields.hpp; this header
/// brings both.

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include <boost/interprocess/mapped_region.hpp>

#include "systempp/control_fields.hpp"
#include "systempp/control_layout.hpp"
#include "systempp/pool_registry.hpp"

namespace systempp {

// ---------------------------------------------------------------------------------------------
// The segment
// ---------------------------------------------------------------------------------------------

/// A control block that cannot be created or attached, or fails validation. The message is
/// one line: "control block systempp.web.123: wrong magic".
class control_block_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Pool names end up in file names: [A-Za-z0-9_-], 1..64 characters. Runs anywhere.
bool valid_pool_name(std::string_view pool) noexcept;
/// Throws control_block_error naming `pool` unless valid_pool_name(pool). Runs anywhere.
void check_pool_name(std::string_view pool);

/// "systempp.<pool>.<pid>": the shared-memory object name (Linux shows it as
/// /dev/shm/systempp.<pool>.<pid>). Does not validate the pool name. Runs anywhere.
std::string segment_name(std::string_view pool, pid_t master_pid);

/// How to map the block: `app status` and `app reload` map it read_only; the master, its
/// workers and `app scale` (which writes scale_request) map it read_write.
enum class access { read_only, read_write };

/// Lanes per logical slot: a slot holds at most two processes at once (the serving one and
/// its replacement, or the one draining after a switch), each with its own record.
inline constexpr int lanes_per_slot = 2;

/// The record of logical slot `slot`, lane `lane` (0 or 1): the one place that knows the
/// layout of records. Any process.
constexpr std::uint32_t record_index(int slot, int lane) noexcept {
  return static_cast<std::uint32_t>(slot * lanes_per_slot + lane);
}
/// The logical slot and the lane of record `index`: the inverse of record_index. Any process.
constexpr int slot_of_record(std::uint32_t index) noexcept { return static_cast<int>(index) / lanes_per_slot; }
constexpr int lane_of_record(std::uint32_t index) noexcept { return static_cast<int>(index) % lanes_per_slot; }

/// Owns a mapping of the control block and the shm fd behind it. Move-only. The creator
/// also owns the segment's name and removes it on destruction, unless disowned.
class control_segment {
 public:
  /// Master only. Creates "systempp.<pool>.<master_pid>" (fails if it exists), mode 0600,
  /// sized for `slot_count` slots, every slot FREE, unit and stage names (lifecycle::
  /// stage_names) filled in. Throws control_block_error.
  static control_segment create(std::string_view pool, pid_t master_pid,
                                std::uint32_t slot_count,
                                std::span<const std::string> unit_names,
                                std::span<const std::string> stage_names = {});

  /// Workers and `app status`. Opens an existing segment and validates it (that `owner`
  /// owns it, size, magic, layout version, sizes). Throws control_block_error on any mismatch.
  static control_segment attach(std::string_view pool, pid_t master_pid, access mode, uid_t owner = ::geteuid());

  /// Exec-mode workers and an upgraded master: attaches the segment behind an inherited fd,
  /// with the same validation as attach but the owner's (the parent gave it). The caller
  /// keeps ownership of `fd`; the segment works on its own close-on-exec duplicate.
  static control_segment attach_fd(int fd, access mode);

  /// Moves the mapping, the fd and the ownership of the name; `other` is left empty.
  control_segment(control_segment&& other) noexcept;
  /// Closes (and, if owner, removes) this segment, then takes `other`'s.
  control_segment& operator=(control_segment&& other) noexcept;
  control_segment(const control_segment&) = delete;
  control_segment& operator=(const control_segment&) = delete;
  /// Unmaps and closes; removes the name if this object owns it and this is the process
  /// that created (or adopted) it, so a forked child's copy never removes the master's
  /// segment even if the child forgets disown().
  ~control_segment();

  /// Keep the mapping but never remove the segment: for a forked child holding the
  /// master's object.
  void disown() noexcept { owner_ = false; }
  /// Become the owner that removes the segment on destruction: for a master that
  /// re-executed itself and attached the block by fd. Master only.
  void adopt() noexcept;
  /// Master upgrade: the unit and stage names of the image taking the pool over, written
  /// over the previous image's (its units or custom stages may differ). Readers may see a
  /// name half rewritten for an instant: names are for display. Master only; throws
  /// control_block_error for more names than the block holds.
  void rename(std::span<const std::string> unit_names, std::span<const std::string> stage_names);
  /// True when destroying this object removes the segment's name.
  bool owns_segment() const noexcept { return owner_; }

  /// Writing through these in a read_only segment faults: the mapping is read-only.
  /// Any process that attached; who may write which field is noted next to the field.
  control_header& header() noexcept { return *header_; }
  const control_header& header() const noexcept { return *header_; }
  /// Record i (see record_index). Throws std::out_of_range for i >= slot_count(). Any
  /// process that attached.
  worker_slot& slot(std::uint32_t i);
  const worker_slot& slot(std::uint32_t i) const;
  /// The record of logical slot `slot`, lane `lane`. Throws like slot(i).
  worker_slot& record(int slot, int lane) { return this->slot(record_index(slot, lane)); }
  const worker_slot& record(int slot, int lane) const { return this->slot(record_index(slot, lane)); }
  /// Every record, FREE ones included. Any process that attached.
  std::span<worker_slot> slots() noexcept { return {slots_, slot_count_}; }
  std::span<const worker_slot> slots() const noexcept { return {slots_, slot_count_}; }
  /// Validated at attach and cached: the header's copy is not trusted again after that.
  std::uint32_t slot_count() const noexcept { return slot_count_; }
  /// "systempp.<pool>.<pid>" (for attach_fd: as the kernel names the fd, else "fd <n>").
  const std::string& name() const noexcept { return name_; }
  /// The shm fd, open (close-on-exec) as long as this object lives; pass it to exec'd
  /// children by dup2.
  int fd() const noexcept { return fd_; }

 private:
  /// Takes ownership of `fd`; maps nothing yet.
  control_segment(std::string name, int fd) noexcept;
  void map_and_validate(access mode, std::optional<uid_t> owner);
  void close() noexcept;

  std::string name_;
  int fd_ = -1;
  boost::interprocess::mapped_region region_;
  control_header* header_ = nullptr;
  worker_slot* slots_ = nullptr;
  std::uint32_t slot_count_ = 0;
  bool owner_ = false;
  pid_t owner_pid_ = 0;  ///< the process allowed to remove the name
};

}  // namespace systempp
