#include "systempp/master/metrics_text.hpp"

#include "systempp/master/app_metrics.hpp"
#include "systempp/master/worker_table.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <utility>

namespace systempp::master {

namespace {

struct exposition {
  std::string out;
  void family(const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  template <class... Args>
  void line(fmt::format_string<Args...> f, Args&&... args) {
    out += fmt::format(f, std::forward<Args>(args)...);
    out += '\n';
  }
};

void render_counters(const metrics_input& in, exposition& e) {
  const control_header& h = *in.header;
  std::uint64_t requests = h.requests_total.load();
  std::uint64_t errors = h.errors_total.load();
  std::uint64_t in_flight = 0;
  std::uint64_t rss = 0, rss_max = 0;
  int unhealthy = 0;
  std::map<worker_state, int> by_state;
  std::map<std::pair<std::string_view, worker_state>, int> dedicated;  // by unit and state
  for (const auto& snap : in.live) {
    requests += snap.requests;
    errors += snap.errors;
    in_flight += snap.in_flight;
    rss += snap.rss_bytes;
    rss_max = std::max(rss_max, snap.rss_bytes);
    if (snap.unhealthy_unit != no_unit) ++unhealthy;
    if (snap.role == no_unit)
      ++by_state[snap.state];
    else
      ++dedicated[{unit_name(h, snap.role), snap.state}];
  }
  e.family("systempp_workers", "gauge", "Serving worker processes by state.");
  for (auto st : {worker_state::spawned, worker_state::starting, worker_state::ready, worker_state::draining})
    e.line("systempp_workers{{state=\"{}\"}} {}", to_string(st), by_state[st]);
  e.family("systempp_dedicated_processes", "gauge", "Processes of dedicated units (runs_in) by unit and state.");
  for (const auto& [key, n] : dedicated)
    e.line("systempp_dedicated_processes{{unit=\"{}\",state=\"{}\"}} {}", escape_label_value(key.first),
           to_string(key.second), n);
  e.family("systempp_unhealthy_workers", "gauge", "Live workers (and dedicated processes) with a unit reporting itself unhealthy.");
  e.line("systempp_unhealthy_workers {}", unhealthy);
  e.family("systempp_target_workers", "gauge", "Workers the pool is sized for.");
  e.line("systempp_target_workers {}", h.target_workers.load());
  e.family("systempp_pool_generation", "gauge", "Generation of the newest workers.");
  e.line("systempp_pool_generation {}", h.pool_generation.load());
  e.family("systempp_requests_total", "counter", "Requests served, dead workers included.");
  e.line("systempp_requests_total {}", requests);
  e.family("systempp_errors_total", "counter", "Requests that failed (5xx), dead workers included.");
  e.line("systempp_errors_total {}", errors);
  e.family("systempp_in_flight_requests", "gauge", "Requests being served now.");
  e.line("systempp_in_flight_requests {}", in_flight);
  e.family("systempp_worker_resident_memory_bytes", "gauge", "Resident memory of the live workers together, at their last heartbeat.");
  e.line("systempp_worker_resident_memory_bytes {}", rss);
  e.family("systempp_worker_resident_memory_max_bytes", "gauge", "Resident memory of the largest live worker (what --max-rss compares).");
  e.line("systempp_worker_resident_memory_max_bytes {}", rss_max);
  e.family("systempp_worker_restarts_total", "counter", "Workers replaced, by reason.");
  for (std::size_t r = 0; r < restart_reason_count; ++r)
    e.line("systempp_worker_restarts_total{{reason=\"{}\"}} {}", to_string(static_cast<restart_reason>(r)),
           h.restarts[r].load());
}

void render_reloads(const control_header& h, exposition& e) {
  e.family("systempp_reloads_total", "counter", "Reloads started (SIGHUP, upgrades).");
  e.line("systempp_reloads_total {}", h.reload_seq.load());
  e.family("systempp_reload_last_outcome", "gauge", "1 for the outcome of the last reload.");
  const auto outcome = h.reload_outcome.load();
  for (auto o : {reload_outcome::in_progress, reload_outcome::succeeded, reload_outcome::failed, reload_outcome::rejected})
    e.line("systempp_reload_last_outcome{{outcome=\"{}\"}} {}", to_string(o), o == outcome ? 1 : 0);
  e.family("systempp_reload_last_duration_seconds", "gauge", "Duration of the last reload.");
  e.line("systempp_reload_last_duration_seconds {:.3f}", h.reload_duration_ms.load() / 1000.0);
}

void render_stages(const metrics_input& in, exposition& e) {
  const control_header& h = *in.header;
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint32_t> slowest;
  const std::uint32_t units = std::min<std::uint32_t>(h.unit_count.load(), worker_slot::max_units);
  for (const auto& snap : in.live)
    for (std::uint32_t u = 0; u < units; ++u)
      for (std::uint32_t st = 0; st < max_stages; ++st)
        if (snap.stage_us[u][st] && !stage_name(h, st).empty()) slowest[{u, st}] = std::max(slowest[{u, st}], snap.stage_us[u][st]);
  e.family("systempp_stage_duration_seconds", "gauge", "Slowest run of a unit's stage among live workers.");
  for (const auto& [key, us] : slowest)
    e.line("systempp_stage_duration_seconds{{unit=\"{}\",stage=\"{}\"}} {:.6f}",
           escape_label_value(unit_name(h, key.first)), escape_label_value(stage_name(h, key.second)), us / 1e6);
  e.family("systempp_master_stage_duration_seconds", "gauge", "The master's own stages (last run).");
  std::map<std::pair<std::size_t, stage>, const master_stage_time*> last;  // in declaration order
  for (const auto& run : in.master_stages) last[{run.unit_index, run.which}] = &run;
  for (const auto& [key, run] : last)
    e.line("systempp_master_stage_duration_seconds{{unit=\"{}\",stage=\"{}\"}} {:.6f}", escape_label_value(run->unit),
           escape_label_value(run->stage_name), run->seconds);
}

}  // namespace

std::string render_metrics(const metrics_input& in) {
  exposition e;
  render_counters(in, e);
  render_reloads(*in.header, e);
  render_stages(in, e);
  if (in.app) render_app_metrics(*in.header, in.live, *in.app, e.out);
  return std::move(e.out);
}

std::string render_metrics(const control_segment& segment, const worker_table& table, const lifecycle& lc,
                           const detail::metric_registry& app) {
  metrics_input in{&segment.header(), {}, {}, &app};
  for (const auto& [pid, w] : table.workers()) in.live.push_back(read_slot(segment.record(w.slot, w.lane)));
  for (const auto& rec : lc.records())
    in.master_stages.push_back({rec.unit, lc.unit_name(rec.unit), rec.which, rec.duration.count() / 1e6,
                                std::string(lc.stage_name(rec.which))});
  return render_metrics(in);
}

}  // namespace systempp::master
