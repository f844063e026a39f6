#include "settings.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <system_error>

namespace demo {

void settings::on_reload(systempp::context& ctx) {
  values_ = ctx.config(*this);
  ctx.log().info("configuration reloaded: message '{}'", values_.message);
}

void settings::pre_startup(systempp::context&) {
  if (values_.docroot.empty()) return;
  std::error_code ec;
  if (!std::filesystem::is_directory(values_.docroot, ec))
    throw std::runtime_error(fmt::format("docroot '{}' is not a directory", values_.docroot.string()));
}

}  // namespace demo
