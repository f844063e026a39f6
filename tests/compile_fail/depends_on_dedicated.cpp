// Must not compile: a unit depends on a dedicated unit, which runs in processes of its own.
#include <systempp/app.hpp>
struct scheduler { static constexpr systempp::dedicated runs_in{.processes = 1}; };
struct web { using depends_on = systempp::units<scheduler>; };
int main() { systempp::app_instance<systempp::app<scheduler, web>> a; }
