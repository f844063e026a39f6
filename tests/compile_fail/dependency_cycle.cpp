// Must not compile: a -> b -> c -> a; the error's template arguments list the cycle.
#include <systempp/app.hpp>
struct a;
struct b;
struct c;
struct a { using depends_on = systempp::units<b>; void on_init() {} };
struct b { using depends_on = systempp::units<c>; void on_init() {} };
struct c { using depends_on = systempp::units<a>; void on_init() {} };
int main() { systempp::app_instance<systempp::app<a, b, c>> x; }
