// vibrant-batched-bench end to end on the CPU with stories260K: the table's
// arithmetic (N_KV, speeds from the times), -pps's shared prompt, the JSON
// lines, a case larger than the KV budget skipped by name, usage errors.
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli_util.h"

namespace vibrant {
namespace {

using ::testing::HasSubstr;
using testing_util::CliResult;
using testing_util::RunBinary;

const char kBench[] = VIBRANT_BINARY_DIR "/tools/vibrant-batched-bench/vibrant-batched-bench";
const char kModel[] = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";

std::vector<nlohmann::json> Lines(const std::string& out) {
  std::vector<nlohmann::json> v;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) v.push_back(nlohmann::json::parse(line));
  }
  return v;
}

TEST(BatchedBenchTest, EachCaseDecodesItsSequencesTogether) {
  const CliResult r =
      RunBinary(kBench, {"-m", kModel, "-npp", "32,40", "-ntg", "4", "-npl", "1,3", "-t", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<nlohmann::json> rows = Lines(r.out);
  ASSERT_EQ(rows.size(), 4u);
  int i = 0;
  for (int pp : {32, 40}) {
    for (int b : {1, 3}) {
      const nlohmann::json& j = rows[i++];
      EXPECT_EQ(j["pp"], pp);
      EXPECT_EQ(j["tg"], 4);
      EXPECT_EQ(j["pl"], b);
      EXPECT_EQ(j["n_kv"], b * (pp + 4));
      EXPECT_GT(j["t_pp"].get<double>(), 0);
      EXPECT_GT(j["t_tg"].get<double>(), 0);
      EXPECT_NEAR(j["speed_pp"].get<double>(), b * pp / j["t_pp"].get<double>(), 1e-6 * j["speed_pp"].get<double>());
      EXPECT_NEAR(j["speed_tg"].get<double>(), b * 4 / j["t_tg"].get<double>(), 1e-6 * j["speed_tg"].get<double>());
      EXPECT_NEAR(j["t"].get<double>(), j["t_pp"].get<double>() + j["t_tg"].get<double>(), 1e-9);
      EXPECT_EQ(j["device"], "cpu");
    }
  }
  // The KV budget defaults to the largest case: 3 sequences of 44 tokens in
  // blocks of 16 = 9 blocks.
  EXPECT_EQ(rows[0]["n_kv_max"], 3 * 48);
}

TEST(BatchedBenchTest, SharedPromptIsComputedOnce) {
  const CliResult r =
      RunBinary(kBench, {"-m", kModel, "-npp", "40", "-ntg", "2", "-npl", "4", "-pps", "-t", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<nlohmann::json> rows = Lines(r.out);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["n_kv"], 40 + 4 * 2);
  EXPECT_NEAR(rows[0]["speed_pp"].get<double>(), 40 / rows[0]["t_pp"].get<double>(), 1e-6 * rows[0]["speed_pp"].get<double>());
}

TEST(BatchedBenchTest, TableAndErrors) {
  CliResult r = RunBinary(kBench, {"-m", kModel, "-npp", "16", "-ntg", "2", "-npl", "1,2", "-c", "40", "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |"));
  EXPECT_THAT(r.out, HasSubstr("|    16 |      2 |    1 |     18 |"));
  // 2 sequences of 2 blocks each do not fit a 48-row budget (3 blocks).
  EXPECT_THAT(r.err, HasSubstr("skipping PP 16 TG 2 B 2"));
  r = RunBinary(kBench, {"-npp", "16"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("-m MODEL.gguf is required"));
  r = RunBinary(kBench, {"-m", kModel, "-npl", "0,2"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("sequence counts are >= 1"));
  r = RunBinary(kBench, {"-m", kModel, "-npp", "x"});
  EXPECT_EQ(r.exit_code, 2);
  r = RunBinary(kBench, {"-m", "/nonexistent.gguf"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent.gguf"));
  r = RunBinary(kBench, {"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("vibrant-batched-bench"));
}

}  // namespace
}  // namespace vibrant
