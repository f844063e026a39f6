#include "systempp/log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "systempp/errors.hpp"
#include "systempp/privileges.hpp"

namespace systempp {

namespace {

// %* : the message as the inside of a JSON string (quotes, backslashes and control
// characters escaped), so --log-format json writes one valid object per line.
class json_message_flag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    static constexpr char hex[] = "0123456789abcdef";
    for (char c : msg.payload) {
      switch (c) {
        case '"': dest.append(std::string_view("\\\"")); break;
        case '\\': dest.append(std::string_view("\\\\")); break;
        case '\n': dest.append(std::string_view("\\n")); break;
        case '\t': dest.append(std::string_view("\\t")); break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            const char esc[] = {'\\', 'u', '0', '0', hex[(c >> 4) & 0xf], hex[c & 0xf]};
            dest.append(esc, esc + sizeof esc);
          } else {
            dest.push_back(c);
          }
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<json_message_flag>();
  }
};

// spdlog opens the file with fopen("ab"), which is not close-on-exec (its own
// SPDLOG_PREVENT_CHILD_FD is fixed when the library is built), so every exec (a master
// upgrade, an exec-mode worker) carried one more log fd into the new image. Set right after
// each open, reopens included; nothing forks between the two calls. A master running as
// root with --user gives the file to that user, as each reopen after a rotation makes it
// anew: its workers open it too.
spdlog::file_event_handlers after_open(const options& opts) {
  spdlog::file_event_handlers handlers;
  handlers.after_open = [owner = pool_owner(opts)](const spdlog::filename_t& path, std::FILE* file) {
    const int fd = ::fileno(file);
    if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) spdlog::throw_spdlog_ex("cannot make it close-on-exec", errno);
    if (owner == ::geteuid()) return;
    // Given away only if it is the very file at the path, a regular file with no other
    // link: fopen follows a symlink, and one planted by the user (app.log -> /etc/shadow)
    // would have root give that file away.
    struct stat opened{}, named{};
    if (::fstat(fd, &opened) != 0 || ::lstat(path.c_str(), &named) != 0 || !S_ISREG(opened.st_mode) ||
        opened.st_dev != named.st_dev || opened.st_ino != named.st_ino || opened.st_nlink != 1)
      spdlog::throw_spdlog_ex("not given to --user: it is not a plain file of its own (a symbolic link, or "
                              "other hard links)");
    if (opened.st_uid != owner && ::fchown(fd, owner, static_cast<gid_t>(-1)) != 0)
      spdlog::throw_spdlog_ex("cannot give it to --user", errno);
  };
  return handlers;
}

}  // namespace

std::shared_ptr<spdlog::logger> make_logger(const std::string& name, const options& opts, bool or_stderr) {
  spdlog::sink_ptr sink;
  std::string failed;
  // spdlog creates a missing directory; a mistyped path must be an error instead.
  const auto dir = std::filesystem::path(opts.log_file).parent_path();
  std::error_code ec;
  if (!opts.log_file.empty() && !dir.empty() && !std::filesystem::exists(dir, ec)) {
    failed = "--log-file: cannot open " + opts.log_file + ": directory " + dir.string() + " does not exist";
    if (!or_stderr) throw config_error(failed);
  } else if (!opts.log_file.empty()) {
    try {
      sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(opts.log_file, false, after_open(opts));
    } catch (const spdlog::spdlog_ex& e) {
      const int err = errno;  // of the failed open: spdlog's throw keeps it
      failed = "--log-file: cannot open " + opts.log_file + ": " + e.what();
      if (!or_stderr) throw_start_error(failed, err);
    }
  }
  if (!sink) sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto log = std::make_shared<spdlog::logger>(name, std::move(sink));
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  if (opts.format == log_format::json) {
    formatter->add_flag<json_message_flag>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%e","logger":"%n","pid":%P,"level":"%l","msg":"%*"})");
  } else {
    formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%e [%n] [%P] %l: %v");
  }
  log->set_formatter(std::move(formatter));
  log->set_level(spdlog::level::from_str(opts.log_level));
  log->flush_on(spdlog::level::trace);
  if (!failed.empty()) log->error("{}; logging to stderr", failed);
  return log;
}

}  // namespace systempp
