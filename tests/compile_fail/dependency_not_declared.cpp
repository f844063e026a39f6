// Must not compile: ctx.dependency<U>(*this) for a U the unit does not list in depends_on.
#include <systempp/app.hpp>
struct settings { void on_init() {} };
struct web {
  void on_init(systempp::context& ctx) { ctx.dependency<settings>(*this); }
};
int main() { systempp::app_instance<systempp::app<settings, web>> a; }
