// Must not compile: a custom stage anchored to a custom stage the app does not list.
#include <systempp/app.hpp>
SYSTEMPP_STAGE(warmup, async, forward, after, systempp::stages::post_startup);
SYSTEMPP_STAGE(after_warmup, async, forward, after, warmup);
struct unit { void warmup() {} };
int main() { systempp::app_instance<systempp::app<unit, after_warmup>> a; }
