// The app's metrics on the master's side (app_metrics.hpp).

#include "systempp/master/app_metrics.hpp"

#include <fmt/format.h>

#include <cmath>
#include <map>

namespace systempp::master {

namespace {

// Whether value i of metric e accumulates (counts and sums do; a gauge does not).
bool kept(const detail::metric_registry::entry& e) { return e.m->type() != metric_type::gauge; }

// A histogram's last value is its sum, a double; every other kept value is a count.
bool is_sum(const detail::metric_registry::entry& e, std::size_t i) {
  return e.m->type() == metric_type::histogram && i + 1 == e.m->values();
}

std::string escape_help(std::string_view v) {
  std::string out;
  for (char c : v) out += c == '\\' ? "\\\\" : c == '\n' ? "\\n" : std::string(1, c);
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

// {a="x",b="y"} with `extra` (le="0.1") last; "" without labels.
std::string label_set(const std::vector<metric_label>& labels, std::string_view extra = {}) {
  std::string out;
  for (const auto& [name, value] : labels)
    out += fmt::format("{}{}=\"{}\"", out.empty() ? "" : ",", name, escape_label_value(value));
  if (!extra.empty()) out += (out.empty() ? "" : ",") + std::string(extra);
  return out.empty() ? out : "{" + out + "}";
}

// Value i of entry e for the pool: the totals (kept values) plus the live workers'.
struct pool_values {
  const control_header& h;
  const std::vector<const slot_snapshot*>& live;
  std::uint64_t count(std::size_t index) const {
    std::uint64_t n = h.app_totals[index].load();
    for (const auto* s : live) n += s->app_values[index];
    return n;
  }
  double sum(std::size_t index, bool with_totals) const {
    double d = with_totals ? detail::from_bits(h.app_totals[index].load()) : 0.0;
    for (const auto* s : live) d += detail::from_bits(s->app_values[index]);
    return d;
  }
};

void render_one(const detail::metric_registry::entry& e, const pool_values& v, std::string& out) {
  const metric& m = *e.m;
  switch (m.type()) {
    case metric_type::counter:
      out += fmt::format("{}{} {}\n", m.name(), label_set(m.labels()), v.count(e.first));
      break;
    case metric_type::gauge:
      out += fmt::format("{}{} {}\n", m.name(), label_set(m.labels()), number(v.sum(e.first, false)));
      break;
    case metric_type::histogram: {
      const auto& bounds = static_cast<const histogram&>(m).bounds();
      std::uint64_t cumulative = 0;
      for (std::size_t b = 0; b <= bounds.size(); ++b) {
        cumulative += v.count(e.first + b);
        const auto le = fmt::format("le=\"{}\"", b < bounds.size() ? number(bounds[b]) : "+Inf");
        out += fmt::format("{}_bucket{} {}\n", m.name(), label_set(m.labels(), le), cumulative);
      }
      out += fmt::format("{}_sum{} {}\n", m.name(), label_set(m.labels()), number(v.sum(e.first + bounds.size() + 1, true)));
      out += fmt::format("{}_count{} {}\n", m.name(), label_set(m.labels()), cumulative);
      break;
    }
  }
}

}  // namespace

std::string escape_label_value(std::string_view v) {
  std::string out;
  for (char c : v) out += c == '\\' ? "\\\\" : c == '"' ? "\\\"" : c == '\n' ? "\\n" : std::string(1, c);
  return out;
}

void take_app_metrics(control_header& h, const detail::metric_registry& r) noexcept {
  if (h.app_metrics_digest.load() == r.digest) return;
  for (auto& total : h.app_totals) total.store(0);
  h.app_metrics_digest.store(r.digest);
}

void fold_app_metrics(control_header& h, const worker_slot& dead, const detail::metric_registry& r) noexcept {
  if (dead.metrics_digest.load() != r.digest || h.app_metrics_digest.load() != r.digest) return;
  for (const auto& e : r.entries) {
    if (!kept(e)) continue;
    for (std::size_t i = 0; i < e.m->values(); ++i) {
      const auto value = dead.app_values[e.first + i].load();
      if (is_sum(e, i))
        detail::add_double(h.app_totals[e.first + i], detail::from_bits(value));
      else
        h.app_totals[e.first + i].fetch_add(value);
    }
  }
}

void render_app_metrics(const control_header& h, const std::vector<slot_snapshot>& live,
                        const detail::metric_registry& r, std::string& out) {
  std::vector<const slot_snapshot*> same;
  for (const auto& s : live)
    if (s.metrics_digest == r.digest) same.push_back(&s);
  const pool_values values{h, same};
  // One HELP/TYPE per name, its series (one per label set) together, in registration order.
  std::map<std::string, std::vector<const detail::metric_registry::entry*>> families;
  std::vector<std::string> order;
  for (const auto& e : r.entries) {
    auto& f = families[e.m->name()];
    if (f.empty()) order.push_back(e.m->name());
    f.push_back(&e);
  }
  static constexpr const char* types[] = {"counter", "gauge", "histogram"};
  for (const auto& name : order) {
    const metric& first = *families[name].front()->m;
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape_help(first.help()), name,
                       types[static_cast<int>(first.type())]);
    for (const auto* e : families[name]) render_one(*e, values, out);
  }
}

}  // namespace systempp::master
