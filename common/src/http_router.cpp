// The HTTP server's routes (http.hpp): the router and reply(), apart from the server's work.

#include <algorithm>
#include <string>
#include <vector>

#include "systempp/http.hpp"

namespace systempp::http {

namespace bhttp = boost::beast::http;

response reply(const request& req, status s, std::string body, std::string_view content_type) {
  response res{s, req.version() ? req.version() : 11};
  res.set(bhttp::field::content_type, content_type);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

namespace {

bool matches(std::string_view route, std::string_view path) {
  if (route.ends_with("/*")) return path.starts_with(route.substr(0, route.size() - 1));
  return route == path;
}

}  // namespace

router& router::fixed(std::string path, status s, std::string body, std::string_view content_type) {
  fixed_.push_back({s, body, std::string(content_type)});
  on(verb::get, std::move(path), [s, body = std::move(body), type = std::string(content_type)](const request& req) {
    return reply(req, s, body, type);
  });
  routes_.back().fixed = static_cast<int>(fixed_.size() - 1);
  return *this;
}

// The first route of the path and method; HEAD takes a GET route when it has none of its
// own. The methods for Allow are only gathered when nothing was found (no allocation on
// the way to a handler).
router::match router::find(verb method, std::string_view path) const {
  match m;
  const route* hit = nullptr;
  const route* get = nullptr;
  for (const auto& r : routes_) {
    if (!matches(r.path, path)) continue;
    if (r.method == method) {
      hit = &r;
      break;
    }
    if (r.method == verb::get && !get) get = &r;
  }
  if (!hit && method == verb::head) hit = get;  // HEAD is GET without the body
  if (hit) {
    m.found = &hit->fn;
    m.fixed = hit->fixed;
    return m;
  }
  std::vector<verb> methods;
  for (const auto& r : routes_)
    if (matches(r.path, path) && std::find(methods.begin(), methods.end(), r.method) == methods.end())
      methods.push_back(r.method);
  if (get && std::find(methods.begin(), methods.end(), verb::head) == methods.end()) methods.push_back(verb::head);
  for (verb v : methods) m.allow += (m.allow.empty() ? "" : ", ") + std::string(bhttp::to_string(v));
  return m;
}

}  // namespace systempp::http
