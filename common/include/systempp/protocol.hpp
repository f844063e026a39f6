#pragma once
/// The one version number of everything one image of the runtime hands another:
/// - the master upgrade's handover (SYSTEMPP_UPGRADE, master/upgrade.hpp),
/// - exec mode's variables and fd layout (SYSTEMPP_WORKER, SYSTEMPP_LISTENERS, fds 3..,
///   worker/exec_layout.hpp),
/// - the control block's layout (control_block.hpp),
/// - the messages on a worker's channel (worker_runtime.hpp: msg_*).
/// Two binaries may hand each other a running pool only when their numbers are equal. A
/// master asks a new binary for its number (`app --upgrade-version`) before it execs it,
/// and both readers check the number they are handed (SYSTEMPP_PROTOCOL for exec-mode
/// workers, `protocol=` in the upgrade handover) before they use anything else.

#include <cstdint>

#include "systempp/control_block.hpp"

namespace systempp {

/// Bump when any of the above changes in a way the other side would misread.
/// 2: a worker's reload and stop requests on its channel (context::request_reload).
/// 3: block layout 3 (hooks and custom stages: stage names, stage_us per stage id).
/// 4: block layout 4 (app metrics and health).
/// 5: the handover's slot sockets ("s" listeners, --accept reuseport).
/// 6: msg_connection on a worker's channel (a connection handed over, SCM_RIGHTS).
/// 7: block layout 5 (resident memory, restarts for memory) and msg_recycle_memory.
inline constexpr std::uint32_t protocol_version = 7;

/// The environment variable carrying the writer's protocol_version to an exec-mode worker.
inline constexpr const char* protocol_env = "SYSTEMPP_PROTOCOL";

/// What `app --upgrade-version` prints (one line, then exit 0): "systempp-protocol 1".
inline constexpr const char* protocol_banner = "systempp-protocol";

// A new block layout is a new protocol: bump both numbers together, then this check.
static_assert(control_block_layout_version == 5 && protocol_version == 7,
              "the control block layout changed: bump protocol_version and update this check");

}  // namespace systempp
