#include "frontends/tokenizer/tokenizer.h"

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// ---- a small SentencePiece vocabulary --------------------------------------
//   0 <unk>  1 <s>  2 </s>  3..258 <0x00>..<0xFF>
//   259 "▁"  260 "a"  261 "b"  262 "▁a"  263 "ab"  264 "▁ab"
constexpr int kSpmSpace = 259, kA = 260, kB = 261, kSpaceA = 262, kAB = 263, kSpaceAB = 264;
int ByteId(uint8_t b) { return 3 + b; }

struct SpmOptions {
  float score_space_a = -1.0f;
  float score_ab = -3.0f;
  bool with_space_ab = true;
};

VocabData SpmVocab(SpmOptions o = {}) {
  VocabData v;
  v.model = "llama";
  auto add = [&](std::string text, float score, TokenType type) {
    v.tokens.push_back(std::move(text));
    v.scores.push_back(score);
    v.token_types.push_back(static_cast<int32_t>(type));
  };
  add("<unk>", 0, TokenType::kUnknown);
  add("<s>", 0, TokenType::kControl);
  add("</s>", 0, TokenType::kControl);
  for (int b = 0; b < 256; ++b) add(absl::StrFormat("<0x%02X>", b), 0, TokenType::kByte);
  add("\xE2\x96\x81", -5, TokenType::kNormal);
  add("a", -6, TokenType::kNormal);
  add("b", -6, TokenType::kNormal);
  add("\xE2\x96\x81" "a", o.score_space_a, TokenType::kNormal);
  add("ab", o.score_ab, TokenType::kNormal);
  // Left in the list when unused (type UNUSED, so it is never produced as
  // text) to keep the ids stable.
  add(o.with_space_ab ? "\xE2\x96\x81" "ab" : "[unused]", -0.5f,
      o.with_space_ab ? TokenType::kNormal : TokenType::kUnused);
  v.bos_id = 1;
  v.eos_id = 2;
  v.unk_id = 0;
  return v;
}

std::unique_ptr<Tokenizer> Make(VocabData v) {
  auto t = Tokenizer::FromVocab(std::move(v));
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

std::vector<int32_t> Enc(const Tokenizer& t, std::string_view text, bool add_special = false,
                         bool parse_special = false) {
  auto ids = t.Encode(text, add_special, parse_special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

TEST(SpmTest, LeadingSpaceAndHighestScoreFirst) {
  // "ab" -> "▁ab": the pair "▁a" (-1) beats "ab" (-3), then "▁a"+"b" -> "▁ab".
  auto t = Make(SpmVocab());
  EXPECT_THAT(Enc(*t, "ab"), ElementsAre(kSpaceAB));
  // Without "▁ab" the merge stops at "▁a" "b".
  auto t2 = Make(SpmVocab({.with_space_ab = false}));
  EXPECT_THAT(Enc(*t2, "ab"), ElementsAre(kSpaceA, kB));
  // When "ab" scores higher it is merged first and "▁" stays alone.
  auto t3 = Make(SpmVocab({.score_space_a = -1.0f, .score_ab = -0.7f, .with_space_ab = false}));
  EXPECT_THAT(Enc(*t3, "ab"), ElementsAre(kSpmSpace, kAB));
  // Spaces inside the text become "▁" too.
  EXPECT_THAT(Enc(*t2, "a a"), ElementsAre(kSpaceA, kSpaceA));
}

TEST(SpmTest, ByteFallback) {
  auto t = Make(SpmVocab());
  // "é" (C3 A9) is not in the vocabulary: its bytes are spelled as <0xC3> <0xA9>.
  EXPECT_THAT(Enc(*t, "\xC3\xA9"), ElementsAre(kSpmSpace, ByteId(0xC3), ByteId(0xA9)));
  // A byte that is not UTF-8 at all still has its byte token.
  EXPECT_THAT(Enc(*t, "b\xFF"), ElementsAre(kSpmSpace, kB, ByteId(0xFF)));
  // And byte tokens detokenize to their bytes.
  EXPECT_EQ(t->TokenToPiece(ByteId(0xC3)), "\xC3");
  EXPECT_EQ(t->Decode(std::vector<int32_t>{ByteId(0xC3), ByteId(0xA9)}), "\xC3\xA9");
}

TEST(SpmTest, AddBosAndEos) {
  auto t = Make(SpmVocab());  // SentencePiece default: BOS yes, EOS no
  EXPECT_TRUE(t->add_bos());
  EXPECT_FALSE(t->add_eos());
  EXPECT_THAT(Enc(*t, "a", /*add_special=*/true), ElementsAre(1, kSpaceA));
  EXPECT_THAT(Enc(*t, "a", /*add_special=*/false), ElementsAre(kSpaceA));
  EXPECT_THAT(Enc(*t, "", true), ElementsAre(1));
  EXPECT_THAT(Enc(*t, "", false), IsEmpty());

  VocabData v = SpmVocab();
  v.add_eos = true;
  auto with_eos = Make(std::move(v));
  EXPECT_THAT(Enc(*with_eos, "a", true), ElementsAre(1, kSpaceA, 2));

  v = SpmVocab();
  v.add_bos = false;
  auto no_bos = Make(std::move(v));
  EXPECT_THAT(Enc(*no_bos, "a", true), ElementsAre(kSpaceA));
}

TEST(SpmTest, SpecialTokenParsing) {
  auto t = Make(SpmVocab({.with_space_ab = false}));
  // Parsed: "a", <s>, "b"; the text after a special token gets the space prefix.
  EXPECT_THAT(Enc(*t, "a<s>b", false, /*parse_special=*/true),
              ElementsAre(kSpaceA, 1, kSpmSpace, kB));
  // Not parsed: "<s>" is text, spelled in bytes.
  EXPECT_THAT(Enc(*t, "a<s>b", false, /*parse_special=*/false),
              ElementsAre(kSpaceA, ByteId('<'), ByteId('s'), ByteId('>'), kB));
}

TEST(SpmTest, UserDefinedTokensAreAlwaysCutOut) {
  VocabData v = SpmVocab({.with_space_ab = false});
  v.tokens.push_back("<u>");
  v.scores.push_back(0);
  v.token_types.push_back(static_cast<int32_t>(TokenType::kUserDefined));
  auto t = Make(std::move(v));
  const int u = 265;
  EXPECT_THAT(Enc(*t, "a<u>b", false, /*parse_special=*/false),
              ElementsAre(kSpaceA, u, kSpmSpace, kB));
  EXPECT_EQ(t->TokenToPiece(u), "<u>");  // user-defined tokens render as text
}

TEST(SpmTest, Phi3StripsWhitespaceAfterSpecialTokens) {
  for (const char* name : {"Phi3", "llama"}) {
    SCOPED_TRACE(name);
    VocabData v = SpmVocab({.with_space_ab = false});
    v.name = name;
    v.tokens.push_back("<|end|>");
    v.scores.push_back(0);
    v.token_types.push_back(static_cast<int32_t>(TokenType::kControl));
    auto t = Make(std::move(v));
    const int end = 265;
    const auto ids = Enc(*t, "a<|end|>  b", false, true);
    if (std::string(name) == "Phi3") {
      EXPECT_THAT(ids, ElementsAre(kSpaceA, end, kSpmSpace, kB));
    } else {
      EXPECT_THAT(ids, ElementsAre(kSpaceA, end, kSpmSpace, kSpmSpace, kSpmSpace, kB));
    }
  }
}

TEST(SpmTest, EndOfTurnTextMakesAControlToken) {
  VocabData v = SpmVocab();
  v.tokens.push_back("<|im_end|>");
  v.scores.push_back(0);
  v.token_types.push_back(static_cast<int32_t>(TokenType::kNormal));
  auto t = Make(std::move(v));
  EXPECT_TRUE(t->IsControl(265));
  EXPECT_TRUE(t->IsEndOfGeneration(265));
  EXPECT_EQ(t->token_type(265), TokenType::kControl);
  EXPECT_TRUE(t->IsEndOfGeneration(2));  // EOS
  EXPECT_FALSE(t->IsEndOfGeneration(1));
}

TEST(SpmTest, PiecesAndDetokenize) {
  auto t = Make(SpmVocab({.with_space_ab = false}));
  EXPECT_EQ(t->TokenToPiece(kSpaceA), " a");
  EXPECT_EQ(t->TokenToPiece(1), "");
  EXPECT_EQ(t->TokenToPiece(1, /*render_special=*/true), "<s>");
  EXPECT_EQ(t->TokenToPiece(0), "");  // unknown renders like control
  EXPECT_EQ(t->TokenToPiece(9999), "");
  const std::vector<int32_t> ids = {kSpaceA, kSpaceA, kB};  // " a ab"
  EXPECT_EQ(t->Decode(ids), " a ab");
  EXPECT_EQ(t->Detokenize(ids, false, false), "a ab");  // leading space removed
  // With BOS first the leading space stays: llama_detokenize turns the strip
  // off when it removes the BOS, and otherwise spends it on the BOS's piece.
  const std::vector<int32_t> with_bos = {1, kSpaceA};
  EXPECT_EQ(t->Detokenize(with_bos, /*remove_special=*/true, false), " a");
  EXPECT_EQ(t->Detokenize(with_bos, false, false), " a");
  EXPECT_EQ(t->Detokenize(with_bos, false, /*unparse_special=*/true), "<s> a");
  // Round trip.
  for (std::string s : {"a", "ab", " a  b ", "b\xC3\xA9\n"}) {
    EXPECT_EQ(t->Detokenize(Enc(*t, s), false, false), s);
  }
}

// ---- a small byte-level BPE vocabulary -------------------------------------
//   0 t  1 h  2 e  3 Ġ  4 he  5 Ġt  6 Ġthe  7 <|endoftext|>  8 Ã  9 ©  10 Ã©
//   11 .  12 Ġ.
// with merges "Ġ t", "h e", "Ġt he", "Ã ©" (best first). é is C3 A9, which
// GPT-2's byte alphabet writes as U+00C3 U+00A9.
VocabData BpeVocab(std::string pre = "gpt-2") {
  VocabData v;
  v.model = "gpt2";
  v.pre = std::move(pre);
  v.tokens = {"t", "h", "e", "\xC4\xA0", "he", "\xC4\xA0t", "\xC4\xA0the", "<|endoftext|>",
              "\xC3\x83", "\xC2\xA9", "\xC3\x83\xC2\xA9", ".", "\xC4\xA0."};
  v.token_types.assign(v.tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  v.token_types[7] = static_cast<int32_t>(TokenType::kControl);
  v.merges = {"\xC4\xA0 t", "h e", "\xC4\xA0t he", "\xC3\x83 \xC2\xA9", "\xC4\xA0 ."};
  v.bos_id = 7;
  v.eos_id = 7;
  return v;
}

TEST(BpeTest, MergesByRank) {
  auto t = Make(BpeVocab());
  EXPECT_THAT(Enc(*t, " the"), ElementsAre(6));
  EXPECT_THAT(Enc(*t, "the"), ElementsAre(0, 4));
  EXPECT_THAT(Enc(*t, "\xC3\xA9"), ElementsAre(10));  // é through the byte alphabet
  // A character with no token is dropped, as llama.cpp does.
  EXPECT_THAT(Enc(*t, "x"), IsEmpty());
}

TEST(BpeTest, AddBosFollowsMetadata) {
  auto t = Make(BpeVocab());  // gpt-2: no BOS unless the metadata says so
  EXPECT_THAT(Enc(*t, "the", true), ElementsAre(0, 4));
  VocabData v = BpeVocab();
  v.add_bos = true;
  v.add_eos = true;
  auto both = Make(std::move(v));
  EXPECT_THAT(Enc(*both, "the", true), ElementsAre(7, 0, 4, 7));
  EXPECT_THAT(Enc(*both, "the", false), ElementsAre(0, 4));
  // llama-bpe adds BOS by default.
  auto llama3 = Make(BpeVocab("llama-bpe"));
  EXPECT_TRUE(llama3->add_bos());
}

TEST(BpeTest, AddBosWithoutBosTokenIsAnError) {
  VocabData v = BpeVocab("chatglm-bpe");  // this pre-tokenizer has no BOS token
  v.bos_id.reset();
  v.add_bos = true;
  auto t = Make(std::move(v));
  auto ids = t->Encode("the", true, false);
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(BpeTest, SpecialTokenParsing) {
  auto t = Make(BpeVocab());
  EXPECT_THAT(Enc(*t, "the<|endoftext|>the", false, true), ElementsAre(0, 4, 7, 0, 4));
  EXPECT_EQ(t->TokenToPiece(7), "");
  EXPECT_EQ(t->TokenToPiece(7, true), "<|endoftext|>");
}

TEST(BpeTest, InvalidUtf8IsAnError) {
  auto t = Make(BpeVocab());
  auto ids = t->Encode("the\xFF", false, false);
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ids.status().message(), HasSubstr("byte offset 3"));
}

TEST(BpeTest, PiecesAndCleanSpaces) {
  auto gpt2 = Make(BpeVocab("gpt-2"));
  EXPECT_EQ(gpt2->TokenToPiece(6), " the");
  EXPECT_EQ(gpt2->TokenToPiece(10), "\xC3\xA9");
  const std::vector<int32_t> ids = {6, 12};  // " the ."
  EXPECT_EQ(gpt2->Decode(ids), " the .");
  EXPECT_EQ(gpt2->Detokenize(ids, false, false), " the.");  // clean_up_tokenization_spaces
  auto qwen2 = Make(BpeVocab("qwen2"));  // qwen2 keeps spaces
  EXPECT_EQ(qwen2->Detokenize(ids, false, false), " the .");
}

// ---- errors ------------------------------------------------------------------

TEST(VocabErrorTest, UnknownPreTokenizer) {
  auto t = Tokenizer::FromVocab(BpeVocab("no-such-pre"));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("unknown pre-tokenizer"));
  EXPECT_THAT(t.status().message(), HasSubstr("'no-such-pre'"));
}

TEST(VocabErrorTest, UnknownAndUnsupportedModels) {
  VocabData v = SpmVocab();
  v.model = "wordsoup";
  auto t = Tokenizer::FromVocab(v);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("'wordsoup'"));
  v.model = "bert";
  EXPECT_EQ(Tokenizer::FromVocab(v).status().code(), absl::StatusCode::kUnimplemented);
}

TEST(VocabErrorTest, MismatchedArrays) {
  VocabData v = SpmVocab();
  v.scores.pop_back();
  EXPECT_THAT(Tokenizer::FromVocab(v).status().message(), HasSubstr("tokenizer.ggml.scores"));
  v = SpmVocab();
  v.tokens.clear();
  v.scores.clear();
  v.token_types.clear();
  EXPECT_FALSE(Tokenizer::FromVocab(v).ok());
}

// ---- through GGUF metadata ---------------------------------------------------

// A minimal GGUF v3 file holding only metadata.
class MiniGguf {
 public:
  void Str(const std::string& key, const std::string& value) {
    Key(key, 8);
    String(value);
    ++n_;
  }
  void U32(const std::string& key, uint32_t value) {
    Key(key, 4);
    Pod(value);
    ++n_;
  }
  void Bool(const std::string& key, bool value) {
    Key(key, 7);
    body_.push_back(value ? 1 : 0);
    ++n_;
  }
  void StrArray(const std::string& key, const std::vector<std::string>& values) {
    Key(key, 9);
    Pod(uint32_t{8});
    Pod(uint64_t{values.size()});
    for (const std::string& s : values) String(s);
    ++n_;
  }
  void F32Array(const std::string& key, const std::vector<float>& values) {
    Key(key, 9);
    Pod(uint32_t{6});
    Pod(uint64_t{values.size()});
    for (float f : values) Pod(f);
    ++n_;
  }
  void I32Array(const std::string& key, const std::vector<int32_t>& values) {
    Key(key, 9);
    Pod(uint32_t{5});
    Pod(uint64_t{values.size()});
    for (int32_t i : values) Pod(i);
    ++n_;
  }
  std::vector<uint8_t> Bytes() const {
    std::vector<uint8_t> out = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
    auto put64 = [&](uint64_t v) {
      for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
    };
    put64(0);   // tensors
    put64(n_);  // metadata
    out.insert(out.end(), body_.begin(), body_.end());
    while (out.size() % 32 != 0) out.push_back(0);
    return out;
  }

 private:
  template <typename T>
  void Pod(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    body_.insert(body_.end(), b, b + sizeof(T));
  }
  void String(const std::string& s) {
    Pod(uint64_t{s.size()});
    body_.insert(body_.end(), s.begin(), s.end());
  }
  void Key(const std::string& key, uint32_t type) {
    String(key);
    Pod(type);
  }
  std::vector<uint8_t> body_;
  uint64_t n_ = 0;
};

MiniGguf SpmGguf() {
  const VocabData v = SpmVocab();
  MiniGguf g;
  g.Str("general.architecture", "llama");
  g.Str("tokenizer.ggml.model", "llama");
  g.StrArray("tokenizer.ggml.tokens", v.tokens);
  g.F32Array("tokenizer.ggml.scores", v.scores);
  g.I32Array("tokenizer.ggml.token_type", v.token_types);
  g.U32("tokenizer.ggml.bos_token_id", 1);
  g.U32("tokenizer.ggml.eos_token_id", 2);
  return g;
}

TEST(GgufVocabTest, ReadsTokenizerMetadata) {
  MiniGguf g = SpmGguf();
  g.Bool("tokenizer.ggml.add_eos_token", true);
  const std::vector<uint8_t> bytes = g.Bytes();
  auto file = GgufFile::FromBuffer("spm.gguf", bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  auto t = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->vocab_size(), 265);
  EXPECT_EQ((*t)->model(), "llama");
  EXPECT_THAT(Enc(**t, "ab", true), ElementsAre(1, kSpaceAB, 2));
}

TEST(GgufVocabTest, UnknownPreTokenizerNamesFileAndValue) {
  const VocabData v = BpeVocab();
  MiniGguf g;
  g.Str("tokenizer.ggml.model", "gpt2");
  g.Str("tokenizer.ggml.pre", "mystery-pre");
  g.StrArray("tokenizer.ggml.tokens", v.tokens);
  g.StrArray("tokenizer.ggml.merges", v.merges);
  const std::vector<uint8_t> bytes = g.Bytes();
  auto file = GgufFile::FromBuffer("bpe.gguf", bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  auto t = Tokenizer::FromGguf(**file);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("bpe.gguf"));
  EXPECT_THAT(t.status().message(), HasSubstr("'mystery-pre'"));
}

TEST(GgufVocabTest, MissingModelKeyIsAnError) {
  MiniGguf g;
  g.StrArray("tokenizer.ggml.tokens", {"a"});
  const std::vector<uint8_t> bytes = g.Bytes();
  auto file = GgufFile::FromBuffer("nomodel.gguf", bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  auto t = Tokenizer::FromGguf(**file);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.ggml.model"));
}

}  // namespace
}  // namespace vibrant
