// Must not compile: a hook of an async stage returns neither void nor awaitable<void>.
#include <systempp/app.hpp>
struct bad { int before_on_startup(systempp::context&) { return 1; } };
int main() { systempp::app_instance<systempp::app<bad>> a; }
