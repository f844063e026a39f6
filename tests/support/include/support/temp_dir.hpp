#pragma once
// A scratch directory for a test, and writing a file in it.

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>

namespace support {

/// A fresh directory under the system temp dir, named `<prefix>_<pid>_<n>`, removed with
/// everything in it at scope exit. `path` is canonical (as /proc/<pid>/fd shows files in it).
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(const std::string& prefix = "systempp") {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
    path = std::filesystem::canonical(path);
  }
  ~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

/// Writes `content` to `p`, replacing it; throws when it cannot.
inline void write_file(const std::filesystem::path& p, const std::string& content) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << content;
  if (!out.good()) throw std::runtime_error("cannot write " + p.string());
}

}  // namespace support
