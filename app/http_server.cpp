#include "http_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <list>
#include <optional>
#include <tuple>
#include <unordered_set>
#include <vector>

#include <systempp/acceptor.hpp>
#include <systempp/helpers.hpp>

#include "settings.hpp"

namespace demo {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
// How long a client may take to send one request's headers and body, and to read a
// response: a slow client is cut off instead of holding a connection forever.
constexpr std::chrono::seconds io_timeout{30};
constexpr std::chrono::milliseconds max_sleep{60'000};
constexpr std::uintmax_t max_static_size = 16 * 1024 * 1024;

namespace {

/// Identifies one idle wait of a connection, for the timer that may end it.
struct wait_token {
  tcp::socket* socket = nullptr;
  std::uint64_t epoch = 0;
};

struct connection {
  explicit connection(tcp::socket s)
      : stream(std::move(s)), wake(stream.get_executor()), token(std::make_shared<wait_token>()) {
    token->socket = &stream.socket();
  }
  beast::tcp_stream stream;
  asio::steady_timer wake;  ///< ends an idle wait at its deadline
  std::shared_ptr<wait_token> token;
  bool idle = false;  ///< waiting for the first byte of the next request
};

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

/// The methods every route accepts; a 405 names them in `Allow` (RFC 9110 section 15.5.6).
constexpr std::string_view allowed_methods = "GET, HEAD";

/// Why a request is answered with an error and a closed connection before its body is read.
struct refusal {
  http::status status;
  std::string_view body;
};

// RFC 9112 sections 6.1 and 6.3. Beast reads a chunked body only when `chunked` is the last
// coding and takes any other request as bodiless, so the body of `gzip` or `chunked, gzip`
// would be parsed as the next request (smuggling). A list that does not parse, `chunked`
// anywhere but once and last, or any coding in an HTTP/1.0 request is malformed (400); a
// well-formed list with a coding other than `chunked` is one we do not implement (501).
std::optional<refusal> transfer_encoding_refusal(const request& req) {
  const auto [first, last] = req.equal_range(http::field::transfer_encoding);
  if (first == last) return std::nullopt;
  const refusal malformed{http::status::bad_request, "malformed transfer-encoding\n"};
  if (req.version() < 11) return malformed;  // 6.1: HTTP/1.0 framing with it is faulty
  std::vector<std::string_view> codings;
  for (auto it = first; it != last; ++it) {
    const http::opt_token_list list{it->value()};
    if (!http::validate_list(list)) return malformed;
    codings.insert(codings.end(), list.begin(), list.end());
  }
  const auto is_chunked = [](std::string_view c) { return beast::iequals(c, "chunked"); };
  const auto chunked = std::count_if(codings.begin(), codings.end(), is_chunked);
  if (codings.empty() || chunked > 1 || (chunked == 1 && !is_chunked(codings.back())))
    return malformed;
  if (chunked == 0 || codings.size() > 1)
    return refusal{http::status::not_implemented, "unsupported transfer-encoding\n"};
  return std::nullopt;
}

// RFC 9112 section 3.2: an HTTP/1.1 request names its host exactly once; HTTP/1.0 may omit it.
std::optional<refusal> host_refusal(const request& req) {
  const auto hosts = req.count(http::field::host);
  if (hosts > 1 || (hosts == 0 && req.version() >= 11))
    return refusal{http::status::bad_request, "exactly one Host header required\n"};
  return std::nullopt;
}

}  // namespace

struct http_server::impl {
  systempp::context* ctx = nullptr;
  /// One per listener: our own copy of the master's socket.
  struct port {
    explicit port(tcp::acceptor a) : acceptor(std::move(a)) {}
    tcp::acceptor acceptor;
  };
  std::list<port> ports;
  std::unordered_set<connection*> connections;
  bool draining = false;
  clock_type::time_point drain_started;
  std::optional<asio::steady_timer> all_closed;  ///< cancelled when the last connection ends

  const config_values& config() const { return ctx->unit<settings>().values(); }
  void count(unsigned status, clock_type::duration took) {
    auto& unit = ctx->unit<http_server>();
    (status >= 500 ? unit.responses_5xx : status >= 400 ? unit.responses_4xx : unit.responses_2xx).inc();
    unit.latency.observe(std::chrono::duration<double>(took).count());
  }

  asio::awaitable<void> serve(tcp::socket socket);
  asio::awaitable<bool> wait_for_request(connection& c);
  std::optional<response> refuse_header(const request& req);
  std::optional<response> read_error_response(boost::system::error_code ec, const request& req);
  asio::awaitable<response> handle(const request& req);
  response serve_static(const request& req, std::string_view rel);
  response make_response(const request& req, http::status status, std::string body);
  asio::awaitable<void> close_gracefully(connection& c);

  void spawn(asio::awaitable<void> task, const char* what) {
    asio::co_spawn(ctx->io(), std::move(task), [log = ctx->logger_ptr(), what](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log->error("http_server: {} failed: {}", what, ex.what());
      }
    });
  }
};

http_server::http_server() : impl_(std::make_unique<impl>()) {}
http_server::~http_server() = default;

asio::awaitable<void> http_server::on_startup(systempp::context& ctx) {
  impl& s = *impl_;
  s.ctx = &ctx;
  s.draining = false;
  s.all_closed.emplace(ctx.io());
  if (auto delay = s.config().startup_delay; delay.count() > 0) {
    asio::steady_timer warmup(ctx.io(), delay);
    co_await warmup.async_wait(asio::use_awaitable);
  }
  s.ports.clear();
  for (const auto& l : ctx.listeners()) s.ports.emplace_back(systempp::make_acceptor(ctx.io(), l));
  // A connection the kernel handed over is ours to answer, even when the drain closed the
  // acceptor before its handler ran: accept_loop hands it over before it looks.
  for (auto& p : s.ports)
    s.spawn(systempp::accept_loop(p.acceptor, [&s](tcp::socket socket) { s.spawn(s.serve(std::move(socket)), "connection"); },
                                  ctx.log()),
            "accept loop");
}

void http_server::pre_shutdown(systempp::context&) {
  impl& s = *impl_;
  s.draining = true;
  s.drain_started = clock_type::now();
  for (auto& p : s.ports) {
    boost::system::error_code ignored;
    p.acceptor.close(ignored);
  }
  // Idle connections re-read their deadline, now bounded by drain_grace_ms.
  for (connection* c : s.connections)
    if (c->idle) {
      boost::system::error_code ignored;
      c->stream.socket().cancel(ignored);
    }
}

asio::awaitable<void> http_server::on_shutdown(systempp::context&) {
  impl& s = *impl_;
  while (!s.connections.empty()) {
    s.all_closed->expires_at(clock_type::time_point::max());
    co_await s.all_closed->async_wait(use_tuple);
  }
  s.ports.clear();
}

// Waits until the next request's first bytes arrive. Returns false when the connection
// should close instead: idle past keepalive_timeout_ms, or past drain_grace_ms of a drain.
asio::awaitable<bool> http_server::impl::wait_for_request(connection& c) {
  const auto idle_deadline = clock_type::now() + config().keepalive_timeout;
  bool readable = false;
  for (;;) {
    auto deadline = idle_deadline;
    if (draining) deadline = std::min(deadline, drain_started + config().drain_grace);
    if (clock_type::now() >= deadline) break;
    // One socket wait, and a timer whose plain callback cancels it: this runs before every
    // keep-alive request, and racing two coroutines with || costs far more. The token
    // guards the callback: a stale one (this wait already ended, or the connection is
    // gone) must not cancel anything.
    const auto epoch = ++c.token->epoch;
    c.idle = true;
    c.wake.expires_at(deadline);
    c.wake.async_wait([token = std::weak_ptr<wait_token>(c.token), epoch](boost::system::error_code ec) {
      auto t = token.lock();
      if (ec || !t || t->epoch != epoch) return;
      boost::system::error_code ignored;
      t->socket->cancel(ignored);
    });
    auto [ec] = co_await c.stream.socket().async_wait(tcp::socket::wait_read, use_tuple);
    c.idle = false;
    ++c.token->epoch;
    c.wake.cancel();
    if (!ec) {
      readable = true;
      break;
    }
    if (ec != asio::error::operation_aborted) break;  // the connection failed
    // Cancelled: the deadline passed, or a drain began and shortened it. Look again.
  }
  co_return readable;
}

asio::awaitable<void> http_server::impl::serve(tcp::socket socket) {
  connection c(std::move(socket));
  connections.insert(&c);
  struct deregister {
    impl& s;
    connection& c;
    ~deregister() {
      s.connections.erase(&c);
      if (s.draining && s.connections.empty()) s.all_closed->cancel();
    }
  } guard{*this, c};

  beast::flat_buffer buffer;
  for (;;) {
    if (buffer.size() == 0 && !co_await wait_for_request(c)) break;

    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(1024 * 1024);
    c.stream.expires_after(io_timeout);
    // The header alone first: the body of a request refused for its framing must never be
    // read, or it would be taken for the next request.
    boost::system::error_code ec;
    std::tie(ec, std::ignore) = co_await http::async_read_header(c.stream, buffer, parser, use_tuple);
    std::optional<response> refused;
    if (!ec) refused = refuse_header(parser.get());
    if (!ec && !refused && !parser.is_done())
      std::tie(ec, std::ignore) = co_await http::async_read(c.stream, buffer, parser, use_tuple);
    if (ec == http::error::end_of_stream) break;
    if (ec) refused = read_error_response(ec, parser.get());
    if (refused) {
      refused->keep_alive(false);
      c.stream.expires_after(io_timeout);
      co_await http::async_write(c.stream, *refused, use_tuple);
    }
    if (ec || refused) break;

    const request& req = parser.get();
    const auto began = clock_type::now();
    systempp::request_scope counted(*ctx);  // in flight until the response is written
    response res = co_await handle(req);
    if (res.result_int() >= 500) counted.fail();
    const bool keep = req.keep_alive() && !draining;
    res.keep_alive(keep);
    if (req.method() == http::verb::head) res.body().clear();  // Content-Length stays
    c.stream.expires_after(io_timeout);
    auto [wec, written] = co_await http::async_write(c.stream, res, use_tuple);
    count(res.result_int(), clock_type::now() - began);
    if (wec || !keep) break;
  }
  co_await close_gracefully(c);
}

// Half-close, then read what the client still sends until it closes too, so the kernel
// does not answer unread bytes with a reset that could destroy our last response.
asio::awaitable<void> http_server::impl::close_gracefully(connection& c) {
  boost::system::error_code ignored;
  auto& sock = c.stream.socket();
  if (!sock.is_open()) co_return;
  sock.shutdown(tcp::socket::shutdown_send, ignored);
  c.stream.expires_after(std::chrono::seconds(2));
  std::array<char, 4096> sink;
  for (;;) {
    auto [ec, n] = co_await c.stream.async_read_some(asio::buffer(sink), use_tuple);
    if (ec) break;
  }
  sock.close(ignored);
}

response http_server::impl::make_response(const request& req, http::status status, std::string body) {
  response res{status, req.version() ? req.version() : 11};
  res.set(http::field::server, "systempp-demo");
  res.set(http::field::content_type, "text/plain");
  res.set("X-Worker-Pid", std::to_string(ctx->pid()));
  res.set("X-Worker-Slot", std::to_string(ctx->slot()));
  res.set("X-Worker-Generation", std::to_string(ctx->generation()));
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

std::optional<response> http_server::impl::refuse_header(const request& req) {
  auto why = transfer_encoding_refusal(req);
  if (!why) why = host_refusal(req);
  if (!why) return std::nullopt;
  return make_response(req, why->status, std::string(why->body));
}

// The answer to a request Beast could not read, or nullopt when the client is gone or stalled.
std::optional<response> http_server::impl::read_error_response(boost::system::error_code ec,
                                                                const request& req) {
  if (ec == http::error::header_limit)
    return make_response(req, http::status::request_header_fields_too_large, "header too large\n");
  if (ec == http::error::body_limit)
    return make_response(req, http::status::payload_too_large, "body too large\n");
  if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
      ec != http::error::partial_message)
    return make_response(request{}, http::status::bad_request, "bad request\n");
  return std::nullopt;
}

asio::awaitable<response> http_server::impl::handle(const request& req) {
  const std::string_view target = req.target();
  const auto q = target.find('?');
  const std::string_view path = target.substr(0, q);
  const std::string_view query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);

  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    auto res = make_response(req, http::status::method_not_allowed, "only GET and HEAD\n");
    res.set(http::field::allow, allowed_methods);
    co_return res;
  }
  if (path == "/") co_return make_response(req, http::status::ok, config().message);
  if (path == "/healthz") {
    if (draining) co_return make_response(req, http::status::service_unavailable, "draining\n");
    const auto h = ctx->health();
    co_return h.healthy ? make_response(req, http::status::ok, "ok\n")
                        : make_response(req, http::status::service_unavailable,
                                        fmt::format("unhealthy: {}: {}\n", h.unit, h.reason));
  }
  if (path == "/sleep") {
    long long ms = -1;
    if (query.starts_with("ms=")) {
      auto digits = query.substr(3);
      auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), ms);
      if (ec != std::errc{} || end != digits.data() + digits.size()) ms = -1;
    }
    if (ms < 0 || ms > max_sleep.count())
      co_return make_response(req, http::status::bad_request,
                              fmt::format("ms must be a number from 0 to {}\n", max_sleep.count()));
    asio::steady_timer t(ctx->io(), std::chrono::milliseconds(ms));
    co_await t.async_wait(use_tuple);
    co_return make_response(req, http::status::ok, fmt::format("slept {} ms\n", ms));
  }
  if (path.starts_with("/static/")) co_return serve_static(req, path.substr(8));
  co_return make_response(req, http::status::not_found, "not found\n");
}

namespace {

// Percent-decodes a URL path; an encoded '/' or NUL is refused (it would let a client
// smuggle a separator past the segment checks).
std::optional<std::string> decode_path(std::string_view in) {
  std::string out;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return std::nullopt;
    int value = 0;
    auto [end, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, value, 16);
    if (ec != std::errc{} || end != in.data() + i + 3) return std::nullopt;
    if (value == '/' || value == '\\' || value == 0) return std::nullopt;
    out += static_cast<char>(value);
    i += 2;
  }
  return out;
}

std::string_view content_type(const std::filesystem::path& p) {
  const auto ext = p.extension().string();
  if (ext == ".html" || ext == ".htm") return "text/html";
  if (ext == ".css") return "text/css";
  if (ext == ".js") return "application/javascript";
  if (ext == ".json") return "application/json";
  if (ext == ".png") return "image/png";
  if (ext == ".txt") return "text/plain";
  return "application/octet-stream";
}

}  // namespace

// Files under docroot only: no ".." segment, no encoded separator, and the resolved path
// (symlinks followed) must still be inside the resolved docroot.
response http_server::impl::serve_static(const request& req, std::string_view rel) {
  namespace fs = std::filesystem;
  const auto& root = config().docroot;
  if (root.empty()) return make_response(req, http::status::not_found, "not found\n");
  auto decoded = decode_path(rel);
  if (!decoded) return make_response(req, http::status::bad_request, "bad path\n");
  for (std::string_view rest = *decoded; !rest.empty();) {
    const auto slash = rest.find('/');
    const auto segment = rest.substr(0, slash);
    if (segment == "..") return make_response(req, http::status::not_found, "not found\n");
    rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
  }
  std::error_code ec;
  const fs::path real_root = fs::canonical(root, ec);
  if (ec) return make_response(req, http::status::not_found, "not found\n");
  const fs::path real = fs::canonical(real_root / *decoded, ec);
  if (ec || !fs::is_regular_file(real, ec))
    return make_response(req, http::status::not_found, "not found\n");
  const auto [root_end, real_it] = std::mismatch(real_root.begin(), real_root.end(), real.begin(), real.end());
  if (root_end != real_root.end()) return make_response(req, http::status::not_found, "not found\n");
  const auto size = fs::file_size(real, ec);
  if (ec || size > max_static_size)
    return make_response(req, http::status::payload_too_large, "file too large\n");
  std::ifstream in(real, std::ios::binary);
  std::string body(size, '\0');
  if (!in.read(body.data(), static_cast<std::streamsize>(size)))
    return make_response(req, http::status::internal_server_error, "read error\n");
  auto res = make_response(req, http::status::ok, std::move(body));
  res.set(http::field::content_type, content_type(real));
  return res;
}

}  // namespace demo
