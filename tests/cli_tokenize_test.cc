// End-to-end runs of `vibrantc tokenize` on the bundled stories260K model.
// Expected ids come from llama.cpp's reference in ../shared/reference (tests
// that need them skip when it is absent); error handling needs nothing else.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "tests/cli_util.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kBinary = VIBRANT_BINARY_DIR "/tools/vibrantc/vibrantc";
const std::string kModel = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";
// llama.cpp's tokens for the stories260K reference prompts (a copy of
// ../shared/reference/stories260K.json without its logits).
const std::string kReference = VIBRANT_SOURCE_DIR "/tests/data/stories260K.reference.json";

using vibrant::testing_util::ReadFile;
using Result = vibrant::testing_util::CliResult;
using vibrant::testing_util::ProcessTempDir;

Result RunCli(const std::vector<std::string>& args) {
  std::vector<std::string> all = {"tokenize"};
  all.insert(all.end(), args.begin(), args.end());
  return vibrant::testing_util::RunBinary(kBinary, all);
}

std::string WriteTemp(const std::string& name, const std::string& contents) {
  const std::string path = ProcessTempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

class CliTest : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kBinary)) << kBinary;
    ASSERT_TRUE(fs::exists(kModel)) << kModel;
  }
  // The reference case for `prompt`: its tokens as llama.cpp produced them.
  std::vector<int32_t> ReferenceTokens(const std::string& prompt) {
    const nlohmann::json ref = nlohmann::json::parse(ReadFile(kReference));
    for (const auto& c : ref.at("cases")) {
      if (c.at("prompt") == prompt) return c.at("prompt_tokens").get<std::vector<int32_t>>();
    }
    ADD_FAILURE() << "no case for '" << prompt << "' in " << kReference;
    return {};
  }
  bool HaveReference() { return fs::exists(kReference); }
};

TEST_F(CliTest, PrintsIdsLikeLlamaTokenize) {
  if (!HaveReference()) GTEST_SKIP() << kReference << " is absent";
  const std::vector<int32_t> expected = ReferenceTokens("Once upon a time");
  ASSERT_FALSE(expected.empty());
  const Result r = RunCli({kModel, "Once upon a time"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, absl::StrJoin(expected, " ") + "\n");  // "1 403 407 261 378"
}

TEST_F(CliTest, NoBosLeavesOutTheBos) {
  if (!HaveReference()) GTEST_SKIP() << kReference << " is absent";
  std::vector<int32_t> expected = ReferenceTokens("Once upon a time");
  ASSERT_FALSE(expected.empty());
  ASSERT_EQ(expected.front(), 1);  // stories260K's <s>, added by llama.cpp
  expected.erase(expected.begin());
  const Result r = RunCli({kModel, "Once upon a time", "--no-bos"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, absl::StrJoin(expected, " ") + "\n");
}

TEST_F(CliTest, ReadsTextFromFile) {
  if (!HaveReference()) GTEST_SKIP() << kReference << " is absent";
  const std::string prompt = "Lily wanted to play with the ball";
  const std::vector<int32_t> expected = ReferenceTokens(prompt);
  const std::string path = WriteTemp("cli_tokenize_prompt.txt", prompt);
  const Result r = RunCli({kModel, "--file", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, absl::StrJoin(expected, " ") + "\n");
}

TEST_F(CliTest, JsonGivesIdsAndPieces) {
  if (!HaveReference()) GTEST_SKIP() << kReference << " is absent";
  const std::vector<int32_t> expected = ReferenceTokens("Once upon a time");
  const Result r = RunCli({kModel, "--json", "Once upon a time"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), expected.size());
  std::string text;
  for (size_t i = 0; i < j.size(); ++i) {
    EXPECT_EQ(j[i].at("id").get<int32_t>(), expected[i]);
    if (i > 0) text += j[i].at("piece").get<std::string>();
  }
  EXPECT_EQ(j[0].at("piece"), "<s>");
  // SentencePiece pieces: the text with the space the tokenizer prepends.
  EXPECT_EQ(text, " Once upon a time");
}

TEST_F(CliTest, JsonMarksPiecesThatAreNotUtf8) {
  // "ü" is not in the 512-token vocabulary: two byte tokens, neither of
  // which is UTF-8 on its own.
  const Result r = RunCli({kModel, "--json", "--no-bos", "\xC3\xBC"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  std::string bytes;
  int hex_pieces = 0;
  for (const auto& e : j) {
    if (e.contains("bytes_hex")) {
      ++hex_pieces;
      const std::string hex = e.at("bytes_hex").get<std::string>();
      for (size_t i = 0; i + 1 < hex.size(); i += 2) {
        bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
      }
      EXPECT_EQ(e.at("piece"), "\xEF\xBF\xBD");  // U+FFFD per malformed byte
    } else {
      bytes += e.at("piece").get<std::string>();
    }
  }
  EXPECT_EQ(hex_pieces, 2);
  EXPECT_EQ(bytes, " \xC3\xBC");
}

TEST_F(CliTest, MissingTextFileIsAnError) {
  const std::string missing = ProcessTempDir() + "/no_such_prompt.txt";
  const Result r = RunCli({kModel, "--file", missing});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(missing));
  EXPECT_EQ(r.out, "");
}

TEST_F(CliTest, MissingModelIsAnError) {
  const std::string missing = ProcessTempDir() + "/no_such_model.gguf";
  const Result r = RunCli({missing, "hello"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no_such_model.gguf"));
}

TEST_F(CliTest, UsageErrors) {
  EXPECT_EQ(RunCli({}).exit_code, 2);
  EXPECT_EQ(RunCli({kModel}).exit_code, 2);
  EXPECT_EQ(RunCli({kModel, "hello", "--frobnicate"}).exit_code, 2);
  EXPECT_EQ(RunCli({kModel, "hello", "--file", "x.txt"}).exit_code, 2);
  EXPECT_EQ(RunCli({kModel, "--file"}).exit_code, 2);
  EXPECT_EQ(RunCli({kModel, "one", "two"}).exit_code, 2);
  const Result r = RunCli({kModel, "hello", "--frobnicate"});
  EXPECT_THAT(r.err, HasSubstr("--frobnicate"));
  EXPECT_THAT(r.err, HasSubstr("usage:"));
}

}  // namespace
