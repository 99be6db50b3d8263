// Tokenizer conformance against llama.cpp, on the data in ../shared:
//
//  * tokenizer/ggml-vocab-<name>.gguf with .inp/.out: llama.cpp's
//    test-tokenizer-0 vectors. Each string is tokenized without BOS/EOS and
//    without parsing special tokens, exactly as test-tokenizer-0 does
//    (common_tokenize(ctx, text, false, false)); the .inp file is split on
//    "\n__ggml_vocab_test__\n", so a case never includes the newline before
//    its separator.
//  * round trips where llama.cpp guarantees them (see each test).
//  * reference/<model>.json: the prompts' tokens (BOS included) with the
//    vocabulary inside models/<model>.gguf, and the generated tokens' text.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "frontends/gguf/gguf.h"
#include "frontends/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace vibrant {
namespace {

namespace fs = std::filesystem;

const std::string kShared = VIBRANT_SOURCE_DIR "/../shared";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

// llama.cpp's read_tests(): cases separated by "\n__ggml_vocab_test__\n",
// one line of space-separated ids per case.
std::vector<Case> ReadCases(const std::string& inp_path, const std::string& out_path) {
  const std::string raw = ReadFile(inp_path);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  size_t pos = 0;
  while (pos < raw.size()) {
    const size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      inputs.push_back(raw.substr(pos));
      break;
    }
    inputs.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::vector<Case> cases;
  std::ifstream out(out_path);
  std::string line;
  size_t i = 0;
  while (std::getline(out, line)) {
    Case c;
    if (i < inputs.size()) c.text = inputs[i];
    std::istringstream ids(line);
    int32_t id;
    while (ids >> id) c.ids.push_back(id);
    cases.push_back(std::move(c));
    ++i;
  }
  EXPECT_EQ(inputs.size(), cases.size()) << inp_path << " and " << out_path
                                         << " hold different numbers of cases";
  return cases;
}

std::string Printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

class VocabTest : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!fs::exists(kShared)) GTEST_SKIP() << kShared << " is absent: no tokenizer vectors";
    base_ = kShared + "/tokenizer/ggml-vocab-" + GetParam() + ".gguf";
    if (!fs::exists(base_)) GTEST_SKIP() << base_ << " is absent";
    auto file = GgufFile::Open(base_);
    ASSERT_TRUE(file.ok()) << file.status();
    file_ = *std::move(file);
    auto tok = Tokenizer::FromGguf(*file_);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = *std::move(tok);
    cases_ = ReadCases(base_ + ".inp", base_ + ".out");
    ASSERT_FALSE(cases_.empty());
  }

  std::string base_;
  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<Tokenizer> tok_;
  std::vector<Case> cases_;
};

// Every vector, exactly.
TEST_P(VocabTest, EncodeMatchesLlamaCpp) {
  int passed = 0;
  for (const Case& c : cases_) {
    auto ids = tok_->Encode(c.text, /*add_special=*/false, /*parse_special=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    if (*ids == c.ids) {
      ++passed;
    } else {
      ADD_FAILURE() << GetParam() << ": '" << Printable(c.text) << "'\n  expected "
                    << absl::StrJoin(c.ids, " ") << "\n  got      " << absl::StrJoin(*ids, " ");
    }
  }
  std::cout << "[ vectors  ] " << GetParam() << ": " << passed << "/" << cases_.size()
            << " cases match llama.cpp\n";
  RecordProperty("cases", static_cast<int>(cases_.size()));
  RecordProperty("passed", passed);
  EXPECT_EQ(passed, static_cast<int>(cases_.size()));
}

// Detokenizing the tokens gives the text back:
//  * byte-level BPE loses nothing, so the concatenated pieces are the text;
//    llama_detokenize also gives the text back unless the vocabulary cleans
//    up spaces (gpt-2, falcon, starcoder: " ," becomes ",", ...);
//  * SentencePiece: llama_detokenize drops the space Encode prepends, so it
//    gives the text back (llama.cpp's test-tokenizer-1-spm relies on it),
//    except where the text itself contains U+2581, which becomes a space.
TEST_P(VocabTest, DetokenizeRoundTrips) {
  const bool spm = tok_->model() == "llama";
  // llama.cpp's clean_spaces: on for byte-level BPE except the pre-tokenizers
  // that turn it off (deepseek-*, qwen2, ...).
  const bool cleans_spaces =
      GetParam() == "gpt-2" || GetParam() == "starcoder" || GetParam() == "falcon";
  int checked = 0;
  for (const Case& c : cases_) {
    auto ids = tok_->Encode(c.text, false, false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    const std::string detok = tok_->Detokenize(*ids, false, true);
    if (spm) {
      if (c.text.find("\xE2\x96\x81") != std::string::npos) continue;
      EXPECT_EQ(detok, c.text);
      EXPECT_EQ(tok_->Decode(*ids, true), c.text.empty() ? "" : " " + c.text);
    } else {
      EXPECT_EQ(tok_->Decode(*ids, true), c.text);
      if (!cleans_spaces) {
        EXPECT_EQ(detok, c.text);
      }
    }
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// llama.cpp's test-tokenizer-1-{spm,bpe}: each token's text, tokenized again
// with special tokens parsed, detokenizes to the same text.
TEST_P(VocabTest, EveryTokenRoundTrips) {
  int failures = 0;
  for (int32_t id = 0; id < tok_->vocab_size(); ++id) {
    const std::string str = tok_->Detokenize(std::vector<int32_t>{id}, false, true);
    auto ids = tok_->Encode(str, false, true);
    if (!ids.ok()) continue;  // not UTF-8 (byte-level tokens of partial characters)
    const std::string check = tok_->Detokenize(*ids, false, true);
    if (check != str && ++failures <= 10) {
      ADD_FAILURE() << "token " << id << " detokenizes to '" << Printable(str)
                    << "' but its tokenization detokenizes to '" << Printable(check) << "'";
    }
  }
  EXPECT_EQ(failures, 0);
}

std::string ParamName(const testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Vocab, VocabTest,
                         testing::Values("llama-spm", "phi-3", "gpt-2", "starcoder", "falcon",
                                         "deepseek-coder", "deepseek-llm", "qwen2"),
                         ParamName);

std::vector<uint8_t> FromHex(const std::string& hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// reference/<model>.json were produced by llama.cpp, whose examples tokenize
// a prompt with add_special and parse_special both on; the prompts contain no
// special-token text, so parse_special does not matter and both are checked.
// The generated text is what streaming prints: the concatenated pieces, with
// special tokens rendered as their text (the references show "</s>" for EOS).
TEST(ReferenceTest, PromptTokensAndGeneratedText) {
  const std::string dir = kShared + "/reference";
  if (!fs::exists(dir)) GTEST_SKIP() << dir << " is absent: no llama.cpp references";
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().string());
    const nlohmann::json ref = nlohmann::json::parse(ReadFile(entry.path().string()));
    const std::string model = kShared + "/models/" + ref.at("model").get<std::string>();
    auto file = GgufFile::Open(model);
    ASSERT_TRUE(file.ok()) << file.status();
    auto tok = Tokenizer::FromGguf(**file);
    ASSERT_TRUE(tok.ok()) << tok.status();
    for (const auto& c : ref.at("cases")) {
      const std::string prompt = c.at("prompt").get<std::string>();
      SCOPED_TRACE(prompt);
      const auto expected = c.at("prompt_tokens").get<std::vector<int32_t>>();
      for (bool parse_special : {true, false}) {
        auto ids = (*tok)->Encode(prompt, /*add_special=*/true, parse_special);
        ASSERT_TRUE(ids.ok()) << ids.status();
        EXPECT_EQ(*ids, expected) << "parse_special=" << parse_special;
      }
      const auto generated = c.at("generated").get<std::vector<int32_t>>();
      const std::string text = (*tok)->Decode(generated, /*render_special=*/true);
      const std::vector<uint8_t> bytes(text.begin(), text.end());
      EXPECT_EQ(bytes, FromHex(c.at("generated_text_hex").get<std::string>()));
      if (c.contains("generated_text")) {
        EXPECT_EQ(text, c.at("generated_text").get<std::string>());
      }
    }
    ++files;
  }
  EXPECT_GT(files, 0);
}

}  // namespace
}  // namespace vibrant
