// The Prometheus text, rendered from plain data: a header and live-worker snapshots in,
// exposition lines out.

#include <catch2/catch.hpp>

#include <unistd.h>

#include <string>
#include <vector>

#include <systempp/control_block.hpp>
#include <systempp/master/metrics_text.hpp>

namespace {

using namespace systempp;
using namespace systempp::master;

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

}  // namespace

TEST_CASE("metrics add live workers to the folded totals and count workers by state", "[metrics]") {
  std::vector<std::string> stages;
  for (std::size_t i = 0; i < systempp::first_custom_stage; ++i) stages.emplace_back(to_string(static_cast<stage>(i)));
  stages.emplace_back("warmup");  // the app's first custom stage
  auto seg = control_segment::create("mttest_" + std::to_string(::getpid()), ::getpid(), 4,
                                     std::vector<std::string>{"settings", "http"}, stages);
  control_header& h = seg.header();
  h.requests_total.store(100);  // folded in from workers already reaped
  h.errors_total.store(3);
  h.target_workers.store(2);
  h.pool_generation.store(5);
  h.reload_seq.store(4);
  h.reload_outcome.store(reload_outcome::failed);
  h.reload_duration_ms.store(1500);
  h.restarts[static_cast<std::size_t>(restart_reason::timeout_ready)].store(2);

  metrics_input in{&h, {}, {}};
  slot_snapshot a{};
  a.state = worker_state::ready;
  a.requests = 10;
  a.errors = 1;
  a.in_flight = 2;
  a.stage_us[1][static_cast<std::size_t>(stage::on_startup)] = 250'000;
  slot_snapshot b = a;
  b.state = worker_state::draining;
  b.stage_us[1][static_cast<std::size_t>(stage::on_startup)] = 500'000;
  b.stage_us[1][systempp::first_custom_stage] = 125'000;
  in.live = {a, b};
  in.master_stages = {{0, "settings", stage::on_init, 0.5, "on_init"},
                      {0, "settings", stage::on_init, 0.25, "on_init"},
                      {1, "http", stage::on_init, 0.125, "on_init"}};

  const std::string text = render_metrics(in);
  CHECK(has_line(text, "# TYPE systempp_requests_total counter"));
  CHECK(has_line(text, "systempp_requests_total 120"));
  CHECK(has_line(text, "systempp_errors_total 5"));
  CHECK(has_line(text, "systempp_in_flight_requests 4"));
  CHECK(has_line(text, "systempp_workers{state=\"ready\"} 1"));
  CHECK(has_line(text, "systempp_workers{state=\"draining\"} 1"));
  CHECK(has_line(text, "systempp_workers{state=\"starting\"} 0"));
  CHECK(has_line(text, "systempp_target_workers 2"));
  CHECK(has_line(text, "systempp_pool_generation 5"));
  CHECK(has_line(text, "systempp_worker_restarts_total{reason=\"timeout_ready\"} 2"));
  CHECK(has_line(text, "systempp_reloads_total 4"));
  CHECK(has_line(text, "systempp_reload_last_outcome{outcome=\"failed\"} 1"));
  CHECK(has_line(text, "systempp_reload_last_outcome{outcome=\"succeeded\"} 0"));
  CHECK(has_line(text, "systempp_reload_last_duration_seconds 1.500"));
  // The slowest live run of a stage, and the master's last run of each of its own.
  CHECK(has_line(text, "systempp_stage_duration_seconds{unit=\"http\",stage=\"on_startup\"} 0.500000"));
  CHECK(has_line(text, "systempp_stage_duration_seconds{unit=\"http\",stage=\"warmup\"} 0.125000"));
  CHECK(has_line(text, "systempp_master_stage_duration_seconds{unit=\"settings\",stage=\"on_init\"} 0.250000"));
  CHECK(text.find("unit=\"settings\",stage=\"on_init\"} 0.500000") == std::string::npos);
  CHECK(text.find("systempp_master_stage_duration_seconds{unit=\"settings\"") <
        text.find("systempp_master_stage_duration_seconds{unit=\"http\""));
}
