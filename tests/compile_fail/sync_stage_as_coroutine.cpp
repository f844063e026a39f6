// Must not compile: on_init is a sync stage; a coroutine there would never be awaited.
#include <systempp/app.hpp>
struct bad { boost::asio::awaitable<void> on_init(systempp::context&) { co_return; } };
int main() { systempp::app_instance<systempp::app<bad>> a; }
