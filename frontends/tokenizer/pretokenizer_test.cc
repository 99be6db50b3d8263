#include "frontends/tokenizer/pretokenizer.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Split(std::string_view pre, std::string_view text) {
  auto info = LookupPreTokenizer(pre);
  EXPECT_TRUE(info.ok()) << info.status();
  auto p = PreTokenizer::Create(info->type);
  EXPECT_TRUE(p.ok()) << p.status();
  std::vector<std::string> out;
  for (std::string_view w : (*p)->Split(text)) out.emplace_back(w);
  return out;
}

TEST(PretokenizerTest, Gpt2) {
  EXPECT_THAT(Split("gpt-2", "Hello world's 123!!"),
              ElementsAre("Hello", " world", "'s", " 123", "!!"));
  // Contractions are case-sensitive here.
  EXPECT_THAT(Split("gpt-2", "I'M"), ElementsAre("I", "'", "M"));
  // \s+(?!\S) leaves the last space to the word that follows.
  EXPECT_THAT(Split("gpt-2", "a  b"), ElementsAre("a", " ", " b"));
  EXPECT_THAT(Split("gpt-2", "a  "), ElementsAre("a", "  "));
}

TEST(PretokenizerTest, Llama3) {
  EXPECT_THAT(Split("llama-bpe", "I'M"), ElementsAre("I", "'M"));
  EXPECT_THAT(Split("llama-bpe", "Hello World 12345"),
              ElementsAre("Hello", " World", " ", "123", "45"));
  EXPECT_THAT(Split("llama-bpe", "a\n\nb"), ElementsAre("a", "\n\n", "b"));
  EXPECT_THAT(Split("llama-bpe", "x ...\n\ny"), ElementsAre("x", " ...\n\n", "y"));
}

TEST(PretokenizerTest, Qwen2SingleDigits) {
  EXPECT_THAT(Split("qwen2", "in 2024!"), ElementsAre("in", " ", "2", "0", "2", "4", "!"));
}

TEST(PretokenizerTest, SequentialExpressions) {
  // falcon: ... then runs of three digits are cut again.
  EXPECT_THAT(Split("falcon", "12345"), ElementsAre("123", "45"));
  // starcoder: digits first, one by one.
  EXPECT_THAT(Split("starcoder", "a12"), ElementsAre("a", "1", "2"));
  // deepseek-coder: '=' is a symbol, not punctuation, so it is left alone.
  EXPECT_THAT(Split("deepseek-coder", "x=1"), ElementsAre("x", "=", "1"));
  // deepseek-llm: trailing whitespace.
  EXPECT_THAT(Split("deepseek-llm", "ab  "), ElementsAre("ab", "  "));
}

TEST(PretokenizerTest, NonAsciiWhitespaceIsNotInLiteralRanges) {
  // U+3000 lies inside deepseek's U+0800..U+4E00 range, as does U+2192 (an
  // arrow: no earlier expression takes it), but llama.cpp turns non-ASCII
  // whitespace into \v before matching, so U+3000 splits the run.
  for (const char* pre : {"deepseek-llm", "deepseek-coder"}) {
    SCOPED_TRACE(pre);
    EXPECT_THAT(Split(pre, "\xE2\x86\x92\xE3\x80\x80\xE2\x86\x92"),
                ElementsAre("\xE2\x86\x92", "\xE3\x80\x80", "\xE2\x86\x92"));
  }
  // It is still whitespace for \s: "\s?\p{L}+" takes it with the letter.
  EXPECT_THAT(Split("deepseek-coder", "a\xE3\x80\x80" "b"), ElementsAre("a", "\xE3\x80\x80" "b"));
  // ... but a CJK letter is cut out of that piece again by the CJK expression.
  EXPECT_THAT(Split("deepseek-coder", "\xE4\xBD\xA0\xE3\x80\x80\xE5\xA5\xBD"),
              ElementsAre("\xE4\xBD\xA0", "\xE3\x80\x80", "\xE5\xA5\xBD"));
}

TEST(PretokenizerTest, WhitespaceIsUnicodeWhiteSpace) {
  // U+180E is not White_Space (PCRE2's own \s would take it): two of them
  // form one "other" run instead of whitespace.
  EXPECT_THAT(Split("gpt-2", "a\xE1\xA0\x8E\xE1\xA0\x8E" "b"),
              ElementsAre("a", "\xE1\xA0\x8E\xE1\xA0\x8E", "b"));
  // U+00A0 is whitespace; pieces are views of the original bytes.
  EXPECT_THAT(Split("gpt-2", "a\xC2\xA0\xC2\xA0" "b"),
              ElementsAre("a", "\xC2\xA0", "\xC2\xA0", "b"));
  // A literal U+FFFF is not whitespace.
  EXPECT_THAT(Split("gpt-2", "a\xEF\xBF\xBF\xEF\xBF\xBF"), ElementsAre("a", "\xEF\xBF\xBF\xEF\xBF\xBF"));
}

TEST(PretokenizerTest, PiecesCoverTheText) {
  const std::string text =
      "Hello, y'all! How are you \xF0\x9F\x98\x81 ?\xE6\x88\x91\xE6\x83\xB3 apple 1314151 "
      "\t\n  \r\n x\xC2\xA0y\xE3\x80\x80z 'RE '\xC5\xBF <sentinel:12> IMGIMGABZ \xD9\xA3\xD9\xA4";
  for (const char* pre : {"default", "llama3", "deepseek-llm", "deepseek-coder", "falcon", "mpt",
                          "starcoder", "gpt-2", "refact", "command-r", "qwen2", "stablelm2",
                          "olmo", "dbrx", "smaug-bpe", "poro-chat", "chatglm-bpe", "viking",
                          "jais", "tekken", "smollm", "codeshell", "bloom", "gpt3-finnish",
                          "exaone", "chameleon", "minerva-7b", "megrez"}) {
    SCOPED_TRACE(pre);
    std::string joined;
    for (const std::string& w : Split(pre, text)) {
      EXPECT_FALSE(w.empty());
      joined += w;
    }
    EXPECT_EQ(joined, text);
  }
}

TEST(PretokenizerTest, Lookup) {
  auto none = LookupPreTokenizer("");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->type, PreType::kDefault);
  auto llama3 = LookupPreTokenizer("llama-bpe");
  ASSERT_TRUE(llama3.ok());
  EXPECT_EQ(llama3->type, PreType::kLlama3);
  EXPECT_TRUE(llama3->ignore_merges);
  EXPECT_TRUE(llama3->add_bos);
  auto qwen2 = LookupPreTokenizer("qwen2");
  ASSERT_TRUE(qwen2.ok());
  EXPECT_FALSE(qwen2->clean_spaces);

  auto bad = LookupPreTokenizer("no-such-pre");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("'no-such-pre'"));
}

}  // namespace
}  // namespace vibrant
