#pragma once
/// The Prometheus text exposition of a pool, rendered from plain data: no I/O, no clock,
/// so a test feeds it numbers and reads the text (tests/unit/metrics_text_test.cpp).

#include <string>
#include <vector>

#include "systempp/control_block.hpp"
#include "systempp/lifecycle.hpp"

namespace systempp::master {

/// One of the master's own stage runs (the last run of each unit and stage counts).
struct master_stage_time {
  std::size_t unit_index = 0;  ///< declaration order, which the text keeps
  std::string unit;
  stage which = stage::on_init;
  double seconds = 0;
  std::string stage_name;  ///< of `which` (built-in, hook or custom)
};

/// What the text is made of. Live workers are the ones the master has not reaped yet; a
/// reaped worker's counters are already folded into the header, so totals never go back.
struct metrics_input {
  const control_header* header = nullptr;
  std::vector<slot_snapshot> live;
  std::vector<master_stage_time> master_stages;  ///< in run order
  const detail::metric_registry* app = nullptr;   ///< the app's own metrics, if any
};

/// The /metrics body. Any process.
std::string render_metrics(const metrics_input& in);

class worker_table;
/// The /metrics body of this master: its block, its live workers, its own stage runs.
/// Master only, on its loop.
std::string render_metrics(const control_segment& segment, const worker_table& table, const lifecycle& lc,
                           const detail::metric_registry& app);

}  // namespace systempp::master
