#pragma once
/// Loggers: one named logger per role ("master", "worker[3] g2", "inline", "script"), the
/// pid in every line. Synchronous sinks only, so nothing runs on a thread across a fork.

#include <memory>
#include <string>

#include "systempp/options.hpp"

namespace spdlog {
class logger;
}

namespace systempp {

/// Builds a fresh logger (new sinks) from the options. Call again in a child after fork:
/// the sinks are rebuilt rather than shared. Throws config_error for a bad --log-level or an
/// unwritable --log-file. Any process; called again on SIGUSR1 to reopen --log-file.
/// `or_stderr`: an unwritable --log-file is not an error; the logger writes to stderr and
/// its first line says why (a master that must keep a pool it was handed back).
std::shared_ptr<spdlog::logger> make_logger(const std::string& name, const options& opts, bool or_stderr = false);

}  // namespace systempp
