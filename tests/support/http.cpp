#include "support/http.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <utility>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace support {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using clock = std::chrono::steady_clock;

constexpr std::size_t max_error_samples = 20;
constexpr std::uint64_t max_body = 64 * 1024 * 1024;
constexpr auto connect_retry_pause = std::chrono::milliseconds(10);

response to_response(const http::response<http::string_body>& m) {
  response r;
  r.status = static_cast<int>(m.result_int());
  for (const auto& field : m) {
    std::string name(field.name_string());
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    auto [it, inserted] = r.headers.try_emplace(name, field.value());
    if (!inserted) (it->second += ", ") += std::string_view(field.value());
  }
  r.body = m.body();
  r.keep_alive = m.keep_alive();
  return r;
}

std::string host_header(const std::string& host, std::uint16_t port) {
  const bool ipv6_literal = host.find(':') != std::string::npos;
  return (ipv6_literal ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

http::request<http::empty_body> make_get(const std::string& host, std::uint16_t port,
                                         const std::string& target, bool close) {
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, host_header(host, port));
  req.set(http::field::user_agent, "systempp-tests");
  if (close) req.set(http::field::connection, "close");
  return req;
}

struct op_result {
  beast::error_code ec;
  std::size_t bytes = 0;
};

/// One TCP connection with its own io_context, driven synchronously: each operation is started
/// and the context run until it completes. Every operation carries a deadline on the
/// tcp_stream, whose timer closes the socket when it passes, so no call outlives its deadline.
class connection {
 public:
  bool connect(const std::string& host, std::uint16_t port, clock::time_point deadline,
               std::string& error) {
    std::vector<tcp::endpoint> endpoints;
    beast::error_code ec;
    const auto address = net::ip::make_address(host, ec);
    if (!ec) {
      endpoints.emplace_back(address, port);
    } else {
      tcp::resolver resolver(ioc_);
      const auto results = resolver.resolve(host, std::to_string(port), ec);
      if (ec) {
        error = "resolve " + host + ": " + ec.message();
        return false;
      }
      for (const auto& entry : results) endpoints.push_back(entry.endpoint());
    }
    const auto r = run(deadline, [&](auto done) {
      stream_.async_connect(endpoints,
                            [done](beast::error_code e, const tcp::endpoint&) { done(e); });
    });
    if (r.ec) {
      error = "connect: " + r.ec.message();
      close();
      return false;
    }
    // Requests are small and latency is what tests measure: no Nagle delay.
    stream_.socket().set_option(tcp::no_delay(true), ec);
    return true;
  }

  std::optional<response> exchange(const http::request<http::empty_body>& req,
                                   clock::time_point deadline, std::string& error) {
    auto r = run(deadline, [&](auto done) {
      http::async_write(stream_, req, [done](beast::error_code e, std::size_t n) { done(e, n); });
    });
    if (r.ec) {
      error = "write: " + r.ec.message();
      close();
      return std::nullopt;
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(max_body);
    r = run(deadline, [&](auto done) {
      http::async_read(stream_, buffer_, parser,
                       [done](beast::error_code e, std::size_t n) { done(e, n); });
    });
    if (r.ec) {
      error = "read: " + r.ec.message();
      close();
      return std::nullopt;
    }
    return to_response(parser.get());
  }

  bool write_raw(std::string_view bytes, clock::time_point deadline, std::string& error) {
    const auto r = run(deadline, [&](auto done) {
      net::async_write(stream_, net::buffer(bytes.data(), bytes.size()),
                       [done](beast::error_code e, std::size_t n) { done(e, n); });
    });
    if (r.ec) error = "write: " + r.ec.message();
    return !r.ec;
  }

  void shutdown_send() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  /// Appends to data until EOF, an error, the deadline, or `enough(data)`; says how it ended.
  template <class Enough>
  std::string read_until_end(std::string& data, clock::time_point deadline, Enough enough) {
    std::array<char, 16 * 1024> chunk;
    for (;;) {
      const auto r = run(deadline, [&](auto done) {
        stream_.async_read_some(net::buffer(chunk),
                                [done](beast::error_code e, std::size_t n) { done(e, n); });
      });
      data.append(chunk.data(), r.bytes);
      if (r.ec == net::error::eof) return "";
      if (r.ec) return "read: " + r.ec.message();
      if (enough(data)) return "";
    }
  }

  void close() { stream_.close(); }

 private:
  template <class Initiate>
  op_result run(clock::time_point deadline, Initiate initiate) {
    std::optional<op_result> result;
    auto done = [&result](beast::error_code ec, std::size_t bytes = 0) {
      result = op_result{ec, bytes};
    };
    stream_.expires_at(deadline);
    initiate(done);
    ioc_.restart();
    // The stream's timer closes the socket at the deadline, which completes the operation, so
    // run_for normally returns early; the grace period only guards against that failing.
    ioc_.run_for(std::max<clock::duration>(deadline - clock::now(), clock::duration::zero()) +
                 std::chrono::seconds(1));
    if (!result) {
      stream_.close();  // completes the operation with operation_aborted
      ioc_.restart();
      ioc_.run();
    }
    return result.value_or(op_result{net::error::timed_out, 0});
  }

  net::io_context ioc_{1};
  beast::tcp_stream stream_{ioc_};
  beast::flat_buffer buffer_;  // bytes read past one response belong to the next
};

}  // namespace

std::string response::header(const std::string& name) const {
  const auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

std::optional<response> http_get(std::string host, std::uint16_t port, std::string target,
                                 std::chrono::milliseconds timeout, std::string* error) {
  const auto deadline = clock::now() + timeout;
  std::string why;
  connection conn;
  std::optional<response> r;
  if (conn.connect(host, port, deadline, why)) {
    r = conn.exchange(make_get(host, port, target, true), deadline, why);
    conn.close();
  }
  if (error != nullptr) *error = r ? std::string() : why;
  return r;
}

struct keepalive_client::impl {
  std::string host_;
  std::uint16_t port_ = 0;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<connection> conn_;  // null while disconnected
  std::string last_error_;

  bool connect() {
    conn_.reset();
    auto c = std::make_unique<connection>();
    last_error_.clear();
    if (!c->connect(host_, port_, clock::now() + timeout_, last_error_)) return false;
    conn_ = std::move(c);
    return true;
  }
};

keepalive_client::keepalive_client(std::string host, std::uint16_t port,
                                   std::chrono::milliseconds timeout)
    : impl_(std::make_unique<impl>()) {
  impl_->host_ = std::move(host);
  impl_->port_ = port;
  impl_->timeout_ = timeout;
  impl_->connect();
}

keepalive_client::keepalive_client(keepalive_client&&) noexcept = default;
keepalive_client& keepalive_client::operator=(keepalive_client&&) noexcept = default;
keepalive_client::~keepalive_client() = default;

std::optional<response> keepalive_client::get(std::string target, bool close) {
  auto& i = *impl_;
  if (!i.conn_) {
    i.last_error_ = "not connected";
    return std::nullopt;
  }
  i.last_error_.clear();
  auto r = i.conn_->exchange(make_get(i.host_, i.port_, target, close),
                             clock::now() + i.timeout_, i.last_error_);
  // A failed exchange leaves the stream closed; so does a server that asked to close.
  if (!r || !r->keep_alive) i.conn_.reset();
  return r;
}

bool keepalive_client::reconnect() { return impl_->connect(); }
void keepalive_client::disconnect() { impl_->conn_.reset(); }
bool keepalive_client::connected() const { return impl_->conn_ != nullptr; }
std::string keepalive_client::last_error() const { return impl_->last_error_; }

std::optional<std::string> raw_exchange(std::string host, std::uint16_t port, std::string bytes,
                                        std::chrono::milliseconds timeout, raw_options options,
                                        std::string* error) {
  const auto deadline = clock::now() + timeout;
  std::string why;
  connection conn;
  if (!conn.connect(host, port, deadline, why)) {
    if (error != nullptr) *error = why;
    return std::nullopt;
  }
  std::string data;
  // A server may answer (400, 431) and close before taking all the bytes: read what it sent.
  const bool written = conn.write_raw(bytes, deadline, why);
  if (written && options.then == after_write::shutdown_send) conn.shutdown_send();
  const auto ended = conn.read_until_end(data, deadline, [&](const std::string& so_far) {
    return options.stop_after_responses != 0 &&
           parse_responses(so_far).size() >= options.stop_after_responses;
  });
  if (error != nullptr) *error = written ? ended : why + (ended.empty() ? "" : "; " + ended);
  conn.close();
  return data;
}

std::vector<response> parse_responses(std::string_view raw) {
  std::vector<response> out;
  std::size_t offset = 0;
  while (offset < raw.size()) {
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    parser.body_limit(boost::none);
    beast::error_code ec;
    while (!parser.is_done() && offset < raw.size()) {
      const auto used = parser.put(net::buffer(raw.data() + offset, raw.size() - offset), ec);
      offset += used;
      if (ec == http::error::need_more) {
        ec = {};
        if (used == 0) break;  // the header is not all there yet
        continue;
      }
      if (ec) return out;
    }
    if (!parser.is_done()) {
      // Out of bytes: only a body delimited by EOF is complete now.
      if (offset < raw.size() || !parser.is_header_done()) return out;
      parser.put_eof(ec);
      if (ec || !parser.is_done()) return out;
    }
    out.push_back(to_response(parser.get()));
  }
  return out;
}

std::set<pid_t> load_stats::pids() const {
  std::set<pid_t> result;
  for (const auto& [value, count] : worker_pids) {
    pid_t pid = 0;
    const auto* end = value.data() + value.size();
    auto [p, ec] = std::from_chars(value.data(), end, pid);
    if (ec == std::errc{} && p == end && pid > 0) result.insert(pid);
  }
  return result;
}

load_generator::load_generator(load_options options)
    : options_(std::move(options)),
      started_(clock::now()),
      deadline_(started_ + options_.max_duration) {
  threads_.reserve(options_.threads);
  try {
    for (std::size_t i = 0; i < options_.threads; ++i) {
      threads_.emplace_back([this] { run_thread(); });
    }
  } catch (...) {
    stop();  // a joinable std::thread must not be destroyed: join those that started
    throw;
  }
}

load_generator::~load_generator() { stop(); }

load_stats load_generator::snapshot() const {
  std::lock_guard lock(mutex_);
  load_stats copy = stats_;
  if (!joined_) {
    copy.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started_);
  }
  return copy;
}

load_stats load_generator::stop() {
  stopping_ = true;
  stop_cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  std::lock_guard lock(mutex_);
  if (!joined_) {
    joined_ = true;
    stats_.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started_);
  }
  return stats_;
}

bool load_generator::should_stop() { return stopping_ || clock::now() >= deadline_; }

void load_generator::pause_after_failure() {
  // A refused connect returns at once; without a pause a dead server would be spun on.
  std::unique_lock lock(mutex_);
  stop_cv_.wait_for(lock, connect_retry_pause, [this] { return stopping_.load(); });
}

void load_generator::run_thread() {
  auto note_error = [this](const std::string& why) {
    if (stats_.error_samples.size() < max_error_samples) stats_.error_samples.push_back(why);
  };
  auto connect_failed = [&](const std::string& why) {
    {
      std::lock_guard lock(mutex_);
      ++stats_.connect_failures;
      note_error(why);
    }
    pause_after_failure();
  };

  keepalive_client client(options_.host, options_.port, options_.request_timeout);
  if (!client.connected()) connect_failed(client.last_error());
  while (!should_stop()) {
    if (!client.connected()) {
      if (!client.reconnect()) {
        connect_failed(client.last_error());
        continue;
      }
      std::lock_guard lock(mutex_);
      ++stats_.reconnects;
    }
    if (options_.max_requests != 0 && issued_.fetch_add(1) >= options_.max_requests) break;
    const auto r = client.get(options_.target, options_.close_each);
    std::lock_guard lock(mutex_);
    if (!r) {
      ++stats_.connection_errors;
      note_error(client.last_error());
      continue;
    }
    ++stats_.statuses[r->status];
    if (r->status >= 200 && r->status < 300) {
      ++stats_.ok;
    } else {
      ++stats_.non_2xx;
      note_error("status " + std::to_string(r->status));
    }
    if (auto it = r->headers.find("x-worker-pid"); it != r->headers.end()) {
      ++stats_.worker_pids[it->second];
    }
  }
}

}  // namespace support
