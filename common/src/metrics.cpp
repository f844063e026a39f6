// The app's metrics (metrics.hpp): updates, and the registry that lays them out in a
// worker's record.

#include "systempp/metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <map>
#include <set>

namespace systempp {

namespace detail {

std::uint64_t to_bits(double v) noexcept { return std::bit_cast<std::uint64_t>(v); }
double from_bits(std::uint64_t bits) noexcept { return std::bit_cast<double>(bits); }

void add_double(std::atomic<std::uint64_t>& cell, double v) noexcept {
  auto old = cell.load(std::memory_order_relaxed);
  while (!cell.compare_exchange_weak(old, to_bits(from_bits(old) + v), std::memory_order_relaxed)) {
  }
}

}  // namespace detail

void gauge::set(double v) noexcept {
  if (cells_) cells_->store(detail::to_bits(v), std::memory_order_relaxed);
}

void gauge::add(double v) noexcept {
  if (cells_) detail::add_double(*cells_, v);
}

void histogram::observe(double v) noexcept {
  if (!cells_) return;
  // Buckets hold their own counts; /metrics makes them cumulative.
  const auto bucket = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  cells_[bucket].fetch_add(1, std::memory_order_relaxed);
  detail::add_double(cells_[bounds_.size() + 1], v);
}

namespace detail {

namespace {

// Prometheus: metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*.
bool valid_name(std::string_view s, bool colon) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s.front()))) return false;
  return std::all_of(s.begin(), s.end(), [colon](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || (colon && c == ':');
  });
}

// Why this metric cannot be served, or "".
std::string problem_with(const metric& m) {
  if (!valid_name(m.name(), true)) return "is not a valid Prometheus metric name";
  for (const auto& [name, value] : m.labels()) {
    if (!valid_name(name, false) || name.starts_with("__"))
      return fmt::format("has label '{}', not a valid Prometheus label name", name);
    if (m.type() == metric_type::histogram && name == "le") return "is a histogram with a label 'le', which it uses itself";
  }
  if (m.type() == metric_type::histogram) {
    const auto& b = static_cast<const histogram&>(m).bounds();
    if (b.empty()) return "is a histogram without buckets";
    if (!std::all_of(b.begin(), b.end(), [](double x) { return std::isfinite(x); }) ||
        std::adjacent_find(b.begin(), b.end(), std::greater_equal<>()) != b.end())
      return "is a histogram whose bucket bounds are not finite and increasing";
  }
  return {};
}

// FNV-1a over what a record's values mean.
void mix(std::uint64_t& h, std::string_view s) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  h = (h ^ 0xffu) * 0x100000001b3ull;  // separator
}

}  // namespace

void metric_registry::build(const std::vector<metric*>& all) {
  local = std::make_unique<std::atomic<std::uint64_t>[]>(max_metric_values);
  digest = 0xcbf29ce484222325ull;
  std::map<std::string, const metric*> families;
  std::set<std::pair<std::string, std::vector<metric_label>>> series;
  for (metric* m : all) {
    auto problem = problem_with(*m);
    const auto family = families.emplace(m->name(), m).first->second;
    if (problem.empty() && (family->type() != m->type() || family->help() != m->help()))
      problem = "is declared twice with a different type or help";
    if (problem.empty() && !series.emplace(m->name(), m->labels()).second) problem = "is declared twice with the same labels";
    if (problem.empty() && used + m->values() > max_metric_values)
      problem = fmt::format("does not fit: an app has at most {} metric values", max_metric_values);
    if (!problem.empty()) {
      error = fmt::format("metric '{}' {}", m->name(), problem);
      return;
    }
    entries.push_back({m, used});
    m->bind(local.get() + used);
    used += m->values();
    mix(digest, m->name());
    mix(digest, std::to_string(static_cast<int>(m->type())) + ":" + std::to_string(m->values()));
    for (const auto& [name, value] : m->labels()) mix(digest, name + "=" + value);
    if (m->type() == metric_type::histogram)
      for (double b : static_cast<const histogram*>(m)->bounds()) mix(digest, fmt::format("{}", b));
  }
}

void metric_registry::bind(std::atomic<std::uint64_t>* cells) const noexcept {
  for (const auto& e : entries) e.m->bind(cells + e.first);
}

}  // namespace detail

}  // namespace systempp
