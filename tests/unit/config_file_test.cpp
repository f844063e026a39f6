#include <catch2/catch.hpp>

#include <systempp/config_file.hpp>
#include <systempp/errors.hpp>

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
