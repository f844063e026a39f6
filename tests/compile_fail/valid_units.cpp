// Must compile: the control case for the compile-failure tests (same command line).
#include <systempp/app.hpp>
struct ok_unit {
  void on_init() {}
  void on_reload(systempp::context&) {}
  boost::asio::awaitable<void> on_startup(systempp::context&) { co_return; }
  void on_shutdown(systempp::context&) {}
};
int main() { systempp::app_instance<systempp::app<ok_unit>> a; }
