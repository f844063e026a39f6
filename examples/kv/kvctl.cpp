// kvctl: maintenance of kvd's data, on the same store unit and the same --config file.
//
//   kvctl --config kv.toml count     prints the number of keys
//   kvctl --config kv.toml list      prints one key a line
//   kvctl --config kv.toml purge     removes the expired keys, prints how many
//
// A script runs on_init, the startup stages, the body, the shutdown stages and on_exit in
// this one process; the file's [http] and [janitor] tables and the pool's [systempp] keys
// are kvd's and are skipped here.

#include <iostream>

#include <systempp/systempp.hpp>

#include "store.hpp"

int main(int argc, char** argv) {
  return systempp::run_script<systempp::app<kv::store>>(
      argc, argv,
      [](systempp::context& ctx) {
        const auto& args = ctx.opts().args;
        auto& data = ctx.unit<kv::store>();
        const std::string command = args.empty() ? "" : args.front();
        if (command == "count" && args.size() == 1) {
          std::cout << data.keys().size() << "\n";
        } else if (command == "list" && args.size() == 1) {
          for (const auto& k : data.keys()) std::cout << k << "\n";
        } else if (command == "purge" && args.size() == 1) {
          std::cout << data.purge_expired() << " expired key(s) removed\n";
        } else {
          std::cerr << "kvctl: error: expected one command: count, list or purge\n";
          return 2;
        }
        return 0;
      },
      {"kvctl", "Maintenance of kvd's data: count, list, purge.", "1.0.0"});
}
