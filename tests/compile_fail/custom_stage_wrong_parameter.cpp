// Must not compile: a unit's member for a custom stage takes the wrong parameter.
#include <systempp/app.hpp>
SYSTEMPP_STAGE(warmup, async, forward, after, systempp::stages::post_startup);
struct unit { void warmup(int) {} };
int main() { systempp::app_instance<systempp::app<unit, warmup>> a; }
