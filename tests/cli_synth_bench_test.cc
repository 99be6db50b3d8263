// End to end: `vibrantc synth` writes a small model of a real preset,
// `vibrantc inspect` shows llama.cpp's Q4_K_M mix on it, and `vibrant-bench`
// measures it from the GGUF and from a compiled plan (markdown and JSON).
#include <filesystem>
#include <map>
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

const char kVibrantc[] = VIBRANT_BINARY_DIR "/tools/vibrantc/vibrantc";
const char kBench[] = VIBRANT_BINARY_DIR "/tools/vibrant-bench/vibrant-bench";
constexpr int kLayers = 5;

class SynthBenchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing_util::ProcessTempDir());
    model_ = new std::string(*dir_ + "/qwen.gguf");
    // Qwen2.5-0.5B's shapes, 5 layers, a 600-token vocabulary: ~50 MB.
    const CliResult r = RunBinary(kVibrantc, {"synth", "--preset", "qwen2.5-0.5b", "--type",
                                              "q4_k_m", "--layers", std::to_string(kLayers),
                                              "--vocab", "600", "--seed", "5", "-o", *model_});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_THAT(r.out, HasSubstr("qwen2.5-0.5b q4_k_m, 5 layers"));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
    delete model_;
  }
  static std::string* dir_;
  static std::string* model_;
};
std::string* SynthBenchTest::dir_ = nullptr;
std::string* SynthBenchTest::model_ = nullptr;

// llama.cpp's use_more_bits (src/llama-quant.cpp), restated here.
bool UseMoreBits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

TEST_F(SynthBenchTest, InspectShowsLlamaQuantizeMix) {
  const CliResult r = RunBinary(kVibrantc, {"inspect", "--json", *model_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["metadata"]["general.architecture"], "qwen2");
  EXPECT_EQ(j["metadata"]["general.file_type"], 15);
  EXPECT_EQ(j["metadata"]["qwen2.block_count"], kLayers);
  std::map<std::string, std::string> type;
  for (const auto& t : j["tensors"]) type[t["name"]] = t["type"];
  EXPECT_EQ(type.size(), 2u + 12 * kLayers);
  // Q4_K_M gives attn_v and ffn_down Q6_K where use_more_bits holds (here
  // layers 2 and 4 of 5). Qwen2.5-0.5B's rows of 896 are not a multiple of
  // the K-quant block (256), so llama-quantize falls back to q8_0 (for Q6_K)
  // and q5_0 (for Q4_K); ffn_down's rows of 4864 take K-quants.
  int more_bits = 0;
  for (int l = 0; l < kLayers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const bool more = UseMoreBits(l, kLayers);
    more_bits += more;
    EXPECT_EQ(type[b + "attn_v.weight"], more ? "q8_0" : "q5_0") << l;
    EXPECT_EQ(type[b + "ffn_down.weight"], more ? "q6_K" : "q4_K") << l;
    EXPECT_EQ(type[b + "attn_q.weight"], "q5_0") << l;
    EXPECT_EQ(type[b + "ffn_up.weight"], "q5_0") << l;
    EXPECT_EQ(type[b + "attn_q.bias"], "f32") << l;
  }
  EXPECT_EQ(more_bits, 2);
  EXPECT_EQ(type["token_embd.weight"], "q8_0");  // tied: the output's rule
  EXPECT_EQ(type.count("output.weight"), 0u);
}

TEST_F(SynthBenchTest, BenchJsonFromGguf) {
  const CliResult r =
      RunBinary(kBench, {"-m", *model_, "-p", "8", "-n", "4", "-r", "2", "-t", "2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["runs"].size(), 1u);
  const nlohmann::json& run = j["runs"][0];
  EXPECT_EQ(run["model"]["kind"], "gguf");
  EXPECT_EQ(run["model"]["arch"], "qwen2");
  EXPECT_EQ(run["model"]["ftype"], "Q4_K - Medium");
  EXPECT_EQ(run["backend"], "CPU");
  EXPECT_EQ(run["threads"], 2);
  EXPECT_TRUE(run["compile_s"].is_number());
  EXPECT_GE(run["load_s"].get<double>(), 0.0);
  EXPECT_GT(run["peak_host_rss_bytes"].get<int64_t>(), 0);
  EXPECT_TRUE(run["peak_device_bytes"].is_null());
  EXPECT_GE(run["n_ctx"].get<int64_t>(), 8);
  ASSERT_EQ(run["tests"].size(), 2u);
  EXPECT_EQ(run["tests"][0]["test"], "pp8");
  EXPECT_EQ(run["tests"][0]["n_prompt"], 8);
  EXPECT_EQ(run["tests"][1]["test"], "tg4");
  EXPECT_EQ(run["tests"][1]["n_gen"], 4);
  for (const auto& t : run["tests"]) {
    EXPECT_EQ(t["samples_ns"].size(), 2u);
    EXPECT_GT(t["avg_ts"].get<double>(), 0.0);
    EXPECT_GE(t["stddev_ts"].get<double>(), 0.0);
    // t/s is tokens over each sample's time.
    const double n = t["n_prompt"].get<double>() + t["n_gen"].get<double>();
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_NEAR(t["samples_ts"][i].get<double>(), n / (t["samples_ns"][i].get<double>() * 1e-9),
                  1e-6 * t["samples_ts"][i].get<double>());
    }
  }
  EXPECT_GT(run["tests"][1]["decode_weight_gbps"].get<double>(), 0.0);
  EXPECT_GT(run["graph"]["fused"].get<int>(), 0);  // the default pipeline fuses

  // --no-fusion compiles without fuse-elementwise: more ops, none fused.
  const CliResult nf = RunBinary(
      kBench, {"-m", *model_, "-p", "4", "-n", "2", "-r", "1", "--no-fusion", "--json"});
  ASSERT_EQ(nf.exit_code, 0) << nf.err;
  const nlohmann::json jn = nlohmann::json::parse(nf.out);
  EXPECT_EQ(jn["params"]["fusion"], false);
  EXPECT_EQ(jn["runs"][0]["graph"]["fused"], 0);
  EXPECT_GT(jn["runs"][0]["graph"]["ops"].get<int>(), run["graph"]["ops"].get<int>());
}

TEST_F(SynthBenchTest, BenchMarkdownFromPlan) {
  const std::string plan = *dir_ + "/qwen.plan";
  CliResult c = RunBinary(kVibrantc, {"compile", *model_, "-o", plan, "--ctx-size", "32",
                                      "--max-tokens", "4"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const CliResult r = RunBinary(kBench, {"-m", plan, "-p", "6", "-n", "3", "-r", "1", "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| model"));
  EXPECT_THAT(r.out, HasSubstr(" t/s |"));
  EXPECT_THAT(r.out, HasSubstr("qwen2"));
  EXPECT_THAT(r.out, HasSubstr("Q4_K - Medium"));
  EXPECT_THAT(r.out, HasSubstr(" pp6 |"));
  EXPECT_THAT(r.out, HasSubstr(" tg3 |"));
  EXPECT_THAT(r.out, HasSubstr("±"));
  EXPECT_THAT(r.out, HasSubstr("load"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("compile")));  // a plan is already compiled

  // The plan's context (32) is too short for a 40-token test.
  const CliResult too_long = RunBinary(kBench, {"-m", plan, "-p", "40", "-n", "0", "-r", "1"});
  EXPECT_EQ(too_long.exit_code, 1);
  EXPECT_THAT(too_long.err, HasSubstr("--ctx-size"));
}

// -d N (llama-bench's depth): each test after N tokens of context; the
// compiled context holds the depth and the test.
TEST_F(SynthBenchTest, BenchAtDepth) {
  const CliResult r = RunBinary(kBench, {"-m", *model_, "-p", "4", "-n", "2", "-d", "0,12", "-r", "1", "-t", "2",
                                         "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["params"]["n_depth"], nlohmann::json::array({0, 12}));
  const nlohmann::json& run = j["runs"][0];
  EXPECT_GE(run["n_ctx"].get<int64_t>(), 12 + 4);
  ASSERT_EQ(run["tests"].size(), 4u);
  const char* names[] = {"pp4", "tg2", "pp4 @ d12", "tg2 @ d12"};
  const int depths[] = {0, 0, 12, 12};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(run["tests"][i]["test"], names[i]);
    EXPECT_EQ(run["tests"][i]["n_depth"], depths[i]);
    EXPECT_GT(run["tests"][i]["avg_ts"].get<double>(), 0.0);
  }
  // A cpu plan returns logits; one compiled with the sampler returns the token.
  EXPECT_EQ(run["tests"][1]["tg_output"], "logits");
  const std::string plan = *dir_ + "/sampling.plan";
  CliResult c = RunBinary(kVibrantc, {"compile", *model_, "-o", plan, "--ctx-size", "32", "--max-tokens", "4",
                                      "--gpu-sampling"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  CliResult t = RunBinary(kBench, {"-m", plan, "-p", "0", "-n", "3", "-d", "20", "-r", "1", "-t", "1", "--json"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(nlohmann::json::parse(t.out)["runs"][0]["tests"][0]["tg_output"], "token");
  EXPECT_EQ(nlohmann::json::parse(t.out)["runs"][0]["tests"][0]["test"], "tg3 @ d20");
  t = RunBinary(kBench, {"-m", plan, "-p", "0", "-n", "3", "-r", "1", "-t", "1", "--tg-logits", "--json"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(nlohmann::json::parse(t.out)["runs"][0]["tests"][0]["tg_output"], "logits");
  // The plan's context (32) cannot hold 30 tokens of depth and a 3-token test.
  t = RunBinary(kBench, {"-m", plan, "-p", "0", "-n", "3", "-d", "30", "-r", "1"});
  EXPECT_EQ(t.exit_code, 1);
  EXPECT_THAT(t.err, HasSubstr("33 tokens of context (with its depth)"));
  CliResult bad = RunBinary(kBench, {"-m", plan, "-d", "x"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("-d: 'x' is not a list of integers >= 0"));
  bad = RunBinary(kBench, {"-m", plan, "--n-depth", "4,-1"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("--n-depth: '4,-1'"));
  EXPECT_EQ(RunBinary(kBench, {"-m", plan, "-d"}).exit_code, 2);
  // --roofline profiles GPU launches: refused for the CPU before any test
  // runs (no table on stdout).
  bad = RunBinary(kBench, {"-m", *model_, "--device", "cpu", "--roofline"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("--roofline measures GPU kernels"));
  bad = RunBinary(kBench, {"-m", *model_, "-p", "0", "-n", "1", "--roofline"});  // a GGUF: cpu by default
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("add --device cuda"));
  EXPECT_EQ(bad.out, "");
  bad = RunBinary(kBench, {"-m", plan, "-p", "0", "-n", "1", "--roofline"});  // a cpu plan
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("compile the plan with --device cuda"));
}

// With -d and no prompt test, a GGUF is compiled for steps of min(512,
// depth) tokens, so that the depth is prefilled in batches (as llama-bench's
// -ub 512), not one token at a time; --max-tokens overrides.
TEST_F(SynthBenchTest, DepthIsPrefilledInBatches) {
  CliResult r = RunBinary(kBench, {"-m", *model_, "-p", "0", "-n", "1", "-d", "40", "-r", "1", "-t", "2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["runs"][0]["max_tokens"], 40);
  r = RunBinary(kBench, {"-m", *model_, "-p", "0", "-n", "1", "-d", "40", "-r", "1", "-t", "2", "--max-tokens", "8",
                         "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["runs"][0]["max_tokens"], 8);
  r = RunBinary(kBench, {"-m", *model_, "-p", "16", "-n", "0", "-r", "1", "-t", "2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["runs"][0]["max_tokens"], 16);
}

TEST_F(SynthBenchTest, UsageErrors) {
  EXPECT_EQ(RunBinary(kBench, {}).exit_code, 2);
  EXPECT_EQ(RunBinary(kBench, {"-m", *model_, "-p", "x"}).exit_code, 2);
  EXPECT_EQ(RunBinary(kBench, {"-m", *model_, "--bogus"}).exit_code, 2);
  const CliResult missing = RunBinary(kBench, {"-m", *dir_ + "/missing.gguf"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("missing.gguf"));
  EXPECT_EQ(RunBinary(kVibrantc, {"synth", "--preset", "qwen2.5-9b", "--type", "q4_k_m", "-o",
                                  *dir_ + "/x.gguf"})
                .exit_code,
            2);
  EXPECT_EQ(RunBinary(kVibrantc, {"synth", "--preset", "qwen2.5-3b", "--type", "q3_k_m", "-o",
                                  *dir_ + "/x.gguf"})
                .exit_code,
            2);
}

}  // namespace
}  // namespace vibrant
