#pragma once
/// --accept reuseport: a listening socket per serving slot and listener, each in the
/// listener's SO_REUSEPORT group, made and held by the master (docs/ARCHITECTURE.md,
/// "Accepting connections"). Slot 0's socket is the listener itself; slot k's socket is
/// the group's k-th member, so a classic BPF program on the group can steer each new
/// connection to a serving slot with one division. The master never closes a slot's
/// socket while the pool runs: a reload, a crash or a recycle of its worker leaves the
/// connections queued there for the next worker of the slot. `listeners` is always the
/// pool's (pool_setup::listeners). Master only, on its loop; for_slot also in a forked child.

#include <vector>

#include "systempp/fd.hpp"
#include "systempp/listeners.hpp"

namespace spdlog {
class logger;
}

namespace systempp::master {

class slot_sockets {
 public:
  /// Takes part for `listeners` when each can share its port (bound with SO_REUSEPORT;
  /// systemd's sockets need ReusePort=yes). Otherwise logs why and stays off: every
  /// worker then accepts on the listener itself, as with --accept shared.
  void enable(const std::vector<listener>& listeners, spdlog::logger& log);
  /// Adopts the sockets of slots 1, 2, ... of listener `index`, handed over in slot order by
  /// the previous master image (upgrade).
  void adopt(std::size_t index, std::vector<unique_fd> sockets);
  bool enabled() const noexcept { return enabled_; }

  /// Makes the sockets of slots below `slots` that do not exist yet (in slot order: the
  /// order they join the group is their index in it). Throws std::system_error.
  void grow(const std::vector<listener>& listeners, int slots);
  /// New connections go to `slots` only (ascending serving slots, not empty), each to one
  /// of them at random: one classic BPF program per listener's group, replacing the last.
  /// Called before a scale-down drains a slot (so its queue only shrinks), and whenever
  /// the READY and beating slots change (master_process::steer_connections). Makes the
  /// sockets up to the highest slot first. Throws std::system_error.
  void steer(const std::vector<listener>& listeners, const std::vector<int>& slots);
  const std::vector<int>& steered() const noexcept { return steered_; }
  /// Slots 0 .. slots-1.
  static std::vector<int> all_of(int slots);

  /// The listeners as the worker of `slot` sees them: the same names and addresses, its
  /// own socket (a close-on-exec duplicate the caller owns). A slot without sockets (a
  /// dedicated process) gets slot 0's. Any process, the forked child included.
  std::vector<listener> for_slot(const std::vector<listener>& listeners, int slot) const;
  /// How many slots of listener `index` have a socket (slot 0's is the listener).
  int count(std::size_t index) const noexcept {
    return enabled_ && index < extra_.size() ? static_cast<int>(extra_[index].size()) + 1 : 0;
  }
  /// Slot `slot`'s socket of listener `index` (slot < count(index)); the master keeps it.
  int socket_of(const std::vector<listener>& listeners, std::size_t index, int slot) const {
    return slot == 0 ? listeners[index].fd.get() : extra_[index][static_cast<std::size_t>(slot - 1)].get();
  }
  /// Slot k's socket of listener `index` (k >= 1), for the handover.
  const std::vector<unique_fd>& sockets_of(std::size_t index) const { return extra_[index]; }
  /// At a stop: steers every new connection to slot 0's socket (the listener), then shuts
  /// the slots' sockets down if `shut_down` (as retire_listeners does the listeners) and
  /// closes them.
  void retire(const std::vector<listener>& listeners, bool shut_down);
  /// Off, after a failure to set it up (logged by the caller): workers accept as with
  /// --accept shared.
  void disable() noexcept;
  /// In a forked child: closes its copies of every slot's socket (the worker keeps the
  /// duplicate for_slot made). The objects stay as they are; the child never destroys them.
  void close_copies() const;

 private:
  bool enabled_ = false;
  std::vector<std::vector<unique_fd>> extra_;  ///< [listener][slot - 1]
  std::vector<int> steered_;
};

}  // namespace systempp::master
