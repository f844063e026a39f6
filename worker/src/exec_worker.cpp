// Exec mode: a worker that is a fresh image of the application binary. It receives the
// control block, its channel and the listeners as inherited fds (see exec_layout.hpp).

#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "systempp/lifecycle.hpp"
#include "systempp/log.hpp"
#include "systempp/worker/exec_layout.hpp"
#include "systempp/worker/worker_runtime.hpp"

namespace systempp::worker {

int run_exec_worker(const options& opts, detail::app_units& units,
                    boost::asio::io_context& io) noexcept {
  try {
    auto [id, listeners] = read_exec_handover();
    auto segment = control_segment::attach_fd(exec_control_fd, access::read_write);
    ::close(exec_control_fd);  // attach_fd keeps its own copy

    // on_init runs in every exec'd image: its units start from nothing.
    auto log = make_logger(fmt::format("worker[{}] g{}", id.slot, id.generation), opts);
    lifecycle lc(units);
    const auto dedicated = dedicated_unit(segment.header(), segment.record(id.slot, id.lane), lc);
    lc.run_only(dedicated);
    lc.set_timeout(opts.stage_timeout);
    context ctx(process_role::worker, opts, log, io, listeners, lc.refs());
    ctx.set_config_source(units.config);
    ctx.set_process(process_role::worker, id.slot, id.generation, ::getpid());
    const auto init = lc.run(stage::on_init, ctx);
    int code = to_int(code_for(stage::on_init, init));
    if (init.ok) {
      launch l;
      l.opts = &opts;
      l.units = &units;
      l.listeners = &listeners;
      l.record = &segment.record(id.slot, id.lane);
      l.slot = id.slot;
      l.generation = id.generation;
      l.master_pid = id.master_pid;
      l.channel = unique_fd(exec_channel_fd);
      sigemptyset(&l.restore_mask);  // exec kept the spawner's all-blocked mask
      l.io = &io;                    // made before the units: it outlives what they bind to it
      l.dedicated_unit = dedicated;
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
