#pragma once
/// What `ps` and `top` show for the runtime's processes. The command line becomes a title,
/// the program's name in front: `kvd: master [kvd] gen 3`, `kvd: worker 2 gen 3 [kvd]`
/// (libbsd's setproctitle, which writes over the argv and environment area as nginx does);
/// the thread name (`PR_SET_NAME`, at most 15 bytes), which top shows, says the role:
/// `kvd: worker 2`. Runtime-internal.

#include <string>

namespace systempp::detail {

/// Once, first in main, with main's own argv: moves the environment elsewhere so that a
/// title has the room of both. A title set without it changes only the thread name.
void init_process_title(int argc, char** argv) noexcept;

/// Sets the title (`title` after "PROGRAM: ") and the thread name ("PROGRAM: " and
/// `role`, cut to 15 bytes). The calling thread's name; call it on the main thread.
void set_process_title(const std::string& title, const std::string& role) noexcept;

}  // namespace systempp::detail
