// The demo service: configuration, then HTTP. See README.md.
#include <systempp/systempp.hpp>

#include "http_server.hpp"
#include "settings.hpp"

using demo_app = systempp::app<demo::settings, demo::web, demo::http_server>;

int main(int argc, char** argv) {
  return systempp::main<demo_app>(
      argc, argv, {"systempp-app", "The systempp demo: an HTTP service answering GET / with a configured message.", "0.1.0"});
}
