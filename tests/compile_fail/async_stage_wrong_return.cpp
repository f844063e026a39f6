// Must not compile: on_startup returns neither void nor awaitable<void>.
#include <systempp/app.hpp>
struct bad { int on_startup(systempp::context&) { return 1; } };
int main() { systempp::app_instance<systempp::app<bad>> a; }
