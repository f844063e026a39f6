#pragma once
/// The configuration file between the command line and the units: checked against the
/// units' sections at start and at each reload, printed by --print-config. Runtime only.

#include <memory>
#include <string>
#include <vector>

#include "systempp/app.hpp"
#include "systempp/config.hpp"
#include "systempp/options.hpp"

namespace systempp::detail {

/// The sections the app's units declare, in start order. Any process.
std::vector<section_spec> sections_of(const app_units& app);

/// Checks what the app declares before anything runs: its metrics (metric_registry's error)
/// and the file the command line read (opts.file) against the units' sections, which it
/// then makes the app's; with --print-config, prints the merged configuration to stdout.
/// Returns the exit code to stop with (0 after printing; 2, after one line on stderr, for a
/// bad metric or a file the units refuse), or nullopt to go on. Launching process (and an exec'd image).
std::optional<int> install_config(const options& opts, app_units& app, unknown_tables unknown);

/// The file read again and checked (its [systempp] table and every section), for a
/// reload; throws config_error. A [systempp] table that differs from the one at start is
/// logged by the caller: runtime options change at the next start or upgrade. Master and
/// inline process.
std::shared_ptr<const config_document> reread_config(const options& opts, const app_units& app);

/// The merged configuration as TOML with each value's origin in a comment. Any process.
std::string describe_config(const options& opts, const app_units& app);

}  // namespace systempp::detail
