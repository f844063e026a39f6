#include "settings.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <system_error>

#include <systempp/config_file.hpp>

namespace demo {

namespace {

std::chrono::milliseconds parse_ms(const systempp::config_entry& e, const std::string& path,
                                   long long max) {
  long long value = -1;
  const auto* end = e.value.data() + e.value.size();
  auto [ptr, ec] = std::from_chars(e.value.data(), end, value);
  if (e.value.empty() || ec != std::errc{} || ptr != end || value < 0 || value > max)
    throw systempp::config_error(fmt::format("{}:{}: key '{}': '{}' is not a whole number of "
                                             "milliseconds from 0 to {}",
                                             path, e.line, e.key, e.value, max));
  return std::chrono::milliseconds(value);
}

}  // namespace

config_values load_config(const std::string& path) {
  config_values v;
  for (const auto& e : systempp::read_config_file(path)) {
    if (e.key == "message")
      v.message = e.value;
    else if (e.key == "docroot")
      v.docroot = e.value;
    else if (e.key == "startup_delay_ms")
      v.startup_delay = parse_ms(e, path, 600'000);
    else if (e.key == "keepalive_timeout_ms")
      v.keepalive_timeout = parse_ms(e, path, 3'600'000);
    else if (e.key == "drain_grace_ms")
      v.drain_grace = parse_ms(e, path, 600'000);
    else
      throw systempp::config_error(fmt::format("{}:{}: unknown key '{}'", path, e.line, e.key));
  }
  return v;
}

void settings::on_init(systempp::context& ctx) {
  if (!ctx.opts().config.empty()) values_ = load_config(ctx.opts().config);
}

void settings::on_reload(systempp::context& ctx) {
  if (ctx.opts().config.empty()) return;
  values_ = load_config(ctx.opts().config);  // assigns only if the whole file is valid
  ctx.log().info("configuration reloaded from {}", ctx.opts().config);
}

void settings::pre_startup(systempp::context&) {
  if (values_.docroot.empty()) return;
  std::error_code ec;
  if (!std::filesystem::is_directory(values_.docroot, ec))
    throw std::runtime_error(fmt::format("docroot '{}' is not a directory", values_.docroot.string()));
}

}  // namespace demo
