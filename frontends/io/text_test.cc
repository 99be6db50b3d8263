#include "frontends/io/text.h"

#include "gtest/gtest.h"

namespace vibrant::io {
namespace {

TEST(EscapeForTerminal, KeepsPrintableUtf8) {
  EXPECT_EQ(EscapeForTerminal("llama"), "llama");
  EXPECT_EQ(EscapeForTerminal("h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80"),
            "h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(EscapeForTerminal("a\\b 'c' \"d\""), "a\\b 'c' \"d\"");
}

TEST(EscapeForTerminal, EscapesControlSequences) {
  // Set the window title, clear the screen, move the cursor, ring the bell.
  EXPECT_EQ(EscapeForTerminal("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
  EXPECT_EQ(EscapeForTerminal("a\x1b[2Jb\x1b[H"), "a\\x1b[2Jb\\x1b[H");
  EXPECT_EQ(EscapeForTerminal("x\ry\bz\x7f"), "x\\x0dy\\x08z\\x7f");
  EXPECT_EQ(EscapeForTerminal(std::string("nul\0byte", 8)), "nul\\x00byte");
}

TEST(EscapeForTerminal, Newlines) {
  EXPECT_EQ(EscapeForTerminal("a\nb\tc"), "a\\x0ab\\x09c");
  EXPECT_EQ(EscapeForTerminal("a\nb\tc", /*keep_newlines=*/true), "a\nb\tc");
  EXPECT_EQ(EscapeForTerminal("a\n\x1b[31m", true), "a\n\\x1b[31m");
}

TEST(EscapeForTerminal, C1ControlsAndBidi) {
  // U+009B is CSI on terminals that take 8-bit controls through UTF-8.
  EXPECT_EQ(EscapeForTerminal("\xc2\x9b" "31m"), "\\u{009b}31m");
  // U+202E RIGHT-TO-LEFT OVERRIDE reverses what follows on screen.
  EXPECT_EQ(EscapeForTerminal("abc\xe2\x80\xae" "fed"), "abc\\u{202e}fed");
}

TEST(EscapeForTerminal, MalformedUtf8) {
  EXPECT_EQ(EscapeForTerminal("\xff"), "\\xff");
  EXPECT_EQ(EscapeForTerminal("a\xc3"), "a\\xc3");                  // truncated
  EXPECT_EQ(EscapeForTerminal("\xc0\xaf"), "\\xc0\\xaf");           // overlong '/'
  EXPECT_EQ(EscapeForTerminal("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
  EXPECT_EQ(EscapeForTerminal("\xe6\x97"), "\\xe6\\x97");
}

}  // namespace
}  // namespace vibrant::io
