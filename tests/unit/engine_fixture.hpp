#pragma once
// A stage engine on its own, for the unit tests: the app's units, a lifecycle over them and a
// context with a silent logger, in the order systempp::main makes them (the loop first, so
// it outlives the units).

#include <boost/asio/io_context.hpp>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <vector>

#include <systempp/lifecycle.hpp>
#include <systempp/systempp.hpp>

template <class App, systempp::process_role Role = systempp::process_role::inline_process>
struct engine_fixture {
  boost::asio::io_context io;
  systempp::app_instance<App> instance;
  systempp::lifecycle lc{instance.entries()};
  systempp::options opts;
  std::vector<systempp::listener> listeners;
  systempp::context ctx{Role, opts,
                        std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>()),
                        io, listeners, lc.refs()};
  engine_fixture() { ctx.set_config_source(instance.entries().config); }
};
