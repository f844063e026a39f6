// kvd: a JSON key-value service over HTTP on systempp.
//
//   kvd --config kv.toml --workers 4 --bind 127.0.0.1:8090 --metrics 9464
//   curl -X PUT --data '{"value":"hi"}' http://127.0.0.1:8090/keys/greeting
//   curl http://127.0.0.1:8090/keys/greeting      ->  {"key":"greeting","value":"hi"}
//   curl http://127.0.0.1:8090/keys               ->  {"keys":["greeting"]}
//
// Units: store (the data, [store]), janitor (a dedicated process that removes expired keys
// every [janitor] interval and publishes the key count), web (the routes) and the
// library's HTTP server ([http]). kvctl (kvctl.cpp) is the maintenance script on the same
// store and the same file.

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include <systempp/helpers.hpp>
#include <systempp/http.hpp>
#include <systempp/systempp.hpp>

#include "store.hpp"

namespace http = systempp::http;
using json = nlohmann::json;

namespace kv {

/// Removes expired keys and counts the rest, every [janitor] interval, in a process of its
/// own (one for the pool, whatever --workers says).
struct janitor {
  static constexpr std::string_view name = "janitor";
  static constexpr systempp::dedicated runs_in{.processes = 1};
  using depends_on = systempp::units<store>;
  struct settings {
    std::chrono::milliseconds interval{60'000};
  };
  static constexpr auto config_section = systempp::section(
      "janitor", systempp::key("interval", &settings::interval, "Seconds between two sweeps")
                     .range(std::chrono::milliseconds(50), std::chrono::hours(24)));

  systempp::gauge keys{"kv_keys", "Keys in the store, as of the last sweep"};
  systempp::counter expired{"kv_expired_keys_total", "Keys removed because their ttl passed"};
  void add_metrics(systempp::metric_set& m) { m.add(keys, expired); }

  void on_startup(systempp::context& ctx) {
    auto& data = ctx.dependency<store>(*this);
    const auto sweep = [this, &data] {
      expired.inc(data.purge_expired());
      keys.set(static_cast<double>(data.keys().size()));
    };
    sweep();
    systempp::every(ctx, *this, ctx.config(*this).interval, sweep);
  }
};

/// The routes: /keys (list), /keys/NAME (get, put, delete).
struct web {
  static constexpr std::string_view name = "web";
  using depends_on = systempp::units<store>;
  store* data = nullptr;

  void on_startup(systempp::context& ctx) { data = &ctx.dependency<store>(*this); }

  static http::response json_reply(const http::request& req, http::status s, const json& body) {
    return http::reply(req, s, body.dump() + "\n", "application/json");
  }
  static std::string key_of(const http::request& req) { return std::string(req.target().substr(6)); }

  void routes(http::router& r) {
    r.get("/keys", [this](const http::request& req) { return json_reply(req, http::status::ok, {{"keys", data->keys()}}); });
    r.get("/keys/*", [this](const http::request& req) {
      const auto key = key_of(req);
      if (!store::valid_key(key)) return json_reply(req, http::status::bad_request, {{"error", "bad key"}});
      const auto value = data->get(key);
      if (!value) return json_reply(req, http::status::not_found, {{"error", "no such key"}});
      return json_reply(req, http::status::ok, {{"key", key}, {"value", *value}});
    });
    r.put("/keys/*", [this](const http::request& req) {
      const auto key = key_of(req);
      if (!store::valid_key(key)) return json_reply(req, http::status::bad_request, {{"error", "bad key"}});
      const auto body = json::parse(req.body(), nullptr, false);
      if (body.is_discarded() || !body.is_object() || !body.contains("value") || !body["value"].is_string())
        return json_reply(req, http::status::bad_request, {{"error", "expected {\"value\": \"...\"}"}});
      if (!data->put(key, body["value"].get<std::string>()))
        return json_reply(req, http::status::payload_too_large, {{"error", "value too large"}});
      return json_reply(req, http::status::ok, {{"key", key}, {"stored", true}});
    });
    r.del("/keys/*", [this](const http::request& req) {
      const auto key = key_of(req);
      if (!store::valid_key(key)) return json_reply(req, http::status::bad_request, {{"error", "bad key"}});
      return data->erase(key) ? json_reply(req, http::status::ok, {{"key", key}, {"deleted", true}})
                              : json_reply(req, http::status::not_found, {{"error", "no such key"}});
    });
  }
};

}  // namespace kv

using kvd = systempp::app<kv::store, kv::janitor, kv::web, http::server<kv::web>>;

int main(int argc, char** argv) {
  return systempp::main<kvd>(argc, argv, {"kvd", "A JSON key-value service over HTTP.", "1.0.0"});
}
