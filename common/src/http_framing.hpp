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
#include <string_view>
#include <vector>

#include "systempp/http.hpp"

namespace systempp::http::framing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;

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
