// The HTTP server's routes (http.hpp): which handler a request finds, and what a 405 says.

#include <catch2/catch.hpp>

#include <systempp/http.hpp>

namespace http = systempp::http;

namespace {

http::response ok(const http::request& req) { return http::reply(req, http::status::ok, "ok\n"); }

}  // namespace

TEST_CASE("a request finds its route by method and path; HEAD falls back to GET", "[http]") {
  http::router r;
  r.get("/keys", ok).put("/keys/*", ok).get("/keys/*", ok).on(http::verb::head, "/ping", ok).get("/ping", ok);
  CHECK(r.find(http::verb::get, "/keys").found);
  CHECK(r.find(http::verb::head, "/keys").found);  // GET's handler, without the body
  CHECK(r.find(http::verb::put, "/keys/a").found);
  CHECK(r.find(http::verb::get, "/keys/a/b").found);
  CHECK_FALSE(r.find(http::verb::get, "/key").found);
  // A HEAD route of its own is found for HEAD and does not answer GET.
  CHECK(r.find(http::verb::head, "/ping").found != r.find(http::verb::get, "/ping").found);
}

TEST_CASE("a path no route serves has no Allow (404); a known path lists its methods once (405)", "[http]") {
  http::router r;
  r.get("/keys/*", ok).put("/keys/*", ok).del("/keys/*", ok).on(http::verb::head, "/keys/*", ok);
  const auto m = r.find(http::verb::post, "/keys/a");
  CHECK_FALSE(m.found);
  CHECK(m.allow == "GET, PUT, DELETE, HEAD");
  CHECK(r.find(http::verb::post, "/nothing").allow.empty());
  http::router only_post;
  only_post.post("/jobs", ok);
  CHECK(only_post.find(http::verb::get, "/jobs").allow == "POST");
}
