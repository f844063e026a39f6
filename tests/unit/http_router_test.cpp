// The HTTP server's routes (http.hpp): which handler a request finds, and what a 405 says.

#include <catch2/catch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <systempp/http.hpp>

namespace http = systempp::http;

namespace {

http::response ok(const http::request& req) { return http::reply(req, http::status::ok, "ok\n"); }

}  // namespace

TEST_CASE("a request finds its route by method and path, HEAD falls back to GET", "[http]") {
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

TEST_CASE("a path no route serves has no Allow (404), a known path lists its methods once (405)", "[http]") {
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

TEST_CASE("a fixed route is found as a GET route with its index, its handler answers the same", "[http]") {
  http::router r;
  r.get("/a", ok).fixed("/", http::status::ok, "hi\n").fixed("/teapot", http::status::accepted, "no\n", "text/x");
  CHECK(r.find(http::verb::get, "/a").fixed == -1);
  CHECK(r.find(http::verb::get, "/").fixed == 0);
  CHECK(r.find(http::verb::head, "/teapot").fixed == 1);
  CHECK(r.find(http::verb::post, "/").allow == "GET, HEAD");
  REQUIRE(r.fixed_replies().size() == 2);
  CHECK(r.fixed_replies()[1].content_type == "text/x");
  // A caller that runs the handler (an HTTP version the prepared bytes do not cover) gets
  // the same answer.
  const auto* h = r.find(http::verb::get, "/teapot").found;
  REQUIRE(h);
  boost::asio::io_context io;
  http::response res;
  const http::request req{http::verb::get, "/teapot", 11};  // the coroutine reads it when io runs
  boost::asio::co_spawn(io, (*h)(req),
                        [&](std::exception_ptr, http::response r) { res = std::move(r); });
  io.run();
  CHECK(res.result() == http::status::accepted);
  CHECK(res.body() == "no\n");
  CHECK(res[boost::beast::http::field::content_type] == "text/x");
}
