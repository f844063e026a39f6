// Exec mode: a worker that is a fresh image of the application binary. It receives the
// control block, its channel and the listeners as inherited fds (see worker_runtime.hpp).

#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "systempp/lifecycle.hpp"
#include "systempp/log.hpp"
#include "systempp/worker/worker_runtime.hpp"

namespace systempp::worker {

bool is_exec_worker() noexcept { return std::getenv(exec_env_worker) != nullptr; }


int run_exec_worker(const options& opts, std::vector<detail::unit_entry>& units,
                    boost::asio::io_context& io) noexcept {
  try {
    int slot = 0, lane = 0;
    unsigned gen = 0;
    int master = 0;
    if (std::sscanf(std::getenv(exec_env_worker), "%d:%d:%u:%d", &slot, &lane, &gen, &master) != 4)
      throw std::runtime_error(std::string(exec_env_worker) + " is malformed");
    std::vector<listener> listeners;
    std::istringstream names(std::getenv(exec_env_listeners) ? std::getenv(exec_env_listeners) : "");
    int fd = exec_first_listener_fd;
    for (std::string name; std::getline(names, name, ',');) listeners.push_back(adopt_listener(unique_fd(fd++), name));
    // The worker's own children must not mistake themselves for workers.
    ::unsetenv(exec_env_worker);
    ::unsetenv(exec_env_listeners);

    auto segment = control_segment::attach_fd(exec_control_fd, access::read_write);
    ::close(exec_control_fd);  // attach_fd keeps its own copy

    // on_init runs in every exec'd image: its units start from nothing.
    auto log = make_logger(fmt::format("worker[{}] g{}", slot, gen), opts);
    lifecycle lc(units);
    lc.set_timeout(opts.stage_timeout);
    context ctx(process_role::worker, opts, log, io, listeners, lc.refs());
    ctx.set_process(process_role::worker, slot, gen, ::getpid());
    const auto init = lc.run(stage::on_init, ctx);
    int code = to_int(code_for(stage::on_init, init));
    if (init.ok) {
      launch l;
      l.opts = &opts;
      l.units = &units;
      l.listeners = &listeners;
      l.record = &segment.slot(static_cast<std::uint32_t>(slot * 2 + lane));
      l.slot = slot;
      l.generation = gen;
      l.master_pid = master;
      l.channel = unique_fd(exec_channel_fd);
      sigemptyset(&l.restore_mask);  // exec kept the spawner's all-blocked mask
      code = run(l);
    }
    if (!lc.run(stage::on_exit, ctx).ok && code == 0) code = to_int(exit_code::unclean_shutdown);
    segment.disown();
    return code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker: fatal: %s\n", e.what());
    return to_int(exit_code::failure);
  }
}

}  // namespace systempp::worker
