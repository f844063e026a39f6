#pragma once
/// What a forked child of the master runs: a fresh image of the binary (exec mode) or the
/// worker cycle in this image (fork mode). Master, in the forked child only.

#include <signal.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "systempp/app.hpp"
#include "systempp/control_block.hpp"
#include "systempp/fd.hpp"
#include "systempp/listeners.hpp"
#include "systempp/master/slot_sockets.hpp"
#include "systempp/master/supervisor_policy.hpp"
#include "systempp/options.hpp"

namespace systempp::master {

/// What every child of this master shares.
struct worker_launch {
  const options* opts = nullptr;
  detail::app_units* units = nullptr;
  const std::vector<listener>* listeners = nullptr;
  const slot_sockets* slots = nullptr;  ///< --accept reuseport: each slot's own sockets
  int control_fd = -1;      ///< the control block, handed to an exec'd image
  std::string exec_path;    ///< the binary as resolved at start (exec mode)
  pid_t master_pid = 0;     ///< taken before fork: getppid() in the child may already be 1
};

/// Runs the worker placed at `a` with its `record` and `channel`; returns its exit code.
int run_worker_child(const worker_launch& w, const spawn_action& a, worker_slot& record, unique_fd channel,
                     const sigset_t& mask);

}  // namespace systempp::master
