#pragma once
/// The app's own metrics: counters, gauges and histograms that units update without locks
/// (relaxed atomics in the worker's control-block record) and the master serves in
/// `/metrics`, summed over the pool:
///
///   struct kv_store {
///     systempp::counter gets{"kv_gets_total", "GET requests answered"};
///     systempp::counter puts{"kv_requests_total", "Requests", {{"method", "PUT"}}};
///     systempp::gauge keys{"kv_keys", "Keys held, summed over the workers"};
///     systempp::histogram latency{"kv_request_seconds", "Request latency", {0.001, 0.01, 0.1, 1}};
///     void add_metrics(systempp::metric_set& m) { m.add(gets, puts, keys, latency); }
///   };
///
/// Counters and histograms are monotonic across worker deaths, recycles and reloads (the
/// master folds a dead worker's values into the pool's totals); a gauge is the sum over
/// the live workers. Every call is thread-safe and async-signal-safe.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace systempp {

/// Values (counters, gauges, and a histogram's buckets + sum) one app may register.
inline constexpr std::size_t max_metric_values = 128;

/// What a metric is, as Prometheus types it.
enum class metric_type { counter, gauge, histogram };

/// A label of a metric, fixed when it is declared: {"method", "GET"}.
using metric_label = std::pair<std::string, std::string>;

/// What every metric has: name, help, labels, and where its values live.
class metric {
 public:
  metric(std::string name, std::string help, std::vector<metric_label> labels, metric_type type,
         std::size_t values = 1)
      : name_(std::move(name)), help_(std::move(help)), labels_(std::move(labels)), type_(type), values_(values) {}

  const std::string& name() const noexcept { return name_; }
  const std::string& help() const noexcept { return help_; }
  const std::vector<metric_label>& labels() const noexcept { return labels_; }
  metric_type type() const noexcept { return type_; }
  /// Values it takes in a record: 1, or a histogram's buckets + 1 (+Inf) + 1 (sum).
  std::size_t values() const noexcept { return values_; }

  /// Where its values are: the registry's process-local cells, then the worker's record.
  /// Runtime only.
  void bind(std::atomic<std::uint64_t>* cells) noexcept { cells_ = cells; }

 protected:
  std::atomic<std::uint64_t>* cells_ = nullptr;  ///< null until registered: updates are dropped

 private:
  std::string name_, help_;
  std::vector<metric_label> labels_;
  metric_type type_;
  std::size_t values_;
};

/// Only goes up. Monotonic for the pool, dead workers included.
class counter final : public metric {
 public:
  counter(std::string name, std::string help, std::vector<metric_label> labels = {})
      : metric(std::move(name), std::move(help), std::move(labels), metric_type::counter) {}
  void inc(std::uint64_t n = 1) noexcept {
    if (cells_) cells_->fetch_add(n, std::memory_order_relaxed);
  }
};

/// Goes up and down; the pool's value is the sum over the live workers.
class gauge final : public metric {
 public:
  gauge(std::string name, std::string help, std::vector<metric_label> labels = {})
      : metric(std::move(name), std::move(help), std::move(labels), metric_type::gauge) {}
  void set(double v) noexcept;
  void add(double v) noexcept;
};

/// Observations counted into buckets (upper bounds, increasing), with their sum.
class histogram final : public metric {
 public:
  histogram(std::string name, std::string help, std::vector<double> bounds, std::vector<metric_label> labels = {})
      : metric(std::move(name), std::move(help), std::move(labels), metric_type::histogram, bounds.size() + 2),
        bounds_(std::move(bounds)) {}
  void observe(double v) noexcept;
  const std::vector<double>& bounds() const noexcept { return bounds_; }

 private:
  std::vector<double> bounds_;
};

/// What a unit's add_metrics receives. Launching process (and an exec'd image).
class metric_set {
 public:
  /// Registers metrics; they must outlive the process's stages (unit members do).
  template <class... M>
  void add(M&... m) {
    (added_.push_back(&static_cast<metric&>(m)), ...);
  }
  /// Every metric added, in order. Runtime only.
  const std::vector<metric*>& added() const noexcept { return added_; }

 private:
  std::vector<metric*> added_;
};

namespace detail {

/// U registers metrics: `void add_metrics(systempp::metric_set&)`.
template <class U>
concept adds_metrics = requires(U& u, metric_set& m) { u.add_metrics(m); };

/// The app's metrics: each one's first value index, a digest of their definitions (so a
/// master only sums records written by an image with the same ones), and the problem with
/// them, if any (a bad name, too many values), which stops the start with exit code 2.
struct metric_registry {
  struct entry {
    metric* m;
    std::size_t first;  ///< index of its first value in a record
  };
  std::vector<entry> entries;
  std::size_t used = 0;
  std::uint64_t digest = 0;
  std::string error;
  /// Process-local cells until a worker binds its record (master, inline, script).
  std::unique_ptr<std::atomic<std::uint64_t>[]> local;

  /// Checks and lays out `all`. Any process.
  void build(const std::vector<metric*>& all);
  /// Points every metric at `cells` (a worker's record). Worker only, at start.
  void bind(std::atomic<std::uint64_t>* cells) const noexcept;
};

/// A double in a 64-bit cell, and back.
std::uint64_t to_bits(double v) noexcept;
double from_bits(std::uint64_t bits) noexcept;
/// Adds `v` to the double in `cell` (a compare-exchange loop: lock-free).
void add_double(std::atomic<std::uint64_t>& cell, double v) noexcept;

}  // namespace detail

}  // namespace systempp
