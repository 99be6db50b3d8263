// combine-matmuls, quantize-activations and select-kernels on hand-built
// graphs with a stand-in kernel target: what each rewrite makes, that the
// result verifies, and that it computes what the graph computed before (on
// the CPU reference: bit for bit, or, with 8-bit activations, exactly the
// matmul of RoundActivationsToQ8(x)).
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/graph.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/combine_matmuls.h"
#include "passes/fuse_elementwise.h"
#include "passes/quantize_activations.h"
#include "passes/select_kernels.h"
#include "runtime/cpu/executor.h"
#include "runtime/cpu/quantize.h"

namespace vibrant::passes {
namespace {

using ir::Graph;
using ir::kTokens;
using ir::OpKind;
using ir::ValueId;
using ::testing::HasSubstr;

// A target on the cuda device: q8 mat-vecs for q8_0 and q4_0 weights; one
// variant per op ("k.<op>" -> "vb_<op>"); fused ops refused when `no_fused`.
class FakeTarget : public KernelTarget {
 public:
  bool no_fused = false;
  ir::Device device() const override { return ir::Device::kCuda; }
  bool MatvecQ8Supports(DType t) const override { return t == DType::kQ8_0 || t == DType::kQ4_0; }
  absl::StatusOr<std::vector<ir::KernelVariant>> SelectKernels(const Graph& g, int index) const override {
    const ir::Op& op = g.ops()[index];
    if (op.kind == OpKind::kFused && no_fused) return absl::UnimplementedError("no generator here");
    const std::string name(ir::OpName(op.kind));
    return std::vector<ir::KernelVariant>{{1, g.max_tokens, "k." + name, {}, {"vb_" + name}}};
  }
};

struct Weights {
  std::map<std::string, std::vector<uint8_t>> bytes;
  void Add(const std::string& name, DType t, int64_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1, 1);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    std::vector<uint8_t> b(*DTypeBytes(t, n));
    ASSERT_TRUE(Quantize(t, v.data(), n, b.data()).ok());
    bytes[name] = std::move(b);
  }
  WeightResolver Resolver() const {
    return [this](const std::string& s) -> absl::StatusOr<absl::Span<const uint8_t>> {
      auto it = bytes.find(s);
      if (it == bytes.end()) return absl::NotFoundError(s);
      return absl::Span<const uint8_t>(it->second);
    };
  }
};

ValueId Must(absl::StatusOr<ValueId> v) {
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : -1;
}

// x = embedding(tokens); q, k (q8_0), v (q4_0) and u (q8_0, with a bias
// weight) read x; logits = q + k + v + u.
Graph QkvGraph(Weights* w) {
  const int64_t K = 64, V = 11;
  Graph g;
  g.max_tokens = 8;
  ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId x = Must(g.AddOp(OpKind::kEmbedding, {g.AddWeight("e", DType::kF32, {V, K}, "e"), tokens}, "x"));
  ValueId q = Must(g.AddOp(OpKind::kMatMul, {x, g.AddWeight("wq", DType::kQ8_0, {K, K}, "wq")}, "q"));
  ValueId k = Must(g.AddOp(OpKind::kMatMul, {x, g.AddWeight("wk", DType::kQ8_0, {K, K}, "wk")}, "k"));
  ValueId v = Must(g.AddOp(OpKind::kMatMul, {x, g.AddWeight("wv", DType::kQ4_0, {K, K}, "wv")}, "v"));
  ValueId bq = Must(g.AddOp(OpKind::kAdd, {q, k}, "qk"));
  ValueId u = Must(g.AddOp(OpKind::kMatMul, {x, g.AddWeight("wu", DType::kQ8_0, {K, K}, "wu"), g.AddWeight("bu", DType::kF32, {K}, "bu")}, "u"));
  ValueId s = Must(g.AddOp(OpKind::kAdd, {bq, v}, "s"));
  ValueId y = Must(g.AddOp(OpKind::kAdd, {s, u}, "logits"));
  g.MarkOutput(y);
  for (ir::Op& op : g.mutable_ops()) op.device = ir::Device::kCuda;
  for (ir::Value& val : g.mutable_values()) {
    if (val.storage != ir::Storage::kInput) val.device = ir::Device::kCuda;
  }
  w->Add("e", DType::kF32, V * K, 1);
  for (const char* n : {"wq", "wk", "wu"}) w->Add(n, DType::kQ8_0, K * K, n[1]);
  w->Add("wv", DType::kQ4_0, K * K, 5);
  w->Add("bu", DType::kF32, K, 6);
  return g;
}

std::vector<float> RunCpu(const Graph& g, const Weights& w, const std::vector<int32_t>& ids) {
  auto e = CpuExecutor::Create(g, w.Resolver());
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return {};
  auto out = (*e)->Step(ids, 0);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? std::vector<float>(out->begin(), out->end()) : std::vector<float>{};
}

TEST(CombineMatmulsTest, GroupsMatmulsOfOneInputAndTypeOnly) {
  Weights w;
  Graph g = QkvGraph(&w);
  const std::vector<float> before = RunCpu(g, w, {1, 2, 3});
  Graph c = g;
  absl::StatusOr<int> n = CombineMatmulsOn(c, ir::Device::kCuda);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_TRUE(ir::Verify(c).ok()) << ir::Verify(c) << ir::PrintGraph(c);
  // q, k and u (q8_0) combine, u with its bias; v (q4_0) stays.
  EXPECT_EQ(*n, 1);
  int multi = 0, single = 0;
  for (const ir::Op& op : c.ops()) {
    if (op.kind == OpKind::kMultiMatMul) {
      ++multi;
      EXPECT_EQ(op.outputs.size(), 3u);  // q, k, u
      EXPECT_EQ(std::get<std::vector<int64_t>>(op.attrs.at("bias")), (std::vector<int64_t>{0, 0, 1}));
    }
    single += op.kind == OpKind::kMatMul;
  }
  EXPECT_EQ(multi, 1);
  EXPECT_EQ(single, 1);  // v
  // The same values, bit for bit (each member is the same row dot product).
  const std::vector<float> after = RunCpu(c, w, {1, 2, 3});
  ASSERT_EQ(before.size(), after.size());
  EXPECT_EQ(0, std::memcmp(before.data(), after.data(), before.size() * sizeof(float)));
  // cpu ops are left alone.
  Graph cpu = g;
  for (ir::Op& op : cpu.mutable_ops()) op.device = ir::Device::kCpu;
  EXPECT_EQ(*CombineMatmulsOn(cpu, ir::Device::kCuda), 0);
}

TEST(CombineMatmulsTest, AComputedBiasLaterThanTheGroupKeepsItsMatmul) {
  const int64_t K = 32;
  Graph g;
  g.max_tokens = 4;
  ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId x = Must(g.AddOp(OpKind::kEmbedding, {g.AddWeight("e", DType::kF32, {5, K}, "e"), tokens}, "x"));
  ValueId l = Must(g.AddOp(OpKind::kLastRow, {x}, "l"));
  ValueId a = Must(g.AddOp(OpKind::kMatMul, {l, g.AddWeight("wa", DType::kF32, {K, K}, "wa")}, "a"));
  ValueId a1 = Must(g.AddOp(OpKind::kReshape, {a}, "a1", {{"shape", std::vector<int64_t>{K}}}));
  // b's bias is a's output: b cannot move before a.
  ValueId b = Must(g.AddOp(OpKind::kMatMul, {l, g.AddWeight("wb", DType::kF32, {K, K}, "wb"), a1}, "logits"));
  g.MarkOutput(b);
  for (ir::Op& op : g.mutable_ops()) op.device = ir::Device::kCuda;
  absl::StatusOr<int> n = CombineMatmulsOn(g, ir::Device::kCuda);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0);
  EXPECT_TRUE(ir::Verify(g).ok()) << ir::Verify(g);
}

TEST(QuantizeActivationsTest, OneRoundingPerInputSharedByItsQ8Readers) {
  Weights w;
  Graph g = QkvGraph(&w);
  FakeTarget target;
  Graph q = g;
  absl::StatusOr<int> n = QuantizeActivationsFor(q, target);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_TRUE(ir::Verify(q).ok()) << ir::Verify(q) << ir::PrintGraph(q);
  EXPECT_EQ(*n, 1);  // x, once, for q, k, v (q4_0 too) and u
  const ValueId xq = q.FindValue("x.q8");
  ASSERT_GE(xq, 0);
  EXPECT_EQ(q.value(xq).dtype, DType::kQ8A);
  int readers = 0;
  for (const ir::Op& op : q.ops()) readers += op.kind == OpKind::kMatMul && op.inputs[0] == xq;
  EXPECT_EQ(readers, 4);
  // The CPU runs the quantized graph as matmul(RoundActivationsToQ8(x), w):
  // the same logits as the original graph over a pre-rounded table.
  Weights wr = w;
  std::vector<float> table(wr.bytes["e"].size() / 4);
  std::memcpy(table.data(), wr.bytes["e"].data(), wr.bytes["e"].size());
  ASSERT_TRUE(RoundActivationsToQ8(table.data(), static_cast<int64_t>(table.size()), table.data()).ok());
  std::memcpy(wr.bytes["e"].data(), table.data(), wr.bytes["e"].size());
  const std::vector<float> want = RunCpu(g, wr, {4, 0, 9});
  const std::vector<float> got = RunCpu(q, w, {4, 0, 9});
  ASSERT_EQ(want.size(), got.size());
  EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)));
  // And differs from the float graph (the rounding is real).
  EXPECT_NE(RunCpu(g, w, {4, 0, 9}), got);
}

TEST(SelectKernelsTest, RecordsVariantsAndInlinesBodiesTheTargetRefuses) {
  const int64_t D = 64;
  Graph g;
  g.max_tokens = 4;
  ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId x = Must(g.AddOp(OpKind::kEmbedding, {g.AddWeight("e", DType::kF32, {7, D}, "e"), tokens}, "x"));
  ValueId n = Must(g.AddOp(OpKind::kRmsNorm, {x}, "n", {{"eps", 1e-5}}));
  ValueId y = Must(g.AddOp(OpKind::kMul, {n, g.AddWeight("s", DType::kF32, {D}, "s")}, "logits"));
  g.MarkOutput(y);
  for (ir::Op& op : g.mutable_ops()) op.device = ir::Device::kCuda;
  Weights w;
  w.Add("e", DType::kF32, 7 * D, 1);
  w.Add("s", DType::kF32, D, 2);
  const std::vector<float> before = RunCpu(g, w, {1, 6});
  ASSERT_TRUE(FuseElementwiseGraph(g, nullptr).ok());
  ASSERT_EQ(g.ops().size(), 2u);  // embedding, fused
  FakeTarget target;
  target.no_fused = true;
  std::vector<std::string> notes;
  ASSERT_TRUE(SelectKernelsFor(g, target, &notes).ok());
  ASSERT_TRUE(ir::Verify(g).ok()) << ir::Verify(g) << ir::PrintGraph(g);
  // The body's two ops are graph ops again, each with its variant.
  ASSERT_EQ(g.ops().size(), 3u);
  EXPECT_EQ(g.ops()[1].kind, OpKind::kRmsNorm);
  EXPECT_EQ(g.ops()[2].kind, OpKind::kMul);
  for (const ir::Op& op : g.ops()) {
    ASSERT_EQ(op.kernels.size(), 1u);
    EXPECT_EQ(op.kernels[0].launches, std::vector<std::string>{"vb_" + std::string(ir::OpName(op.kind))});
  }
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_THAT(notes[0], HasSubstr("runs op by op: no generator here"));
  EXPECT_THAT(ir::PrintGraph(g), HasSubstr("kernels[T=1..4: k.rms_norm -> vb_rms_norm]"));
  const std::vector<float> after = RunCpu(g, w, {1, 6});
  EXPECT_EQ(0, std::memcmp(before.data(), after.data(), before.size() * sizeof(float)));
}

}  // namespace
}  // namespace vibrant::passes
