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
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "frontends/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "codegen/cpu_target.h"
#include "nlohmann/json.hpp"
#include "passes/pass.h"
#include "runtime/cpu/executor.h"

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
  // Positions allowed above the tolerance (up to outlier_max): MoE models
  // whose router nearly ties between two experts at a position, where
  // llama.cpp's 8-bit activations pick the other expert
  // (../shared/next/ARCHITECTURES.md).
  int outliers = 0;
  double outlier_max = 0;
  int fast_outliers = 0;  // the same allowance for the fast kernels
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

// ../shared/next: models of the `models` issue (new architectures and quant
// types), same layout and JSON format. Only those listed here run: each is
// added as its architecture or type lands, with its measured tolerance.
constexpr Tolerance kNextTolerances[] = {
    // model                exact  fast     exact measured 2026-12  fast measured
    //                                      (max over 3 cases)      2026-12-07
    {"tiny-llama-iq4_nl",   0.13,  0.135},   // 0.083  (llama.cpp: q8_0 activations)  0.0904
    {"tiny-llama-iq4_xs",   0.20,  0.19 },   // 0.130  (llama.cpp: q8_K activations)  0.127
    {"tiny-qwen3-f16",      0.010, 0.010},   // 0.0062 (llama.cpp: f16 KV cache and   0.00621
                                             //         f16 activations)
    {"tiny-qwen3-q4_k_m",   0.14,  0.11 },   // 0.089                                 0.0709
    {"tiny-gemma3-f16",     0.008, 0.008},   // 0.0051                                0.00511
    {"tiny-gemma3-q4_k_m",  0.17,  0.15 },   // 0.110                                 0.0984
    {"tiny-phi3-f16",       0.009, 0.009},   // 0.0060                                0.00595
    {"tiny-phi3-q4_k_m",    0.14,  0.12 },   // 0.092                                 0.081
    {"tiny-qwen3moe-f16",   0.009, 0.009},   // 0.0055                                0.00552
    // Exact kernels: 0.068 at every position but two: prompt 3's positions 70
    // (0.223) and 77 (0.139), where the router's 2nd and 3rd experts differ by
    // 0.004 / 0.003 in probability and llama.cpp's q8 activations choose the
    // other one. The fast kernels round the router's input and (since
    // 2026-12-07, fast matmul_id) the experts' inputs to 8 bits as llama.cpp
    // does: 0.0546 at every position but two (0.227 at most). With f32
    // expert inputs it was 0.0605 everywhere; the two positions are presumed
    // router near-ties like the exact kernels' (the experts' rounding reaches
    // the next layer's router input), not traced.
    {"tiny-qwen3moe-q4_k_m", 0.10, 0.09, /*outliers=*/2, /*outlier_max=*/0.34, /*fast_outliers=*/2},
};

Tolerance ToleranceFor(const std::string& model) {
  for (const Tolerance& t : kTolerances) {
    if (model == t.model) return t;
  }
  for (const Tolerance& t : kNextTolerances) {
    if (model == t.model) return t;
  }
  return {"", 0.05, 0.05};
}

// A model of ../shared: its directory ("" or "next/") and name.
struct SharedModel {
  std::string dir;
  std::string name;
};

std::vector<SharedModel> ModelsIn(const std::string& sub) {
  std::vector<SharedModel> out;
  fs::path dir = fs::path(kShared) / sub / "reference";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".json") out.push_back({sub, e.path().stem().string()});
  }
  std::sort(out.begin(), out.end(),
            [](const SharedModel& a, const SharedModel& b) { return a.name < b.name; });
  return out;
}

std::vector<std::string> ReferenceModels() {
  std::vector<std::string> out;
  for (const SharedModel& m : ModelsIn("")) out.push_back(m.name);
  return out;
}

bool NextLanded(const std::string& name) {
  for (const Tolerance& t : kNextTolerances) {
    if (name == t.model) return true;
  }
  return false;
}

// Every model of ../shared/reference, and those of ../shared/next/reference
// whose architecture and types have landed.
std::vector<SharedModel> ConformanceModels() {
  std::vector<SharedModel> out = ModelsIn("");
  for (const SharedModel& m : ModelsIn("next/")) {
    if (NextLanded(m.name)) out.push_back(m);
  }
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
  // The CPU target's kernels, fast or exact, as vibrantc compile [--exact].
  const codegen::CpuTarget target({.exact = !fast});
  ctx.cpu_kernels = &target;
  std::ostringstream log;
  if (absl::Status s = passes::DefaultPipeline().Run(*graph, ctx, passes::PipelineOptions(), log); !s.ok()) {
    return s;
  }
  const GgufFile* f = &file;
  return CpuExecutor::Create(
      *graph, [f](const std::string& name) -> absl::StatusOr<absl::Span<const uint8_t>> {
        const GgufTensorInfo* t = f->FindTensor(name);
        if (t == nullptr) return absl::NotFoundError(name);
        return f->TensorData(*t);
      });
}

// A model of ../shared, run with the exact (reference) or the fast CPU
// kernels.
struct ConformanceCase {
  SharedModel model;
  bool fast = false;
};

// How ctest lists a case: "next/tiny-qwen3-f16 (fast kernels)".
void PrintTo(const ConformanceCase& c, std::ostream* os) {
  *os << c.model.dir << c.model.name << (c.fast ? " (fast kernels)" : " (exact kernels)");
}

class Conformance : public ::testing::TestWithParam<ConformanceCase> {};

TEST_P(Conformance, MatchesLlamaCpp) {
  const std::string model = GetParam().model.name;
  const std::string dir = GetParam().model.dir;
  const bool fast = GetParam().fast;
  const std::string gguf_path = kShared + "/" + dir + "models/" + model + ".gguf";
  std::ifstream in(kShared + "/" + dir + "reference/" + model + ".json");
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
  EXPECT_EQ((*exec)->KernelSummary().rfind(fast ? "fast kernels" : "exact kernels", 0), 0u)
      << (*exec)->KernelSummary();

  const int n_vocab = ref["n_vocab"];
  const Tolerance tolerance = ToleranceFor(model);
  const double tol = fast ? tolerance.fast_max_err : tolerance.max_err;
  const int outliers = fast ? tolerance.fast_outliers : tolerance.outliers;
  double worst = 0, worst_abs = 0;
  // Normalized errors of every compared position; those above tol are
  // checked against the outlier allowance at the end.
  std::vector<double> errors;
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
      errors.push_back(e.normalized);
      EXPECT_LE(e.normalized, outliers > 0 ? tolerance.outlier_max : tol)
          << "prompt position " << p;
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
        errors.push_back(e.normalized);
        EXPECT_LE(e.normalized, outliers > 0 ? tolerance.outlier_max : tol)
            << "after generated token " << i;
      }
    }
  }
  std::sort(errors.begin(), errors.end(), std::greater<double>());
  const int above = static_cast<int>(
      std::count_if(errors.begin(), errors.end(), [&](double e) { return e > tol; }));
  EXPECT_LE(above, outliers) << "positions above the tolerance " << tol;
  const double rest = errors.size() > static_cast<size_t>(outliers) ? errors[outliers] : 0.0;
  std::printf("[ MEASURED ] %s (%s kernels): max normalized logit error %.3g (max abs %.3g), tolerance %.3g",
              model.c_str(), fast ? "fast" : "exact", worst, worst_abs, tol);
  if (outliers > 0) {
    std::printf("; %.3g without the %d largest (allowed up to %.3g)", rest, outliers,
                tolerance.outlier_max);
  }
  std::printf("\n");
}

std::vector<ConformanceCase> Cases(bool fast) {
  std::vector<ConformanceCase> out;
  for (const SharedModel& m : ConformanceModels()) out.push_back({m, fast});
  return out;
}

std::string CaseName(const ::testing::TestParamInfo<ConformanceCase>& info) {
  std::string n = info.param.model.dir + info.param.model.name;
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

// q8_0 KV caches (vibrantc compile --cache-type-k/-v q8_0): the reference's
// logits (llama.cpp, f16 caches) within a tolerance that adds the q8_0
// rounding of K and V to the model's own (kTolerances). Teacher-forced, as
// above; the extra error was measured with this test (max over the 3 cases,
// this machine, 2026-12-07): tiny-qwen2-f16 (head_dim 128) 0.0665,
// tiny-llama-q8_0 (head_dim 64) 0.107, where f16 caches give 0.0101 and 0.0817;
// tolerances about 1.5x.
struct KvQ8Case {
  const char* model;
  double tolerance;
};
class ConformanceQ8Kv : public ::testing::TestWithParam<KvQ8Case> {};

TEST_P(ConformanceQ8Kv, StaysCloseToLlamaCpp) {
  const std::string model = GetParam().model;
  const std::string gguf_path = kShared + "/models/" + model + ".gguf";
  std::ifstream in(kShared + "/reference/" + model + ".json");
  if (!in) GTEST_SKIP() << "no reference for " << model << " in ../shared";
  nlohmann::json ref = nlohmann::json::parse(in);
  auto file = GgufFile::Open(gguf_path);
  ASSERT_TRUE(file.ok()) << file.status();
  const int n_vocab = ref["n_vocab"];
  double worst[2] = {0, 0};  // f16 caches, q8_0 caches
  for (int q8 = 0; q8 < 2; ++q8) {
    LowerOptions opts;
    opts.all_logits = true;
    opts.max_tokens = 128;
    opts.n_ctx = 512;
    if (q8) opts.cache_type_k = opts.cache_type_v = DType::kQ8_0;
    auto exec = MakeExecutor(**file, opts);
    ASSERT_TRUE(exec.ok()) << exec.status();
    for (const auto& c : ref["cases"]) {
      std::vector<int32_t> prompt_tokens = c["prompt_tokens"];
      std::vector<int32_t> generated = c["generated"];
      (*exec)->Reset();
      auto logits = (*exec)->Step(prompt_tokens, 0);
      ASSERT_TRUE(logits.ok()) << logits.status();
      for (size_t p = 0; p < prompt_tokens.size(); ++p) {
        std::vector<float> r = c["prompt_logits"][p];
        worst[q8] = std::max(worst[q8], Compare(logits->data() + p * n_vocab, r).normalized);
      }
      for (size_t i = 0; i < c["generated_logits"].size(); ++i) {
        auto step =
            (*exec)->Step({&generated[i], 1}, static_cast<int32_t>(prompt_tokens.size() + i));
        ASSERT_TRUE(step.ok()) << step.status();
        std::vector<float> r = c["generated_logits"][i];
        worst[q8] = std::max(worst[q8], Compare(step->data(), r).normalized);
      }
    }
  }
  std::printf("[ MEASURED ] %s: max normalized logit error, f16 KV %.3g, q8_0 KV %.3g "
              "(tolerance %.3g)\n",
              model.c_str(), worst[0], worst[1], GetParam().tolerance);
  EXPECT_LE(worst[1], GetParam().tolerance);
  EXPECT_NE(worst[0], worst[1]) << "the q8_0 caches made no difference: were they used?";
}

INSTANTIATE_TEST_SUITE_P(SharedReference, ConformanceQ8Kv,
                         ::testing::Values(KvQ8Case{"tiny-qwen2-f16", 0.10},
                                           KvQ8Case{"tiny-llama-q8_0", 0.16}),
                         [](const auto& info) {
                           std::string n = info.param.model;
                           for (char& ch : n) if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(ConformanceData, SharedReferencePresent) {
  if (ReferenceModels().empty()) {
    GTEST_SKIP() << "../shared/reference not found: llama.cpp conformance not run";
  }
  EXPECT_EQ(ReferenceModels().size(), 17u);
}

// Every model of ../shared/next has landed (the done-when).
TEST(ConformanceData, EveryNextModelRuns) {
  const std::vector<SharedModel> next = ModelsIn("next/");
  if (next.empty()) GTEST_SKIP() << "../shared/next/reference not found";
  for (const SharedModel& m : next) EXPECT_TRUE(NextLanded(m.name)) << m.name;
}

// Every model listed in kNextTolerances is present in ../shared/next (a
// misspelt entry would silently test nothing).
TEST(ConformanceData, LandedNextModelsPresent) {
  const std::vector<SharedModel> next = ModelsIn("next/");
  if (next.empty()) GTEST_SKIP() << "../shared/next/reference not found";
  for (const Tolerance& t : kNextTolerances) {
    EXPECT_TRUE(std::any_of(next.begin(), next.end(),
                            [&](const SharedModel& m) { return m.name == t.model; }))
        << t.model;
  }
}

}  // namespace
}  // namespace vibrant
