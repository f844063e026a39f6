#pragma once
// The [systempp] table of a configuration file, as options of the command-line parser
// (options.cpp builds the parser; this file feeds it the file's values). Launching
// process, and the reload's check of a file read again.

#include <CLI/CLI.hpp>

#include <map>
#include <span>
#include <string_view>
#include <string>
#include <vector>

#include "systempp/config.hpp"
#include "systempp/options.hpp"

namespace systempp::detail {

/// The keys the file set, each with its line.
using file_keys = std::map<std::string, std::size_t>;

/// Gives the options of `cli` that the command line did not set the values of the file's
/// [systempp] table, through the options' own checks. A key in `skipped` is ignored (a
/// script skips the pool's options, which the service's file holds too). Throws
/// config_error "FILE:LINE:systempp.KEY: ..." for an unknown key, a wrong type or a value
/// the option refuses. Returns the keys it took.
file_keys apply_runtime_table(CLI::App& cli, const config_document& doc,
                              const std::vector<std::string>& skipped);

/// Adds the options the units declared (command_line.hpp) to `cli`, each under its unit's
/// group; throws CLI::OptionAlreadyAdded for a flag the runtime or another unit has.
void add_unit_options(CLI::App& cli, std::span<const option_spec> options);
/// The --help group of a unit's options: "Options of unit NAME".
std::string unit_group(std::string_view unit);

/// Every option a file may set, with its value and origin, for --print-config.
std::vector<setting_row> setting_rows(const CLI::App& cli, const options& opts, const std::string& path,
                                      const file_keys& from_file);

}  // namespace systempp::detail
