// The app's metrics (metrics.hpp, master/app_metrics.hpp): layout in a record, updates,
// the pool's totals across dead workers, and the Prometheus text.

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include <systempp/app_config.hpp>
#include <systempp/master/app_metrics.hpp>
#include <systempp/systempp.hpp>

using namespace systempp;

namespace {

struct kv {
  counter gets{"kv_requests_total", "Requests", {{"method", "GET"}}};
  counter puts{"kv_requests_total", "Requests", {{"method", "PUT"}}};
  gauge keys{"kv_keys", "Keys held"};
  histogram latency{"kv_request_seconds", "Latency", {0.01, 0.1, 1}};
  void add_metrics(metric_set& m) { m.add(gets, puts, keys, latency); }
};

/// A block's header and records on the heap (the real ones are in shared memory).
struct block {
  std::unique_ptr<control_header> header = std::make_unique<control_header>();
  std::vector<std::unique_ptr<worker_slot>> slots;
  worker_slot& add(const detail::metric_registry& r) {
    auto& s = *slots.emplace_back(std::make_unique<worker_slot>());
    r.bind(s.app_values);
    s.metrics_digest.store(r.digest);
    return s;
  }
  std::vector<slot_snapshot> live() const {
    std::vector<slot_snapshot> out;
    for (const auto& s : slots) out.push_back(read_slot(*s));
    return out;
  }
};

std::string render(const block& b, const detail::metric_registry& r) {
  std::string out;
  master::render_app_metrics(*b.header, b.live(), r, out);
  return out;
}

}  // namespace

TEST_CASE("an app's metrics are laid out one after another in a record", "[metrics]") {
  app_instance<app<kv>> instance;
  const auto& r = instance.entries().metrics;
  CHECK(r.error.empty());
  REQUIRE(r.entries.size() == 4);
  CHECK(r.entries[0].first == 0);
  CHECK(r.entries[2].first == 2);
  CHECK(r.entries[3].first == 3);
  CHECK(r.used == 3 + 5);  // three values, then three buckets + +Inf + sum
  CHECK(r.digest != 0);
}

TEST_CASE("the pool's text sums the live workers, keeps dead workers' counts, and escapes labels", "[metrics]") {
  kv unit;
  metric_set set;
  unit.add_metrics(set);
  detail::metric_registry r;
  r.build(set.added());
  block b;
  master::take_app_metrics(*b.header, r);
  auto& w1 = b.add(r);
  unit.gets.inc(3);
  unit.keys.set(10);
  unit.latency.observe(0.01);  // on the bound: in that bucket (le is inclusive)
  unit.latency.observe(0.5);
  auto& w2 = b.add(r);
  unit.gets.inc(2);
  unit.keys.set(5.5);
  unit.latency.observe(7);

  auto text = render(b, r);
  CHECK(text.find("# HELP kv_requests_total Requests\n# TYPE kv_requests_total counter\n"
                  "kv_requests_total{method=\"GET\"} 5\nkv_requests_total{method=\"PUT\"} 0\n") != std::string::npos);
  CHECK(text.find("kv_keys 15.5\n") != std::string::npos);
  CHECK(text.find("kv_request_seconds_bucket{le=\"0.01\"} 1\nkv_request_seconds_bucket{le=\"0.1\"} 1\n"
                  "kv_request_seconds_bucket{le=\"1\"} 2\nkv_request_seconds_bucket{le=\"+Inf\"} 3\n"
                  "kv_request_seconds_sum 7.51\nkv_request_seconds_count 3\n") != std::string::npos);

  // w1 dies: its counts move into the totals, its gauge goes with it.
  master::fold_app_metrics(*b.header, w1, r);
  b.slots.erase(b.slots.begin());
  text = render(b, r);
  CHECK(text.find("kv_requests_total{method=\"GET\"} 5\n") != std::string::npos);
  CHECK(text.find("kv_keys 5.5\n") != std::string::npos);
  CHECK(text.find("kv_request_seconds_count 3\n") != std::string::npos);

  // A record written by an image with other metrics is neither summed nor folded.
  w2.metrics_digest.store(r.digest + 1);
  text = render(b, r);
  CHECK(text.find("kv_requests_total{method=\"GET\"} 3\n") != std::string::npos);
  master::fold_app_metrics(*b.header, w2, r);
  CHECK(render(b, r).find("kv_requests_total{method=\"GET\"} 3\n") != std::string::npos);

  // An image with other metrics starts the totals again.
  detail::metric_registry other;
  other.digest = r.digest ^ 1;
  master::take_app_metrics(*b.header, other);
  CHECK(b.header->app_totals[0].load() == 0);

  CHECK(master::escape_label_value("a\\b\"c\nd") == "a\\\\b\\\"c\\nd");
}

TEST_CASE("histograms with other bucket bounds are other metrics (their totals are not mixed)", "[metrics]") {
  histogram a{"kv_seconds", "x", {0.1, 1}};
  histogram b{"kv_seconds", "x", {0.5, 5}};
  detail::metric_registry ra, rb;
  ra.build({&a});
  rb.build({&b});
  CHECK(ra.used == rb.used);
  CHECK(ra.digest != rb.digest);
}

TEST_CASE("a metric that cannot be served stops the start with one line naming it", "[metrics][bad_input]") {
  struct row {
    std::vector<metric*> metrics;
    std::string error;
  };
  counter bad_name{"kv requests", "x"};
  counter bad_label{"kv_total", "x", {{"1x", "v"}}};
  histogram le{"kv_seconds", "x", {1}, {{"le", "v"}}};
  histogram unordered{"kv_seconds", "x", {1, 1}};
  counter a{"kv_total", "x"};
  counter same{"kv_total", "x"};
  gauge other_type{"kv_total", "x", {{"k", "v"}}};
  std::vector<double> many(200);
  for (std::size_t i = 0; i < many.size(); ++i) many[i] = static_cast<double>(i);
  histogram big{"kv_big", "x", many};
  for (const auto& [metrics, error] : std::vector<row>{
           {{&bad_name}, "metric 'kv requests' is not a valid Prometheus metric name"},
           {{&bad_label}, "metric 'kv_total' has label '1x', not a valid Prometheus label name"},
           {{&le}, "metric 'kv_seconds' is a histogram with a label 'le', which it uses itself"},
           {{&unordered}, "metric 'kv_seconds' is a histogram whose bucket bounds are not finite and increasing"},
           {{&a, &same}, "metric 'kv_total' is declared twice with the same labels"},
           {{&a, &other_type}, "metric 'kv_total' is declared twice with a different type or help"},
           {{&big}, "metric 'kv_big' does not fit: an app has at most 128 metric values"}}) {
    detail::metric_registry r;
    r.build(metrics);
    CHECK(r.error == error);
  }
}
