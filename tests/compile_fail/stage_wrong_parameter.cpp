// Must not compile: a stage member named like a stage but taking the wrong parameter.
#include <systempp/app.hpp>
struct bad { void pre_startup(int) {} };
int main() { systempp::app_instance<systempp::app<bad>> a; }
