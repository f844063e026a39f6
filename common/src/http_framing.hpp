#pragma once
// The HTTP server's per-connection state, its framing rules (RFC 9112) and how it writes
// a response, apart from the server's work so that each reads on its own. Included by
// http_server.cpp only, the one translation unit that compiles Beast.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <cerrno>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "systempp/http.hpp"

namespace systempp::http::framing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
inline constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

/// One connection's state; used on its own strand only. Its time limits are one deadline
/// and one timer: a phase (waiting for a request, reading it, writing the answer) sets the
/// deadline with set_deadline, and the timer, when it fires, looks whether the deadline
/// passed (then it cancels the socket's operations) or moved (then it waits again). So a
/// keep-alive request arms no timer: it is re-armed about once per keepalive-timeout, or
/// at once when a deadline comes earlier than the one it waits for (a drain).
struct connection {
  using clock = asio::steady_timer::clock_type;
  explicit connection(tcp::socket s) : socket(std::move(s)), watchdog(socket.get_executor()) {}
  tcp::socket socket;
  asio::steady_timer watchdog;
  std::weak_ptr<connection> self;  ///< for the watchdog's handler, which may outlive it
  clock::time_point deadline = clock::time_point::max();
  clock::time_point armed = clock::time_point::max();  ///< what the watchdog waits for (max: nothing)
  bool idle = false;  ///< waiting for the first byte of the next request
  std::string out;  ///< the response being written (send_response), its capacity kept
};

inline void watch(connection& c) {
  c.armed = c.deadline;
  c.watchdog.expires_at(c.armed);  // cancels a pending wait: its handler sees the error
  c.watchdog.async_wait([weak = c.self](boost::system::error_code ec) {
    auto c = weak.lock();
    if (ec == asio::error::operation_aborted || !c) return;  // re-armed, or gone
    c->armed = connection::clock::time_point::max();
    if (connection::clock::now() >= c->deadline) {
      // cancel() ends an operation that waits; a read that completed at once (its result
      // queued, the client still sending) would go on: shutting the socket down ends every
      // later one too.
      boost::system::error_code ignored;
      c->socket.cancel(ignored);
      c->socket.shutdown(tcp::socket::shutdown_both, ignored);
      c->deadline = connection::clock::time_point::max();
      return;
    }
    watch(*c);
  });
}

/// Sets the deadline of the phase that begins: a plain store unless it is earlier than the
/// time the watchdog waits for (max when it waits for nothing).
inline void set_deadline(connection& c, connection::clock::time_point when) {
  c.deadline = when;
  if (when < c.armed) watch(c);
}

/// Why a request is answered with an error and a closed connection before its body is read.
struct refusal {
  bhttp::status status;
  std::string_view body;
};

// RFC 9112 sections 6.1 and 6.3. Beast reads a chunked body only when `chunked` is the last
// coding and takes any other request as bodiless, so the body of `gzip` or `chunked, gzip`
// would be parsed as the next request (smuggling). A list that does not parse, `chunked`
// anywhere but once and last, or any coding in an HTTP/1.0 request is malformed (400); a
// well-formed list with a coding other than `chunked` is one we do not implement (501).
inline std::optional<refusal> transfer_encoding_refusal(const request& req) {
  const auto [first, last] = req.equal_range(bhttp::field::transfer_encoding);
  if (first == last) return std::nullopt;
  const refusal malformed{bhttp::status::bad_request, "malformed transfer-encoding\n"};
  if (req.version() < 11) return malformed;  // 6.1: HTTP/1.0 framing with it is faulty
  std::vector<std::string_view> codings;
  for (auto it = first; it != last; ++it) {
    const bhttp::opt_token_list list{it->value()};
    if (!bhttp::validate_list(list)) return malformed;
    codings.insert(codings.end(), list.begin(), list.end());
  }
  const auto is_chunked = [](std::string_view c) { return beast::iequals(c, "chunked"); };
  const auto chunked = std::count_if(codings.begin(), codings.end(), is_chunked);
  if (codings.empty() || chunked > 1 || (chunked == 1 && !is_chunked(codings.back())))
    return malformed;
  if (chunked == 0 || codings.size() > 1)
    return refusal{bhttp::status::not_implemented, "unsupported transfer-encoding\n"};
  return std::nullopt;
}

// RFC 9112 section 3.2: an HTTP/1.1 request names its host exactly once; HTTP/1.0 may omit it.
inline std::optional<refusal> host_refusal(const request& req) {
  const auto hosts = req.count(bhttp::field::host);
  if (hosts > 1 || (hosts == 0 && req.version() >= 11))
    return refusal{bhttp::status::bad_request, "exactly one Host header required\n"};
  return std::nullopt;
}



// Writing responses.

inline constexpr std::size_t kept_response_capacity = 64 * 1024;

// The status line and the message's fields as they are, as Beast's serializer writes them.
inline void append_header(std::string& out, const response& res) {
  fmt::format_to(std::back_inserter(out), "HTTP/{}.{} {} ", res.version() / 10, res.version() % 10, res.result_int());
  out.append(res.reason());
  out.append("\r\n");
  for (const auto& f : res) {
    out.append(f.name_string());
    out.append(": ");
    out.append(f.value());
    out.append("\r\n");
  }
  out.append("\r\n");
}

// Writes `bytes` (alive until this completes) with one send when the socket takes it all
// (nearly always: a small response into an empty send buffer), the rest asynchronously.
inline asio::awaitable<boost::system::error_code> send_bytes(tcp::socket& socket, std::string_view bytes) {
  boost::system::error_code ec;
  std::size_t sent = 0;
  for (;;) {
    const auto n = ::send(socket.native_handle(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) sent = static_cast<std::size_t>(n);
    else if (errno == EINTR) continue;
    else if (errno != EAGAIN && errno != EWOULDBLOCK) ec.assign(errno, boost::system::system_category());
    break;
  }
  if (!ec && sent < bytes.size())
    std::tie(ec, std::ignore) = co_await asio::async_write(socket, asio::buffer(bytes.substr(sent)), use_tuple);
  co_return ec;
}

// Writes `res` from the connection's own buffer, which keeps its capacity from one response
// to the next. Beast's serializer walked a five-part buffer sequence on every send and
// completed through the loop's queue, about a tenth of the CPU of a keep-alive request; a
// chunked response (a route that asked for one) still goes through it.
inline asio::awaitable<boost::system::error_code> send_response(connection& c, const response& res) {
  if (res.chunked()) {
    auto [ec, n] = co_await bhttp::async_write(c.socket, res, use_tuple);
    co_return ec;
  }
  std::string& out = c.out;
  out.clear();
  append_header(out, res);
  out.append(res.body());
  const auto ec = co_await send_bytes(c.socket, out);
  if (out.capacity() > kept_response_capacity) std::string().swap(out);  // one large body is not kept per connection
  co_return ec;
}

// HTTP clients speak first: the accept can wait for the request (with reuseport this is
// the slot's own socket, and every worker sets its own). The setting is the socket's, as
// nginx's `deferred` is: it replaces systemd's DeferAcceptSec= too. A socket that refuses
// is served all the same.
inline void defer_accept(context& ctx, const listener& l, std::chrono::seconds wait) {
  const int secs = static_cast<int>(wait.count());
  if (::setsockopt(l.fd.get(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs) != 0)
    ctx.log().warn("http_server: TCP_DEFER_ACCEPT on {}: {}", l.endpoint(), std::strerror(errno));
}

}  // namespace systempp::http::framing
