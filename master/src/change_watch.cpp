#include "systempp/master/change_watch.hpp"

#include <sys/inotify.h>
#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>

namespace systempp::master {

namespace asio = boost::asio;

namespace {

// What replacing, rewriting or touching a file shows in its directory; IN_MODIFY so that a
// file written in place for longer than the quiet period (a slow link) is not taken early.
constexpr std::uint32_t events = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ATTRIB | IN_MODIFY;

// A file's directory as inotify reports it (symlinks resolved), and its name.
std::string resolved(const std::string& file) {
  const std::filesystem::path p(file);
  std::error_code ec;
  const auto dir = std::filesystem::canonical(p.parent_path(), ec);
  return ((ec ? p.parent_path() : dir) / p.filename()).string();
}

}  // namespace

struct change_watch::impl {
  impl(asio::io_context& io, std::vector<std::string> f, std::chrono::milliseconds q, on_change cb,
       std::shared_ptr<spdlog::logger> l)
      : fd(io), timer(io), files(std::move(f)), quiet(q), changed(std::move(cb)), log(std::move(l)) {}

  void wait() {
    fd.async_wait(asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
      if (ec) return;  // closed
      try {  // nothing may leave a handler of the master's loop
        read();
      } catch (const std::exception& e) {
        log->error("--reload-on-change: {}", e.what());
      }
      wait();
    });
  }

  void read() {
    alignas(inotify_event) char buffer[8192];
    for (;;) {
      const ssize_t n = ::read(fd.native_handle(), buffer, sizeof buffer);
      if (n <= 0) return;  // EAGAIN: all read
      for (const char* p = buffer; p < buffer + n;) {
        const auto* e = reinterpret_cast<const inotify_event*>(p);
        p += sizeof(inotify_event) + e->len;
        if (e->mask & IN_Q_OVERFLOW) {  // events were lost: any file may have changed
          for (std::size_t i = 0; i < files.size(); ++i) pending.insert(i);
          continue;
        }
        const auto dir = dirs.find(e->wd);
        if (dir == dirs.end()) continue;
        if (e->mask & IN_IGNORED) {  // the directory went away, and the watch with it
          log->warn("--reload-on-change: {} went away: its files are no longer watched", dir->second);
          dirs.erase(dir);
          continue;
        }
        if (e->len == 0) continue;
        const std::string path = (std::filesystem::path(dir->second) / e->name).string();
        for (std::size_t i = 0; i < files.size(); ++i)
          if (watched[i] == path) pending.insert(i);
      }
      if (!pending.empty()) arm();
    }
  }

  // Each change starts the quiet period over: a build writes its binary in many steps.
  void arm() {
    timer.expires_after(quiet);
    timer.async_wait([this](boost::system::error_code ec) {
      // An expiry already queued when arm() ran again took the changes; this one has none.
      if (ec || pending.empty()) return;
      std::vector<std::string> now;
      for (const std::size_t i : pending) now.push_back(files[i]);
      pending.clear();
      changed(now);  // the master's callback keeps its own exceptions
    });
  }

  asio::posix::stream_descriptor fd;
  asio::steady_timer timer;
  std::vector<std::string> files;    ///< as given, what the callback gets
  std::vector<std::string> watched;  ///< the same, directories resolved, what events name
  std::chrono::milliseconds quiet;
  on_change changed;
  std::shared_ptr<spdlog::logger> log;
  std::map<int, std::string> dirs;  ///< watch descriptor -> directory
  std::set<std::size_t> pending;  ///< indexes into files
};

change_watch::change_watch(asio::io_context& io, std::vector<std::string> files, std::chrono::milliseconds quiet,
                           on_change f, std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<impl>(io, std::move(files), quiet, std::move(f), std::move(log))) {
  const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "--reload-on-change: inotify_init1");
  impl_->fd.assign(fd);
  for (const auto& file : impl_->files) {
    impl_->watched.push_back(resolved(file));
    const std::string dir = std::filesystem::path(impl_->watched.back()).parent_path().string();
    const int wd = ::inotify_add_watch(fd, dir.c_str(), events | IN_ONLYDIR);
    if (wd < 0) throw std::system_error(errno, std::generic_category(), "--reload-on-change: watch " + dir);
    impl_->dirs.emplace(wd, dir);
    impl_->log->info("--reload-on-change: watching {}", file);
  }
  impl_->wait();
}

change_watch::~change_watch() = default;

void change_watch::close_in_child() noexcept {
  // Released, then closed: as the metrics listener, so the child's new epoll instance does
  // not keep a registration for it.
  if (impl_->fd.is_open()) ::close(impl_->fd.release());
}

}  // namespace systempp::master
