#pragma once
/// --reload-on-change: the files a development pool follows (the binary and the --config
/// file), watched with inotify. Each file is watched through its directory, by name, so a
/// file replaced by a rename (a linker, an editor, a deploy tool), rewritten in place or
/// only touched counts alike, and the watch survives the file being deleted and made anew.
/// Changes are debounced: the callback runs once the files were quiet for a while, with
/// every file that changed meanwhile. Master only, on its loop.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace boost::asio {
class io_context;
}
namespace spdlog {
class logger;
}

namespace systempp::master {

class change_watch {
 public:
  /// The files that changed, absolute, in the order given to the constructor.
  using on_change = std::function<void(const std::vector<std::string>& changed)>;

  /// Starts watching `files` (absolute paths). Throws std::system_error when inotify cannot
  /// be had or a file's directory cannot be watched (it must exist).
  change_watch(boost::asio::io_context& io, std::vector<std::string> files, std::chrono::milliseconds quiet,
               on_change f, std::shared_ptr<spdlog::logger> log);
  ~change_watch();
  change_watch(const change_watch&) = delete;
  change_watch& operator=(const change_watch&) = delete;

  /// In a forked child: drop the inotify fd without touching the loop (no Asio calls).
  void close_in_child() noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace systempp::master
