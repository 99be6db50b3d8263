// The command-line tools on a GPU (skipped without one; the lead runs them on
// the device with `ctest -R gpu_cli`):
//   * vibrant-bench -d and --roofline on a small model of a real preset: a
//     decode step's kernels at each depth with bytes, time and GB/s against
//     the copy bandwidth measured in the same run; tg steps that return the
//     sampled token;
//   * vibrant-run on a cuda plan samples on the GPU (only the token id comes
//     back) and generates the tokens the host sampler draws from the same
//     plan's logits (greedy: exactly; the logits are the same GPU's).
#include <filesystem>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/cuda/device.h"
#include "tests/cli_util.h"

namespace vibrant {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing_util::CliResult;
using testing_util::RunBinary;

const char kVibrantc[] = VIBRANT_BINARY_DIR "/tools/vibrantc/vibrantc";
const char kBench[] = VIBRANT_BINARY_DIR "/tools/vibrant-bench/vibrant-bench";
const char kRun[] = VIBRANT_BINARY_DIR "/tools/vibrant-run/vibrant-run";
const char kStories[] = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";

#define SKIP_WITHOUT_GPU()                                                     \
  do {                                                                         \
    absl::Status _gpu = CudaDeviceAvailable();                                 \
    if (!_gpu.ok()) GTEST_SKIP() << "no usable CUDA GPU: " << _gpu.message(); \
  } while (0)

class GpuCliTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing_util::ProcessTempDir(); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  // Qwen2.5-0.5B's shapes, 3 layers, a 600-token vocabulary.
  std::string SynthQwen() {
    const std::string m = dir_ + "/qwen.gguf";
    const CliResult r = RunBinary(kVibrantc, {"synth", "--preset", "qwen2.5-0.5b", "--type", "q4_k_m", "--layers",
                                              "3", "--vocab", "600", "--seed", "5", "-o", m});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return m;
  }
  std::string dir_;
};

// -d 0,16 --roofline: one roofline per depth; the step moves more bytes at
// depth 16 (16 more K and V rows per layer); the sampler's kernels are in
// the step; the tg tests return the token.
TEST_F(GpuCliTest, BenchRooflineAtTwoDepths) {
  SKIP_WITHOUT_GPU();
  const std::string model = SynthQwen();
  const CliResult r = RunBinary(kBench, {"-m", model, "--device", "cuda", "-p", "0", "-n", "4", "-d", "0,16", "-r",
                                         "1", "--roofline", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  const nlohmann::json& run = j["runs"][0];
  EXPECT_EQ(run["backend"], "CUDA");
  ASSERT_EQ(run["tests"].size(), 2u);
  EXPECT_EQ(run["tests"][0]["test"], "tg4");
  EXPECT_EQ(run["tests"][1]["test"], "tg4 @ d16");
  for (const auto& t : run["tests"]) EXPECT_EQ(t["tg_output"], "token");
  ASSERT_EQ(run["roofline"].size(), 2u);
  int64_t step_bytes[2] = {0, 0};
  for (int i = 0; i < 2; ++i) {
    const nlohmann::json& rl = run["roofline"][i];
    EXPECT_EQ(rl["depth"], i == 0 ? 0 : 16);
    // An H100's device-to-device copy runs at ~3,000 GB/s; any GPU >100.
    EXPECT_GT(rl["d2d_gbps"].get<double>(), 100.0);
    EXPECT_GT(rl["step"]["bytes"].get<int64_t>(), 0);
    EXPECT_GT(rl["step"]["us"].get<double>(), 0.0);
    EXPECT_TRUE(rl.contains("tg_ts"));
    bool sampler = false;
    int64_t bytes = 0, launches = 0;
    double us = 0;
    for (const auto& k : rl["kernels"]) {
      sampler |= k["name"] == "vb_sample_pick";
      bytes += k["bytes"].get<int64_t>();
      launches += k["launches"].get<int64_t>();
      us += k["us"].get<double>();
      // Nothing moves bytes faster than ~3x the copy (a kernel that reads
      // from L2 may beat the copy; 10x would be a counting error).
      if (k["us"].get<double>() > 2.0) {
        EXPECT_LT(k["pct_of_copy"].get<double>(), 1000.0) << k["name"];
      }
    }
    EXPECT_TRUE(sampler);
    // The step row is the sum of the kernel rows.
    EXPECT_EQ(bytes, rl["step"]["bytes"].get<int64_t>());
    EXPECT_EQ(launches, rl["step"]["launches"].get<int64_t>());
    EXPECT_NEAR(us, rl["step"]["us"].get<double>(), 1e-6 * us + 1e-9);
    // A persistent decode kernel (--decode-blocks-per-sm): the step as run
    // moves the bytes of its tasks and runs the sampler after the kernel.
    if (rl.contains("as_run")) {
      EXPECT_EQ(rl["as_run"]["step"]["bytes"], rl["step"]["bytes"]);
      EXPECT_GT(rl["as_run"]["step"]["us"].get<double>(), 0.0);
      std::vector<std::string> names;
      for (const auto& k : rl["as_run"]["kernels"]) names.push_back(k["name"]);
      EXPECT_THAT(names, ::testing::UnorderedElementsAre("vb_decode_step", "vb_sample_gather", "vb_sample_pick"));
    }
    step_bytes[i] = rl["step"]["bytes"].get<int64_t>();
  }
  EXPECT_GT(step_bytes[1], step_bytes[0]);
  // The markdown form: a table per depth, and the step at the tg rate.
  const CliResult md = RunBinary(kBench, {"-m", model, "--device", "cuda", "-p", "0", "-n", "2", "-d", "8", "-r",
                                          "1", "--roofline"});
  ASSERT_EQ(md.exit_code, 0) << md.err;
  EXPECT_THAT(md.out, HasSubstr("roofline: "));
  EXPECT_THAT(md.out, HasSubstr("at depth 8"));
  EXPECT_THAT(md.out, HasSubstr("| kernel | launches | MB moved | us | GB/s | % of copy |"));
  EXPECT_THAT(md.out, HasSubstr("| step (sum of launches) |"));
  EXPECT_THAT(md.out, HasSubstr("step at the tg rate"));
}

// A cuda plan samples on the GPU by default (vibrant-run says so) and gives
// the host sampler's greedy tokens; --tg-logits benches the logits copy.
TEST_F(GpuCliTest, RunSamplesOnTheGpuAndMatchesTheHostSampler) {
  SKIP_WITHOUT_GPU();
  const std::string gpu = dir_ + "/gpu.plan", host = dir_ + "/host.plan";
  CliResult c = RunBinary(kVibrantc, {"compile", kStories, "--device", "cuda", "-o", gpu});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  c = RunBinary(kVibrantc, {"compile", kStories, "--device", "cuda", "--no-gpu-sampling", "-o", host});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto ids = [](const CliResult& r) {
    std::vector<int> out;
    std::istringstream lines(r.out);
    std::string line;
    while (std::getline(lines, line)) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      EXPECT_FALSE(j.is_discarded()) << "not JSON: " << line;
      if (j.is_object() && j.contains("id")) out.push_back(j["id"].get<int>());
    }
    return out;
  };
  const std::vector<std::string> args = {"-p", "Once upon a time", "-n", "48", "--temp", "0", "--json"};
  std::vector<std::string> a = {gpu}, b = {host};
  a.insert(a.end(), args.begin(), args.end());
  b.insert(b.end(), args.begin(), args.end());
  const CliResult on_gpu = RunBinary(kRun, a);
  const CliResult on_host = RunBinary(kRun, b);
  ASSERT_EQ(on_gpu.exit_code, 0) << on_gpu.err;
  ASSERT_EQ(on_host.exit_code, 0) << on_host.err;
  EXPECT_THAT(on_gpu.err, HasSubstr("sampling on the GPU"));
  EXPECT_THAT(on_host.err, Not(HasSubstr("sampling on the GPU")));
  const std::vector<int> ga = ids(on_gpu), hb = ids(on_host);
  EXPECT_FALSE(ga.empty());
  EXPECT_EQ(ga, hb);
  // The bench on the same plans: token steps, and logits on request or
  // without the sample op.
  for (const auto& [plan, extra, want] :
       {std::tuple<std::string, std::string, std::string>{gpu, "", "token"}, {gpu, "--tg-logits", "logits"},
        {host, "", "logits"}}) {
    std::vector<std::string> bench = {"-m", plan, "-p", "0", "-n", "8", "-d", "32", "-r", "1", "--json"};
    if (!extra.empty()) bench.push_back(extra);
    const CliResult r = RunBinary(kBench, bench);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const nlohmann::json t = nlohmann::json::parse(r.out)["runs"][0]["tests"][0];
    EXPECT_EQ(t["test"], "tg8 @ d32");
    EXPECT_EQ(t["tg_output"], want) << plan << " " << extra;
    EXPECT_GT(t["avg_ts"].get<double>(), 0.0);
  }
}

// A cuda plan sharded for 2 and 4 ranks (issue #17) through vibrant-run on
// this machine's GPU(s): the greedy tokens of the unsharded plan, and the run
// says how its ranks are placed (one GPU each over NCCL, or sharing one).
TEST_F(GpuCliTest, TensorParallelPlansGiveTheUnshardedTokens) {
  SKIP_WITHOUT_GPU();
  const std::string whole = dir_ + "/whole.plan";
  CliResult c = RunBinary(kVibrantc, {"compile", kStories, "--device", "cuda", "-o", whole});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const std::vector<std::string> args = {"-p", "Once upon a time", "-n", "48", "--temp", "0"};
  std::vector<std::string> a = {whole};
  a.insert(a.end(), args.begin(), args.end());
  const CliResult base = RunBinary(kRun, a);
  ASSERT_EQ(base.exit_code, 0) << base.err;
  ASSERT_FALSE(base.out.empty());
  for (const std::string tp : {"2", "4"}) {
    const std::string plan = dir_ + "/tp" + tp + ".plan";
    c = RunBinary(kVibrantc, {"compile", kStories, "--device", "cuda", "--tp", tp, "-o", plan});
    ASSERT_EQ(c.exit_code, 0) << c.err;
    std::vector<std::string> b = {plan};
    b.insert(b.end(), args.begin(), args.end());
    const CliResult r = RunBinary(kRun, b);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, base.out) << "--tp " << tp;
    EXPECT_THAT(r.err, HasSubstr("tensor parallel, " + tp + " ranks")) << r.err;
    b.push_back("--verify");
    const CliResult v = RunBinary(kRun, b);
    EXPECT_NE(v.exit_code, 0);
    EXPECT_THAT(v.err, HasSubstr("a tensor-parallel plan's ranks meet in collectives"));
  }
}

// vibrant-run -m model.gguf -ngl 2: stories260K's last 2 of 5 layers on the
// GPU, the rest on the CPU, compiled once into the plan cache and reused; the
// split is described; --verify is refused by name. (Its logits against the
// CPU plan: layer_split.LayerSplitGpu.*.)
TEST_F(GpuCliTest, LayerSplitRunsFromThePlanCache) {
  SKIP_WITHOUT_GPU();
  const std::vector<std::string> args = {"-m", kStories, "-ngl", "2", "--plan-cache", dir_ + "/cache", "-p",
                                         "Once upon a time", "-n", "32", "--temp", "0"};
  const CliResult first = RunBinary(kRun, args);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_THAT(first.err, HasSubstr("-ngl 2: a split between the GPU and the CPU, layers 3..4 on the GPU"));
  EXPECT_THAT(first.err, HasSubstr("vibrant-run: compiled"));
  EXPECT_THAT(first.err, HasSubstr("split with the CPU (--gpu-layers)"));
  const CliResult second = RunBinary(kRun, args);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_THAT(second.err, Not(HasSubstr("vibrant-run: compiled")));
  EXPECT_EQ(second.out, first.out) << "the same plan, greedy: the same tokens";
  EXPECT_FALSE(first.out.empty());
  std::vector<std::string> v = args;
  v.push_back("--verify");
  const CliResult verify = RunBinary(kRun, v);
  EXPECT_NE(verify.exit_code, 0);
  EXPECT_THAT(verify.err, HasSubstr("a plan split with -ngl"));
}

}  // namespace
}  // namespace vibrant
