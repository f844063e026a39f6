// The guard in front of toml++ 3.3 (toml_guard.hpp).

#include "toml_guard.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

#include "systempp/errors.hpp"

namespace systempp {

namespace {

// toml++ 3.3 reaches an unreachable branch (undefined behaviour) when it asks whether a
// non-ASCII character is whitespace, which it does for characters outside strings (a key's,
// a bare value's: it reads a number, a date or a boolean on to the next space, ',', ']', '}'
// or '#', through quotes too) and after a backslash in a """string""" (marzer/tomlplusplus
// #190, #295; fixed after 3.3). TOML allows non-ASCII only inside strings and comments, so
// this scan, which follows just enough of the syntax to know where toml++ sees strings and
// comments, refuses what would reach that branch before toml++ sees it. Where in doubt it
// takes a quote for not starting a string: that can only refuse a file toml++ refuses too.
class ascii_guard {
 public:
  ascii_guard(std::string_view text, const std::string& origin) : t_(text), origin_(origin) {}

  void run() {
    if (starts("\xEF\xBB\xBF")) i_ = 3;  // a UTF-8 byte order mark, which toml++ skips
    while (i_ < t_.size()) {
      if (starts("\"\"\"") && string_may_start()) {
        multi_line('"');
      } else if (starts("'''") && string_may_start()) {
        multi_line('\'');
      } else if ((t_[i_] == '"' || t_[i_] == '\'') && string_may_start()) {
        single_line(t_[i_]);
      } else if (t_[i_] == '#') {
        while (i_ < t_.size() && t_[i_] != '\n') ++i_;
      } else {
        if (static_cast<unsigned char>(t_[i_]) >= 0x80) fail("a non-ASCII character outside a string or comment");
        syntax_step();
      }
    }
  }

 private:
  bool starts(std::string_view s) const { return t_.substr(i_).starts_with(s); }
  static bool blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

  // A quote starts a string where TOML lets one start: a key first on a line, after '{' or
  // ',' in an inline table, after '[' of a header, after a '.' between key parts; a value
  // after '=', after '[' or ',' in an array, first on a line inside an array. Never inside a
  // bare value, which runs to the next space, ',', ']', '}' or '#'.
  bool string_may_start() const {
    if (bare_value_) return false;
    if (last_ == '.') return !in_value_;
    return std::string_view("\n=[,{").find(last_) != std::string_view::npos;
  }
  bool in_array() const { return std::find(nest_.begin(), nest_.end(), '[') != nest_.end(); }

  // One byte outside strings and comments.
  void syntax_step() {
    const char c = t_[i_];
    if (c == '\n' || blank(c)) {
      bare_value_ = false;
      if (c == '\n') {
        last_ = '\n';
        if (!in_array()) {  // a new key; arrays alone may span lines
          nest_.clear();
          in_value_ = false;
        }
      }
      next();
      return;
    }
    if (bare_value_ && std::string_view(",]}").find(c) == std::string_view::npos) {
      last_ = c;
      next();
      return;
    }
    bare_value_ = false;
    switch (c) {
      case '=': in_value_ = true; break;
      case '[': nest_.push_back(in_value_ ? '[' : 'h'); break;  // an array, or a header's [ or [[
      case '{':
        nest_.push_back('{');
        in_value_ = false;
        break;
      case ',': in_value_ = nest_.empty() || nest_.back() != '{'; break;
      case '}':
        if (!nest_.empty() && nest_.back() == '{') nest_.pop_back();
        in_value_ = true;
        break;
      case ']':
        if (!nest_.empty() && nest_.back() != '{') nest_.pop_back();
        break;
      default: bare_value_ = in_value_;
    }
    last_ = c;
    next();
  }
  // One byte of any kind; counts lines.
  void next() {
    if (t_[i_] == '\n') ++line_;
    ++i_;
  }
  [[noreturn]] void fail(std::string_view what) const {
    throw config_error(fmt::format("{}:{}: {}", origin_, line_, what));
  }
  void single_line(char quote) {
    for (++i_; i_ < t_.size() && t_[i_] != '\n'; ++i_) {
      // An escape: the next byte is not a quote (a newline still ends the line).
      if (quote == '"' && t_[i_] == '\\' && i_ + 1 < t_.size() && t_[i_ + 1] != '\n') ++i_;
      else if (t_[i_] == quote) {
        ++i_;
        break;
      }
    }
    last_ = quote;
  }
  void multi_line(char quote) {
    const std::string close(3, quote);
    i_ += 3;
    while (i_ < t_.size()) {
      if (starts(close)) {
        i_ += 3;
        while (i_ < t_.size() && t_[i_] == quote) ++i_;  // up to two quotes end the content
        break;
      }
      if (quote == '"' && t_[i_] == '\\') {
        ++i_;
        if (after_backslash()) continue;
      }
      if (i_ < t_.size()) next();
    }
    last_ = quote;
  }
  // After a backslash in a """string""", toml++ asks whether the next character is
  // whitespace and, if it is, whether each after it is, across line ends: the first one that
  // is not must not be one its table cannot answer for. True if it skipped any (then
  // nothing was escaped).
  bool after_backslash() {
    const auto from = i_;
    for (;;) {
      while (i_ < t_.size() && (blank(t_[i_]) || t_[i_] == '\n')) next();
      if (i_ >= t_.size() || static_cast<unsigned char>(t_[i_]) < 0x80) break;
      const char32_t c = code_point();
      if (unanswerable(c))
        fail("a non-ASCII character right after a backslash (and blanks) in a \"\"\"string\"\"\" "
             "(toml++ 3.3 cannot read it; put something else first)");
      if (!unicode_space(c)) break;
      i_ += c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;  // toml++ skips it too, and asks about the next
    }
    return i_ != from;
  }
  // The non-ASCII characters toml++ 3.3 takes for horizontal whitespace.
  static bool unicode_space(char32_t c) {
    return c == 0xA0 || c == 0x1680 || c == 0x180E || (c >= 0x2000 && c <= 0x200B) || c == 0x202F ||
           (c >= 0x205F && c <= 0x2060) || c == 0x3000 || c == 0xFEFF;
  }
  // The UTF-8 code point at i_ (0 when malformed: toml++ refuses those bytes itself).
  char32_t code_point() const {
    const auto b = [&](std::size_t k) { return i_ + k < t_.size() ? static_cast<unsigned char>(t_[i_ + k]) : 0u; };
    const unsigned c = b(0);
    const int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    char32_t cp = n == 3 ? c & 0x07 : n == 2 ? c & 0x0F : c & 0x1F;
    for (int k = 1; k <= n; ++k) {
      if ((b(k) & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (b(k) & 0x3F);
    }
    return n ? cp : 0;
  }
  // Whether toml++ 3.3's is_non_ascii_horizontal_whitespace reaches its unreachable branch
  // for `c` (its table, bucket by bucket: the buckets its mask does not settle fall through
  // to a switch that knows buckets 5 and 7 only).
  static bool unanswerable(char32_t c) {
    if (c <= 0xA0 || c >= 0xFEFF || c == 0x3000) return false;
    const auto bucket = (static_cast<std::uint64_t>(c) - 0xA0) / 0x3FA;
    if ((std::uint64_t{1} << bucket) & 0x7FFFFFFFFFFFF75EULL) return false;
    if (bucket == 5) return c != 0x1680 && c != 0x180E;
    if (bucket == 7) return !((c >= 0x2000 && c <= 0x200B) || (c >= 0x205F && c <= 0x2060) || c == 0x202F);
    return true;
  }

  std::string_view t_;
  const std::string& origin_;
  std::size_t i_ = 0;
  std::size_t line_ = 1;
  char last_ = '\n';  ///< the last byte outside strings and comments, blanks aside; '\n' first on a line
  bool in_value_ = false;  ///< after '=' or in an array: what comes is a value, not a key
  bool bare_value_ = false;  ///< inside a number, date or boolean
  std::string nest_;  ///< the open '[' (array), 'h' (header) and '{' (inline table)
};

}  // namespace

void refuse_what_toml_cannot_read(std::string_view text, const std::string& origin) { ascii_guard(text, origin).run(); }

}  // namespace systempp
