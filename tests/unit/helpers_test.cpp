// helpers.hpp: request_scope, gate, every, accept_loop.

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>
#include <spdlog/sinks/ostream_sink.h>

#include <sys/socket.h>

#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <systempp/control_block.hpp>
#include <systempp/helpers.hpp>

#include "engine_fixture.hpp"

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

int runs = 0;
int runs_at_stop = -1;
asio::steady_timer* serving = nullptr;  // the cycle serves until a poll cancels it

// Polls every 2 ms; its second run throws; after the fourth it ends the serving.
struct poller {
  static constexpr std::string_view name = "poller";
  void on_startup(systempp::context& ctx) {
    systempp::every(ctx, *this, 2ms, [] {
      ++runs;
      if (runs == 2) throw std::runtime_error("flaky");
      if (runs >= 4 && serving) serving->cancel();
    });
  }
  void post_shutdown() { runs_at_stop = runs; }
};

struct poll_fixture : engine_fixture<systempp::app<poller>> {
  std::ostringstream log_text;
  poll_fixture() {
    ctx.set_logger(std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::ostream_sink_st>(log_text)));
    runs = 0;
    runs_at_stop = -1;
    lc.set_timeout(2s);
  }
};

}  // namespace

TEST_CASE("every: runs on its interval, survives a throwing run, stops at the drain", "[helpers]") {
  poll_fixture f;
  systempp::cycle_hooks hooks;
  hooks.serve = [&]() -> asio::awaitable<void> {
    asio::steady_timer until_polled(f.io, 10s);  // the bound: a poller that never ran
    serving = &until_polled;
    co_await until_polled.async_wait(asio::as_tuple(asio::use_awaitable));
    serving = nullptr;
  };
  CHECK(systempp::run_cycle(f.lc, f.ctx, hooks).code == systempp::exit_code::ok);
  CHECK(runs >= 4);
  CHECK(runs_at_stop == runs);  // no run after post_shutdown
  CHECK(f.log_text.str().find("a periodic task of unit poller failed: flaky; it runs again in 2 ms") !=
        std::string::npos);
  CHECK(f.ctx.running_tasks() == 0);
}

TEST_CASE("gate: close waits for the passes held, refuses new ones, and says how many outlived the limit",
          "[helpers]") {
  asio::io_context io;
  systempp::gate g;
  std::vector<std::string> seen;
  std::size_t left_waiting = 99, left_short = 99;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    // Two pieces of work, each holding a pass, ending after 5 and 10 ms.
    auto work = [&](std::chrono::milliseconds after, const char* what) {
      auto t = std::make_shared<asio::steady_timer>(io, after);
      t->async_wait([&seen, t, what, pass = std::make_shared<systempp::gate::pass>(g.enter())](auto) mutable {
        seen.push_back(what);
        pass.reset();
      });
    };
    work(5ms, "a done");
    work(10ms, "b done");
    CHECK(g.held() == 2);
    left_waiting = co_await g.close(5s);
    seen.push_back("closed");
    CHECK_FALSE(g.enter());  // closed: no new work
    g.reopen();
    auto held = g.enter();
    REQUIRE(held);
    left_short = co_await g.close(5ms);  // `held` is still out when the limit passes
  }, asio::detached);
  io.run();
  CHECK(seen == std::vector<std::string>{"a done", "b done", "closed"});
  CHECK(left_waiting == 0);
  CHECK(left_short == 1);
  CHECK(g.held() == 0);
}

TEST_CASE("request_scope: begins and ends a request in the worker's record, failed on fail() or a throw",
          "[helpers]") {
  engine_fixture<systempp::app<>> f;
  systempp::worker_slot record{};
  f.ctx.set_slot_record(&record);
  {
    systempp::request_scope r(f.ctx);
    CHECK(record.in_flight.load() == 1);
  }
  {
    systempp::request_scope r(f.ctx);
    r.fail();
  }
  try {
    systempp::request_scope r(f.ctx);
    throw std::runtime_error("handler failed");
  } catch (const std::runtime_error&) {
  }
  CHECK(record.in_flight.load() == 0);
  CHECK(record.requests.load() == 3);
  CHECK(record.errors.load() == 2);
}

namespace {

systempp::listener listen_on_loopback(bool reuse_port) {
  auto bound = systempp::bind_listeners({systempp::bind_spec{"http", "127.0.0.1", 0}}, reuse_port);
  return std::move(bound.front());
}

// An engine whose options say `strategy`, and a listener on 127.0.0.1 fit for it.
struct accept_fixture : engine_fixture<systempp::app<>> {
  explicit accept_fixture(systempp::accept_strategy strategy)
      : l(listen_on_loopback(strategy == systempp::accept_strategy::reuseport)),
        at(asio::ip::make_address("127.0.0.1"), l.port) {
    opts.accept = strategy;
  }
  systempp::listener l;
  asio::ip::tcp::endpoint at;
};

}  // namespace

TEST_CASE("accept_loop: hands each connection over and ends when the acceptor is closed, with every --accept strategy",
          "[helpers][accept]") {
  const auto strategy = GENERATE(systempp::accept_strategy::shared, systempp::accept_strategy::exclusive,
                                 systempp::accept_strategy::reuseport);
  INFO(systempp::to_string(strategy));
  accept_fixture f(strategy);
  systempp::connection_acceptor acceptor(f.ctx, f.l);
  int accepted = 0;
  bool ended = false;
  asio::co_spawn(f.ctx.executor(), [&]() -> asio::awaitable<void> {
    co_await systempp::accept_loop(acceptor, [&](asio::ip::tcp::socket s) {
      CHECK(s.is_open());
      if (++accepted == 2) acceptor.close();
    }, f.ctx.log());
    ended = true;
  }, asio::detached);
  asio::ip::tcp::socket one(f.io), two(f.io);
  one.connect(f.at);
  two.connect(f.at);
  f.io.run();
  CHECK(accepted == 2);
  CHECK(ended);
}

TEST_CASE("connection_acceptor: close(take) of a reuseport acceptor hands over its queued connections, the others leave them queued",
          "[helpers][accept]") {
  const auto strategy = GENERATE(systempp::accept_strategy::shared, systempp::accept_strategy::exclusive,
                                 systempp::accept_strategy::reuseport);
  INFO(systempp::to_string(strategy));
  accept_fixture f(strategy);
  std::vector<asio::ip::tcp::socket> clients;
  for (int i = 0; i < 3; ++i) clients.emplace_back(f.io).connect(f.at);  // queued: nothing accepts yet

  systempp::connection_acceptor acceptor(f.ctx, f.l);
  int handed = 0;
  acceptor.close([&](asio::ip::tcp::socket s) {
    CHECK(s.is_open());
    ++handed;
  });
  CHECK_FALSE(acceptor.is_open());
  const bool sweeps = strategy == systempp::accept_strategy::reuseport;
  CHECK(handed == (sweeps ? 3 : 0));
  // What was not handed out is still in the listener's queue, for another worker.
  int left = 0;
  while (true) {
    systempp::unique_fd fd(::accept4(f.l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd) break;
    ++left;
  }
  CHECK(left == (sweeps ? 0 : 3));
}

TEST_CASE("connection_acceptor: a connection the master hands over comes out of accept() first, goes to take after "
          "close(take), and to nobody after close()",
          "[helpers][accept]") {
  const auto strategy = GENERATE(systempp::accept_strategy::shared, systempp::accept_strategy::exclusive,
                                 systempp::accept_strategy::reuseport);
  INFO(systempp::to_string(strategy));
  accept_fixture f(strategy);
  // Connections of another socket stand for the ones the master accepted elsewhere.
  const auto elsewhere = listen_on_loopback(false);
  std::vector<asio::ip::tcp::socket> clients;
  const auto handed = [&] {
    clients.emplace_back(f.io).connect({asio::ip::make_address("127.0.0.1"), elsewhere.port});
    systempp::unique_fd fd(::accept4(elsewhere.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(fd);
    return fd;
  };

  {
    systempp::connection_acceptor acceptor(f.ctx, f.l);
    std::vector<std::uint16_t> ports;
    asio::co_spawn(f.ctx.executor(), [&]() -> asio::awaitable<void> {
      co_await systempp::accept_loop(acceptor, [&](asio::ip::tcp::socket s) {
        ports.push_back(s.local_endpoint().port());
        if (ports.size() == 2) acceptor.close();
      }, f.ctx.log());
    }, asio::detached);
    // While the loop waits on its own socket, with nothing queued there: one handed over,
    // then one queued on its own socket.
    asio::post(f.ctx.executor(), [&] {
      CHECK(f.ctx.take_connection("http", handed()));
      clients.emplace_back(f.io).connect(f.at);
    });
    f.io.run();
    CHECK(ports == std::vector<std::uint16_t>{elsewhere.port, f.l.port});
  }
  f.io.restart();

  systempp::connection_acceptor acceptor(f.ctx, f.l);
  std::vector<std::uint16_t> taken;
  acceptor.close([&](asio::ip::tcp::socket s) { taken.push_back(s.local_endpoint().port()); });
  CHECK(f.ctx.take_connection("http", handed()));  // a drain still answers it
  CHECK(taken == std::vector<std::uint16_t>{elsewhere.port});
  acceptor.close();
  CHECK_FALSE(f.ctx.take_connection("http", handed()));  // the worker logs and closes it
  CHECK(taken.size() == 1);
}
