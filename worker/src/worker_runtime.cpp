// run(): the one place where a forked worker's failures become exit codes, so no exception
// ever unwinds into the master's frames that the child inherited.

#include "systempp/worker/worker_runtime.hpp"

#include <cstdio>

#include "systempp/errors.hpp"
#include "worker_process.hpp"

namespace systempp::worker {

std::optional<std::size_t> dedicated_unit(const control_header& header, const worker_slot& record,
                                          const lifecycle& lc) {
  const auto role = record.role.load(std::memory_order_relaxed);
  if (role == no_unit) return std::nullopt;
  const auto name = unit_name(header, role);
  for (std::size_t u = 0; u < lc.size(); ++u)
    if (lc.unit_name(u) == name) return u;
  throw config_error("this image has no unit '" + std::string(name) + "' to run as a dedicated process");
}

int run(launch& l) noexcept {
  try {
    if (!worker_process::guard_parent(l.master_pid)) return to_int(exit_code::failure);
    worker_process::ignore_pool_signals();
    worker_process process(l);
    return process.run();
  } catch (const config_error& e) {
    std::fprintf(stderr, "worker: %s\n", e.what());
    return to_int(exit_code::usage);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker: fatal: %s\n", e.what());
    return to_int(exit_code::failure);
  } catch (...) {
    return to_int(exit_code::failure);
  }
}

}  // namespace systempp::worker
