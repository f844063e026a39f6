#pragma once
/// Where a reload's start and end are written: the control block's header (for `app status`
/// and `app reload --wait`), the master's log and systemd. One place for each, whether the
/// reload came from SIGHUP, `app reload` or a master upgrade. Master only.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "systempp/control_block.hpp"
#include "systempp/master/supervisor_policy.hpp"
#include "systempp/master/systemd.hpp"

namespace spdlog {
class logger;
}

namespace systempp::master {

class reload_report {
 public:
  reload_report(control_header& header, systemd_notifier& notify, const std::shared_ptr<spdlog::logger>& log) noexcept
      : header_(header), notify_(notify), log_(log) {}

  /// A reload begins: counted, timed, in progress, the master "reloading".
  void begun();
  /// The rollout to `generation` starts (after on_reload, or after an upgrade).
  void rolling(std::string_view why, std::uint32_t generation, int workers);
  /// The reload ended. `stopping`: the pool is being stopped, systemd is not told READY.
  void ended(const reload_done_action& done, bool stopping);
  /// A reload that ended as it began, without a rollout: an upgrade refused, or handed back.
  void ended_at_once(reload_result result, const std::string& message) {
    begun();
    ended({result, message}, false);
  }

 private:
  control_header& header_;
  systemd_notifier& notify_;
  const std::shared_ptr<spdlog::logger>& log_;
};

}  // namespace systempp::master
