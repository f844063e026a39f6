#pragma once
/// `app status | reload | stop | scale`: the operator's side. It finds a running pool by
/// name or pidfile, reads its control block (read-only, validated) and signals its master.

#include "systempp/options.hpp"

namespace systempp::master {

/// Runs a control sub-command; returns the exit code (1: no such pool, or the action
/// failed). Never signals a process that is not the verified master of a pool we own.
int run_control(const control_command& cmd);

}  // namespace systempp::master
