// Must not compile: `web` depends on `database`, which the app does not contain; the error's
// template arguments name both.
#include <systempp/app.hpp>
struct database { void on_init() {} };
struct web {
  using depends_on = systempp::units<database>;
  void on_init() {}
};
int main() { systempp::app_instance<systempp::app<web>> a; }
