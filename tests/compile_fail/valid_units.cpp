// Must compile: the control case for the compile-failure tests (same command line).
#include <memory>

#include <systempp/app.hpp>
struct ok_unit {
  void on_init() {}
  void on_reload(systempp::context&) {}
  boost::asio::awaitable<void> on_startup(systempp::context&) { co_return; }
  void on_shutdown(systempp::context&) {}
};
// Not copyable, and takes part in a reload by rolling back itself.
struct rolls_back {
  using depends_on = systempp::units<ok_unit>;  // declared before it in the app below
  std::unique_ptr<int> handle;
  void on_reload() {}
  void rollback_reload(systempp::context&) {}
  void commit_reload() {}
};
// Hooks and custom stages, one anchored to another.
SYSTEMPP_STAGE(warmup, async, forward, after, systempp::stages::post_startup);
SYSTEMPP_STAGE(after_warmup, sync, backward, after, systempp::stages::on_exit);
struct staged {
  boost::asio::awaitable<void> before_on_startup(systempp::context&) { co_return; }
  void after_on_init() {}
  void warmup(systempp::context&) {}
  void after_warmup() {}
};
int main() { systempp::app_instance<systempp::app<rolls_back, ok_unit, staged, warmup, after_warmup>> a; }
