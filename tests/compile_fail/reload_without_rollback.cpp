// Must not compile: a unit with on_reload that the runtime can neither copy nor ask to roll
// back could be left half-reloaded when another unit rejects the reload.
#include <memory>

#include <systempp/app.hpp>
struct holds_a_handle {
  std::unique_ptr<int> handle;
  void on_reload() {}
};
int main() { systempp::app_instance<systempp::app<holds_a_handle>> a; }
