// Must not compile: `pooled_http` redefines on_shutdown, so its base's on_shutdown (which
// closes the pool) would never run.
#include <systempp/app.hpp>
struct http_base {
  void on_shutdown(systempp::context&) {}
};
struct pooled_http : http_base {
  void on_shutdown(systempp::context&) {}
};
int main() { systempp::app_instance<systempp::app<pooled_http>> a; }
