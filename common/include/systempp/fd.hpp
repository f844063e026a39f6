#pragma once
/// A move-only owner of a file descriptor, and the one place that exec()s an image.

#include <string>
#include <utility>
#include <vector>

namespace systempp {

/// Closes its fd on destruction. Async-signal-safe to destroy (close(2) only).
class unique_fd {
 public:
  /// Owns nothing (-1).
  unique_fd() noexcept = default;
  /// Takes ownership of `fd` (-1 for none).
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  /// Closes the owned fd, if any.
  ~unique_fd() { reset(); }

  /// The fd, still owned; -1 when empty. Any process, async-signal-safe.
  int get() const noexcept { return fd_; }
  /// True when it owns an fd.
  explicit operator bool() const noexcept { return fd_ >= 0; }
  /// Gives up ownership without closing. Async-signal-safe.
  int release() noexcept { return std::exchange(fd_, -1); }
  /// Closes the owned fd (if any) and takes `fd` instead. Async-signal-safe (close(2) only).
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

/// Closes every fd in `fds` (any order; the vector is sorted in place), each run of
/// consecutive numbers with one close_range(2). For a forked child dropping its parent's
/// per-worker descriptors: with hundreds of workers, one close(2) each was the largest cost
/// of a fork. Fds not in `fds` are never touched. Any process.
void close_all(std::vector<int>& fds) noexcept;

/// Checks that `n` more descriptors can be opened (and closes them again); throws
/// resource_error naming the limit otherwise. The runtime asks first thing, so that a
/// process short of descriptors fails with one clear line rather than inside its event
/// loop's construction. Any process.
void require_free_descriptors(int n);

/// Replaces this process image with `path`, run with `argv` (argv[0] included) and the
/// current environment. Returns only when execv failed, with its errno. Used by exec-mode
/// workers (in the forked child) and by the master's in-place upgrade.
int exec_image(const std::string& path, const std::vector<std::string>& argv) noexcept;

}  // namespace systempp
