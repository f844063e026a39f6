#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>

#include <systempp/config_file.hpp>
#include <systempp/errors.hpp>
#include <support/temp_dir.hpp>

TEST_CASE("config lines are key = value with comments and blanks ignored", "[config]") {
  auto entries = systempp::parse_config("# comment\n\nmessage = hi there \n  port=80\n", "f.conf");
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].key == "message");
  CHECK(entries[0].value == "hi there");
  CHECK(entries[0].line == 3);
  CHECK(entries[1].key == "port");
  CHECK(entries[1].value == "80");
}

TEST_CASE("a bad config line is an error naming file and line", "[config][bad_input]") {
  CHECK_THROWS_WITH(systempp::parse_config("a = 1\nnot a pair\n", "f.conf"),
                    "f.conf:2: expected 'key = value'");
  CHECK_THROWS_WITH(systempp::parse_config(" = 1\n", "f.conf"), "f.conf:1: empty key");
  CHECK_THROWS_WITH(systempp::parse_config("a = 1\na = 2\n", "f.conf"),
                    "f.conf:2: key 'a' given twice (first on line 1)");
  CHECK_THROWS_AS(systempp::read_config_file("/nonexistent/file.conf"), systempp::config_error);
}

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

/// A scratch directory and file writing, shared with the other tests.
struct temp_dir : support::temp_dir {
  temp_dir() : support::temp_dir("systempp_config") {}
};
using support::write_file;

/// read_config_file's config_error message, or "no error" when it read the file.
std::string error_reading(const std::string& path) {
  try {
    systempp::read_config_file(path);
  } catch (const systempp::config_error& e) {
    return e.what();
  }
  return "no error";
}

/// Comment lines of exactly `bytes` bytes in all (at least 64).
std::string comment_bytes(std::size_t bytes) {
  std::string text;
  while (text.size() + 128 <= bytes) text += "#" + std::string(62, 'x') + "\n";
  text += "#" + std::string(bytes - text.size() - 2, 'x') + "\n";
  return text;
}

}  // namespace

TEST_CASE("a config path that is a directory is refused naming the file", "[config][bad_input]") {
  temp_dir dir;
  CHECK(error_reading(dir.path.string()) == dir.path.string() + ": not a regular file (a directory)");
}

TEST_CASE("a config path that is a device is refused instead of read", "[config][bad_input]") {
  CHECK(error_reading("/dev/null") == "/dev/null: not a regular file (a character device)");
}

TEST_CASE("a config path that is a FIFO is refused at once, without waiting for a writer",
          "[config][bad_input]") {
  temp_dir dir;
  const auto fifo = (dir.path / "app.conf").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  auto result = std::async(std::launch::async, [&] { return error_reading(fifo); });
  const bool returned = result.wait_for(5s) == std::future_status::ready;
  if (!returned) {
    // The reader is blocked in open() waiting for a writer: be that writer, so it returns
    // and the test ends.
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    int w = -1;
    while (w < 0 && std::chrono::steady_clock::now() < deadline)
      w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (w >= 0) ::close(w);
  }
  CHECK(returned);
  CHECK(result.get() == fifo + ": not a regular file (a FIFO)");
}

TEST_CASE("a config file over 1 MiB is refused naming the file, and one of 1 MiB is read", "[config][bad_input]") {
  temp_dir dir;
  const auto path = dir.path / "app.conf";
  write_file(path, comment_bytes(1 << 20));
  CHECK(error_reading(path.string()) == "no error");
  write_file(path, comment_bytes((1 << 20) + 1));
  CHECK(error_reading(path.string()) == path.string() + ": larger than the 1 MiB limit");
}

TEST_CASE("a config file that fails to read is an error naming the file and the cause",
          "[config][bad_input]") {
  // A regular file whose read fails: offset 0 of this process's memory is not mapped.
  CHECK(error_reading("/proc/self/mem") == "/proc/self/mem: read error: Input/output error");
}

TEST_CASE("a UTF-8 byte order mark at the start of a config file is skipped", "[config]") {
  temp_dir dir;
  const auto path = dir.path / "app.conf";
  write_file(path, "\xEF\xBB\xBFmessage = hi\n");
  const auto entries = systempp::read_config_file(path.string());
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].key == "message");
  CHECK(entries[0].value == "hi");
  CHECK(entries[0].line == 1);
}

TEST_CASE("fifty thousand distinct keys are all read and a duplicate after them is still found", "[config]") {
  std::string text;
  for (int i = 0; i < 50'000; ++i) text += "key" + std::to_string(i) + " = " + std::to_string(i) + "\n";
  const auto entries = systempp::parse_config(text, "big.conf");
  REQUIRE(entries.size() == 50'000);
  CHECK(entries.back().key == "key49999");
  CHECK(entries.back().value == "49999");
  CHECK(entries.back().line == 50'000);
  CHECK_THROWS_WITH(systempp::parse_config(text + "key123 = again\n", "big.conf"),
                    "big.conf:50001: key 'key123' given twice (first on line 124)");
}
