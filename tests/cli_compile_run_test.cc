// End to end on the real binaries: `vibrantc compile` a GGUF into a plan,
// `vibrant-run` it, and compare with what llama.cpp generates.
//
// The model is the bundled tests/data/stories260K.gguf, so these tests run
// everywhere. The expected continuation is llama.cpp's, from
// tests/data/stories260K.reference.json (../shared/reference/stories260K.json
// without its logits).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "tests/cli_util.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kVibrantc = VIBRANT_BINARY_DIR "/tools/vibrantc/vibrantc";
const std::string kVibrantRun = VIBRANT_BINARY_DIR "/tools/vibrant-run/vibrant-run";
const std::string kBundledModel = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";
const std::string kSharedModel = VIBRANT_SOURCE_DIR "/../shared/models/stories260K.gguf";
const std::string kReference = VIBRANT_SOURCE_DIR "/tests/data/stories260K.reference.json";

struct Reference {
  std::vector<int> prompt_tokens;
  std::vector<int> generated;
  std::string text;
};

Reference LoadReference() {
  std::ifstream in(kReference);
  if (!in) {
    ADD_FAILURE() << "cannot read " << kReference;
    return {};
  }
  nlohmann::json j = nlohmann::json::parse(in);
  for (const auto& c : j["cases"]) {
    if (c["prompt"] == "Once upon a time") {
      return {c["prompt_tokens"].get<std::vector<int>>(), c["generated"].get<std::vector<int>>(),
              c["generated_text"].get<std::string>()};
    }
  }
  ADD_FAILURE() << kReference << " has no case for \"Once upon a time\"";
  return {};
}

using vibrant::testing_util::ReadFile;

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

using Result = vibrant::testing_util::CliResult;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const std::string& bin : {kVibrantc, kVibrantRun}) {
      ASSERT_TRUE(fs::exists(bin)) << bin << " is not built";
    }
    model_ = fs::exists(kBundledModel) ? kBundledModel : kSharedModel;
    if (!fs::exists(model_)) {
      GTEST_SKIP() << "stories260K.gguf is neither in tests/data nor in ../shared/models";
    }
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("cli_test_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  Result Run(const std::string& binary, const std::vector<std::string>& args) {
    return vibrant::testing_util::RunBinary(binary, args);
  }

  // Compiles the model into `name`; fails the test when that fails.
  std::string Compile(const std::string& name, std::vector<std::string> extra = {},
                      const std::string& model = "") {
    std::vector<std::string> args = {"compile", model.empty() ? model_ : model, "-o", Path(name)};
    args.insert(args.end(), extra.begin(), extra.end());
    Result r = Run(kVibrantc, args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return Path(name);
  }

  struct JsonRun {
    std::vector<int> prompt_tokens;
    std::vector<int> ids;
    std::string text;
    nlohmann::json summary;
  };
  JsonRun ParseJson(const Result& r) {
    JsonRun jr;
    std::istringstream lines(r.out);
    std::string line;
    int n = 0;
    while (std::getline(lines, line)) {
      nlohmann::json j = nlohmann::json::parse(line);
      if (n++ == 0) {
        EXPECT_TRUE(j.contains("prompt_tokens")) << line;
        jr.prompt_tokens = j["prompt_tokens"].get<std::vector<int>>();
      } else if (j.contains("summary")) {
        jr.summary = j["summary"];
      } else {
        jr.ids.push_back(j["id"].get<int>());
        jr.text += j["piece"].get<std::string>();
      }
    }
    return jr;
  }

  std::string model_;
  fs::path dir_;
};

TEST_F(CliTest, GreedyJsonMatchesLlamaCpp) {
  Reference ref = LoadReference();
  std::string plan = Compile("plan.bin");
  Result r = Run(kVibrantRun, {plan, "-p", "Once upon a time", "--temp", "0", "-n", "32", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  JsonRun jr = ParseJson(r);
  EXPECT_EQ(jr.prompt_tokens, ref.prompt_tokens);
  EXPECT_EQ(jr.ids, ref.generated);
  EXPECT_EQ(jr.text, ref.text);
  EXPECT_EQ(jr.summary["prompt_tokens"], 5);
  EXPECT_EQ(jr.summary["generated_tokens"], 32);
  EXPECT_TRUE(jr.summary["prompt_tok_s"].is_number());
  EXPECT_TRUE(jr.summary["gen_tok_s"].is_number());
}

// Tensor parallelism (issue #17) without GPUs: a --tp plan runs as simulated
// CPU ranks and generates llama.cpp's greedy tokens; the sharding is visible
// in the plan's IR; what cannot run is a named error.
TEST_F(CliTest, TensorParallelPlansRunAsSimulatedRanks) {
  Reference ref = LoadReference();
  for (const std::string tp : {"2", "4"}) {
    std::string plan = Compile("tp" + tp + ".plan", {"--tp", tp});
    Result r = Run(kVibrantRun, {plan, "-p", "Once upon a time", "--temp", "0", "-n", "32", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    JsonRun jr = ParseJson(r);
    EXPECT_EQ(jr.ids, ref.generated) << "--tp " << tp;
    EXPECT_THAT(r.err, HasSubstr("tensor parallelism over " + tp + " simulated ranks")) << r.err;
    Result ir = Run(kVibrantc, {"dump-ir", plan});
    ASSERT_EQ(ir.exit_code, 0) << ir.err;
    EXPECT_THAT(ir.out, HasSubstr("meta tp=" + tp));
    EXPECT_THAT(ir.out, HasSubstr("all_reduce("));
    EXPECT_THAT(ir.out, HasSubstr("all_gather("));
  }
  for (const std::string bad : {"0", "1x", "65"}) {
    Result r = Run(kVibrantc, {"compile", model_, "-o", Path("bad.plan"), "--tp", bad});
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_THAT(r.err, HasSubstr("--tp")) << bad;
    EXPECT_FALSE(fs::exists(Path("bad.plan")));
  }
  // vibrant-run --tp: a GGUF compiled sharded into the plan cache; a plan
  // recompiled for another context stays sharded.
  Result direct = Run(kVibrantRun, {"-m", model_, "--tp", "2", "--plan-cache", Path("cache"), "-p",
                                    "Once upon a time", "--temp", "0", "-n", "32", "--json"});
  ASSERT_EQ(direct.exit_code, 0) << direct.err;
  EXPECT_EQ(ParseJson(direct).ids, ref.generated);
  EXPECT_THAT(direct.err, HasSubstr("tensor parallelism over 2 simulated ranks"));
  Result recompiled = Run(kVibrantRun, {Path("tp4.plan"), "-c", "200", "--no-plan-cache", "-p",
                                        "Once upon a time", "--temp", "0", "-n", "8"});
  ASSERT_EQ(recompiled.exit_code, 0) << recompiled.err;
  EXPECT_THAT(recompiled.err, HasSubstr("tensor parallelism over 4 simulated ranks"));
  // A cuda plan for 2 ranks (NVRTC needs no GPU): its dispatch table holds
  // the collectives; running it needs a GPU (gpu_cli / tp_gpu tests there).
  Result cuda = Run(kVibrantc, {"compile", model_, "-o", Path("cuda.plan"), "--tp", "2", "--device", "cuda"});
  if (cuda.exit_code != 0 && cuda.err.find("no CUDA backend") != std::string::npos) return;  // a CPU-only build
  ASSERT_EQ(cuda.exit_code, 0) << cuda.err;
  Result launches = Run(kVibrantc, {"dump-ir", Path("cuda.plan"), "--launches"});
  ASSERT_EQ(launches.exit_code, 0) << launches.err;
  EXPECT_THAT(launches.out, HasSubstr("tensor parallel: 2 ranks"));
  EXPECT_THAT(launches.out, HasSubstr("all_reduce arena"));
  EXPECT_THAT(launches.out, HasSubstr("all_gather arena"));
}

TEST_F(CliTest, StreamedTextMatchesLlamaCppAndTimingsGoToStderr) {
  Reference ref = LoadReference();
  std::string plan = Compile("plan.bin");
  Result r = Run(kVibrantRun, {plan, "-p", "Once upon a time", "--temp", "0", "-n", "32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Only the continuation: the prompt is not echoed.
  EXPECT_EQ(r.out, ref.text);
  EXPECT_TRUE(std::regex_search(
      r.err, std::regex("(^|\n)load: [0-9.]+ ms \\| prompt: 5 tokens, [0-9.]+ ms, [0-9.]+ tok/s \\| "
                        "generation: 32 tokens, [0-9.]+ ms, [0-9.]+ ms/token, [0-9.]+ tok/s \\| "
                        "total: [0-9.]+ ms \\| stop: n_predict\n")))
      << r.err;

  // The same prompt from a file (one trailing newline dropped).
  WriteFile(Path("prompt.txt"), "Once upon a time\n");
  r = Run(kVibrantRun, {plan, "-f", Path("prompt.txt"), "--temp", "0", "-n", "32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, ref.text);
}

TEST_F(CliTest, ChunkedPrefillGivesTheSameTokens) {
  Reference ref = LoadReference();
  // 5 prompt tokens in steps of at most 2: three prefill steps.
  std::string plan = Compile("plan.bin", {"--max-tokens", "2", "--kv-type", "f32"});
  Result r = Run(kVibrantRun, {plan, "-p", "Once upon a time", "--temp", "0", "-n", "32", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ParseJson(r).ids, ref.generated);
}

// llama.cpp's --cache-type-k / --cache-type-v: each cache its own type, recorded in the IR.
TEST_F(CliTest, CacheTypesForKAndV) {
  std::string plan = Compile("plan.bin", {"-ctk", "f32", "--cache-type-v", "f16"});
  Result r = Run(kVibrantc, {"dump-ir", plan});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("kv %cache_k.0 : f32["));
  EXPECT_THAT(r.out, HasSubstr("kv %cache_v.0 : f16["));
  r = Run(kVibrantRun, {plan, "-p", "Once upon a time", "--temp", "0", "-n", "8", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ParseJson(r).ids.size(), 8u);
  // q8_0 blocks run along head_dim, and stories260K's heads have 8 dims.
  r = Run(kVibrantc, {"compile", model_, "-o", Path("q8.bin"), "--cache-type-k", "q8_0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cache_type_k q8_0 needs a head_dim that is a multiple of 32; "
                               "this model's is 8"));
  EXPECT_FALSE(fs::exists(Path("q8.bin")));
  r = Run(kVibrantc, {"compile", model_, "-o", Path("q8.bin"), "-ctv", "q4_0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("-ctv must be f16, f32 or q8_0, not 'q4_0'"));
}

// q8_0 caches on a model with 128-dim heads: half of f16's KV bytes plus the
// scales (34 / 64), and generation runs.
TEST_F(CliTest, Q8_0CachesRun) {
  const std::string qwen = VIBRANT_SOURCE_DIR "/../shared/models/tiny-qwen2-f16.gguf";
  if (!fs::exists(qwen)) GTEST_SKIP() << qwen << " not found";
  auto kv_bytes = [](const std::string& out) -> long long {
    std::smatch m;
    const std::regex re("KV caches ([0-9]+) bytes");
    return std::regex_search(out, m, re) ? std::stoll(m[1]) : -1;
  };
  Result f16 = Run(kVibrantc, {"compile", qwen, "-o", Path("f16.bin"), "-c", "256"});
  ASSERT_EQ(f16.exit_code, 0) << f16.err;
  Result q8 = Run(kVibrantc, {"compile", qwen, "-o", Path("q8.bin"), "-c", "256", "--kv-type", "q8_0"});
  ASSERT_EQ(q8.exit_code, 0) << q8.err;
  ASSERT_GT(kv_bytes(f16.out), 0) << f16.out;
  EXPECT_EQ(kv_bytes(q8.out) * 64, kv_bytes(f16.out) * 34) << q8.out;
  Result r = Run(kVibrantRun, {Path("q8.bin"), "-p", "Once upon a time", "--temp", "0", "-n", "8",
                               "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ParseJson(r).ids.size(), 8u);
}

TEST_F(CliTest, SeededSamplingIsReproducible) {
  std::string plan = Compile("plan.bin");
  std::vector<std::string> args = {plan,      "-p",      "Once upon a time", "-n", "24",
                                   "--temp",  "1.0",     "--seed",           "7",  "--json",
                                   "--top-k", "0",       "--top-p",          "1",  "--min-p",
                                   "0",       "-t",      "1"};
  Result a = Run(kVibrantRun, args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  Result b = Run(kVibrantRun, args);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  JsonRun ja = ParseJson(a), jb = ParseJson(b);
  EXPECT_EQ(ja.ids, jb.ids);
  EXPECT_EQ(ja.summary["seed"], 7);
  EXPECT_FALSE(ja.ids.empty());
  for (int id : ja.ids) EXPECT_TRUE(id >= 0 && id < 512) << id;
}

// A plan that samples in the step (vibrantc compile --gpu-sampling; on a cpu
// plan the op runs on the CPU) generates exactly what the host sampler does
// from the logits: the op's reference is the host sampler's own code, and both
// draw number n of the seed for token n.
TEST_F(CliTest, SamplingInThePlanGeneratesTheSameTokens) {
  const std::string host = Compile("host.bin", {"--no-gpu-sampling"});
  const std::string step = Compile("step.bin", {"--gpu-sampling"});
  Result ir = Run(kVibrantc, {"dump-ir", step});
  ASSERT_EQ(ir.exit_code, 0) << ir.err;
  EXPECT_THAT(ir.out, HasSubstr("= sample(%logits, %sampling)"));
  Result no_ir = Run(kVibrantc, {"dump-ir", host});
  EXPECT_THAT(no_ir.out, Not(HasSubstr("sample(")));
  for (const std::vector<std::string>& sampling :
       {std::vector<std::string>{"--temp", "0"}, std::vector<std::string>{"--temp", "1.0", "--seed", "11"},
        std::vector<std::string>{"--seed", "5"},  // llama.cpp's defaults: top-k 40, top-p 0.95, min-p 0.05, temp 0.8
        std::vector<std::string>{"--temp", "1.5", "--top-k", "0", "--top-p", "0.9", "--min-p", "0", "--seed", "3"}}) {
    std::vector<std::string> args = {"", "-p", "Once upon a time", "-n", "40", "--json", "-t", "1"};
    args.insert(args.end(), sampling.begin(), sampling.end());
    args[0] = host;
    Result a = Run(kVibrantRun, args);
    args[0] = step;
    Result b = Run(kVibrantRun, args);
    ASSERT_EQ(a.exit_code, 0) << a.err;
    ASSERT_EQ(b.exit_code, 0) << b.err;
    JsonRun ja = ParseJson(a), jb = ParseJson(b);
    EXPECT_FALSE(ja.ids.empty());
    EXPECT_EQ(ja.ids, jb.ids) << sampling[1];
  }
}

TEST_F(CliTest, DumpIrOfModelAndPlan) {
  std::string plan = Compile("plan.bin");
  Result g = Run(kVibrantc, {"dump-ir", model_});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  EXPECT_THAT(g.out, HasSubstr("logits"));
  EXPECT_THAT(g.out, HasSubstr("matmul"));
  Result p = Run(kVibrantc, {"dump-ir", plan});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_THAT(p.out, HasSubstr("logits"));
  EXPECT_THAT(p.out, HasSubstr("matmul"));
  WriteFile(Path("junk.bin"), "definitely not a model");
  Result j = Run(kVibrantc, {"dump-ir", Path("junk.bin")});
  EXPECT_EQ(j.exit_code, 1);
  EXPECT_THAT(j.err, HasSubstr("neither a GGUF model nor a Vibrant plan"));
}

TEST_F(CliTest, CorruptedPlansAreNamedErrors) {
  std::string plan = Compile("plan.bin");
  const std::string bytes = ReadFile(plan);
  ASSERT_GT(bytes.size(), 100u);

  WriteFile(Path("truncated.bin"), bytes.substr(0, bytes.size() / 2));
  Result r = Run(kVibrantRun, {Path("truncated.bin"), "-p", "Once upon a time", "--temp", "0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(Path("truncated.bin") + ": truncated: section"));
  EXPECT_EQ(r.out, "");
  r = Run(kVibrantc, {"dump-ir", Path("truncated.bin")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("truncated"));

  // Flip one bit in the middle of the GRAPH section (found through the table:
  // 16-byte header, then 32-byte entries {u32 kind, u32 flags, u64 offset, ...}).
  uint32_t count;
  std::memcpy(&count, bytes.data() + 12, 4);
  uint64_t graph_offset = 0, graph_size = 0;
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t kind;
    std::memcpy(&kind, bytes.data() + 16 + 32 * i, 4);
    if (kind == 1) {
      std::memcpy(&graph_offset, bytes.data() + 16 + 32 * i + 8, 8);
      std::memcpy(&graph_size, bytes.data() + 16 + 32 * i + 16, 8);
    }
  }
  ASSERT_GT(graph_size, 0u);
  std::string flipped = bytes;
  flipped[graph_offset + graph_size / 2] ^= 0x04;
  WriteFile(Path("flipped.bin"), flipped);
  r = Run(kVibrantRun, {Path("flipped.bin"), "-p", "Once upon a time", "--temp", "0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(Path("flipped.bin") + ": section GRAPH at offset " +
                               std::to_string(graph_offset) +
                               ": checksum mismatch (file is corrupted)"));
  EXPECT_EQ(r.out, "");
}

TEST_F(CliTest, PromptLongerThanTheContextIsAClearError) {
  std::string plan = Compile("plan.bin", {"--ctx-size", "16", "--max-tokens", "8"});
  std::string prompt;
  for (int i = 0; i < 10; ++i) prompt += "Once upon a time there was a girl. ";
  Result r = Run(kVibrantRun, {plan, "-p", prompt, "--temp", "0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("longer than the context of 16 tokens (use a larger -c/--ctx-size"));
  EXPECT_EQ(r.out, "");

  // A short prompt stops when the context is full.
  r = Run(kVibrantRun, {plan, "-p", "Once upon a time", "--temp", "0", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  JsonRun jr = ParseJson(r);
  EXPECT_LE(jr.prompt_tokens.size() + jr.ids.size(), 17u);
  if (jr.summary["stop"] == "context_full") {
    EXPECT_EQ(jr.prompt_tokens.size() + jr.ids.size(), 17u);
  }
}

TEST_F(CliTest, EmbeddedWeightsOutliveTheGguf) {
  Reference ref = LoadReference();
  std::string copy = Path("model-copy.gguf");
  fs::copy_file(model_, copy);
  std::string embedded = Compile("embedded.bin", {"--embed-weights"}, copy);
  std::string referenced = Compile("referenced.bin", {}, copy);
  EXPECT_GT(fs::file_size(embedded), fs::file_size(copy));
  EXPECT_LT(fs::file_size(referenced), fs::file_size(copy));
  fs::remove(copy);

  Result r = Run(kVibrantRun, {embedded, "-p", "Once upon a time", "--temp", "0", "-n", "32",
                               "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ParseJson(r).ids, ref.generated);

  r = Run(kVibrantRun, {referenced, "-p", "Once upon a time", "--temp", "0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(fs::weakly_canonical(dir_).string() + "/model-copy.gguf"));
  EXPECT_THAT(r.err, HasSubstr("cannot be found"));
}

TEST_F(CliTest, ChangedGgufIsANamedError) {
  std::string copy = Path("model-copy.gguf");
  fs::copy_file(model_, copy);
  std::string plan = Compile("plan.bin", {}, copy);
  // Rewrite the model after compiling (here: append bytes to it).
  std::ofstream(copy, std::ios::binary | std::ios::app) << std::string(32, '\0');
  Result r = Run(kVibrantRun, {plan, "-p", "Once upon a time", "--temp", "0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("changed since the plan was compiled"));
}

TEST_F(CliTest, UsageAndDeviceErrors) {
  EXPECT_EQ(Run(kVibrantRun, {}).exit_code, 2);
  Result r = Run(kVibrantRun, {"plan.bin"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("-p"));
  EXPECT_EQ(Run(kVibrantRun, {"plan.bin", "-p", "x", "--temp", "warm"}).exit_code, 2);
  EXPECT_EQ(Run(kVibrantRun, {"plan.bin", "-p", "x", "--bogus"}).exit_code, 2);
  r = Run(kVibrantRun, {"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("not echoed"));
  EXPECT_EQ(Run(kVibrantc, {"compile", model_}).exit_code, 2);  // no -o
  EXPECT_EQ(Run(kVibrantc, {"compile", model_, "-o", Path("p.bin"), "--kv-type", "q8"}).exit_code, 2);

  r = Run(kVibrantc, {"compile", model_, "-o", Path("p.bin"), "--device", "cuda"});
  if (r.exit_code == 0) {
    // Built with the CUDA backend: NVRTC compiled the kernels (no GPU needed).
    EXPECT_THAT(r.out, HasSubstr("device cuda"));
    EXPECT_THAT(r.out, HasSubstr("kernels for sm_"));
    // A decode step: one launch per op by default; with --decode-schedule
    // persistent the persistent kernel, then the sampler's own launches.
    EXPECT_THAT(r.out, ::testing::Not(HasSubstr("persistent kernel")));
    Result p = Run(kVibrantc, {"compile", model_, "-o", Path("pp.bin"), "--device", "cuda", "--decode-schedule",
                               "persistent"});
    EXPECT_EQ(p.exit_code, 0) << p.err;
    EXPECT_THAT(p.out, HasSubstr("as tasks, then vb_sample_gather, vb_sample_pick;"));
    EXPECT_EQ(Run(kVibrantc, {"compile", model_, "-o", Path("pp.bin"), "--device", "cuda", "--decode-schedule",
                              "fast"}).exit_code, 2);
    fs::remove(Path("pp.bin"));
    Result g = Run(kVibrantRun, {Path("p.bin"), "-p", "Once upon a time", "--temp", "0", "-n", "4"});
    if (g.exit_code != 0) {  // no GPU on this machine: a clear error, not a crash
      EXPECT_EQ(g.exit_code, 1);
      EXPECT_THAT(g.err, HasSubstr("use --device cpu"));
    }
    fs::remove(Path("p.bin"));
    r = Run(kVibrantc, {"compile", model_, "-o", Path("p.bin"), "--device", "cuda", "--arch", "gfx90a"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.err, HasSubstr("not of the form sm_NN"));
  } else {
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.err, HasSubstr("no CUDA backend"));
  }
  EXPECT_FALSE(fs::exists(Path("p.bin")));

  r = Run(kVibrantc, {"compile", model_, "-o", Path("p.bin"), "--device", "auto"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("ops"));
  EXPECT_THAT(r.out, HasSubstr("weight bytes"));

  r = Run(kVibrantRun, {Path("absent.bin"), "-p", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("absent.bin: cannot open"));
}

}  // namespace
