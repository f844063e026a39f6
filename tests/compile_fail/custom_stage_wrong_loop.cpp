// Must not compile: an async custom stage anchored to a sync stage.
#include <systempp/app.hpp>
SYSTEMPP_STAGE(warmup, async, forward, after, systempp::stages::pre_startup);
struct unit { void pre_startup() {} };
int main() { systempp::app_instance<systempp::app<unit, warmup>> a; }
