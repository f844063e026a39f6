#include "systempp/log.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "systempp/errors.hpp"

namespace systempp {

std::shared_ptr<spdlog::logger> make_logger(const std::string& name, const options& opts) {
  spdlog::sink_ptr sink;
  if (opts.log_file.empty()) {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    try {
      sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(opts.log_file);
    } catch (const spdlog::spdlog_ex& e) {
      throw config_error("--log-file: cannot open " + opts.log_file + ": " + e.what());
    }
  }
  auto log = std::make_shared<spdlog::logger>(name, std::move(sink));
  if (opts.format == log_format::json) {
    log->set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%e","logger":"%n","pid":%P,"level":"%l","msg":"%v"})");
  } else {
    log->set_pattern("%Y-%m-%dT%H:%M:%S.%e [%n] [%P] %l: %v");
  }
  log->set_level(spdlog::level::from_str(opts.log_level));
  log->flush_on(spdlog::level::trace);
  return log;
}

}  // namespace systempp
