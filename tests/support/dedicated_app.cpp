// A test-only app with a dedicated unit: the demo's settings and HTTP server in the serving
// workers, and `ticker`, which runs in one process of its own (runs_in) and never beside
// another ticker. The ticker appends its life to a file so a test can check the order:
//   DEDICATED_EVENTS=PATH   "start <pid> g<generation>" at on_startup, "tick <pid>" every
//                           20 ms (a ctx.spawn task), "stop <pid>" at post_shutdown
//   DEDICATED_FAULT=G       the ticker's on_startup throws in pool generation G

#include <unistd.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

#include <systempp/systempp.hpp>

#include "http_server.hpp"
#include "settings.hpp"

namespace {

void event(const std::string& what) {
  if (const char* path = std::getenv("DEDICATED_EVENTS")) std::ofstream(path, std::ios::app) << what << "\n";
}

struct ticker {
  static constexpr std::string_view name = "ticker";
  static constexpr systempp::dedicated runs_in{.processes = 1};
  using depends_on = systempp::units<demo::settings>;

  boost::asio::awaitable<void> on_startup(systempp::context& ctx) {
    if (const char* g = std::getenv("DEDICATED_FAULT"); g && std::to_string(ctx.generation()) == g)
      throw std::runtime_error("ticker cannot start");
    event("start " + std::to_string(::getpid()) + " g" + std::to_string(ctx.generation()));
    ctx.spawn(*this, tick(ctx));
    co_return;
  }
  void post_shutdown() { event("stop " + std::to_string(::getpid())); }

  static boost::asio::awaitable<void> tick(systempp::context& ctx) {
    boost::asio::steady_timer t(ctx.io());
    for (;;) {
      t.expires_after(std::chrono::milliseconds(20));
      co_await t.async_wait(boost::asio::use_awaitable);
      event("tick " + std::to_string(::getpid()));
    }
  }
};

// A unit whose name is not valid UTF-8 (a stray 0xff byte): `status --json` must still
// print valid JSON.
struct odd_name {
  static constexpr std::string_view name = "odd\xff" "name";
  void on_init() {}
};

using dedicated_app = systempp::app<demo::settings, demo::web, demo::http_server, ticker, odd_name>;

}  // namespace

int main(int argc, char** argv) { return systempp::main<dedicated_app>(argc, argv); }
