// The HTTP server unit's work (http.hpp): connections, framing, limits, routes, drain.
// The one translation unit of the library that compiles Beast.

#include "systempp/http.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <list>
#include <mutex>
#include <optional>
#include <tuple>
#include <unordered_set>

#include "systempp/acceptor.hpp"
#include "systempp/helpers.hpp"

#include "http_framing.hpp"

namespace systempp::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using framing::use_tuple;

using framing::append_header;
using framing::connection;
using framing::refusal;
using framing::send_bytes;
using framing::send_response;

namespace detail {

namespace {
constexpr std::size_t read_chunk = 4096;  // what a wait for the next request reads at most

// Beast builds its table of field names on first use. Built at start, in the master, every
// forked worker inherits it instead of building its own on its first request.
[[maybe_unused]] const auto field_table_built = bhttp::string_to_field("host");

// A fixed route's response, written out once per HTTP version (1.0, 1.1) and keep-alive
// choice, as the dynamic path would write it. HEAD sends the header part.
struct prepared_reply {
  struct variant {
    std::string bytes;
    std::size_t header_size = 0;
  };
  variant variants[4];  ///< [2 * (version == 1.1) + keep-alive]
  unsigned code = 0;
  std::size_t body_size = 0;
};
using prepared_replies = std::vector<prepared_reply>;
}  // namespace

class server_core {
 public:
  // Metrics: members, so that they are registered before the first fork.
  counter responses[4] = {{"systempp_http_responses_total", "Responses by status class", {{"class", "2xx"}}},
                          {"systempp_http_responses_total", "Responses by status class", {{"class", "3xx"}}},
                          {"systempp_http_responses_total", "Responses by status class", {{"class", "4xx"}}},
                          {"systempp_http_responses_total", "Responses by status class", {{"class", "5xx"}}}};
  histogram latency{"systempp_http_request_seconds", "From a request read to its response written",
                    {0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 2.5}};

  asio::awaitable<void> start(context& ctx, const server_settings& s, router r);
  void stop_accepting();
  asio::awaitable<void> finish();
  asio::awaitable<void> run_accept_loop(connection_acceptor& a);

 private:
  void take(tcp::socket socket);
  asio::awaitable<void> serve(std::shared_ptr<connection> owned);
  asio::awaitable<bool> wait_for_request(connection& c, beast::flat_buffer& buffer);
  asio::awaitable<response> handle(const request& req, const router::match& m);
  void prepare_fixed_replies();
  std::optional<response> read_error_response(boost::system::error_code ec, const request& req);
  response health(const request& req);
  response finish_response(response res);
  void count(const request& req, unsigned code, std::size_t body_size, clock_type::duration took);
  asio::awaitable<void> close(connection& c, bool linger);
  bool no_connections() {
    std::lock_guard lock(connections_mutex_);
    return connections_.empty();
  }
  void spawn(const asio::any_io_executor& ex, asio::awaitable<void> task, const char* what) {
    asio::co_spawn(ex, std::move(task), [log = ctx_->logger_ptr(), what](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log->error("http_server: {} failed: {}", what, ex.what());
      }
    });
  }

  context* ctx_ = nullptr;
  asio::any_io_executor runtime_;  ///< ctx_->executor(), kept: a connection may end after the context
  server_settings settings_;
  router router_;
  /// Indexed like router_.fixed_replies(); a connection holds the set it began with.
  std::shared_ptr<const prepared_replies> prepared_;
  std::list<connection_acceptor> acceptors_;  ///< the runtime's strand only
  int accept_loops_ = 0;  ///< running on acceptors_: the runtime's strand only
  /// Every open connection. Each runs on its own strand (--threads), hence the lock; the
  /// drain reaches a connection by posting to its strand.
  std::mutex connections_mutex_;
  std::unordered_set<std::shared_ptr<connection>> connections_;
  std::atomic<bool> draining_{false};
  clock_type::time_point drain_started_;  ///< written before `draining_` turns true
  std::optional<asio::steady_timer> all_closed_;  ///< the runtime's strand: the last connection ended
};

asio::awaitable<void> server_core::start(context& ctx, const server_settings& s, router r) {
  ctx_ = &ctx;
  runtime_ = ctx.executor();
  settings_ = s;
  router_ = std::move(r);
  prepare_fixed_replies();
  draining_ = false;
  all_closed_.emplace(ctx.executor());
  acceptors_.clear();
  const listener& l = ctx.listener_named(settings_.listener);
  framing::defer_accept(ctx, l, settings_.defer_accept);
  acceptors_.emplace_back(ctx, l);
  // A connection the kernel handed over is ours to answer, even when the drain closed the
  // acceptor before its handler ran: accept_loop hands it over before it looks.
  for (auto& a : acceptors_) spawn(ctx.executor(), run_accept_loop(a), "accept loop");
  co_return;
}

// Counted, so that finish() frees the acceptors only once no loop can resume on one (with
// --threads the loop's last resumption may come after the last connection closed).
asio::awaitable<void> server_core::run_accept_loop(connection_acceptor& a) {
  ++accept_loops_;
  struct ended {
    server_core& s;
    ~ended() {
      if (--s.accept_loops_ == 0) s.all_closed_->cancel();
    }
  } guard{*this};
  co_await accept_loop(a, [this](tcp::socket socket) { take(std::move(socket)); }, ctx_->log());
}

// Registered at once, so a drain that begins before the connection's coroutine runs still
// waits for it; then served on the connection's own strand.
void server_core::take(tcp::socket socket) {
  const auto strand = socket.get_executor();
  auto owned = std::make_shared<connection>(std::move(socket));
  owned->self = owned;
  {
    std::lock_guard lock(connections_mutex_);
    connections_.insert(owned);
  }
  spawn(strand, serve(std::move(owned)), "connection");
}

void server_core::stop_accepting() {
  drain_started_ = clock_type::now();
  draining_.store(true);
  // With reuseport, what waits in this slot's queue is served here (take registers it
  // before finish() looks).
  for (auto& a : acceptors_) a.close([this](tcp::socket socket) { take(std::move(socket)); });
  // Idle connections re-read their deadline, now bounded by drain-grace: each is told on
  // its own strand, where its state lives.
  const auto grace_ends = drain_started_ + settings_.drain_grace;
  std::lock_guard lock(connections_mutex_);
  for (const auto& c : connections_)
    asio::post(c->socket.get_executor(), [c, grace_ends] {
      if (c->idle && grace_ends < c->deadline) framing::set_deadline(*c, grace_ends);
    });
}

void server_core::prepare_fixed_replies() {
  auto all = std::make_shared<prepared_replies>();
  for (const auto& f : router_.fixed_replies()) {
    prepared_reply& p = all->emplace_back();
    p.code = static_cast<unsigned>(f.code);
    p.body_size = f.body.size();
    for (int i = 0; i < 4; ++i) {
      request req;
      req.version(i >= 2 ? 11 : 10);
      response res = finish_response(reply(req, f.code, f.body, f.content_type));
      res.keep_alive(i % 2 == 1);
      append_header(p.variants[i].bytes, res);
      p.variants[i].header_size = p.variants[i].bytes.size();
      p.variants[i].bytes.append(res.body());
    }
  }
  prepared_ = std::move(all);
}

asio::awaitable<void> server_core::finish() {
  while (!no_connections() || accept_loops_ > 0) {
    all_closed_->expires_at(clock_type::time_point::max());
    co_await all_closed_->async_wait(use_tuple);
  }
  acceptors_.clear();
}

// Reads the next request's first bytes into `buffer`. Returns false when the connection
// should close instead: the client left, or it stayed idle past keepalive-timeout (or past
// drain-grace of a drain). The read is the wait: no separate readiness wait per request.
asio::awaitable<bool> server_core::wait_for_request(connection& c, beast::flat_buffer& buffer) {
  auto deadline = clock_type::now() + settings_.keepalive_timeout;
  if (draining_.load()) deadline = std::min(deadline, drain_started_ + settings_.drain_grace);
  framing::set_deadline(c, deadline);
  c.idle = true;
  auto [ec, n] = co_await c.socket.async_read_some(buffer.prepare(read_chunk), use_tuple);
  c.idle = false;
  buffer.commit(n);
  co_return !ec && n > 0;
}

asio::awaitable<void> server_core::serve(std::shared_ptr<connection> owned) {
  connection& c = *owned;
  struct deregister {
    server_core& s;
    const std::shared_ptr<connection>& c;
    ~deregister() {
      std::lock_guard lock(s.connections_mutex_);
      s.connections_.erase(c);
      // The last one out of a drain wakes finish(), on the runtime's strand.
      if (s.draining_.load() && s.connections_.empty())
        asio::post(s.runtime_, [&s = s] { s.all_closed_->cancel(); });
    }
  } guard{*this, owned};

  beast::flat_buffer buffer;
  bool linger = false;
  const auto prepared = prepared_;  // alive while a write of its bytes may be under way
  for (;;) {
    if (buffer.size() == 0 && !co_await wait_for_request(c, buffer)) break;

    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(settings_.header_limit));
    parser.body_limit(static_cast<std::uint64_t>(settings_.body_limit));
    framing::set_deadline(c, clock_type::now() + settings_.request_timeout);
    // The header alone first: the body of a request refused for its framing must never be
    // read, or it would be taken for the next request.
    boost::system::error_code ec;
    std::tie(ec, std::ignore) = co_await bhttp::async_read_header(c.socket, buffer, parser, use_tuple);
    std::optional<refusal> why;
    if (!ec) why = framing::transfer_encoding_refusal(parser.get());
    if (!ec && !why) why = framing::host_refusal(parser.get());
    std::optional<response> refused;
    if (why) refused = reply(parser.get(), why->status, std::string(why->body));
    if (!ec && !refused && !parser.is_done())
      std::tie(ec, std::ignore) = co_await bhttp::async_read(c.socket, buffer, parser, use_tuple);
    if (ec == bhttp::error::end_of_stream) break;
    if (ec) refused = read_error_response(ec, parser.get());
    if (refused) {
      refused = finish_response(std::move(*refused));
      refused->keep_alive(false);
      framing::set_deadline(c, clock_type::now() + settings_.request_timeout);
      co_await send_response(c, *refused);
    }
    if (refused) linger = true;  // the client may still be sending what we did not read
    if (ec || refused) break;

    const request& req = parser.get();
    const auto began = clock_type::now();
    request_scope counted(*ctx_);  // in flight until the response is written
    const std::string_view target = req.target();
    const auto m = router_.find(req.method(), target.substr(0, target.find('?')));
    const bool head = req.method() == verb::head;
    bool keep = req.keep_alive() && !draining_.load();
    boost::system::error_code wec;
    if (m.fixed >= 0 && static_cast<std::size_t>(m.fixed) < prepared->size() && (req.version() == 10 || req.version() == 11)) {
      const prepared_reply& p = (*prepared)[static_cast<std::size_t>(m.fixed)];
      const auto& v = p.variants[2 * (req.version() == 11) + keep];
      framing::set_deadline(c, began + settings_.request_timeout);
      wec = co_await send_bytes(c.socket, head ? std::string_view(v.bytes).substr(0, v.header_size) : v.bytes);
      if (p.code >= 500) counted.fail();
      count(req, p.code, head ? 0 : p.body_size, clock_type::now() - began);
    } else {
      response res = finish_response(co_await handle(req, m));
      if (res.result_int() >= 500) counted.fail();
      keep = keep && !draining_.load();  // a drain that began while the handler ran
      res.keep_alive(keep);
      if (head) res.body().clear();  // Content-Length stays
      framing::set_deadline(c, clock_type::now() + settings_.request_timeout);
      wec = co_await send_response(c, res);
      count(req, res.result_int(), res.body().size(), clock_type::now() - began);
    }
    if (wec || !keep) break;
  }
  boost::system::error_code ignored;
  co_await close(c, linger || buffer.size() > 0 || (c.socket.is_open() && c.socket.available(ignored) > 0));
}

// When nothing is left unread, a plain close: the FIN follows the last response at once,
// as nginx does. When the client may have sent more than we read (`linger`: a refused
// request's body, bytes after the last request), closing now would make the kernel answer
// them with a reset that can destroy our last response in flight: half-close, then read
// until the client closes too (at most 2 s).
asio::awaitable<void> server_core::close(connection& c, bool linger) {
  boost::system::error_code ignored;
  if (!c.socket.is_open()) co_return;
  if (linger) {
    c.socket.shutdown(tcp::socket::shutdown_send, ignored);
    framing::set_deadline(c, clock_type::now() + std::chrono::seconds(2));
    std::array<char, 4096> sink;
    for (;;) {
      auto [ec, n] = co_await c.socket.async_read_some(asio::buffer(sink), use_tuple);
      if (ec) break;
    }
  }
  c.socket.close(ignored);
}

// The answer to a request Beast could not read, or nullopt when the client is gone or stalled.
std::optional<response> server_core::read_error_response(boost::system::error_code ec, const request& req) {
  if (ec == bhttp::error::header_limit) return reply(req, status::request_header_fields_too_large, "header too large\n");
  if (ec == bhttp::error::body_limit) return reply(req, status::payload_too_large, "body too large\n");
  if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category() &&
      ec != bhttp::error::partial_message)
    return reply(request{}, status::bad_request, "bad request\n");
  return std::nullopt;
}

response server_core::health(const request& req) {
  if (draining_.load()) return reply(req, status::service_unavailable, "draining\n");
  const auto h = ctx_->health();
  return h.healthy ? reply(req, status::ok, "ok\n")
                   : reply(req, status::service_unavailable, fmt::format("unhealthy: {}: {}\n", h.unit, h.reason));
}

asio::awaitable<response> server_core::handle(const request& req, const router::match& m) {
  const std::string_view target = req.target();
  const std::string_view path = target.substr(0, target.find('?'));
  if (!m.found) {
    // Built in, unless a GET route took the path (it would have been found).
    if (path == "/healthz" && (req.method() == verb::get || req.method() == verb::head)) co_return health(req);
    if (m.allow.empty() && path != "/healthz") co_return reply(req, status::not_found, "not found\n");
    auto res = reply(req, status::method_not_allowed, "method not allowed\n");
    res.set(bhttp::field::allow, m.allow.empty() ? "GET, HEAD" : m.allow);
    co_return res;
  }
  try {
    co_return co_await (*m.found)(req);
  } catch (const std::exception& e) {
    ctx_->log().error("http_server: {} {}: {}", std::string_view(req.method_string()), path, e.what());
  }
  co_return reply(req, status::internal_server_error, "internal error\n");
}

response server_core::finish_response(response res) {
  res.set(bhttp::field::server, settings_.server_name);
  if (router_.decorator()) router_.decorator()(res);
  return res;
}

void server_core::count(const request& req, unsigned code, std::size_t body_size, clock_type::duration took) {
  responses[std::clamp(static_cast<int>(code / 100) - 2, 0, 3)].inc();
  const double seconds = std::chrono::duration<double>(took).count();
  latency.observe(seconds);
  if (settings_.access_log)
    ctx_->log().info("\"{} {} HTTP/{}.{}\" {} {} {:.3f} ms", std::string_view(req.method_string()),
                     std::string_view(req.target()), req.version() / 10, req.version() % 10, code,
                     body_size, seconds * 1000);
}

std::shared_ptr<server_core> make_server_core() { return std::make_shared<server_core>(); }
void add_server_metrics(server_core& core, metric_set& m) {
  m.add(core.responses[0], core.responses[1], core.responses[2], core.responses[3], core.latency);
}
asio::awaitable<void> start_server(server_core& core, context& ctx, const server_settings& s, router r) {
  co_await core.start(ctx, s, std::move(r));
}
void stop_accepting(server_core& core) { core.stop_accepting(); }
asio::awaitable<void> finish_connections(server_core& core) { co_await core.finish(); }

}  // namespace detail

}  // namespace systempp::http
