// The CUDA backend against the CPU reference, kernel family by kernel family:
// each test builds a small graph around one op (fed by an f32 embedding, so
// the op sees arbitrary activations), runs it on both executors and compares
// the outputs. Tests that need a GPU skip with the reason when there is none.
#include "runtime/cuda/executor.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "compiler/compiler.h"
#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "codegen/kernel_source.h"
#include "ir/graph.h"
#include "passes/fuse_elementwise.h"
#include "passes/pass.h"
#include "passes/test_models.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/executor.h"
#include "runtime/cpu/quantize.h"
#include "codegen/kernels/families.h"
#include "runtime/cuda/cublaslt.h"
#include "runtime/cuda/device.h"

namespace vibrant {
namespace {

using ir::Graph;
using ir::kTokens;
using ir::OpKind;
using ir::ValueId;
using ::testing::HasSubstr;
using ::testing::Not;

#define SKIP_WITHOUT_GPU()                                                       \
  do {                                                                           \
    absl::Status _gpu = CudaDeviceAvailable();                                   \
    if (!_gpu.ok()) GTEST_SKIP() << "no usable CUDA GPU: " << _gpu.message();   \
  } while (0)

struct Weights {
  std::map<std::string, std::vector<uint8_t>> bytes;

  // Random values in [lo, hi), encoded as `t` (valid blocks: the reference
  // quantizer's output).
  void Add(const std::string& name, DType t, int64_t n, uint32_t seed, float lo, float hi) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    std::vector<uint8_t> b(*DTypeBytes(t, n));
    ASSERT_TRUE(Quantize(t, v.data(), n, b.data()).ok()) << DTypeName(t);
    bytes[name] = std::move(b);
  }
  WeightResolver Resolver() const {
    return [this](const std::string& src) -> absl::StatusOr<absl::Span<const uint8_t>> {
      auto it = bytes.find(src);
      if (it == bytes.end()) return absl::NotFoundError("no tensor " + src);
      return absl::Span<const uint8_t>(it->second);
    };
  }
};

ValueId Must(absl::StatusOr<ValueId> v) {
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : -1;
}

ValueId W(Graph& g, const std::string& name, DType t, ir::Shape s) {
  return g.AddWeight(name, t, s, name);
}

struct StepSpec {
  std::vector<int32_t> tokens;
  int32_t pos0;
};

// How a test graph is compiled for the GPU (the compiler's choices, carried
// in the plan: the runtime only executes them).
struct Knobs {
  bool int8 = true;         // quantize-activations (8-bit mat-vec)
  bool fusion = true;       // fuse-elementwise
  int gemm_min_rows = 32;   // cuBLASLt GEMMs from this many rows (0: never)
  bool graphs = true;       // decode steps as CUDA graphs
  int64_t gemm_chunk_bytes = 0;  // 0: the default weight chunk
  bool flash = true;        // tensor-core attention where it serves
};

absl::StatusOr<compiler::Compiled> CompileForGpu(const Graph& g, const Knobs& k = {}) {
  compiler::CompileOptions o;
  o.device = "cuda";
  o.gemm_min_rows = k.gemm_min_rows;
  o.cuda_graphs = k.graphs;
  o.flash_attention = k.flash;
  if (k.gemm_chunk_bytes > 0) o.gemm_weight_chunk_bytes = k.gemm_chunk_bytes;
  if (!k.int8) o.pipeline.disabled.insert("quantize-activations");
  if (!k.fusion) o.pipeline.disabled.insert("fuse-elementwise");
  return compiler::CompileGraph(g, o);
}

// `g` compiled for the GPU (as vibrantc compile --device cuda would) on a
// CUDA executor.
absl::StatusOr<std::unique_ptr<CudaExecutor>> Gpu(const Graph& g, WeightResolver w, const Knobs& k = {},
                                                  CudaExecutorOptions opts = {}) {
  absl::StatusOr<compiler::Compiled> c = CompileForGpu(g, k);
  if (!c.ok()) return c.status();
  return CudaExecutor::Create(compiler::ToProgram(*c), std::move(w), opts);
}

// Runs `steps` on the CPU and the GPU; returns the worst max|gpu - cpu| /
// max|cpu| over the steps (each step's output compared as a whole).
double WorstRelError(const Graph& g, const Weights& w, const std::vector<StepSpec>& steps,
                     const Knobs& knobs = {}, double* worst_abs = nullptr) {
  auto cpu = CpuExecutor::Create(g, w.Resolver());
  EXPECT_TRUE(cpu.ok()) << cpu.status();
  auto gpu = Gpu(g, w.Resolver(), knobs);
  EXPECT_TRUE(gpu.ok()) << gpu.status();
  if (!cpu.ok() || !gpu.ok()) return INFINITY;
  double worst = 0;
  for (const StepSpec& s : steps) {
    auto a = (*cpu)->Step(s.tokens, s.pos0);
    EXPECT_TRUE(a.ok()) << a.status();
    if (!a.ok()) return INFINITY;
    std::vector<float> ref(a->begin(), a->end());
    auto b = (*gpu)->Step(s.tokens, s.pos0);
    EXPECT_TRUE(b.ok()) << b.status();
    if (!b.ok()) return INFINITY;
    EXPECT_EQ(b->size(), ref.size());
    if (b->size() != ref.size()) return INFINITY;
    double max_abs = 0, ref_max = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (std::isnan((*b)[i]) != std::isnan(ref[i])) return INFINITY;
      max_abs = std::max(max_abs, std::fabs(double((*b)[i]) - ref[i]));
      ref_max = std::max(ref_max, std::fabs(double(ref[i])));
    }
    worst = std::max(worst, ref_max > 0 ? max_abs / ref_max : max_abs);
    if (worst_abs != nullptr) *worst_abs = std::max(*worst_abs, max_abs);
  }
  return worst;
}

std::vector<int32_t> Ids(int n, int V, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (int32_t& t : ids) t = static_cast<int32_t>(rng() % V);
  return ids;
}

const DType kWeightTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ4_0,
                              DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                              DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K,
                              DType::kQ6_K, DType::kQ8_K, DType::kIQ4_NL, DType::kIQ4_XS};

bool Plain(DType t) { return !IsQuantized(t); }

// ---- no GPU ------------------------------------------------------------------------

TEST(CudaExecutorNoGpu, ReportsTheMissingDeviceCleanly) {
  if (CudaDeviceAvailable().ok()) GTEST_SKIP() << "a GPU is present; this test is for machines without one";
  Graph g;
  g.max_tokens = 2;
  ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId x = Must(g.AddOp(OpKind::kEmbedding, {W(g, "e", DType::kF32, {4, 8}), tokens}, "logits"));
  g.MarkOutput(x);
  Weights w;
  w.Add("e", DType::kF32, 32, 1, -1, 1);
  auto exec = Gpu(g, w.Resolver());
  ASSERT_FALSE(exec.ok());
  EXPECT_THAT(std::string(exec.status().message()), HasSubstr("CUDA backend"));
  EXPECT_THAT(std::string(exec.status().message()), HasSubstr("--device cpu"));
}

// ---- matmul, every weight type ---------------------------------------------------------

class CudaMatmul : public ::testing::TestWithParam<DType> {};

TEST_P(CudaMatmul, MatchesCpuForDecodeAndPrefill) {
  SKIP_WITHOUT_GPU();
  const DType t = GetParam();
  // K = 512, 1024, 4096 give 2, 4 and 8 warps per row (MatmulWarpsPerRow).
  for (int64_t K : Plain(t) ? std::vector<int64_t>{100, 512, 4096}
                            : std::vector<int64_t>{512, 1024, 4096}) {
    for (bool bias : {false, true}) {
      SCOPED_TRACE(::testing::Message() << DTypeName(t) << " K=" << K << " bias=" << bias);
      const int64_t N = 67, V = 37;
      Graph g;
      g.max_tokens = 16;
      ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
      ValueId x = Must(g.AddOp(OpKind::kEmbedding, {W(g, "embd", DType::kF32, {V, K}), tokens}, "x"));
      std::vector<ValueId> in = {x, W(g, "w", t, {N, K})};
      if (bias) in.push_back(W(g, "b", DType::kF32, {N}));
      ValueId y = Must(g.AddOp(OpKind::kMatMul, in, "logits"));
      g.MarkOutput(y);
      Weights w;
      w.Add("embd", DType::kF32, V * K, 7, -1, 1);
      w.Add("w", t, N * K, 8, -0.5f, 0.5f);
      w.Add("b", DType::kF32, N, 9, -1, 1);
      const std::vector<StepSpec> steps = {
          {Ids(1, V, 1), 0}, {Ids(5, V, 2), 1}, {Ids(16, V, 3), 6}, {Ids(9, V, 4), 22}};
      // Float activations: the CPU's dequantized values, float accumulation
      // in another order (measured <= 1e-6).
      Knobs float_path;
      float_path.int8 = false;
      const double err = WorstRelError(g, w, steps, float_path);
      std::printf("[ MEASURED ] matmul %s K=%lld bias=%d: rel err %.3g\n",
                  std::string(DTypeName(t)).c_str(), static_cast<long long>(K), bias, err);
      EXPECT_LE(err, 2e-6);
      if (!codegen::MatvecQ8Supports(t)) continue;
      // The default 8-bit activation path computes matmul(RoundActivationsToQ8(x),
      // w): with activations that are already so rounded (the embedding rows
      // are x), it must agree with the CPU as tightly as the float path.
      Weights wr = w;
      std::vector<float> table(V * K);
      std::memcpy(table.data(), wr.bytes["embd"].data(), table.size() * sizeof(float));
      ASSERT_TRUE(RoundActivationsToQ8(table.data(), V * K, table.data()).ok());
      std::memcpy(wr.bytes["embd"].data(), table.data(), table.size() * sizeof(float));
      const double err_q8 = WorstRelError(g, wr, steps);
      // On raw activations the rounding itself shows: ~0.4% of the largest
      // output, which is what llama.cpp's CUDA mat-vec accepts too.
      const double err_raw = WorstRelError(g, w, steps);
      std::printf("[ MEASURED ] matmul %s K=%lld bias=%d, 8-bit activations: rel err %.3g on "
                  "pre-rounded x, %.3g on raw x\n",
                  std::string(DTypeName(t)).c_str(), static_cast<long long>(K), bias, err_q8,
                  err_raw);
      EXPECT_LE(err_q8, 2e-6);
      EXPECT_LE(err_raw, 2e-2);
      EXPECT_GT(err_raw, 0.0);  // the 8-bit path really ran
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllWeightTypes, CudaMatmul, ::testing::ValuesIn(kWeightTypes),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

// ---- prefill matmuls as cuBLASLt GEMMs ------------------------------------------------

#define SKIP_WITHOUT_CUBLASLT()                                                    \
  do {                                                                             \
    absl::Status _lt = CublasLtAvailable();                                        \
    if (!_lt.ok()) GTEST_SKIP() << _lt.message();                                  \
  } while (0)

// x = embedding(tokens) (f32, random in [-1, 1)), logits = x · wᵀ (+ b).
struct MatmulGraph {
  Graph g;
  Weights w;
  int64_t V = 37;
};

MatmulGraph MakeMatmulGraph(DType t, int64_t N, int64_t K, bool bias, int64_t max_tokens) {
  MatmulGraph m;
  m.g.max_tokens = max_tokens;
  ValueId tokens = m.g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId x = Must(
      m.g.AddOp(OpKind::kEmbedding, {W(m.g, "embd", DType::kF32, {m.V, K}), tokens}, "x"));
  std::vector<ValueId> in = {x, W(m.g, "w", t, {N, K})};
  if (bias) in.push_back(W(m.g, "b", DType::kF32, {N}));
  m.g.MarkOutput(Must(m.g.AddOp(OpKind::kMatMul, in, "logits")));
  m.w.Add("embd", DType::kF32, m.V * K, 7, -1, 1);
  m.w.Add("w", t, N * K, 8, -0.5f, 0.5f);
  m.w.Add("b", DType::kF32, N, 9, -1, 1);
  return m;
}

// The GEMM path rounds the activations (and weights that f16 does not hold
// exactly) to f16: each product is off by up to ~2^-10 relative, in random
// directions, so a K-term dot product is off by about 2^-11 * sqrt(K) * rms
// |x w|, i.e. ~4e-4 of max |out| for these random operands (the kernels'
// f32 path is at 2e-6). 2e-3 leaves a 5x margin and still catches a wrong
// layout, chunk offset or bias (errors of order 1).
constexpr double kGemmTolerance = 2e-3;

class CudaGemm : public ::testing::TestWithParam<DType> {};

TEST_P(CudaGemm, MatchesCpuInChunksWithAndWithoutBias) {
  SKIP_WITHOUT_GPU();
  SKIP_WITHOUT_CUBLASLT();
  const DType t = GetParam();
  const int64_t K = t == DType::kF32 ? 100 : 512;  // f32: rows not a multiple of 8
  const int64_t N = 200;                           // chunks of 64 rows: 64+64+64+8
  for (bool small_scratch : {false, true}) {
    for (bool bias : {false, true}) {
      SCOPED_TRACE(::testing::Message() << DTypeName(t) << " bias=" << bias
                                        << " small_scratch=" << small_scratch);
      MatmulGraph m = MakeMatmulGraph(t, N, K, bias, 300);
      Knobs knobs;
      knobs.int8 = false;  // T = 1 checks the float kernels tightly
      if (small_scratch) knobs.gemm_chunk_bytes = 64 * K * 2;  // 4 weight chunks
      auto cpu = CpuExecutor::Create(m.g, m.w.Resolver());
      ASSERT_TRUE(cpu.ok()) << cpu.status();
      auto gpu = Gpu(m.g, m.w.Resolver(), knobs);
      ASSERT_TRUE(gpu.ok()) << gpu.status();
      EXPECT_THAT((*gpu)->Describe(), HasSubstr("prefill GEMMs through"));
      EXPECT_GT((*gpu)->scratch_bytes(), 0);
      EXPECT_LE((*gpu)->scratch_bytes(), int64_t{96} << 20);
      int32_t pos = 0;
      for (int T : {32, 33, 100, 300, 1}) {
        const int64_t calls_before = (*gpu)->gemm_calls();
        const std::vector<int32_t> ids = Ids(T, m.V, 40 + T);
        auto a = (*cpu)->Step(ids, pos);
        ASSERT_TRUE(a.ok()) << a.status();
        std::vector<float> ref(a->begin(), a->end());
        auto b = (*gpu)->Step(ids, pos);
        ASSERT_TRUE(b.ok()) << b.status();
        ASSERT_EQ(b->size(), ref.size());
        double max_abs = 0, ref_max = 0;
        for (size_t i = 0; i < ref.size(); ++i) {
          ASSERT_FALSE(std::isnan((*b)[i])) << i;
          max_abs = std::max(max_abs, std::fabs(double((*b)[i]) - ref[i]));
          ref_max = std::max(ref_max, std::fabs(double(ref[i])));
        }
        const double err = max_abs / ref_max;
        const int64_t calls = (*gpu)->gemm_calls() - calls_before;
        std::printf("[ MEASURED ] gemm %s N=%lld K=%lld T=%d bias=%d small=%d: %lld GEMMs, "
                    "rel err %.3g\n",
                    std::string(DTypeName(t)).c_str(), static_cast<long long>(N),
                    static_cast<long long>(K), T, bias, small_scratch,
                    static_cast<long long>(calls), err);
        if (T == 1) {
          EXPECT_EQ(calls, 0) << "decode must keep the kernels";
          EXPECT_LE(err, 2e-6);
        } else {
          // One GEMM per weight chunk (the f16 activations hold every token).
          const int64_t expect = small_scratch ? 4 : 1;
          EXPECT_EQ(calls, expect);
          EXPECT_LE(err, kGemmTolerance);
        }
        pos += T;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(WeightTypes, CudaGemm,
                         ::testing::Values(DType::kF16, DType::kQ8_0, DType::kQ4_K, DType::kQ6_K,
                                           DType::kQ5_K, DType::kQ4_0, DType::kF32, DType::kBF16,
                                           DType::kIQ4_NL, DType::kIQ4_XS),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

TEST(CudaGemmSwitch, ThresholdDecidesAndZeroKeepsTheKernels) {
  SKIP_WITHOUT_GPU();
  SKIP_WITHOUT_CUBLASLT();
  MatmulGraph m = MakeMatmulGraph(DType::kQ4_K, 96, 256, true, 64);
  Knobs off;
  off.int8 = false;  // the float kernels: tight vs the CPU
  off.gemm_min_rows = 0;
  auto gpu = Gpu(m.g, m.w.Resolver(), off);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ((*gpu)->scratch_bytes(), 0);
  EXPECT_THAT((*gpu)->Describe(), Not(HasSubstr("GEMMs")));
  ASSERT_TRUE((*gpu)->Step(Ids(64, m.V, 1), 0).ok());
  EXPECT_EQ((*gpu)->gemm_calls(), 0);
  // Option 0: the kernels' precision.
  EXPECT_LE(WorstRelError(m.g, m.w, {{Ids(64, m.V, 2), 0}}, off), 2e-6);

  Knobs on;
  on.gemm_min_rows = 40;
  auto g2 = Gpu(m.g, m.w.Resolver(), on);
  ASSERT_TRUE(g2.ok()) << g2.status();
  ASSERT_TRUE((*g2)->Step(Ids(39, m.V, 3), 0).ok());
  EXPECT_EQ((*g2)->gemm_calls(), 0) << "39 rows < 40";
  ASSERT_TRUE((*g2)->Step(Ids(40, m.V, 4), 39).ok());
  EXPECT_EQ((*g2)->gemm_calls(), 1);
}

// A plan whose prefill runs on cuBLASLt needs the library; the error names
// the way out (a plan compiled without GEMMs), and such a plan runs without it.
TEST(CudaGemmSwitch, MissingLibraryIsANamedErrorForPlansThatUseIt) {
  SKIP_WITHOUT_GPU();
  MatmulGraph m = MakeMatmulGraph(DType::kQ6_K, 80, 256, true, 64);
  CudaExecutorOptions o;
  o.cublaslt_names = {"libvibrant_no_such_cublasLt.so"};
  auto gpu = Gpu(m.g, m.w.Resolver(), Knobs{}, o);
  ASSERT_FALSE(gpu.ok());
  EXPECT_THAT(std::string(gpu.status().message()), HasSubstr("libcublasLt does not load"));
  EXPECT_THAT(std::string(gpu.status().message()), HasSubstr("--gemm-min-rows 0"));
  Knobs no_gemm;
  no_gemm.int8 = false;
  no_gemm.gemm_min_rows = 0;
  auto g2 = Gpu(m.g, m.w.Resolver(), no_gemm, o);
  ASSERT_TRUE(g2.ok()) << g2.status();
  EXPECT_EQ((*g2)->scratch_bytes(), 0);
  ASSERT_TRUE((*g2)->Step(Ids(64, m.V, 1), 0).ok());
  EXPECT_EQ((*g2)->gemm_calls(), 0);
  EXPECT_LE(WorstRelError(m.g, m.w, {{Ids(64, m.V, 2), 0}}, no_gemm), 2e-6);
}

TEST(CudaGemmSwitch, VerifyAndProfileSeeTheGemm) {
  SKIP_WITHOUT_GPU();
  SKIP_WITHOUT_CUBLASLT();
  MatmulGraph m = MakeMatmulGraph(DType::kQ4_K, 130, 512, true, 64);
  {
    auto gpu = Gpu(m.g, m.w.Resolver());
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    auto r = (*gpu)->VerifyStep(Ids(48, m.V, 5), 0, 1e-4);
    ASSERT_TRUE(r.ok()) << r.status();
    bool saw = false;
    for (const VerifyOpResult& o : r->ops) {
      if (o.desc.find("[cuBLASLt") == std::string::npos) continue;
      saw = true;
      std::printf("[ MEASURED ] verify %s: rel err %.3g\n", o.desc.c_str(), o.rel_err);
      EXPECT_TRUE(o.ok) << o.desc << " " << o.rel_err;
    }
    EXPECT_TRUE(saw) << "the matmul did not run as a GEMM";
    EXPECT_EQ(r->first_bad, -1);
  }
  setenv("VIBRANT_CUDA_PROFILE", "1", 1);
  ::testing::internal::CaptureStderr();
  {
    auto gpu = Gpu(m.g, m.w.Resolver());
    unsetenv("VIBRANT_CUDA_PROFILE");
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    ASSERT_TRUE((*gpu)->Step(Ids(48, m.V, 6), 0).ok());
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  unsetenv("VIBRANT_CUDA_PROFILE");
  EXPECT_THAT(err, HasSubstr("cublaslt (T>1)"));
  EXPECT_THAT(err, HasSubstr("vb_dequant_f16_q4_K (T>1)"));
}

// ---- embedding, every table type: bit-identical dequantization ---------------------------

class CudaEmbedding : public ::testing::TestWithParam<DType> {};

TEST_P(CudaEmbedding, IsBitIdenticalToCpu) {
  SKIP_WITHOUT_GPU();
  const DType t = GetParam();
  const int64_t D = Plain(t) ? 100 : 512, V = 29;
  Graph g;
  g.max_tokens = 8;
  ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId x = Must(g.AddOp(OpKind::kEmbedding, {W(g, "embd", t, {V, D}), tokens}, "logits"));
  g.MarkOutput(x);
  Weights w;
  w.Add("embd", t, V * D, 11, -3, 3);
  EXPECT_EQ(WorstRelError(g, w, {{Ids(1, V, 5), 0}, {Ids(8, V, 6), 1}, {{0, V - 1}, 9}}), 0.0);
}

INSTANTIATE_TEST_SUITE_P(AllWeightTypes, CudaEmbedding, ::testing::ValuesIn(kWeightTypes),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

// ---- rms_norm, mul, add, silu ----------------------------------------------------------

TEST(CudaElementwise, NormMulSiluAddMatchCpu) {
  SKIP_WITHOUT_GPU();
  const int64_t D = 300, V = 23;
  Graph g;
  g.max_tokens = 8;
  ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId x = Must(g.AddOp(OpKind::kEmbedding, {W(g, "embd", DType::kF32, {V, D}), tokens}, "x"));
  ValueId n = Must(g.AddOp(OpKind::kRmsNorm, {x}, "n", {{"eps", 1e-5}}));
  ValueId m = Must(g.AddOp(OpKind::kMul, {n, W(g, "scale", DType::kF32, {D})}, "m"));
  ValueId s = Must(g.AddOp(OpKind::kSilu, {m}, "s"));
  ValueId p = Must(g.AddOp(OpKind::kMul, {s, x}, "p"));
  ValueId y = Must(g.AddOp(OpKind::kAdd, {p, W(g, "bias", DType::kF32, {D})}, "logits"));
  g.MarkOutput(y);
  Weights w;
  w.Add("embd", DType::kF32, V * D, 21, -4, 4);
  w.Add("scale", DType::kF32, D, 22, 0.5f, 1.5f);
  w.Add("bias", DType::kF32, D, 23, -1, 1);
  const double err = WorstRelError(g, w, {{Ids(1, V, 7), 0}, {Ids(8, V, 8), 1}});
  std::printf("[ MEASURED ] rms_norm/mul/silu/add: rel err %.3g\n", err);
  EXPECT_LE(err, 1e-6);
}

// ---- gelu, scale (gemma3) -----------------------------------------------------------------

TEST(CudaElementwise, GeluAndScaleMatchCpu) {
  SKIP_WITHOUT_GPU();
  const int64_t D = 300, V = 23;
  Graph g;
  g.max_tokens = 8;
  ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId x = Must(g.AddOp(OpKind::kEmbedding, {W(g, "embd", DType::kF32, {V, D}), tokens}, "x"));
  ValueId s = Must(g.AddOp(OpKind::kScale, {x}, "s", {{"scale", 1.7}}));
  ValueId ge = Must(g.AddOp(OpKind::kGelu, {s}, "ge"));
  ValueId y = Must(g.AddOp(OpKind::kMul, {ge, x}, "logits"));
  g.MarkOutput(y);
  Weights w;
  w.Add("embd", DType::kF32, V * D, 24, -5, 5);
  // tanhf on the GPU is within 2 ulp of the host's.
  for (bool fusion : {false, true}) {
    Knobs k;
    k.fusion = fusion;
    const double err = WorstRelError(g, w, {{Ids(1, V, 9), 0}, {Ids(8, V, 10), 1}}, k);
    std::printf("[ MEASURED ] scale/gelu/mul (fusion %d): rel err %.3g\n", fusion, err);
    EXPECT_LE(err, 1e-6);
  }
}

// ---- mixture of experts ------------------------------------------------------------------

class CudaMoe : public ::testing::TestWithParam<DType> {};

// The qwen3moe FFN on its own: router, top-2 of 8 experts, gate/up/down of
// the chosen experts, weighted sum; decode and prefill steps.
TEST_P(CudaMoe, RouterExpertsAndSumMatchCpu) {
  SKIP_WITHOUT_GPU();
  const DType t = GetParam();
  const int64_t D = 256, F = 64, E = 8, V = 29;
  Graph g;
  g.max_tokens = 16;
  ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId x = Must(g.AddOp(OpKind::kEmbedding, {W(g, "embd", DType::kF32, {V, D}), tokens}, "x"));
  ValueId logits = Must(g.AddOp(OpKind::kMatMul, {x, W(g, "router", DType::kF32, {E, D})}, "router_logits"));
  ValueId ids = Must(g.AddOp(OpKind::kMoeTopK, {logits}, "ids", {{"k", int64_t{2}}}));
  ValueId wts = Must(g.AddOp(OpKind::kMoeWeights, {logits, ids}, "wts", {{"norm", int64_t{1}}}));
  ValueId gate = Must(g.AddOp(OpKind::kMatMulId, {x, W(g, "gate", t, {E, F, D}), ids}, "gate_out"));
  ValueId up = Must(g.AddOp(OpKind::kMatMulId, {x, W(g, "up", t, {E, F, D}), ids}, "up_out"));
  ValueId act = Must(g.AddOp(OpKind::kMul, {Must(g.AddOp(OpKind::kSilu, {gate}, "silu")), up}, "act"));
  ValueId down = Must(g.AddOp(OpKind::kMatMulId, {act, W(g, "down", DType::kQ8_0, {E, D, F}), ids}, "down_out"));
  g.MarkOutput(Must(g.AddOp(OpKind::kMoeSum, {down, wts}, "logits")));
  Weights w;
  w.Add("embd", DType::kF32, V * D, 41, -1, 1);
  w.Add("router", DType::kF32, E * D, 42, -0.2f, 0.2f);
  w.Add("gate", t, E * F * D, 43, -0.1f, 0.1f);
  w.Add("up", t, E * F * D, 44, -0.1f, 0.1f);
  w.Add("down", DType::kQ8_0, E * D * F, 45, -0.1f, 0.1f);
  std::vector<StepSpec> steps = {{Ids(16, V, 11), 0}, {Ids(5, V, 12), 16}};
  for (int32_t p = 21; p < 30; ++p) steps.push_back({Ids(1, V, 100 + p), p});
  const double err = WorstRelError(g, w, steps);
  std::printf("[ MEASURED ] moe %s: rel err %.3g\n", std::string(DTypeName(t)).c_str(), err);
  // Each expert row's dot product in another float order (<= 1e-6); a router
  // near-tie that picked another expert would show as O(1).
  EXPECT_LE(err, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(WeightTypes, CudaMoe,
                         ::testing::Values(DType::kF16, DType::kQ4_K, DType::kQ8_0, DType::kIQ4_XS),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

// ---- rope + kv_store + attention ---------------------------------------------------------

struct AttnCase {
  int mode;
  bool freq_factors;
  DType kv;
  int64_t hd;
  int64_t window = 0;  // sliding-window attention (gemma3's local layers)
};

class CudaAttention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(CudaAttention, MatchesCpuOverALongContext) {
  SKIP_WITHOUT_GPU();
  const AttnCase c = GetParam();
  const int64_t H = 4, KVH = 2, V = 31, C = 600;  // 3 context chunks of 256
  const int64_t n_rot = c.hd;
  Graph g;
  g.max_tokens = 64;
  ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId pos = g.AddInput("positions", DType::kI32, {kTokens});
  auto heads = [&](const std::string& name, int64_t h) {
    ValueId e = Must(g.AddOp(OpKind::kEmbedding, {W(g, name, DType::kF32, {V, h * c.hd}), tokens},
                             name + "_x"));
    return Must(g.AddOp(OpKind::kReshape, {e}, name + "_h",
                        {{"shape", std::vector<int64_t>{kTokens, h, c.hd}}}));
  };
  ValueId q = heads("q", H), k = heads("k", KVH), v = heads("v", KVH);
  ir::Attrs rope = {{"mode", int64_t{c.mode}}, {"n_rot", n_rot}, {"freq_base", 10000.0},
                    {"freq_scale", 0.5}};
  std::vector<ValueId> rq = {q, pos}, rk = {k, pos};
  if (c.freq_factors) {
    ValueId ff = W(g, "ff", DType::kF32, {n_rot / 2});
    rq.push_back(ff);
    rk.push_back(ff);
  }
  q = Must(g.AddOp(OpKind::kRope, rq, "q_rope", rope));
  k = Must(g.AddOp(OpKind::kRope, rk, "k_rope", rope));
  ValueId ck = g.AddKvCache("cache_k", c.kv, {C, KVH, c.hd});
  ValueId cv = g.AddKvCache("cache_v", c.kv, {C, KVH, c.hd});
  ValueId kc = Must(g.AddOp(OpKind::kKvStore, {k, ck, pos}, "k_cache"));
  ValueId vc = Must(g.AddOp(OpKind::kKvStore, {v, cv, pos}, "v_cache"));
  g.mutable_value(kc).alias_of = ck;
  g.mutable_value(vc).alias_of = cv;
  ir::Attrs attn = {{"scale", 1.0 / std::sqrt(static_cast<double>(c.hd))}};
  if (c.window > 0) attn["window"] = c.window;
  ValueId a = Must(g.AddOp(OpKind::kAttention, {q, kc, vc, pos}, "attn", attn));
  ValueId y = Must(g.AddOp(OpKind::kReshape, {a}, "logits",
                           {{"shape", std::vector<int64_t>{kTokens, H * c.hd}}}));
  g.MarkOutput(y);
  Weights w;
  w.Add("q", DType::kF32, V * H * c.hd, 31, -1, 1);
  w.Add("k", DType::kF32, V * KVH * c.hd, 32, -1, 1);
  w.Add("v", DType::kF32, V * KVH * c.hd, 33, -1, 1);
  w.Add("ff", DType::kF32, n_rot / 2, 34, 1, 8);
  // Prefill 560 positions in chunks of 64 (the last one shorter), then decode
  // across the last chunk boundary up to the end of the cache.
  std::vector<StepSpec> steps;
  for (int32_t p = 0; p < 560; p += 64) {
    steps.push_back({Ids(std::min<int32_t>(64, 560 - p), V, 100 + p), p});
  }
  for (int32_t p = 560; p < C; ++p) steps.push_back({Ids(1, V, 1000 + p), p});
  // The scalar kernels (f32 math) agree with the CPU to rounding; the
  // tensor-core ones (head_dim 64/128) round q, K/V and the softmax weights
  // to f16 (attention_mma.h: 4e-3 of max|v| for f16 caches, 8e-3 for f32).
  Knobs scalar;
  scalar.flash = false;
  const double err = WorstRelError(g, w, steps, scalar);
  std::printf("[ MEASURED ] attention mode %d ff %d kv %s hd %lld window %lld: rel err %.3g (scalar kernels)\n",
              c.mode, c.freq_factors, std::string(DTypeName(c.kv)).c_str(), static_cast<long long>(c.hd),
              static_cast<long long>(c.window), err);
  EXPECT_LE(err, 1e-4);
  if (c.window > 0) {
    // Windowed attention always takes the scalar kernels (the tensor-core
    // ones have no window yet): the default knobs give the same result.
    const double err_default = WorstRelError(g, w, steps);
    EXPECT_LE(err_default, 1e-4);
    return;
  }
  if (c.hd == 64 || c.hd == 128) {
    // |v| <= 1 here, so the bound is absolute.
    double abs_fa = 0;
    const double err_fa = WorstRelError(g, w, steps, Knobs{}, &abs_fa);
    std::printf("[ MEASURED ] attention mode %d ff %d kv %s hd %lld: max |diff| %.3g, rel err %.3g "
                "(tensor cores)\n",
                c.mode, c.freq_factors, std::string(DTypeName(c.kv)).c_str(), static_cast<long long>(c.hd),
                abs_fa, err_fa);
    EXPECT_LE(abs_fa, c.kv == DType::kF16 ? 4e-3 : 8e-3);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CudaAttention,
    ::testing::Values(AttnCase{0, false, DType::kF16, 64}, AttnCase{2, false, DType::kF16, 128},
                      AttnCase{2, true, DType::kF32, 64}, AttnCase{0, true, DType::kF16, 256},
                      // Windows inside one 256-row chunk and across chunks (and the
                      // 64-row decode chunks).
                      AttnCase{2, false, DType::kF16, 128, 100}, AttnCase{2, false, DType::kF16, 256, 300}),
    [](const auto& info) {
      return absl::StrCat("mode", info.param.mode, info.param.freq_factors ? "_ff_" : "_",
                          std::string(DTypeName(info.param.kv)), "_hd", info.param.hd,
                          info.param.window > 0 ? absl::StrCat("_window", info.param.window) : "");
    });

// ---- fused ops: one generated kernel per body --------------------------------------------

// `g` after the fusion pass.
Graph FuseAll(Graph g, passes::FusionStats* stats) {
  absl::Status s = passes::FuseElementwiseGraph(g, stats);
  EXPECT_TRUE(s.ok()) << s;
  return g;
}

int CountFused(const Graph& g) {
  int n = 0;
  for (const ir::Op& op : g.ops()) n += op.kind == OpKind::kFused;
  return n;
}

// Checks a graph whose fusable chains the fusion pass fuses, on the GPU:
// against the CPU (relative error at most `tol`); the generated kernels
// against the same graph compiled without fusion (bit for bit: the generated
// code does the per-op kernels' float operations in the same order); every
// fused op is one launch.
void CheckFusedGraph(const Graph& g, const Weights& w, const std::vector<StepSpec>& steps,
                     double tol, const char* what) {
  SCOPED_TRACE(what);
  absl::StatusOr<compiler::Compiled> compiled = CompileForGpu(g);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  const int fused = CountFused(compiled->graph);
  ASSERT_GT(fused, 0) << "nothing fused: the test would not cover fused kernels";
  const double err = WorstRelError(g, w, steps);
  std::printf("[ MEASURED ] fused %s: rel err vs cpu %.3g\n", what, err);
  EXPECT_LE(err, tol);
  Knobs off;
  off.fusion = false;
  auto a = CudaExecutor::Create(compiler::ToProgram(*compiled), w.Resolver());
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = Gpu(g, w.Resolver(), off);
  ASSERT_TRUE(b.ok()) << b.status();
  for (const StepSpec& s : steps) {
    auto la = (*a)->Step(s.tokens, s.pos0);
    ASSERT_TRUE(la.ok()) << la.status();
    std::vector<float> va(la->begin(), la->end());
    auto lb = (*b)->Step(s.tokens, s.pos0);
    ASSERT_TRUE(lb.ok()) << lb.status();
    ASSERT_EQ(va.size(), lb->size());
    EXPECT_EQ(0, std::memcmp(va.data(), lb->data(), va.size() * sizeof(float)))
        << "generated kernel != op by op at position " << s.pos0;
  }
  int body_kernels = 0;
  for (const ir::Op& op : compiled->graph.ops()) {
    if (op.kind != OpKind::kFused) continue;
    for (const ir::Op& bop : op.body->ops()) body_kernels += bop.kind != OpKind::kReshape;
  }
  auto na = (*a)->KernelLaunchesPerStep(1);
  auto nb = (*b)->KernelLaunchesPerStep(1);
  ASSERT_TRUE(na.ok() && nb.ok());
  EXPECT_EQ(*nb - *na, body_kernels - fused);
  // Each output of each fused op, checked on its own (VerifyStep).
  auto r = (*a)->VerifyStep(steps.back().tokens, steps.back().pos0 + 1, tol);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->first_bad, -1) << r->ops[std::max(0, r->first_bad)].desc << " rel err "
                              << r->ops[std::max(0, r->first_bad)].rel_err;
}

ValueId Embed(Graph& g, ValueId tokens, const std::string& name, int64_t V, int64_t D) {
  return Must(g.AddOp(OpKind::kEmbedding, {W(g, name, DType::kF32, {V, D}), tokens}, name + "_x"));
}

TEST(CudaFused, RmsNormTimesWeight) {
  SKIP_WITHOUT_GPU();
  // 300: a partial last pass; 2048: 8 per thread; 9000: too long to keep in
  // registers (recomputed in the second pass).
  for (int64_t D : {300, 2048, 9000}) {
    const int64_t V = 23;
    Graph g;
    g.max_tokens = 8;
    ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
    ValueId x = Embed(g, tokens, "embd", V, D);
    ValueId n = Must(g.AddOp(OpKind::kRmsNorm, {x}, "n", {{"eps", 1e-6}}));
    ValueId y = Must(g.AddOp(OpKind::kMul, {n, W(g, "scale", DType::kF32, {D})}, "logits"));
    g.MarkOutput(y);
    passes::FusionStats st;
    Graph f = FuseAll(g, &st);
    EXPECT_EQ(st.rms_scale, 1);
    Weights w;
    w.Add("embd", DType::kF32, V * D, 21, -4, 4);
    w.Add("scale", DType::kF32, D, 22, 0.5f, 1.5f);
    CheckFusedGraph(g, w, {{Ids(1, V, 7), 0}, {Ids(8, V, 8), 1}, {Ids(3, V, 9), 9}}, 1e-6,
                    absl::StrCat("rms_norm*w D=", D).c_str());
  }
}

TEST(CudaFused, ResidualAddAndRmsNormWithTwoOutputs) {
  SKIP_WITHOUT_GPU();
  const int64_t D = 1000, V = 19;
  Graph g;
  g.max_tokens = 8;
  ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId a = Embed(g, tokens, "a", V, D);
  ValueId b = Embed(g, tokens, "b", V, D);
  ValueId s = Must(g.AddOp(OpKind::kAdd, {a, b}, "s"));
  ValueId n = Must(g.AddOp(OpKind::kRmsNorm, {s}, "n", {{"eps", 1e-5}}));
  ValueId m = Must(g.AddOp(OpKind::kMul, {n, W(g, "w", DType::kF32, {D})}, "m"));
  // Reads both outputs of the fused op.
  ValueId y = Must(g.AddOp(OpKind::kMul, {m, s}, "logits"));
  g.MarkOutput(y);
  passes::FusionStats st;
  Graph f = FuseAll(g, &st);
  EXPECT_EQ(st.residual_norm, 1);
  for (const ir::Op& op : f.ops()) {
    if (op.kind == OpKind::kFused) {
      EXPECT_EQ(op.outputs.size(), 2u);
    }
  }
  Weights w;
  w.Add("a", DType::kF32, V * D, 31, -2, 2);
  w.Add("b", DType::kF32, V * D, 32, -2, 2);
  w.Add("w", DType::kF32, D, 33, 0.5f, 1.5f);
  CheckFusedGraph(g, w, {{Ids(1, V, 1), 0}, {Ids(8, V, 2), 1}, {Ids(5, V, 3), 20}}, 1e-6,
                  "residual + rms_norm*w (2 outputs)");
}

TEST(CudaFused, SiluGateTimesUpAndAGenericChain) {
  SKIP_WITHOUT_GPU();
  const int64_t D = 3000, V = 17;
  Graph g;
  g.max_tokens = 8;
  ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId gate = Embed(g, tokens, "gate", V, D);
  ValueId up = Embed(g, tokens, "up", V, D);
  ValueId act = Must(g.AddOp(OpKind::kMul, {Must(g.AddOp(OpKind::kSilu, {gate}, "silu")), up}, "act"));
  // Then a generic chain with broadcast operands shorter than the row:
  // silu(reshape(act)[T, 3, D/3] * w[3, D/3] + bias[D/3]).
  ValueId act3 = Must(g.AddOp(OpKind::kReshape, {act}, "act3",
                              {{"shape", std::vector<int64_t>{kTokens, 3, D / 3}}}));
  ValueId sc3 = Must(g.AddOp(OpKind::kMul, {act3, W(g, "w", DType::kF32, {3, D / 3})}, "sc3"));
  ValueId bi3 = Must(g.AddOp(OpKind::kAdd, {sc3, W(g, "bias", DType::kF32, {D / 3})}, "bi3"));
  ValueId y = Must(g.AddOp(OpKind::kSilu, {bi3}, "logits"));
  g.MarkOutput(y);
  passes::FusionStats st;
  Graph f = FuseAll(g, &st);
  EXPECT_EQ(st.swiglu, 1);
  EXPECT_EQ(st.generic, 1);
  Weights w;
  w.Add("gate", DType::kF32, V * D, 41, -6, 6);
  w.Add("up", DType::kF32, V * D, 42, -2, 2);
  w.Add("w", DType::kF32, D, 43, 0.5f, 1.5f);
  w.Add("bias", DType::kF32, D / 3, 44, -1, 1);
  CheckFusedGraph(g, w, {{Ids(1, V, 4), 0}, {Ids(8, V, 5), 1}}, 1e-6, "silu(gate)*up, generic");
}

struct RopeCase {
  int mode;
  bool freq_factors;
  int64_t n_rot;  // of hd = 64
};

class CudaFusedRope : public ::testing::TestWithParam<RopeCase> {};

TEST_P(CudaFusedRope, BiasAddThenRope) {
  SKIP_WITHOUT_GPU();
  const RopeCase c = GetParam();
  const int64_t H = 3, hd = 64, V = 29;
  Graph g;
  g.max_tokens = 16;
  ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId pos = g.AddInput("positions", DType::kI32, {kTokens});
  ValueId x = Embed(g, tokens, "x", V, H * hd);
  ValueId xb = Must(g.AddOp(OpKind::kAdd, {x, W(g, "bias", DType::kF32, {H * hd})}, "xb"));
  ValueId xh = Must(g.AddOp(OpKind::kReshape, {xb}, "xh",
                            {{"shape", std::vector<int64_t>{kTokens, H, hd}}}));
  std::vector<ValueId> in = {xh, pos};
  if (c.freq_factors) in.push_back(W(g, "ff", DType::kF32, {c.n_rot / 2}));
  ValueId r = Must(g.AddOp(OpKind::kRope, in, "r",
                           {{"mode", int64_t{c.mode}}, {"n_rot", c.n_rot}, {"freq_base", 1e6},
                            {"freq_scale", 0.25}}));
  ValueId y = Must(g.AddOp(OpKind::kReshape, {r}, "logits",
                           {{"shape", std::vector<int64_t>{kTokens, H * hd}}}));
  g.MarkOutput(y);
  passes::FusionStats st;
  Graph f = FuseAll(g, &st);
  EXPECT_EQ(st.bias_rope, 1);
  Weights w;
  w.Add("x", DType::kF32, V * H * hd, 51, -1, 1);
  w.Add("bias", DType::kF32, H * hd, 52, -1, 1);
  w.Add("ff", DType::kF32, c.n_rot / 2, 53, 1, 8);
  CheckFusedGraph(g, w, {{Ids(1, V, 6), 0}, {Ids(16, V, 7), 1}, {Ids(5, V, 8), 3000}}, 1e-5,
                  absl::StrCat("bias + rope mode ", c.mode, " ff ", c.freq_factors, " n_rot ",
                               c.n_rot)
                      .c_str());
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaFusedRope,
                         ::testing::Values(RopeCase{0, false, 64}, RopeCase{2, false, 64},
                                           RopeCase{0, true, 32}, RopeCase{2, true, 32}),
                         [](const auto& info) {
                           return absl::StrCat("mode", info.param.mode,
                                               info.param.freq_factors ? "_ff" : "",
                                               "_nrot", info.param.n_rot);
                         });

// ---- a whole model: graph replay, step errors, verify ---------------------------------------

struct Stories {
  std::unique_ptr<GgufFile> file;
  Graph graph;
  WeightResolver Resolver() const {
    const GgufFile* f = file.get();
    return [f](const std::string& name) -> absl::StatusOr<absl::Span<const uint8_t>> {
      const GgufTensorInfo* t = f->FindTensor(name);
      if (t == nullptr) return absl::NotFoundError(name);
      return f->TensorData(*t);
    };
  }
};

Stories LoadStories(int64_t max_tokens = 32) {
  Stories s;
  auto file = GgufFile::Open(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf");
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return s;
  s.file = *std::move(file);
  LowerOptions opts;
  opts.max_tokens = max_tokens;
  opts.n_ctx = 128;
  auto g = LowerGguf(*s.file, opts);
  EXPECT_TRUE(g.ok()) << g.status();
  if (g.ok()) s.graph = *std::move(g);
  return s;
}

TEST(CudaExecutorModel, GraphReplayIsBitIdenticalToPlainLaunches) {
  SKIP_WITHOUT_GPU();
  Stories s = LoadStories();
  ASSERT_NE(s.file, nullptr);
  Knobs without;
  without.graphs = false;
  auto a = Gpu(s.graph, s.Resolver());
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = Gpu(s.graph, s.Resolver(), without);
  ASSERT_TRUE(b.ok()) << b.status();
  std::printf("[ INFO ] %s\n", (*a)->Describe().c_str());
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378};
  ASSERT_TRUE((*a)->Step(prompt, 0).ok());
  ASSERT_TRUE((*b)->Step(prompt, 0).ok());
  int32_t tok = 300;
  for (int32_t p = 5; p < 40; ++p) {
    auto la = (*a)->Step({&tok, 1}, p);
    ASSERT_TRUE(la.ok()) << la.status();
    std::vector<float> va(la->begin(), la->end());
    auto lb = (*b)->Step({&tok, 1}, p);
    ASSERT_TRUE(lb.ok()) << lb.status();
    ASSERT_EQ(va.size(), lb->size());
    ASSERT_EQ(0, std::memcmp(va.data(), lb->data(), va.size() * sizeof(float))) << "position " << p;
    tok = static_cast<int32_t>(std::max_element(va.begin(), va.end()) - va.begin());
  }
  EXPECT_THAT((*a)->Describe(), HasSubstr("as a CUDA graph"));
}

TEST(CudaExecutorModel, ResetAndStepErrorsBehaveLikeTheCpu) {
  SKIP_WITHOUT_GPU();
  Stories s = LoadStories(8);
  ASSERT_NE(s.file, nullptr);
  auto gpu = Gpu(s.graph, s.Resolver());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const int32_t bad[1] = {100000};
  EXPECT_THAT(std::string((*gpu)->Step(bad, 0).status().message()), HasSubstr("outside the vocabulary"));
  const int32_t one[1] = {5};
  EXPECT_EQ((*gpu)->Step(one, 128).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*gpu)->Step({}, 0).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> nine(9, 3);
  EXPECT_EQ((*gpu)->Step(nine, 0).status().code(), absl::StatusCode::kInvalidArgument);
  // The same sequence twice, with a Reset between, gives the same logits.
  auto first = (*gpu)->Step({1, 2, 3}, 0);
  ASSERT_TRUE(first.ok());
  std::vector<float> a(first->begin(), first->end());
  (*gpu)->Reset();
  auto second = (*gpu)->Step({1, 2, 3}, 0);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(0, std::memcmp(a.data(), second->data(), a.size() * sizeof(float)));
}

TEST(CudaExecutorModel, VerifyStepChecksEveryOp) {
  SKIP_WITHOUT_GPU();
  Stories s = LoadStories();
  ASSERT_NE(s.file, nullptr);
  Knobs unfused;
  unfused.fusion = false;
  auto compiled = CompileForGpu(s.graph, unfused);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  auto gpu = CudaExecutor::Create(compiler::ToProgram(*compiled), s.Resolver());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  auto r = (*gpu)->VerifyStep({1, 403, 407, 261}, 0, 1e-4);
  ASSERT_TRUE(r.ok()) << r.status();
  // One comparison per output of each op that launches something (all but
  // views and the step's input/output transfers; a multi_matmul has one
  // output per weight).
  int launching = 0;
  for (const ir::Op& op : compiled->graph.ops()) {
    bool any = false;
    for (const ir::KernelVariant& k : op.kernels) any |= !k.launches.empty();
    if (any) launching += static_cast<int>(op.outputs.size());
  }
  EXPECT_EQ(static_cast<int>(r->ops.size()), launching);
  double worst = 0;
  for (const VerifyOpResult& o : r->ops) worst = std::max(worst, o.rel_err);
  std::printf("[ MEASURED ] verify stories260K prefill: worst op rel err %.3g\n", worst);
  EXPECT_EQ(r->first_bad, -1) << r->ops[std::max(0, r->first_bad)].desc << " rel err "
                              << r->ops[std::max(0, r->first_bad)].rel_err;
  auto d = (*gpu)->VerifyStep({300}, 4, 1e-4);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->first_bad, -1);
}

// --verify on a quantized matmul: the GPU rounds activations to 8 bits, and
// the CPU side of the comparison rounds them the same way, so the check stays
// tight (1e-4) for every 8-bit path type and for decode and prefill steps.
TEST(CudaExecutorVerify, ComparesInt8MatvecsOnRoundedActivations) {
  SKIP_WITHOUT_GPU();
  for (DType t : {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                 DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    SCOPED_TRACE(DTypeName(t));
    const int64_t K = 512, N = 300, V = 19;
    Graph g;
    g.max_tokens = 8;
    ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
    ValueId x = Must(g.AddOp(OpKind::kEmbedding, {W(g, "embd", DType::kF32, {V, K}), tokens}, "x"));
    ValueId q = Must(g.AddOp(OpKind::kMatMul, {x, W(g, "wq", t, {N, K})}, "q"));
    ValueId k = Must(g.AddOp(OpKind::kMatMul, {x, W(g, "wk", t, {N, K})}, "k"));  // shares x
    ValueId y = Must(g.AddOp(OpKind::kAdd, {q, k}, "logits"));
    g.MarkOutput(y);
    Weights w;
    w.Add("embd", DType::kF32, V * K, 21, -1, 1);
    w.Add("wq", t, N * K, 22, -0.5f, 0.5f);
    w.Add("wk", t, N * K, 23, -0.5f, 0.5f);
    auto gpu = Gpu(g, w.Resolver());
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    for (const std::vector<int32_t>& ids : {std::vector<int32_t>{3}, Ids(7, V, 5)}) {
      auto r = (*gpu)->VerifyStep(ids, 0, 1e-4);
      ASSERT_TRUE(r.ok()) << r.status();
      // embedding, quantize_q8, multi_matmul (2 outputs), add.
      ASSERT_EQ(r->ops.size(), 5u);
      double worst = 0;
      for (const VerifyOpResult& o : r->ops) worst = std::max(worst, o.rel_err);
      std::printf("[ MEASURED ] verify int8 matvec %s T=%zu: worst op rel err %.3g\n",
                  std::string(DTypeName(t)).c_str(), ids.size(), worst);
      EXPECT_EQ(r->first_bad, -1) << r->ops[std::max(0, r->first_bad)].desc;
    }
    // Steps: the two matmuls that share x run as one launch at T = 1, after
    // one rounding of x; plus the embedding and the add.
    auto launches = (*gpu)->KernelLaunchesPerStep(1);
    ASSERT_TRUE(launches.ok()) << launches.status();
    EXPECT_EQ(*launches, 4);
    Weights wr = w;
    std::vector<float> table(V * K);
    std::memcpy(table.data(), wr.bytes["embd"].data(), table.size() * sizeof(float));
    ASSERT_TRUE(RoundActivationsToQ8(table.data(), V * K, table.data()).ok());
    std::memcpy(wr.bytes["embd"].data(), table.data(), table.size() * sizeof(float));
    const double err = WorstRelError(g, wr, {{{3}, 0}, {Ids(7, V, 6), 1}, {{11}, 8}});
    std::printf("[ MEASURED ] int8 matvec %s, shared-input launch: rel err %.3g\n",
                std::string(DTypeName(t)).c_str(), err);
    EXPECT_LE(err, 2e-6);
  }
}

// The compiled stories260K (fusion on, as vibrantc compile --device cuda):
// generated fused kernels give the op-by-op logits bit for bit, for prefill
// and for replayed decode steps, with fewer launches per decode step.
TEST(CudaExecutorModel, FusedKernelsMatchOpByOpWithFewerLaunches) {
  SKIP_WITHOUT_GPU();
  Stories s = LoadStories();
  ASSERT_NE(s.file, nullptr);
  auto compiled_or = CompileForGpu(s.graph);
  ASSERT_TRUE(compiled_or.ok()) << compiled_or.status();
  const Graph& compiled = compiled_or->graph;
  const int fused = CountFused(compiled);
  ASSERT_GT(fused, 0);
  Knobs off;
  off.fusion = false;
  auto a = CudaExecutor::Create(compiler::ToProgram(*compiled_or), s.Resolver());
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = Gpu(s.graph, s.Resolver(), off);
  ASSERT_TRUE(b.ok()) << b.status();
  auto na = (*a)->KernelLaunchesPerStep(1);
  auto nb = (*b)->KernelLaunchesPerStep(1);
  ASSERT_TRUE(na.ok() && nb.ok());
  int body_kernels = 0;
  for (const ir::Op& op : compiled.ops()) {
    if (op.kind != OpKind::kFused) continue;
    for (const ir::Op& bop : op.body->ops()) body_kernels += bop.kind != OpKind::kReshape;
  }
  std::printf("[ MEASURED ] stories260K decode step: %d kernel launches with fused kernels, %d op by op (%d fused ops)\n",
              *na, *nb, fused);
  EXPECT_EQ(*nb - *na, body_kernels - fused);
  EXPECT_LT(*na, *nb);
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378};
  auto pa = (*a)->Step(prompt, 0);
  ASSERT_TRUE(pa.ok()) << pa.status();
  std::vector<float> va(pa->begin(), pa->end());
  auto pb = (*b)->Step(prompt, 0);
  ASSERT_TRUE(pb.ok()) << pb.status();
  ASSERT_EQ(va.size(), pb->size());
  ASSERT_EQ(0, std::memcmp(va.data(), pb->data(), va.size() * sizeof(float))) << "prefill";
  int32_t tok = 300;
  for (int32_t p = 5; p < 20; ++p) {
    auto la = (*a)->Step({&tok, 1}, p);
    ASSERT_TRUE(la.ok()) << la.status();
    std::vector<float> da(la->begin(), la->end());
    auto lb = (*b)->Step({&tok, 1}, p);
    ASSERT_TRUE(lb.ok()) << lb.status();
    ASSERT_EQ(0, std::memcmp(da.data(), lb->data(), da.size() * sizeof(float))) << "position " << p;
    tok = static_cast<int32_t>(std::max_element(da.begin(), da.end()) - da.begin());
  }
  EXPECT_THAT((*a)->Describe(), HasSubstr("as a CUDA graph"));
  auto r = (*a)->VerifyStep({tok}, 20, 1e-4);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->first_bad, -1) << r->ops[std::max(0, r->first_bad)].desc;
}

// ---- continuous batching: paged kv_store / attention and StepBatch -------------------------

// Runs `steps` of a paged graph on the CPU and the GPU (StepBatch); returns
// the worst max|gpu - cpu| (and in *rel the worst max|gpu - cpu| / max|cpu|).
struct BatchStep {
  std::vector<int32_t> tokens, positions, seq_ids;
};
double WorstBatchError(CpuExecutor& cpu, CudaExecutor& gpu, const std::vector<BatchStep>& steps,
                       const std::vector<int32_t>& table, double* rel) {
  double worst = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    const BatchStep& s = steps[i];
    BatchInputs in{s.tokens, s.positions, s.seq_ids, table};
    auto a = cpu.StepBatch(in);
    EXPECT_TRUE(a.ok()) << a.status();
    if (!a.ok()) return INFINITY;
    std::vector<float> ref(a->begin(), a->end());
    auto b = gpu.StepBatch(in);
    EXPECT_TRUE(b.ok()) << "step " << i << ": " << b.status();
    if (!b.ok()) return INFINITY;
    EXPECT_EQ(b->size(), ref.size());
    if (b->size() != ref.size()) return INFINITY;
    double max_abs = 0, ref_max = 0;
    for (size_t j = 0; j < ref.size(); ++j) {
      const double e = std::fabs(double((*b)[j]) - ref[j]);
      if (!(e <= max_abs)) max_abs = std::isnan(e) ? INFINITY : e;
      ref_max = std::max(ref_max, std::fabs(double(ref[j])));
    }
    worst = std::max(worst, max_abs);
    if (rel != nullptr) *rel = std::max(*rel, ref_max > 0 ? max_abs / ref_max : max_abs);
  }
  return worst;
}

// Three sequences in scattered blocks of 16 (block ids of the pool of 12,
// -1 unused): 0 holds 5 blocks, 1 holds 2, 2 holds 4.
const std::vector<int32_t> kTable = {7, 2, 11, 4, 9, -1,    //
                                     0, 10, -1, -1, -1, -1,  //
                                     3, 8, 1, 6, -1, -1};

// Prompts of 40 / 20 / 30 tokens in chunks mixed with other sequences'
// decode tokens, then decode steps of all three (sequence 0 to position 79,
// across 5 blocks), in a different order each step.
std::vector<BatchStep> MixedSteps(int V) {
  std::vector<BatchStep> steps;
  std::mt19937 rng(17);
  auto tok = [&] { return static_cast<int32_t>(rng() % V); };
  BatchStep a;  // prefill of 0 (16 tokens) and 1 (12)
  for (int p = 0; p < 16; ++p) a.tokens.push_back(tok()), a.positions.push_back(p), a.seq_ids.push_back(0);
  for (int p = 0; p < 12; ++p) a.tokens.push_back(tok()), a.positions.push_back(p), a.seq_ids.push_back(1);
  steps.push_back(a);
  BatchStep b;  // 1's last 8, 0's next 24, 2's first 30 (62 tokens)
  for (int p = 12; p < 20; ++p) b.tokens.push_back(tok()), b.positions.push_back(p), b.seq_ids.push_back(1);
  for (int p = 0; p < 30; ++p) b.tokens.push_back(tok()), b.positions.push_back(p), b.seq_ids.push_back(2);
  for (int p = 16; p < 40; ++p) b.tokens.push_back(tok()), b.positions.push_back(p), b.seq_ids.push_back(0);
  steps.push_back(b);
  int next[3] = {40, 20, 30};
  const int last[3] = {79, 31, 63};
  for (int i = 0; i < 40; ++i) {
    BatchStep d;
    for (int k = 0; k < 3; ++k) {
      const int s = (k + i) % 3;
      if (next[s] > last[s]) continue;
      d.tokens.push_back(tok());
      d.positions.push_back(next[s]++);
      d.seq_ids.push_back(s);
    }
    if (!d.tokens.empty()) steps.push_back(d);
  }
  return steps;
}

// The paged kv_store and attention ops alone (embeddings feed q, k, v; |v|
// <= 1): the GPU against the CPU reference through StepBatch, including
// CUDA-graph replays of the 1..3-token decode steps. Bound: the tensor-core
// attention's f16 roundings (attention_mma.h: 4e-3 of max|v| for f16
// caches, 8e-3 for q8_0), as CudaAttention.MatchesCpuOverALongContext; the
// emulator measured 1.3e-4 (f16) and 1.5e-4 (q8_0) on the same kernel
// (AttentionEmulated.PagedDecodeOfSeveralSequences).
// The graphs compile (NVRTC included) and the CPU runs the steps without a
// GPU too; only the comparison needs one.
TEST(CudaPaged, KvStoreAndAttentionMatchTheCpu) {
  const bool gpu_ok = CudaDeviceAvailable().ok();
  for (DType kv : {DType::kF16, DType::kQ8_0}) {
    for (int64_t hd : {int64_t{64}, int64_t{128}}) {
      SCOPED_TRACE(absl::StrCat(std::string(DTypeName(kv)), " hd ", hd));
      const int64_t H = 8, KVH = 2, V = 37, BS = 16, NB = 12, S = 3, MB = 6;
      Graph g;
      g.max_tokens = 64;
      g.meta["paged"] = int64_t{1};
      g.meta["n_seq"] = S;
      g.meta["block_size"] = BS;
      g.meta["max_blocks"] = MB;
      ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
      ValueId pos = g.AddInput("positions", DType::kI32, {kTokens});
      ValueId seq = g.AddInput("seq_ids", DType::kI32, {kTokens});
      ValueId table = g.AddInput("block_table", DType::kI32, {S, MB});
      auto heads = [&](const std::string& name, int64_t h) {
        ValueId e = Must(g.AddOp(OpKind::kEmbedding, {W(g, name, DType::kF32, {V, h * hd}), tokens},
                                 name + "_x"));
        return Must(g.AddOp(OpKind::kReshape, {e}, name + "_h",
                            {{"shape", std::vector<int64_t>{kTokens, h, hd}}}));
      };
      ValueId q = heads("q", H), k = heads("k", KVH), v = heads("v", KVH);
      ValueId ck = g.AddKvCache("cache_k", kv, {NB * BS, KVH, hd});
      ValueId cv = g.AddKvCache("cache_v", kv, {NB * BS, KVH, hd});
      const ir::Attrs store = {{"block_size", BS}};
      ValueId kc = Must(g.AddOp(OpKind::kKvStore, {k, ck, pos, seq, table}, "k_cache", store));
      ValueId vc = Must(g.AddOp(OpKind::kKvStore, {v, cv, pos, seq, table}, "v_cache", store));
      g.mutable_value(kc).alias_of = ck;
      g.mutable_value(vc).alias_of = cv;
      ValueId a = Must(g.AddOp(OpKind::kAttention, {q, kc, vc, pos, seq, table}, "attn",
                               {{"scale", 1.0 / std::sqrt(static_cast<double>(hd))}, {"block_size", BS}}));
      ValueId y = Must(g.AddOp(OpKind::kReshape, {a}, "logits",
                               {{"shape", std::vector<int64_t>{kTokens, H * hd}}}));
      g.MarkOutput(y);
      Weights w;
      w.Add("q", DType::kF32, V * H * hd, 61, -1, 1);
      w.Add("k", DType::kF32, V * KVH * hd, 62, -1, 1);
      w.Add("v", DType::kF32, V * KVH * hd, 63, -1, 1);
      auto cpu = CpuExecutor::Create(g, w.Resolver());
      ASSERT_TRUE(cpu.ok()) << cpu.status();
      auto compiled = CompileForGpu(g);
      ASSERT_TRUE(compiled.ok()) << compiled.status();
      ASSERT_TRUE(compiled->dispatch_table.has_value());
      EXPECT_EQ(compiled->dispatch_table->n_seq, S);
      if (!gpu_ok) {
        for (const BatchStep& st : MixedSteps(V)) {
          auto r = (*cpu)->StepBatch(BatchInputs{st.tokens, st.positions, st.seq_ids, kTable});
          ASSERT_TRUE(r.ok()) << r.status();
        }
        continue;
      }
      auto gpu = CudaExecutor::Create(compiler::ToProgram(*compiled), w.Resolver());
      ASSERT_TRUE(gpu.ok()) << gpu.status();
      const double err = WorstBatchError(**cpu, **gpu, MixedSteps(V), kTable, nullptr);
      std::printf("[ MEASURED ] paged attention kv %s hd %lld: max |gpu - cpu| %.3g\n",
                  std::string(DTypeName(kv)).c_str(), static_cast<long long>(hd), err);
      EXPECT_LE(err, kv == DType::kF16 ? 4e-3 : 8e-3);
    }
  }
  if (!gpu_ok) GTEST_SKIP() << "compiled and ran on the CPU; no usable CUDA GPU to compare";
}

// A whole paged model (2 layers, head_dim 64) on the GPU against the CPU:
// mixed prefill chunks and decode steps of three sequences, float
// activations and no GEMM (the matmuls agree with the CPU to 2e-6), so the
// difference is the paged attention's f16 rounding (4e-3 of max|v| per
// attention) carried through 2 layers. Bound 1e-2 of max|logit|: not yet
// measured on a GPU (the value is printed as [ MEASURED ]).
// The input checks come before anything runs: Step on a paged plan, a
// sequence slot, a position past a sequence's blocks and a block id outside
// the pool are named errors, and the executor still works after them.
TEST(CudaPaged, TinyModelMatchesTheCpuAndChecksItsInputs) {
  auto m = passes::test_models::Synthetic(passes::test_models::TinyLlamaHd64Spec(), 7);
  ASSERT_TRUE(m.ok()) << m.status();
  LowerOptions lo;
  lo.max_tokens = 64;
  lo.n_ctx = 12 * 16;
  lo.n_seq = 3;
  lo.block_size = 16;
  auto g = (*m)->Lower(lo);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(std::get<int64_t>(g->meta.at("max_blocks")), 12);  // min(n_ctx, 512) / 16
  std::vector<int32_t> table(3 * 12, -1);
  for (int s = 0; s < 3; ++s) {
    for (int b = 0; b < 6; ++b) {
      if (kTable[s * 6 + b] >= 0) table[s * 12 + b] = kTable[s * 6 + b];
    }
  }
  auto cpu = CpuExecutor::Create(*g, (*m)->Resolver());
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  Knobs float_path;
  float_path.int8 = false;
  float_path.gemm_min_rows = 0;
  auto compiled = CompileForGpu(*g, float_path);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  SKIP_WITHOUT_GPU();
  auto gpu = CudaExecutor::Create(compiler::ToProgram(*compiled), (*m)->Resolver());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  std::printf("[ INFO ] %s\n", (*gpu)->Describe().c_str());
  double rel = 0;
  const double err = WorstBatchError(**cpu, **gpu, MixedSteps(96), table, &rel);
  std::printf("[ MEASURED ] paged tiny-llama-hd64: max |gpu - cpu| %.3g, %.3g of max|logit|\n", err, rel);
  EXPECT_LE(rel, 1e-2);

  const int32_t one[1] = {5};
  EXPECT_EQ((*gpu)->Step(one, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  const int32_t p0[1] = {0}, s9[1] = {9}, s1[1] = {1}, p40[1] = {40}, p500[1] = {500};
  auto bad_seq = (*gpu)->StepBatch(BatchInputs{one, p0, s9, table});
  EXPECT_EQ(bad_seq.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(bad_seq.status().message()), HasSubstr("sequence id 9"));
  // Sequence 1 owns 2 blocks: position 40 needs a third.
  auto bad_block = (*gpu)->StepBatch(BatchInputs{one, p40, s1, table});
  EXPECT_EQ(bad_block.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(bad_block.status().message()), HasSubstr("block 2 is -1"));
  EXPECT_EQ((*gpu)->StepBatch(BatchInputs{one, p500, s1, table}).status().code(),
            absl::StatusCode::kOutOfRange);
  std::vector<int32_t> wild = table;
  wild[12] = 12;  // sequence 1's first block: one past the pool of 12
  EXPECT_EQ((*gpu)->StepBatch(BatchInputs{one, p0, s1, wild}).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*gpu)->StepBatch(BatchInputs{one, p0, s1, absl::MakeConstSpan(table).subspan(1)})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  auto ok = (*gpu)->StepBatch(BatchInputs{one, p0, s1, table});
  EXPECT_TRUE(ok.ok()) << ok.status();
}

}  // namespace
}  // namespace vibrant
