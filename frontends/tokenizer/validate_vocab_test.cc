// ValidateVocabulary: what `vibrantc compile` refuses (issue #16: compile
// accepted 58 of 58 broken vocabularies, among them ids out of range and a
// 100-token vocabulary on a 512-row embedding that then printed nothing).
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "frontends/gguf/gguf.h"
#include "frontends/gguf/gguf_writer.h"
#include "frontends/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant {
namespace {

using ::testing::HasSubstr;

// A 300-token SentencePiece vocabulary (unk, bos, eos, 256 byte tokens,
// then plain words), with `edit` applied to the writer before serializing.
struct Vocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  std::string model = "llama";
};

Vocab Base() {
  Vocab v;
  auto add = [&](std::string t, int32_t type) {
    v.tokens.push_back(std::move(t));
    v.scores.push_back(-static_cast<float>(v.tokens.size()));
    v.types.push_back(type);
  };
  add("<unk>", 2);
  add("<s>", 3);
  add("</s>", 3);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    add(buf, 6);
  }
  while (v.tokens.size() < 300) add("w" + std::to_string(v.tokens.size()), 1);
  return v;
}

absl::Status Validate(const Vocab& v, int64_t rows, const std::vector<std::pair<std::string, GgufValue>>& extra = {}) {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddString("tokenizer.ggml.model", v.model);
  w.AddStringArray("tokenizer.ggml.tokens", v.tokens);
  w.AddFloat32Array("tokenizer.ggml.scores", v.scores);
  w.AddInt32Array("tokenizer.ggml.token_type", v.types);
  for (const auto& [k, val] : extra) w.AddMetadata(k, val);
  absl::StatusOr<std::string> bytes = w.Serialize();
  if (!bytes.ok()) return bytes.status();
  static std::string keep;  // the file views its bytes
  keep = *bytes;
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::FromBuffer(
      "v.gguf", absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(keep.data()), keep.size()));
  if (!f.ok()) return f.status();
  return ValidateVocabulary(**f, rows);
}

GgufValue U32(uint32_t v) { return GgufValue::Uint(GgufType::kUint32, v); }
GgufValue I32(int32_t v) { return GgufValue::Int(GgufType::kInt32, v); }

TEST(ValidateVocabulary, GoodVocabulary) {
  EXPECT_TRUE(Validate(Base(), 300).ok()) << Validate(Base(), 300);
  EXPECT_TRUE(Validate(Base(), -1).ok());
  // -1 means "no such token", however it is stored (stories260K stores
  // seperator and padding ids as uint32 4294967295).
  EXPECT_TRUE(Validate(Base(), 300, {{"tokenizer.ggml.padding_token_id", U32(4294967295u)},
                                     {"tokenizer.ggml.seperator_token_id", I32(-1)},
                                     {"tokenizer.ggml.bos_token_id", U32(1)}})
                  .ok());
}

TEST(ValidateVocabulary, SizeMustMatchTheEmbedding) {
  absl::Status s = Validate(Base(), 512);
  EXPECT_EQ(s.message(),
            "v.gguf: tokenizer.ggml.tokens: 300 tokens, but the embedding (token_embd.weight) has "
            "512 rows: every token needs a row and every row a token");
  EXPECT_FALSE(Validate(Base(), 299).ok());
}

TEST(ValidateVocabulary, SpecialIdsInRange) {
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.eot_token_id", "tokenizer.ggml.unknown_token_id",
                          "tokenizer.ggml.padding_token_id", "tokenizer.ggml.fim_pre_token_id",
                          "tokenizer.ggml.middle_token_id"}) {
    absl::Status s = Validate(Base(), 300, {{key, U32(300)}});
    EXPECT_EQ(s.message(), std::string("v.gguf: ") + key + ": 300 is outside the vocabulary [0, 300)");
    EXPECT_FALSE(Validate(Base(), 300, {{key, I32(-2)}}).ok()) << key;
    EXPECT_TRUE(Validate(Base(), 300, {{key, U32(299)}}).ok()) << key;
  }
  EXPECT_THAT(Validate(Base(), 300, {{"tokenizer.ggml.bos_token_id", GgufValue::String("1")}}).message(),
              HasSubstr("tokenizer.ggml.bos_token_id"));
}

TEST(ValidateVocabulary, TokenTypesAndScores) {
  Vocab v = Base();
  v.types[17] = 9;
  EXPECT_EQ(Validate(v, 300).message(),
            "v.gguf: tokenizer.ggml.token_type: entry 17 is 9, not a token type (0..6)");
  v = Base();
  v.types[3] = -1;
  EXPECT_FALSE(Validate(v, 300).ok());
  v = Base();
  v.scores[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(Validate(v, 300).message(), HasSubstr("tokenizer.ggml.scores: entry 5"));
}

TEST(ValidateVocabulary, SizesAndModel) {
  Vocab v = Base();
  v.scores.pop_back();
  EXPECT_THAT(Validate(v, 300).message(), HasSubstr("tokenizer.ggml.scores: 299 entries for 300 tokens"));
  v = Base();
  v.types.pop_back();
  EXPECT_THAT(Validate(v, 300).message(), HasSubstr("tokenizer.ggml.token_type"));
  v = Base();
  v.model = "wordpiece";
  EXPECT_THAT(Validate(v, 300).message(), HasSubstr("unknown tokenizer model"));
  v = Base();
  v.model = "gpt2";  // needs merges
  EXPECT_THAT(Validate(v, 300).message(), HasSubstr("tokenizer.ggml.merges"));
  v = Base();
  v.tokens.clear();
  v.scores.clear();
  v.types.clear();
  EXPECT_FALSE(Validate(v, 0).ok());
}

// Every real vocabulary and model in ../shared passes (skipped without it):
// the checks refuse broken files, not unusual real ones.
TEST(ValidateVocabulary, SharedVocabulariesAndModelsPass) {
  const std::string shared = VIBRANT_SOURCE_DIR "/../shared";
  int seen = 0;
  for (const char* sub : {"/tokenizer", "/models"}) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(shared + sub, ec)) {
      if (e.path().extension() != ".gguf") continue;
      absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(e.path().string());
      ASSERT_TRUE(f.ok()) << f.status();
      const GgufTensorInfo* embd = (*f)->FindTensor("token_embd.weight");
      const int64_t rows = embd != nullptr && embd->dims.size() == 2 ? embd->dims[1] : -1;
      absl::Status s = ValidateVocabulary(**f, rows);
      EXPECT_TRUE(s.ok()) << s;
      ++seen;
    }
  }
  if (seen == 0) GTEST_SKIP() << shared << " has no vocabularies or models";
}

}  // namespace
}  // namespace vibrant
