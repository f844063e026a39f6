#pragma once
// The options about the pool's processes themselves rather than what they serve: whom they
// run as, which CPU, when one is recycled for its memory, what a development pool watches.
// Part of the command-line parser (options.cpp). Launching process.

#include <CLI/CLI.hpp>

#include "systempp/options.hpp"

namespace systempp::detail {

/// Adds --user, --allow-root, --drop-master, --max-rss and --cpu-affinity to `cli`, their values
/// checked (and --user looked up) as they are parsed.
void add_process_options(CLI::App& cli, options& opts);

}  // namespace systempp::detail
