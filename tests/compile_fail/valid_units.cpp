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
int main() { systempp::app_instance<systempp::app<rolls_back, ok_unit>> a; }
