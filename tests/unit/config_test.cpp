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

#include <systempp/config.hpp>
#include <systempp/errors.hpp>
#include <support/temp_dir.hpp>

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
  const auto path = dir.path / "app.toml";
  write_file(path, "\xEF\xBB\xBF[demo]\nmessage = \"hi\"\n");
  const auto doc = systempp::read_config_file(path.string());
  const auto* e = doc.find("demo", "message");
  REQUIRE(e);
  CHECK(std::get<std::string>(e->value) == "hi");
  CHECK(e->line == 2);
}

namespace {

struct db_settings {
  std::string path = "kv.db";
  int pool_size = 4;
  std::uint16_t port = 5432;
  double ratio = 0.5;
  bool verbose = false;
  std::chrono::milliseconds timeout{500};
  std::filesystem::path dir;
  std::vector<std::string> hosts{"a"};
};

constexpr auto db_section = systempp::section(
    "database", systempp::key("path", &db_settings::path, "SQLite file"),
    systempp::key("pool-size", &db_settings::pool_size, "Connections").range(1, 64),
    systempp::key("port", &db_settings::port), systempp::key("ratio", &db_settings::ratio).range(0.0, 1.0),
    systempp::key("verbose", &db_settings::verbose),
    systempp::key("timeout", &db_settings::timeout).range(std::chrono::milliseconds(1), std::chrono::seconds(60)),
    systempp::key("dir", &db_settings::dir), systempp::key("hosts", &db_settings::hosts));

std::vector<systempp::section_spec> sections() {
  auto s = db_section.spec();
  s.unit = "db";
  return {s};
}

/// check_sections' message for this text, or "ok".
std::string check_text(const std::string& text,
                       systempp::unknown_tables unknown = systempp::unknown_tables::refused) {
  try {
    systempp::check_sections(systempp::parse_config(text, "app.toml"), sections(), unknown);
  } catch (const systempp::config_error& e) {
    return e.what();
  }
  return "ok";
}

}  // namespace

TEST_CASE("a section's keys come from the file, with defaults for those it leaves out", "[config]") {
  const auto doc = systempp::parse_config(
      "[database]\npath = \"/var/kv.db\"\npool-size = 8\ntimeout = 1.5\ndir = \"/srv\"\n"
      "hosts = [\"x\", \"y\"]\nverbose = true\n",
      "app.toml");
  REQUIRE(check_text("[database]\npool-size = 8\n") == "ok");
  const db_settings s = db_section.read(&doc);
  CHECK(s.path == "/var/kv.db");
  CHECK(s.pool_size == 8);
  CHECK(s.timeout == std::chrono::milliseconds(1500));
  CHECK(s.dir == std::filesystem::path("/srv"));
  CHECK(s.hosts == std::vector<std::string>{"x", "y"});
  CHECK(s.verbose);
  CHECK(s.port == 5432);  // not in the file: the default
  CHECK(s.ratio == 0.5);
  const db_settings none = db_section.read(nullptr);  // no --config at all
  CHECK(none.path == "kv.db");
  CHECK(none.hosts == std::vector<std::string>{"a"});
}

TEST_CASE("the file keeps each key's line and each table's header line", "[config]") {
  const auto doc = systempp::parse_config("# a comment\n\n[systempp]\nworkers = 3\n\n[database]\npath = \"x\"\n",
                                          "app.toml");
  REQUIRE(doc.tables.size() == 2);
  CHECK(doc.tables[0].name == "systempp");
  CHECK(doc.tables[0].line == 3);
  CHECK(doc.find("systempp", "workers")->line == 4);
  CHECK(std::get<std::int64_t>(doc.find("systempp", "workers")->value) == 3);
  CHECK(doc.find("database", "path")->line == 7);
  CHECK(doc.find("database", "nothing") == nullptr);
  CHECK(doc.find("nothing", "path") == nullptr);
}

TEST_CASE("a config error names file, line, section and key in one line", "[config][bad_input]") {
  CHECK(check_text("[database]\npath = \"x\"\npool_size = 3\n") ==
        "app.toml:3:database.pool_size: unknown key (the section has: path, pool-size, port, ratio, verbose, "
        "timeout, dir, hosts)");
  CHECK(check_text("[database]\npool-size = \"8\"\n") ==
        "app.toml:2:database.pool-size: expected an integer, got a string");
  CHECK(check_text("[database]\npool-size = 99\n") == "app.toml:2:database.pool-size: 99 is out of range (1 to 64)");
  CHECK(check_text("[database]\nport = 70000\n") == "app.toml:2:database.port: 70000 is out of range (0 to 65535)");
  CHECK(check_text("[database]\nratio = 1.5\n") == "app.toml:2:database.ratio: 1.5 is out of range (0 to 1)");
  CHECK(check_text("[database]\nratio = nan\n") == "app.toml:2:database.ratio: must be a finite number");
  CHECK(check_text("[database]\ntimeout = 0\n") ==
        "app.toml:2:database.timeout: 0 is out of range (0.001 to 60 seconds)");
  CHECK(check_text("[database]\ntimeout = \"5s\"\n") ==
        "app.toml:2:database.timeout: expected a number of seconds, got a string");
  CHECK(check_text("[database]\nverbose = 1\n") ==
        "app.toml:2:database.verbose: expected a boolean (true or false), got an integer");
  CHECK(check_text("[database]\nhosts = [1, 2]\n") ==
        "app.toml:2:database.hosts: expected an array of strings, got an array");
  CHECK(check_text("[database]\npath = 1979-05-27\n") == "app.toml:2:database.path: expected a string, got a date");
  CHECK(check_text("[database.replica]\npath = \"x\"\n") ==
        "app.toml:1:database.replica: unknown key (the section has: path, pool-size, port, ratio, verbose, "
        "timeout, dir, hosts)");
}

TEST_CASE("a section no unit reads is an error in a service and ignored in a script", "[config][bad_input]") {
  CHECK(check_text("[databse]\npath = \"x\"\n") ==
        "app.toml:1: [databse]: no unit of this app reads this section (sections: database)");
  CHECK(check_text("[databse]\npath = \"x\"\n", systempp::unknown_tables::ignored) == "ok");
  CHECK(check_text("[systempp]\nanything = 1\n") == "ok");  // the command-line parser's part
}

TEST_CASE("a key outside any section and a TOML syntax error name file and line", "[config][bad_input]") {
  CHECK(check_text("workers = 3\n") ==
        "app.toml:1:workers: a key outside any section (runtime options go under [systempp], a unit's under "
        "its own section)");
  CHECK_THROWS_WITH(systempp::parse_config("[database]\npath = \"x\"\npath = \"y\"\n", "app.toml"),
                    Catch::StartsWith("app.toml:3: "));
  CHECK_THROWS_WITH(systempp::parse_config("[database\n", "app.toml"), Catch::StartsWith("app.toml:1: "));
  CHECK_THROWS_WITH(systempp::parse_config("message = hi\n", "app.toml"), Catch::StartsWith("app.toml:1: "));
}

TEST_CASE("two units declaring one section, or a unit declaring [systempp], are errors naming them",
          "[config][bad_input]") {
  auto twice = sections();
  twice.push_back(twice.front());
  twice.back().unit = "cache";
  const auto empty = systempp::parse_config("", "app.toml");
  CHECK_THROWS_WITH(systempp::check_sections(empty, twice, systempp::unknown_tables::refused),
                    "units db and cache both declare the config section [database]");
  auto runtime = sections();
  runtime.front().name = "systempp";
  CHECK_THROWS_WITH(systempp::check_sections(empty, runtime, systempp::unknown_tables::refused),
                    "unit db declares the config section [systempp], which is the runtime's");
}

TEST_CASE("a section's spec carries each key's kind, range and default", "[config]") {
  const auto s = db_section.spec();
  REQUIRE(s.keys.size() == 8);
  CHECK(s.name == "database");
  CHECK(s.keys[1].kind == systempp::value_kind::integer);
  CHECK(s.keys[1].int_min == 1);
  CHECK(s.keys[1].int_max == 64);
  CHECK(std::get<std::int64_t>(s.keys[1].fallback) == 4);
  CHECK(s.keys[5].kind == systempp::value_kind::seconds);
  CHECK(std::get<double>(s.keys[5].fallback) == 0.5);
  CHECK(systempp::to_toml(s.keys[0].fallback) == "\"kv.db\"");
  CHECK(systempp::to_toml(s.keys[7].fallback) == "[ \"a\" ]");
  CHECK(systempp::to_toml(systempp::config_value{std::string("a \"b\"\n")}) == R"("a \"b\"\n")");
  CHECK(systempp::to_toml(systempp::config_value{2.5}) == "2.5");
}

TEST_CASE("malformed table headers that break a toml++ 3.3 parser check are refused, not a crash",
          "[config][bad_input]") {
  // Found by tests/fuzz (config_fuzz): an assertion abort in toml++ with assertions on.
  constexpr char nul_header[] = "[\0\0\0sage = \"x\"\n";  // NULs inside: its length is sizeof - 1
  for (const std::string& text :
       std::vector<std::string>{"[[[1]]]\n", "[[=\n", std::string(nul_header, sizeof nul_header - 1), "[[[a]]]\n"}) {
    INFO(text);
    CHECK_THROWS_WITH(systempp::parse_config(text, "app.toml"), Catch::StartsWith("app.toml:"));
  }
}

TEST_CASE("non-ASCII outside strings and comments is refused before toml++ 3.3 reaches undefined behaviour",
          "[config][bad_input]") {
  using namespace std::string_view_literals;
  // Each reached an unreachable branch in toml++ 3.3 (tests/fuzz, UBSan).
  CHECK_THROWS_WITH(systempp::parse_config("\xcc\xaa", "app.toml"),
                    "app.toml:1: a non-ASCII character outside a string or comment");
  CHECK_THROWS_WITH(systempp::parse_config("[demo]\n[d\xc3\xa9mo]\nx = 1\n", "app.toml"),
                    "app.toml:2: a non-ASCII character outside a string or comment");
  // After a backslash in a """string""": at the next line's first character, right after it,
  // after blanks that do not end the line (the last two found by the fuzzer in CI).
  const std::pair<std::string_view, const char*> after_backslash[] = {
      {"s = \"\"\"\\\n  \xc2\xa7\"\"\"\n"sv, "app.toml:2: "},
      {"s = \"\"\"\\\xc2\xa7\"\"\"\n"sv, "app.toml:1: "},
      {"s = \"\"\"x\\ \xef\xbb\x87\"\"\"\n"sv, "app.toml:1: "},
      // past a character toml++ takes for a space (U+FEFF), the next one (found by the fuzzer)
      {"s = \"\"\"x\\\n\xef\xbb\xbf\n\xef\xbb\xbe\"\"\"\n"sv, "app.toml:3: "}};
  for (const auto& [text, where] : after_backslash) {
    INFO(text);
    CHECK_THROWS_WITH(systempp::parse_config(text, "app.toml"),
                      Catch::StartsWith(std::string(where) + "a non-ASCII character right after a backslash"));
  }
  // Characters toml++'s table answers for are read: CJK after a line-ending backslash.
  CHECK(std::get<std::string>(systempp::parse_config("[demo]\ns = \"\"\"\\\n  \xe6\x97\xa5\"\"\"\n", "app.toml")
                                  .find("demo", "s")
                                  ->value) == "\xe6\x97\xa5");
  // A line that ends inside a string after a backslash still ends: the line count holds.
  CHECK_THROWS_WITH(systempp::parse_config("s = \"abc\\\n\xc3\xa9\n", "app.toml"),
                    "app.toml:2: a non-ASCII character outside a string or comment");
  // A quote where no string can start (right after a bare value, a key or a string) does not
  // start one: toml++ reads on through it as part of the value (CI's fuzzer found the first).
  for (const auto text : {"a =1\0\0\0d\"n-gr[de\xd1\x92o]\n"sv, "a = 1\"\xd1\x92\"\n"sv, "a = [1\"\xd1\x92\"]\n"sv,
                          "a = {b=1\"\xd1\x92\"}\n"sv, "a = 1979-05-27T07:32:00'\xd1\x92'\n"sv,
                          "a = \"x\"\"\xd1\x92\"\n"sv, "[de\"\xd1\x92\"o]\n"sv,
                          "a =5\0'\xd1\x92'\n"sv, "e =  9\0.\"..\xef\xbb\x9f\"\n"sv, "a = 9=\"\xd1\x92\"\n"sv,
                          "a = [1, 2.\"\xd1\x92\"]\n"sv}) {
    INFO(text);
    CHECK_THROWS_WITH(systempp::parse_config(text, "app.toml"),
                      "app.toml:1: a non-ASCII character outside a string or comment");
  }
  // Where a string can start, it does: after '=', '[', ',', '{', a key's '.', first on a line
  // (also inside a multi-line array).
  CHECK_NOTHROW(systempp::parse_config("[\"\xc3\xa9\"]\na = [ \"\xc3\xa9\",'\xc3\xa9',\n  \"\xc3\xa9\" ]\n"
                                       "b = {\"\xc3\xa9\" = 1, c.'\xc3\xa9'=2}\n\"\xc3\xa9\" = \"\"\"\xc3\xa9\"\"\"\r\n"
                                       "[[x.\"\xc3\xa9\"]]\nd = [ { \"\xc3\xa9\" = 1 }, { e.\"\xc3\xa9\" = [\"\xc3\xa9\"] } ]\n"
                                       "f = [ # \xc3\xa9\n  \"\xc3\xa9\", # \xc3\xa9\n  [ 1.5, \"\xc3\xa9\" ],\n  '\xc3\xa9' ]\n",
                                       "app.toml"));
  // Inside strings and comments it is what TOML allows, and it is read.
  const auto doc = systempp::parse_config(
      "# caf\xc3\xa9\n[demo]\nmessage = \"caf\xc3\xa9 \\\" \xd1\x92\"  # \xc2\xa7\nb = 'x\xc3\xa9'\n"
      "c = \"\"\"\n\xc3\xa9\\\n  x\xc3\xa9\"\"\"\nd = '''\xc3\xa9''''\n",
      "app.toml");
  CHECK(std::get<std::string>(doc.find("demo", "message")->value) == "caf\xc3\xa9 \" \xd1\x92");
  CHECK(std::get<std::string>(doc.find("demo", "b")->value) == "x\xc3\xa9");
  CHECK(std::get<std::string>(doc.find("demo", "c")->value) == "\xc3\xa9x\xc3\xa9");
  CHECK(std::get<std::string>(doc.find("demo", "d")->value) == "\xc3\xa9'");
}
