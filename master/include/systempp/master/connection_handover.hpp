#pragma once
/// --accept reuseport: connections that wait in the queue of a slot no READY, beating
/// worker serves (a slot a scale-down removed, a worker that stopped beating, or died and
/// is not back yet) are accepted by the master and handed to a serving worker over its
/// channel, the socket attached (SCM_RIGHTS). Steering keeps new connections off such a
/// slot; this takes what was already queued there, or came in flight (a handshake that
/// completed after the steering changed, a client slow to send with TCP_DEFER_ACCEPT).
/// docs/ARCHITECTURE.md, "How workers share a listener". Master only, on its loop.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "systempp/fd.hpp"
#include "systempp/listeners.hpp"
#include "systempp/master/slot_sockets.hpp"
#include "systempp/master/supervisor_policy.hpp"
#include "systempp/master/worker_table.hpp"

namespace spdlog {
class logger;
}

namespace systempp::master {

class connection_handover {
 public:
  connection_handover(boost::asio::io_context& io, worker_table& table, const slot_sockets& slots,
                      const std::vector<listener>& listeners, const std::shared_ptr<spdlog::logger>& log)
      : table_(table), slots_(slots), listeners_(listeners), log_(log), retry_(io) {}
  ~connection_handover() { stop(); }
  connection_handover(const connection_handover&) = delete;
  connection_handover& operator=(const connection_handover&) = delete;

  /// `serving`: the slots new connections are steered to, in slot order, each with its
  /// process. The sockets of every other slot are watched, and what they queue goes to
  /// `serving` in turn. Empty: nothing is watched (there is nobody to hand to; what waits
  /// stays queued in the kernel). Throws std::system_error.
  void update(const std::vector<serving_process>& serving);
  /// Watches nothing any more (the pool stops: its sockets are about to close); a
  /// connection accepted and not yet handed over is closed.
  void stop() noexcept;

 private:
  /// Takes at most a batch of what `fd` queues (the loop comes back while more waits).
  void take_queued(std::size_t listener, int slot, int fd);
  /// Hands `held_` to a serving worker; false when none took it.
  bool pass_on();
  /// Stops watching for a while (no worker took a connection, or accept failed for want
  /// of resources), then tries again: the sockets are level-triggered, so a watch that
  /// cannot make progress would spin the loop.
  void pause(std::string why);
  void watch_unserved();

  worker_table& table_;
  const slot_sockets& slots_;
  const std::vector<listener>& listeners_;
  /// The master's logger, which SIGUSR1 replaces: held by the owner's pointer, never by
  /// the object.
  const std::shared_ptr<spdlog::logger>& log_;
  boost::asio::steady_timer retry_;
  bool paused_ = false;
  std::vector<serving_process> serving_;  ///< in slot order (steerable gives them so)
  std::vector<int> unserved_;             ///< the slots whose sockets are to be watched
  std::map<int, std::pair<std::size_t, int>> watched_;  ///< fd -> (listener, slot)
  struct held_connection {
    unique_fd fd;
    std::size_t listener = 0;
  };
  std::optional<held_connection> held_;  ///< accepted, not yet taken by a worker
  std::size_t next_ = 0;  ///< the serving process the next connection goes to
};

}  // namespace systempp::master
