#include "http_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/field.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

namespace demo {

namespace asio = boost::asio;
namespace http = systempp::http;
using http::reply;
using http::request;
using http::response;
using http::status;

namespace {

constexpr std::chrono::milliseconds max_sleep{60'000};
constexpr std::uintmax_t max_static_size = 16 * 1024 * 1024;

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


// Files under docroot only: no ".." segment, no encoded separator, and the resolved path
// (symlinks followed) must still be inside the resolved docroot.
response serve_static(const request& req, const std::filesystem::path& root, std::string_view rel) {
  namespace fs = std::filesystem;
  if (root.empty()) return reply(req, status::not_found, "not found\n");
  auto decoded = decode_path(rel);
  if (!decoded) return reply(req, status::bad_request, "bad path\n");
  for (std::string_view rest = *decoded; !rest.empty();) {
    const auto slash = rest.find('/');
    const auto segment = rest.substr(0, slash);
    if (segment == "..") return reply(req, status::not_found, "not found\n");
    rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
  }
  std::error_code ec;
  const fs::path real_root = fs::canonical(root, ec);
  if (ec) return reply(req, status::not_found, "not found\n");
  const fs::path real = fs::canonical(real_root / *decoded, ec);
  if (ec || !fs::is_regular_file(real, ec))
    return reply(req, status::not_found, "not found\n");
  const auto [root_end, real_it] = std::mismatch(real_root.begin(), real_root.end(), real.begin(), real.end());
  if (root_end != real_root.end()) return reply(req, status::not_found, "not found\n");
  const auto size = fs::file_size(real, ec);
  if (ec || size > max_static_size)
    return reply(req, status::payload_too_large, "file too large\n");
  std::ifstream in(real, std::ios::binary);
  std::string body(size, '\0');
  if (!in.read(body.data(), static_cast<std::streamsize>(size)))
    return reply(req, status::internal_server_error, "read error\n");
  auto res = reply(req, status::ok, std::move(body));
  res.set(boost::beast::http::field::content_type, content_type(real));
  return res;
}


}  // namespace

asio::awaitable<void> web::on_startup(systempp::context& ctx) {
  ctx_ = &ctx;
  if (auto delay = ctx.dependency<settings>(*this).values().startup_delay; delay.count() > 0) {
    asio::steady_timer warmup(ctx.io(), delay);
    co_await warmup.async_wait(asio::use_awaitable);
  }
}

void web::routes(http::router& r) {
  const auto& values = ctx_->dependency<settings>(*this).values();
  r.fixed("/", status::ok, values.message);
  r.get("/sleep", [ctx = ctx_](const request& req) -> asio::awaitable<response> {
    const std::string_view target = req.target();
    const auto q = target.find('?');
    const std::string_view query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
    long long ms = -1;
    if (query.starts_with("ms=")) {
      auto digits = query.substr(3);
      auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), ms);
      if (ec != std::errc{} || end != digits.data() + digits.size()) ms = -1;
    }
    if (ms < 0 || ms > max_sleep.count())
      co_return reply(req, status::bad_request, fmt::format("ms must be a number from 0 to {}\n", max_sleep.count()));
    asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    co_return reply(req, status::ok, fmt::format("slept {} ms\n", ms));
  });
  r.get("/static/*", [&values](const request& req) {
    const std::string_view target = req.target();
    const std::string_view path = target.substr(0, target.find('?'));
    return serve_static(req, values.docroot, path.substr(8));
  });
  r.decorate([ctx = ctx_](response& res) {
    res.set("X-Worker-Pid", std::to_string(ctx->pid()));
    res.set("X-Worker-Slot", std::to_string(ctx->slot()));
    res.set("X-Worker-Generation", std::to_string(ctx->generation()));
  });
}

}  // namespace demo
