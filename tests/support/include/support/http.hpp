#pragma once
/// HTTP/1.1 client pieces for integration tests, built on Boost.Beast (only http.cpp sees it).
///
/// Every call is bounded: connect, write and read share one deadline per call, after which the
/// socket is closed and the call returns. Nothing here throws on network errors; failures come
/// back as nullopt plus a reason, so tests can count them. Host names other than numeric
/// addresses are resolved synchronously (tests use 127.0.0.1, ::1 or localhost).

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace support {

/// One parsed HTTP response.
struct response {
  int status = 0;
  std::map<std::string, std::string> headers;  ///< lower-case names; repeats joined by ", "
  std::string body;
  bool keep_alive = false;  ///< the connection may carry another request after this one

  /// The header's value, or "" if absent; name must be lower-case.
  std::string header(const std::string& name) const;
};

/// One GET with "Connection: close" on a fresh connection. nullopt on any failure (refused,
/// reset, timeout, unparsable reply); *error, if given, says which.
std::optional<response> http_get(std::string host, std::uint16_t port, std::string target,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(5),
                                 std::string* error = nullptr);

/// A persistent connection that never reconnects on its own: a request on a connection the server
/// dropped fails, so a test counts exactly what a real keep-alive client would have seen.
/// Use from one thread at a time.
class keepalive_client {
 public:
  /// Connects at once; a failure leaves connected() false and last_error() set, no throw.
  keepalive_client(std::string host, std::uint16_t port, std::chrono::milliseconds timeout);
  keepalive_client(keepalive_client&&) noexcept;
  keepalive_client& operator=(keepalive_client&&) noexcept;
  keepalive_client(const keepalive_client&) = delete;
  keepalive_client& operator=(const keepalive_client&) = delete;
  ~keepalive_client();

  /// GET target on the current connection, bounded by the timeout. nullopt (and disconnected)
  /// on any failure, or at once if not connected. After a response that does not allow
  /// keep-alive (e.g. "Connection: close"), connected() is false.
  /// `close`: ask for "Connection: close" (the next get needs a reconnect()).
  std::optional<response> get(std::string target, bool close = false);
  /// Drops the current connection, if any, and opens a new one. Returns connected().
  bool reconnect();
  /// Closes the connection (e.g. to test how the server handles idle clients leaving).
  void disconnect();
  bool connected() const;
  /// Why the last connect or request failed; empty after a success.
  std::string last_error() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// What raw_exchange does once the bytes are written.
enum class after_write {
  keep_open,      ///< leave our side open, as a client waiting for replies would
  shutdown_send,  ///< half-close, so the server reads EOF after the request bytes
};

struct raw_options {
  after_write then = after_write::keep_open;
  /// Stop reading once this many complete responses arrived (0 = read until EOF or timeout).
  /// Lets a pipelining test finish as soon as the answers are in, on a connection kept alive.
  std::size_t stop_after_responses = 0;
};

/// Connects, writes bytes verbatim (malformed or pipelined requests), reads until EOF, the
/// timeout, or options.stop_after_responses; returns everything read, even if the read ended by
/// a timeout or reset (*error says how it ended: "" for EOF or enough responses). nullopt only
/// if the connection could not be made.
std::optional<std::string> raw_exchange(std::string host, std::uint16_t port, std::string bytes,
                                        std::chrono::milliseconds timeout,
                                        raw_options options = {}, std::string* error = nullptr);

/// Parses consecutive HTTP/1.1 responses from raw bytes with Beast's parser, stopping at the
/// first incomplete or malformed one. A body delimited by EOF takes the rest of the bytes.
/// Responses to HEAD requests cannot be told apart from here and are not supported.
std::vector<response> parse_responses(std::string_view raw);

/// Totals of a load_generator run.
struct load_stats {
  std::size_t ok = 0;                 ///< 2xx responses
  std::size_t non_2xx = 0;            ///< any other status
  std::size_t connection_errors = 0;  ///< requests that failed on an open connection
  std::size_t connect_failures = 0;   ///< (re)connect attempts that failed
  std::size_t reconnects = 0;         ///< successful reconnects (after errors or Connection: close)
  std::map<int, std::size_t> statuses;               ///< status -> count
  std::map<std::string, std::size_t> worker_pids;    ///< X-Worker-Pid value -> responses
  std::vector<std::string> error_samples;            ///< the first few failure reasons
  std::chrono::milliseconds elapsed{0};

  /// Everything that a client would have noticed as a failure.
  std::size_t failures() const { return non_2xx + connection_errors + connect_failures; }
  std::size_t requests() const { return ok + non_2xx + connection_errors; }
  /// The X-Worker-Pid values that parse as pids.
  std::set<pid_t> pids() const;
};

struct load_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string target = "/";
  std::size_t threads = 4;
  /// Hard bound on the run: the generator stops by itself after this even without stop().
  std::chrono::milliseconds max_duration = std::chrono::seconds(30);
  /// Total requests over all threads (0 = no bound but max_duration).
  std::size_t max_requests = 0;
  /// Per connect and per request.
  std::chrono::milliseconds request_timeout = std::chrono::seconds(2);
  /// A new connection for every request ("Connection: close") instead of keep-alive.
  bool close_each = false;
};

/// Keep-alive clients hammering one target from several threads, e.g. during a reload, to prove
/// no request fails. Each thread owns a keepalive_client; on a failure it counts it, then
/// reconnects (with a short pause if the connect fails, so a dead server is not spun on).
class load_generator {
 public:
  /// Starts the threads at once.
  explicit load_generator(load_options options);
  load_generator(const load_generator&) = delete;
  load_generator& operator=(const load_generator&) = delete;
  /// Stops and joins if stop() was not called.
  ~load_generator();

  /// Counts so far, while running: wait_until(snapshot().ok >= 100) before acting on the server.
  load_stats snapshot() const;
  /// Stops every thread (each finishes its request in flight, bounded by request_timeout), joins
  /// them and returns the totals. Calling it again returns the same totals.
  load_stats stop();

 private:
  void run_thread();
  bool should_stop();
  void pause_after_failure();

  load_options options_;
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point deadline_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> issued_{0};
  mutable std::mutex mutex_;
  std::condition_variable stop_cv_;
  load_stats stats_;
  bool joined_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace support
