#pragma once
// The HTTP server's per-connection state and its framing rules (RFC 9112), apart from the
// server's work so that each reads on its own. Included by http_server.cpp only, the one
// translation unit that compiles Beast.

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "systempp/http.hpp"

namespace systempp::http::framing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;

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



}  // namespace systempp::http::framing
