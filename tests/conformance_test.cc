// Conformance with llama.cpp: every model in ../shared/reference, run on the
// CPU reference backend, teacher-forced, logits compared at every position.
//
// How the comparison works (see ../shared/README.md):
// - prompt_tokens must equal our tokenization of the prompt.
// - The prompt is prefilled in one step with logits for every position and
//   compared with prompt_logits; then generated[0..] are fed one token at a
//   time and the logits after generated[i] are compared with
//   generated_logits[i] (i < 8).
// - Greedy tokens (argmax of our logits) must equal `generated` at every
//   position whose reference margin (top-1 minus top-2) exceeds twice the
//   tolerance: below that, llama.cpp's own rounding could flip the choice.
// - The error metric is max |ours - llama.cpp| over all logits of a position,
//   divided by the standard deviation of that position's reference logits
//   (the tiny models' logits have sigma ~ 4, stories260K's ~ 2-3), so one
//   tolerance table serves models with different logit scales.
//
// Tolerances (kTolerances below) are per model, about 1.5x the error
// measured with this test (written beside each). Where the difference comes
// from, as measured by experiments on the CPU kernels (not kept in the code):
// - llama.cpp's CPU backend rounds matmul activations to the weight's "vec dot
//   type" (q8_0 for q4_0..q8_0, q8_K for K-quants, bf16 for bf16, f16 for
//   f16). Emulating that rounding makes our logits at position 0 (where
//   attention is trivial) equal llama.cpp's to 1e-4 sigma for f32, bf16, f16,
//   q8_0 and every K-quant model, which checks our dequantization, matmul,
//   norms and lowering. For q4_0/q4_1/q5_0/q5_1 a 0.065 sigma difference at
//   position 0 remains with that emulation; its cause is not yet known
//   (the block decoders match hand-computed values and llama.cpp's quantizer
//   byte for byte).
// - From position 1 on, llama.cpp's flash attention accumulates V in f16;
//   emulating it takes stories260K from 0.0047 to 0.0013 sigma. The random
//   tiny models, whose attention is diffuse, stay near 0.05-0.1 sigma.
// We keep exact f32 semantics (the reference for the GPU backend) and accept
// these measured differences.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "frontends/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "passes/pass.h"
#include "runtime/cpu/executor.h"
#include "runtime/cpu/kernel_select.h"

namespace vibrant {
namespace {

namespace fs = std::filesystem;

const std::string kShared = VIBRANT_SOURCE_DIR "/../shared";

// Max normalized logit error allowed, by model file. Measured values in the
// comments: the worst position over all 3 cases of the model (this machine,
// x86-64, CI's build flags).
struct Tolerance {
  const char* model;
  double max_err;  // max |diff| / sigma(reference logits) at any position
  double fast_max_err;  // the same through the fast kernels (FastKernels/...)
};
// The fast kernels (FastKernels/...: 8-bit activations as llama.cpp's CPU
// backend, runtime/cpu/fast_matmul.h, f32 flash attention, fast silu)
// measured 2026-12-07 with this test, tolerance about 1.5x: they are as close
// to llama.cpp as the exact kernels or closer (the K-quant models: llama.cpp
// also rounds x to 8 bits per 256).
constexpr Tolerance kTolerances[] = {
    // model                exact  fast     exact measured 2026-11-25  fast measured
    //                                      (max over 3 cases)
    {"stories260K",         0.008, 0.008 },  // 0.0047  (F32)          0.0048
    {"tiny-llama-bf16",     0.045, 0.045 },  // 0.029                  0.029
    {"tiny-llama-q2_k",     0.20,  0.17  },  // 0.139                  0.109
    {"tiny-llama-q3_k_m",   0.19,  0.17  },  // 0.124                  0.109
    {"tiny-llama-q4_0",     0.14,  0.14  },  // 0.089                  0.092
    {"tiny-llama-q4_1",     0.14,  0.145 },  // 0.092                  0.092
    {"tiny-llama-q4_k_m",   0.20,  0.20  },  // 0.134                  0.135
    {"tiny-llama-q5_0",     0.14,  0.135 },  // 0.087                  0.088
    {"tiny-llama-q5_1",     0.14,  0.145 },  // 0.088                  0.095
    {"tiny-llama-q5_k_m",   0.18,  0.19  },  // 0.119                  0.126
    {"tiny-llama-q6_k",     0.20,  0.18  },  // 0.135                  0.121
    {"tiny-llama-q8_0",     0.13,  0.13  },  // 0.082                  0.084
    {"tiny-qwen2-f16",      0.016, 0.016 },  // 0.010                  0.010
    {"tiny-qwen2-q4_k_m",   0.23,  0.2   },  // 0.151                  0.129
    {"tiny-qwen2-q5_k_m",   0.25,  0.19  },  // 0.165                  0.124
    {"tiny-qwen2-q6_k",     0.23,  0.19  },  // 0.153                  0.126
    {"tiny-qwen2-q8_0",     0.14,  0.15  },  // 0.092                  0.093
};

double ToleranceFor(const std::string& model, bool fast) {
  for (const Tolerance& t : kTolerances) {
    if (model == t.model) return fast ? t.fast_max_err : t.max_err;
  }
  return 0.05;
}

std::vector<std::string> ReferenceModels() {
  std::vector<std::string> out;
  fs::path dir = fs::path(kShared) / "reference";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".json") out.push_back(e.path().stem().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct PositionError {
  double max_abs = 0;
  double normalized = 0;  // max_abs / sigma(ref)
};

double Sigma(const std::vector<float>& v) {
  double mean = 0;
  for (float x : v) mean += x;
  mean /= v.size();
  double var = 0;
  for (float x : v) var += (x - mean) * (x - mean);
  return std::sqrt(var / v.size());
}

PositionError Compare(const float* ours, const std::vector<float>& ref) {
  double sigma = Sigma(ref);
  PositionError e;
  for (size_t i = 0; i < ref.size(); ++i) {
    e.max_abs = std::max(e.max_abs, std::fabs(double(ours[i]) - ref[i]));
  }
  e.normalized = e.max_abs / std::max(sigma, 1e-6);
  return e;
}

int Argmax(const float* v, int n) {
  return static_cast<int>(std::max_element(v, v + n) - v);
}

// The CPU executor over a lowered `file` compiled by the default pass
// pipeline (as vibrantc compile --device cpu does: memory plan included),
// weights resolved from the mapped GGUF.
absl::StatusOr<std::unique_ptr<CpuExecutor>> MakeExecutor(const GgufFile& file,
                                                           const LowerOptions& opts,
                                                           bool fast = false) {
  absl::StatusOr<ir::Graph> graph = LowerGguf(file, opts);
  if (!graph.ok()) return graph.status();
  passes::PassContext ctx;
  ctx.device = passes::DevicePolicy::kCpu;
  std::ostringstream log;
  if (absl::Status s = passes::DefaultPipeline().Run(*graph, ctx, passes::PipelineOptions(), log); !s.ok()) {
    return s;
  }
  cpu::SetGraphCpuKernels(*graph, fast ? cpu::CpuKernels::kFast : cpu::CpuKernels::kExact);
  const GgufFile* f = &file;
  return CpuExecutor::Create(
      *graph, [f](const std::string& name) -> absl::StatusOr<absl::Span<const uint8_t>> {
        const GgufTensorInfo* t = f->FindTensor(name);
        if (t == nullptr) return absl::NotFoundError(name);
        return f->TensorData(*t);
      });
}

// A shared reference model, run with the exact (reference) or the fast CPU
// kernels.
struct ConformanceCase {
  std::string model;
  bool fast = false;
};

class Conformance : public ::testing::TestWithParam<ConformanceCase> {};

TEST_P(Conformance, MatchesLlamaCpp) {
  const std::string model = GetParam().model;
  const bool fast = GetParam().fast;
  const std::string gguf_path = kShared + "/models/" + model + ".gguf";
  std::ifstream in(kShared + "/reference/" + model + ".json");
  ASSERT_TRUE(in) << "cannot read the reference for " << model;
  nlohmann::json ref = nlohmann::json::parse(in);

  auto file = GgufFile::Open(gguf_path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto tokenizer = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();

  LowerOptions opts;
  opts.all_logits = true;
  opts.max_tokens = 128;
  opts.n_ctx = 512;  // as the reference run
  auto exec = MakeExecutor(**file, opts, fast);
  ASSERT_TRUE(exec.ok()) << exec.status();

  const int n_vocab = ref["n_vocab"];
  const double tol = ToleranceFor(model, fast);
  double worst = 0, worst_abs = 0;
  for (const auto& c : ref["cases"]) {
    const std::string prompt = c["prompt"];
    std::vector<int32_t> prompt_tokens = c["prompt_tokens"];
    std::vector<int32_t> generated = c["generated"];
    std::vector<double> margins = c["greedy_margins"];
    SCOPED_TRACE("prompt: " + prompt.substr(0, 40));

    auto ids = (*tokenizer)->Encode(prompt, /*add_special=*/true, /*parse_special=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, prompt_tokens) << "tokenization differs from llama.cpp";

    (*exec)->Reset();
    auto logits = (*exec)->Step(prompt_tokens, 0);
    ASSERT_TRUE(logits.ok()) << logits.status();
    ASSERT_EQ(logits->size(), prompt_tokens.size() * n_vocab);
    for (size_t p = 0; p < prompt_tokens.size(); ++p) {
      std::vector<float> r = c["prompt_logits"][p];
      PositionError e = Compare(logits->data() + p * n_vocab, r);
      worst = std::max(worst, e.normalized);
      worst_abs = std::max(worst_abs, e.max_abs);
      EXPECT_LE(e.normalized, tol) << "prompt position " << p;
    }
    // Logits predicting generated[i]: i == 0 from the prompt's last position.
    std::vector<float> last(logits->end() - n_vocab, logits->end());
    bool greedy_ok = true;
    for (size_t i = 0; i < generated.size(); ++i) {
      // Our error bound at this position in logit units: tol * sigma.
      if (greedy_ok && margins[i] <= 2 * tol * Sigma(last)) greedy_ok = false;
      if (greedy_ok) {
        EXPECT_EQ(Argmax(last.data(), n_vocab), generated[i])
            << "greedy token " << i << " (reference margin " << margins[i] << ")";
      }
      auto step = (*exec)->Step({&generated[i], 1}, static_cast<int32_t>(prompt_tokens.size() + i));
      ASSERT_TRUE(step.ok()) << step.status();
      last.assign(step->begin(), step->end());
      if (i < c["generated_logits"].size()) {
        std::vector<float> r = c["generated_logits"][i];
        PositionError e = Compare(last.data(), r);
        worst = std::max(worst, e.normalized);
        worst_abs = std::max(worst_abs, e.max_abs);
        EXPECT_LE(e.normalized, tol) << "after generated token " << i;
      }
    }
  }
  std::printf("[ MEASURED ] %s (%s kernels): max normalized logit error %.3g (max abs %.3g), tolerance %.3g\n",
              model.c_str(), fast ? "fast" : "exact", worst, worst_abs, tol);
}

std::vector<ConformanceCase> Cases(bool fast) {
  std::vector<ConformanceCase> out;
  for (const std::string& m : ReferenceModels()) out.push_back({m, fast});
  return out;
}

std::string CaseName(const ::testing::TestParamInfo<ConformanceCase>& info) {
  std::string n = info.param.model;
  for (char& ch : n) if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(SharedReference, Conformance, ::testing::ValuesIn(Cases(false)), CaseName);
INSTANTIATE_TEST_SUITE_P(FastKernels, Conformance, ::testing::ValuesIn(Cases(true)), CaseName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Conformance);

// stories260K is F32, so our logits are within float rounding of llama.cpp's
// and free-running greedy decoding must reproduce its text exactly, with the
// exact kernels and with the fast ones (f32 dot products in another order).
TEST(ConformanceText, Stories260KGreedyTextEqualsReference) {
  // llama.cpp's reference without its logits, bundled so this never skips.
  std::ifstream in(VIBRANT_SOURCE_DIR "/tests/data/stories260K.reference.json");
  ASSERT_TRUE(in) << "tests/data/stories260K.reference.json is missing";
  nlohmann::json ref = nlohmann::json::parse(in);
  auto file = GgufFile::Open(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  auto tokenizer = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  LowerOptions opts;
  opts.max_tokens = 128;
  const int n_vocab = ref["n_vocab"];
  for (bool fast : {false, true}) {
  SCOPED_TRACE(fast ? "fast kernels" : "exact kernels");
  auto exec = MakeExecutor(**file, opts, fast);
  ASSERT_TRUE(exec.ok()) << exec.status();
  for (const auto& c : ref["cases"]) {
    const std::string prompt = c["prompt"];
    std::vector<int32_t> generated = c["generated"];
    const std::string hex = c["generated_text_hex"];
    std::string expected;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) {
      expected.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    }
    auto ids = (*tokenizer)->Encode(prompt, true, true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    (*exec)->Reset();
    auto logits = (*exec)->Step(*ids, 0);
    ASSERT_TRUE(logits.ok()) << logits.status();
    std::vector<int32_t> ours;
    int32_t pos = static_cast<int32_t>(ids->size());
    int32_t next = Argmax(logits->data() + logits->size() - n_vocab, n_vocab);
    while (ours.size() < generated.size()) {
      ours.push_back(next);
      auto step = (*exec)->Step({&next, 1}, pos++);
      ASSERT_TRUE(step.ok()) << step.status();
      next = Argmax(step->data(), n_vocab);
    }
    EXPECT_EQ(ours, generated) << prompt;
    EXPECT_EQ((*tokenizer)->Decode(ours), expected) << prompt;
  }
  }
}

TEST(ConformanceData, SharedReferencePresent) {
  if (ReferenceModels().empty()) {
    GTEST_SKIP() << "../shared/reference not found: llama.cpp conformance not run";
  }
  EXPECT_EQ(ReferenceModels().size(), 17u);
}

}  // namespace
}  // namespace vibrant
