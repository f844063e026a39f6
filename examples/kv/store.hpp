#pragma once
// The key-value store: one file per key under [store] data-dir, written by rename so that
// every worker (and kvctl) sees whole values. Shared by kvd and kvctl.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <systempp/systempp.hpp>

namespace kv {

class store {
 public:
  static constexpr std::string_view name = "store";
  struct settings {
    std::string data_dir = "kv-data";
    std::int64_t max_value_bytes = 64 * 1024;
    std::chrono::milliseconds ttl{0};  ///< 0: keys never expire
  };
  static constexpr auto config_section = systempp::section(
      "store", systempp::key("data-dir", &settings::data_dir, "Directory holding one file per key"),
      systempp::key("max-value-bytes", &settings::max_value_bytes, "Largest value accepted")
          .range(std::int64_t{1}, std::int64_t{1} << 20),
      systempp::key("ttl", &settings::ttl, "Seconds a key lives after its last write; 0: forever")
          .range(std::chrono::milliseconds(0), std::chrono::hours(24 * 365)));

  systempp::counter gets{"kv_requests_total", "Store operations", {{"op", "get"}}};
  systempp::counter puts{"kv_requests_total", "Store operations", {{"op", "put"}}};
  systempp::counter deletes{"kv_requests_total", "Store operations", {{"op", "delete"}}};
  void add_metrics(systempp::metric_set& m) { m.add(gets, puts, deletes); }

  /// Master (or kvctl): the settings, and the data directory made if missing.
  void on_init(systempp::context& ctx);
  void on_reload(systempp::context& ctx) { s_ = ctx.config(*this); }

  /// Keys are 1 to 128 of [A-Za-z0-9_.-], not starting with '.'.
  static bool valid_key(std::string_view key);
  std::optional<std::string> get(const std::string& key);
  /// False when the value is larger than max-value-bytes.
  bool put(const std::string& key, const std::string& value);
  bool erase(const std::string& key);
  std::vector<std::string> keys() const;
  /// Removes the keys older than ttl; returns how many.
  std::size_t purge_expired();
  const settings& config() const noexcept { return s_; }

 private:
  settings s_;
};

}  // namespace kv
