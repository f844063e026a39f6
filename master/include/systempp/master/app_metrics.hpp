#pragma once
/// The app's metrics (metrics.hpp) on the master's side: the pool's totals in the control
/// block, and their Prometheus text.

#include <string>
#include <string_view>
#include <vector>

#include "systempp/control_block.hpp"
#include "systempp/metrics.hpp"

namespace systempp::master {

/// Makes the block's totals this image's: kept when the block holds totals for the same
/// metrics (a restart of the same app, an upgrade that kept them), zeroed otherwise (a
/// scrape then sees counters reset, which Prometheus handles). Master only, before spawning.
void take_app_metrics(control_header& h, const detail::metric_registry& r) noexcept;

/// Folds a dead worker's counters and histograms into the totals, if it wrote this
/// image's metrics. Master only, when it reaps the worker.
void fold_app_metrics(control_header& h, const worker_slot& dead, const detail::metric_registry& r) noexcept;

/// Appends the app's metric families: totals plus the live workers that wrote the same
/// metrics. Any process (pure).
void render_app_metrics(const control_header& h, const std::vector<slot_snapshot>& live,
                        const detail::metric_registry& r, std::string& out);

/// A label value as the Prometheus text format writes it: backslash, double quote and
/// newline escaped. Any process.
std::string escape_label_value(std::string_view v);

}  // namespace systempp::master
