#include "systempp/master/worker_launch.hpp"

#include <cstdio>
#include <system_error>

#include "systempp/errors.hpp"
#include "systempp/privileges.hpp"
#include "systempp/worker/exec_layout.hpp"
#include "systempp/worker/worker_runtime.hpp"

namespace systempp::master {

int run_worker_child(const worker_launch& w, const spawn_action& a, worker_slot& record, unique_fd channel,
                     const sigset_t& mask) {
  // --user: before anything of the app runs here, exec mode's new image included.
  if (w.opts->run_as) try {
      switch_user(*w.opts->run_as);
    } catch (const std::system_error& e) {
      std::fprintf(stderr, "%s: worker %d: %s\n", w.opts->program.c_str(), a.slot, e.what());
      return to_int(exit_code::failure);
    }
  // --accept reuseport: the slot's own socket of each listener, under the listener's name.
  const std::vector<listener> own = w.slots ? w.slots->for_slot(*w.listeners, a.slot) : std::vector<listener>{};
  if (w.slots) w.slots->close_copies();  // the other slots' sockets are not this worker's
  const std::vector<listener>& listeners = own.empty() ? *w.listeners : own;
  if (w.opts->mode == reload_mode::exec)
    return worker::exec_worker_image(w.exec_path, w.opts->argv, w.control_fd, channel.get(), listeners,
                                     worker::exec_identity{a.slot, a.lane, a.generation, w.master_pid});
  worker::launch l;
  l.opts = w.opts;
  l.units = w.units;
  l.listeners = &listeners;
  l.record = &record;
  l.slot = a.slot;
  l.generation = a.generation;
  l.master_pid = w.master_pid;
  if (a.role != no_unit) l.dedicated_unit = a.role;  // this image: the master's own unit order
  l.channel = std::move(channel);
  l.restore_mask = mask;
  return worker::run(l);
}

}  // namespace systempp::master
