// The tensor-core GEMM on quantized weights (variant gemm.mmq,
// codegen/kernels/mmq.cc) on the GPU, through the compiler and the CUDA
// executor, for every weight type it serves and T = 32 .. 4096 token rows,
// both tile heights, odd weight rows, a K that ends in half a step, with and
// without bias, and three weights in one launch; against the CPU reference
// and against the cuBLASLt path on the same operands. Skips without a GPU.
//
// Tolerances. The embedding rows are pre-rounded to what quantize_q8 makes
// of them (RoundActivationsToQ8), so the GPU's operands are f16(x) and
// f16(w) with x, w the CPU's values: each product is off by <= ~2^-10
// relative, in random directions, so a K-term row is off by ~2^-11 sqrt(K)
// rms|x w|, ~5e-4 of max|out| for these random operands; kGemmTolerance =
// 2e-3 is the executor test's bound for the cuBLASLt path (same operands).
// Against cuBLASLt (both multiply the same f16 values exactly and add in
// f32, in different orders) the difference is f32 rounding: 1e-4 of max|out|
// (an error bound of K * 2^-24 * sum|x w| / max|out| ~ 2e-4 at K = 2048 for
// these operands, typically 100x below; a wrong tile is O(1)).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <utility>
#include <random>
#include <string>
#include <vector>

#include "compiler/compiler.h"
#include "gtest/gtest.h"
#include "codegen/kernels/families.h"
#include "ir/graph.h"
#include "runtime/cpu/executor.h"
#include "runtime/cpu/quantize.h"
#include "runtime/cuda/cublaslt.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/executor.h"

namespace vibrant {
namespace {

using ir::Graph;
using ir::OpKind;
using ir::ValueId;

constexpr double kGemmTolerance = 2e-3;
constexpr double kVsCublasLtTolerance = 1e-4;

#define SKIP_WITHOUT_GPU()                                                     \
  do {                                                                         \
    absl::Status _gpu = CudaDeviceAvailable();                                 \
    if (!_gpu.ok()) GTEST_SKIP() << "no usable CUDA GPU: " << _gpu.message(); \
  } while (0)

struct Weights {
  std::map<std::string, std::vector<uint8_t>> bytes;
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

// x = embedding(tokens) [T, K] (rows pre-rounded to 8-bit activations); one
// to three matmuls of x with `rows` rows each (weights of type t, a bias on
// member 0 when `bias`), combined into one multi_matmul; logits = their sum,
// so every member's output is checked.
struct MatmulSetup {
  Graph g;
  Weights w;
  int64_t V = 37;
};

MatmulSetup Make(DType t, int members, int64_t rows, int64_t K, bool bias, int64_t max_tokens) {
  MatmulSetup s;
  s.g.max_tokens = max_tokens;
  ValueId tokens = s.g.AddInput("tokens", DType::kI32, {ir::kTokens});
  ValueId x = Must(s.g.AddOp(OpKind::kEmbedding, {s.g.AddWeight("embd", DType::kF32, {s.V, K}, "embd"), tokens}, "x"));
  ValueId out = -1;
  for (int i = 0; i < members; ++i) {
    const std::string wn = "w" + std::to_string(i), bn = "b" + std::to_string(i);
    std::vector<ValueId> in = {x, s.g.AddWeight(wn, t, {rows, K}, wn)};
    if (bias && i == 0) in.push_back(s.g.AddWeight(bn, DType::kF32, {rows}, bn));
    const ValueId y = Must(s.g.AddOp(OpKind::kMatMul, in, "y" + std::to_string(i)));
    out = out < 0 ? y : Must(s.g.AddOp(OpKind::kAdd, {out, y}, "sum" + std::to_string(i)));
    s.w.Add(wn, t, rows * K, 8 + static_cast<uint32_t>(i), -0.5f, 0.5f);
    s.w.Add(bn, DType::kF32, rows, 20 + static_cast<uint32_t>(i), -1, 1);
  }
  s.g.MarkOutput(Must(s.g.AddOp(OpKind::kScale, {out}, "logits", {{"scale", 1.0}})));
  s.w.Add("embd", DType::kF32, s.V * K, 7, -1, 1);
  std::vector<float> table(s.V * K);
  std::memcpy(table.data(), s.w.bytes["embd"].data(), table.size() * sizeof(float));
  EXPECT_TRUE(RoundActivationsToQ8(table.data(), s.V * K, table.data()).ok());
  std::memcpy(s.w.bytes["embd"].data(), table.data(), table.size() * sizeof(float));
  return s;
}

absl::StatusOr<std::unique_ptr<CudaExecutor>> Gpu(const MatmulSetup& s, int mmq_max_rows, int tile) {
  compiler::CompileOptions o;
  o.device = "cuda";
  o.mmq_max_rows = mmq_max_rows;
  o.mmq_tile = tile;
  absl::StatusOr<compiler::Compiled> c = compiler::CompileGraph(s.g, o);
  if (!c.ok()) return c.status();
  int mmq = 0;
  for (const dispatch::Launch& l : c->dispatch_table->launches) mmq += l.name.rfind("vb_mmq_", 0) == 0;
  if (mmq_max_rows > 0 && mmq == 0) return absl::InternalError("no vb_mmq launch in the plan");
  return CudaExecutor::Create(compiler::ToProgram(*c), s.w.Resolver());
}

std::vector<int32_t> Ids(int n, int V, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (int32_t& t : ids) t = static_cast<int32_t>(rng() % V);
  return ids;
}

double RelErr(absl::Span<const float> got, const std::vector<float>& ref) {
  double max_abs = 0, ref_max = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    max_abs = std::max(max_abs, std::fabs(double(got[i]) - ref[i]));
    ref_max = std::max(ref_max, std::fabs(double(ref[i])));
  }
  return ref_max > 0 ? max_abs / ref_max : max_abs;
}

struct TypeCase {
  DType type;
  int64_t K;  // q4_0 / q8_0: K % 64 == 32 (a half step at the end)
};

class CudaMmq : public ::testing::TestWithParam<TypeCase> {};

TEST_P(CudaMmq, MatchesCpuAndCublasLtFrom32To4096Rows) {
  SKIP_WITHOUT_GPU();
  const TypeCase tc = GetParam();
  const bool have_lt = CublasLtAvailable().ok();
  // Each tile height once, with and without bias.
  for (const auto& [tile, bias] : {std::pair<int, bool>{64, true}, std::pair<int, bool>{128, false}}) {
    {
      SCOPED_TRACE(::testing::Message() << DTypeName(tc.type) << " K=" << tc.K << " tile=" << tile
                                        << " bias=" << bias);
      // 3 members in one launch, 333 rows each (3 tiles, the last of 77).
      MatmulSetup s = Make(tc.type, 3, 333, tc.K, bias, 4096);
      auto cpu = CpuExecutor::Create(s.g, s.w.Resolver());
      ASSERT_TRUE(cpu.ok()) << cpu.status();
      auto gpu = Gpu(s, 4096, tile);
      ASSERT_TRUE(gpu.ok()) << gpu.status();
      std::unique_ptr<CudaExecutor> lt;
      if (have_lt) {
        auto l = Gpu(s, 0, 0);
        ASSERT_TRUE(l.ok()) << l.status();
        lt = *std::move(l);
      }
      const int32_t pos = 0;  // no KV cache: positions do not matter
      for (int T : {32, 33, 100, 127, 512, 1000, 4096}) {
        const std::vector<int32_t> ids = Ids(T, static_cast<int>(s.V), 40 + T);
        auto a = (*cpu)->Step(ids, pos);
        ASSERT_TRUE(a.ok()) << a.status();
        const std::vector<float> ref(a->begin(), a->end());
        const int64_t gemm_before = (*gpu)->gemm_calls();
        auto b = (*gpu)->Step(ids, pos);
        ASSERT_TRUE(b.ok()) << b.status();
        ASSERT_EQ(b->size(), ref.size());
        EXPECT_EQ((*gpu)->gemm_calls(), gemm_before) << "cuBLASLt ran";
        const double err = RelErr(*b, ref);
        double err_lt = -1;
        if (lt != nullptr) {
          const std::vector<float> mine(b->begin(), b->end());
          auto c = lt->Step(ids, pos);
          ASSERT_TRUE(c.ok()) << c.status();
          err_lt = RelErr(mine, std::vector<float>(c->begin(), c->end()));
          EXPECT_LE(err_lt, kVsCublasLtTolerance) << "T=" << T;
        }
        std::printf("[ MEASURED ] mmq %s K=%lld tile=%d bias=%d T=%d: rel err %.3g vs CPU, %.3g vs cuBLASLt\n",
                    std::string(DTypeName(tc.type)).c_str(), static_cast<long long>(tc.K), tile, bias, T, err,
                    err_lt);
        EXPECT_LE(err, kGemmTolerance) << "T=" << T;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, CudaMmq,
                         ::testing::Values(TypeCase{DType::kQ4_K, 2048}, TypeCase{DType::kQ6_K, 2048},
                                           TypeCase{DType::kQ5_K, 1024}, TypeCase{DType::kQ8_0, 2080},
                                           TypeCase{DType::kQ4_0, 1056}),
                         [](const auto& info) { return std::string(DTypeName(info.param.type)); });

// The 3B model's ffn_down shape: K = 11008 rows of q6_K (blocks only 2-byte
// aligned) and q4_K, at T = 512 with the rule's tile.
TEST(CudaMmqShapes, FfnDownOfTheThreeBModel) {
  SKIP_WITHOUT_GPU();
  for (DType t : {DType::kQ6_K, DType::kQ4_K}) {
    SCOPED_TRACE(DTypeName(t));
    MatmulSetup s = Make(t, 1, 2048, 11008, false, 512);
    auto cpu = CpuExecutor::Create(s.g, s.w.Resolver());
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    auto gpu = Gpu(s, 4096, 0);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    const std::vector<int32_t> ids = Ids(512, static_cast<int>(s.V), 5);
    auto a = (*cpu)->Step(ids, 0);
    ASSERT_TRUE(a.ok()) << a.status();
    const std::vector<float> ref(a->begin(), a->end());
    auto b = (*gpu)->Step(ids, 0);
    ASSERT_TRUE(b.ok()) << b.status();
    const double err = RelErr(*b, ref);
    std::printf("[ MEASURED ] mmq %s 2048x11008 T=512: rel err %.3g vs CPU\n", std::string(DTypeName(t)).c_str(),
                err);
    EXPECT_LE(err, kGemmTolerance);
  }
}

}  // namespace
}  // namespace vibrant
