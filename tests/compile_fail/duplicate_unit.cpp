// Must not compile: the same unit twice would make ctx.unit<T>() ambiguous.
#include <systempp/app.hpp>
struct u { void on_init() {} };
int main() { systempp::app_instance<systempp::app<u, u>> a; }
