#pragma once
/// systempp: run an app of units as a pool of worker processes, inline, or as a script.
///
///   struct settings { void on_init(systempp::context&); };
///   struct http_server { boost::asio::awaitable<void> on_startup(systempp::context&); };
///   using my_app = systempp::app<settings, http_server>;
///   int main(int argc, char** argv) { return systempp::main<my_app>(argc, argv); }

#include <type_traits>
#include <utility>

#include "systempp/process_title.hpp"
#include "systempp/app.hpp"
#include "systempp/context.hpp"
#include "systempp/errors.hpp"
#include "systempp/options.hpp"
#include "systempp/runners.hpp"
#include "systempp/stage.hpp"
#include "systempp/unit.hpp"

namespace systempp {

/// Runs the app as the command line says (pool, inline, or a control sub-command) and
/// returns the process exit code. Call from main() in the launching process.
/// Where it returns: in the master (pool), the inline process, or the control command. A
/// forked worker never returns from it (it _exits inside); an exec'd worker image (exec
/// mode) runs main() again and returns that worker's own exit code.
template <class App>
int main(int argc, char** argv, const about& info = {}) {
  detail::init_process_title(argc, argv);  // before anything keeps a pointer into environ
  auto io = detail::make_io_context();     // declared first: destroyed after the units
  app_instance<App> instance;
  instance.entries().info = info;
  return detail::run_main(argc, argv, instance.entries(), *io);
}

/// Runs the app's stages around `body` in this process: on_init, pre_startup, on_startup,
/// post_startup, body, pre_shutdown, on_shutdown, post_shutdown, on_exit. The body is
/// `int(context&)` or `boost::asio::awaitable<int>(context&)`; it runs on the loop's
/// thread. A body that throws still gets the full teardown and yields exit code 1.
/// Runtime options (--config, --log-level, ...) are parsed; other arguments are left in
/// ctx.opts().args.
/// Script only: everything runs in the calling process, nothing is forked, no listener is
/// bound (ctx.listeners() is empty), and the context's role is process_role::script.
template <class App, class Body>
int run_script(int argc, char** argv, Body body, const about& info = {}) {
  auto io = detail::make_io_context();  // declared first: destroyed after the units
  app_instance<App> instance;
  instance.entries().info = info;
  detail::script_body wrapped = [body = std::move(body)](context& ctx) mutable
      -> boost::asio::awaitable<int> {
    if constexpr (std::is_invocable_r_v<boost::asio::awaitable<int>, Body&, context&> &&
                  !std::is_same_v<std::invoke_result_t<Body&, context&>, int>) {
      co_return co_await body(ctx);
    } else {
      static_assert(std::is_invocable_r_v<int, Body&, context&>,
                    "systempp: a script body is int(context&) or awaitable<int>(context&)");
      co_return body(ctx);
    }
  };
  return detail::run_script(argc, argv, instance.entries(), std::move(wrapped), *io);
}

}  // namespace systempp
