#include "passes/assign_devices.h"

#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/graph.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/test_models.h"
#include "runtime/cpu/executor.h"

namespace vibrant::passes {
namespace {

using ::testing::HasSubstr;
using ir::Device;
using vibrant::DType;
using ir::Graph;
using ir::kTokens;
using ir::Op;
using ir::OpKind;
using ir::Storage;
using ir::ValueId;

// A fake CUDA backend implementing every op except `missing`.
std::function<bool(const Op&)> CudaAllBut(std::set<OpKind> missing) {
  return [missing](const Op& op) { return missing.count(op.kind) == 0; };
}

PassContext Ctx(DevicePolicy policy, std::function<bool(const Op&)> supports) {
  PassContext ctx;
  ctx.device = policy;
  ctx.cuda_supports = std::move(supports);
  return ctx;
}

struct Copy {
  std::string from, to;
  Device from_dev, to_dev;
};
std::vector<Copy> Copies(const Graph& g) {
  std::vector<Copy> out;
  for (const Op& op : g.ops()) {
    if (op.kind != OpKind::kCopy) continue;
    out.push_back({g.value(op.inputs[0]).name, g.value(op.outputs[0]).name, g.value(op.inputs[0]).device,
                   g.value(op.outputs[0]).device});
  }
  return out;
}

// What the pass promises, checked from the result alone: every op and value
// has a device; non-copy ops read only values on their own device and write
// values there; step inputs and graph outputs are on the CPU; each copy
// changes device, exists once per (value, device) and is read by someone (or
// is a graph output): copies only where the device changes.
void ExpectConsistentPlacement(const Graph& g) {
  ASSERT_TRUE(ir::Verify(g).ok()) << ir::Verify(g);
  std::vector<int> uses(g.values().size(), 0);
  for (const Op& op : g.ops()) {
    for (ValueId v : op.inputs) ++uses[v];
  }
  for (ValueId o : g.outputs()) ++uses[o];
  std::set<std::pair<ValueId, Device>> copied;
  for (const ir::Value& v : g.values()) {
    EXPECT_NE(v.device, Device::kUnassigned) << v.name;
    if (v.storage == Storage::kInput || v.storage == Storage::kOutput) EXPECT_EQ(v.device, Device::kCpu) << v.name;
  }
  for (const Op& op : g.ops()) {
    EXPECT_NE(op.device, Device::kUnassigned);
    if (op.kind == OpKind::kCopy) {
      const ValueId in = op.inputs[0], out = op.outputs[0];
      EXPECT_NE(g.value(in).device, g.value(out).device) << g.value(out).name;
      EXPECT_TRUE(copied.insert({in, g.value(out).device}).second) << "second copy of " << g.value(in).name;
      EXPECT_GT(uses[out], 0) << "unused copy " << g.value(out).name;
      continue;
    }
    for (ValueId v : op.inputs) {
      EXPECT_EQ(g.value(v).device, op.device) << ir::OpName(op.kind) << " reads " << g.value(v).name;
    }
    for (ValueId v : op.outputs) EXPECT_EQ(g.value(v).device, op.device) << g.value(v).name;
  }
}

// tokens -> embedding -> rms_norm -> mul(norm weight) -> matmul (tied: the
// embedding table again) -> logits.
Graph Chain() {
  Graph g;
  g.max_tokens = 4;
  const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  const ValueId embd = g.AddWeight("embd", DType::kF32, {16, 8}, "token_embd.weight");
  const ValueId norm_w = g.AddWeight("norm_w", DType::kF32, {8}, "output_norm.weight");
  const ValueId x = *g.AddOp(OpKind::kEmbedding, {embd, tokens}, "x");
  const ValueId n = *g.AddOp(OpKind::kRmsNorm, {x}, "n", {{"eps", 1e-5}});
  const ValueId m = *g.AddOp(OpKind::kMul, {n, norm_w}, "m");
  g.MarkOutput(*g.AddOp(OpKind::kMatMul, {m, embd}, "logits"));
  return g;
}

TEST(AssignDevicesTest, CpuPolicyPutsEverythingOnTheCpu) {
  Graph g = Chain();
  PassContext ctx = Ctx(DevicePolicy::kCpu, CudaAllBut({}));
  ASSERT_TRUE(AssignGraphDevices(g, ctx).ok());
  ExpectConsistentPlacement(g);
  EXPECT_TRUE(Copies(g).empty());
  EXPECT_EQ(g.ops().size(), 4u);
  for (const Op& op : g.ops()) EXPECT_EQ(op.device, Device::kCpu);
}

TEST(AssignDevicesTest, AutoWithoutCudaIsCpuAndCudaWithoutCudaIsAnError) {
  Graph g = Chain();
  PassContext ctx = Ctx(DevicePolicy::kAuto, nullptr);
  ASSERT_TRUE(AssignGraphDevices(g, ctx).ok());
  EXPECT_TRUE(Copies(g).empty());
  for (const Op& op : g.ops()) EXPECT_EQ(op.device, Device::kCpu);
  Graph h = Chain();
  PassContext cuda = Ctx(DevicePolicy::kCuda, nullptr);
  absl::Status s = AssignGraphDevices(h, cuda);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("no CUDA backend"));
}

TEST(AssignDevicesTest, CopiesExactlyWhereTheDeviceChanges) {
  Graph g = Chain();
  PassContext ctx = Ctx(DevicePolicy::kAuto, CudaAllBut({OpKind::kRmsNorm}));
  ctx.explain_devices = true;
  ASSERT_TRUE(AssignGraphDevices(g, ctx).ok());
  ExpectConsistentPlacement(g);
  // embedding (cuda) | rms_norm (cpu) | mul, matmul (cuda) | host output.
  const std::vector<Copy> c = Copies(g);
  ASSERT_EQ(c.size(), 4u) << ir::PrintGraph(g);
  EXPECT_EQ(c[0].from + ">" + c[0].to, "tokens>tokens.cuda");
  EXPECT_EQ(c[1].from + ">" + c[1].to, "x>x.cpu");
  EXPECT_EQ(c[2].from + ">" + c[2].to, "n>n.cuda");
  EXPECT_EQ(c[3].from + ">" + c[3].to, "logits.cuda>logits");
  EXPECT_EQ(g.value(g.FindValue("logits")).device, Device::kCpu);
  EXPECT_EQ(g.value(g.FindValue("embd")).device, Device::kCuda);
  EXPECT_EQ(g.value(g.FindValue("norm_w")).device, Device::kCuda);
  // Copies run on the accelerator side.
  for (const Op& op : g.ops()) {
    if (op.kind == OpKind::kCopy) EXPECT_EQ(op.device, Device::kCuda);
  }
  // One note per op (4), per copy (4), plus the header.
  ASSERT_EQ(ctx.notes.size(), 9u);
  EXPECT_EQ(ctx.notes[0], "assign-devices: policy auto, CUDA backend present");
  EXPECT_EQ(ctx.notes[1], "op 0 embedding x: cuda (the CUDA backend implements embedding)");
  EXPECT_EQ(ctx.notes[2], "op 1 rms_norm n: cpu (the CUDA backend does not implement rms_norm)");
  EXPECT_THAT(ctx.notes, ::testing::Contains("copy x -> x.cpu (cuda -> cpu) for rms_norm n"));
  EXPECT_THAT(ctx.notes, ::testing::Contains("copy logits.cuda -> logits (cuda -> cpu): graph output"));
}

TEST(AssignDevicesTest, AWeightUsedOnBothDevicesIsLoadedOnEach) {
  Graph g = Chain();
  PassContext ctx = Ctx(DevicePolicy::kAuto, CudaAllBut({OpKind::kEmbedding}));
  ASSERT_TRUE(AssignGraphDevices(g, ctx).ok());
  ExpectConsistentPlacement(g);
  const ValueId cpu_w = g.FindValue("embd"), cuda_w = g.FindValue("embd.cuda");
  ASSERT_GE(cuda_w, 0) << ir::PrintGraph(g);
  EXPECT_EQ(g.value(cpu_w).device, Device::kCpu);
  EXPECT_EQ(g.value(cuda_w).device, Device::kCuda);
  EXPECT_EQ(g.value(cuda_w).storage, Storage::kWeight);
  EXPECT_EQ(g.value(cuda_w).source, "token_embd.weight");
  // x crosses once (to cuda) and logits once (back); weights are never copied.
  const std::vector<Copy> c = Copies(g);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].from + ">" + c[0].to, "x>x.cuda");
  EXPECT_EQ(c[1].from + ">" + c[1].to, "logits.cuda>logits");
}

// On a whole model: a full-GPU graph has exactly two boundaries per step.
TEST(AssignDevicesTest, FullGpuModelHasTwoBoundaries) {
  for (auto make : {test_models::Stories260K, test_models::TinyQwen2}) {
    auto m = make();
    ASSERT_TRUE(m.ok()) << m.status();
    absl::StatusOr<Graph> g = (*m)->Lower();
    ASSERT_TRUE(g.ok()) << g.status();
    const size_t ops = g->ops().size();
    PassContext ctx = Ctx(DevicePolicy::kCuda, CudaAllBut({}));
    ASSERT_TRUE(AssignGraphDevices(*g, ctx).ok());
    ExpectConsistentPlacement(*g);
    const std::vector<Copy> c = Copies(*g);
    ASSERT_EQ(c.size(), 3u) << (*m)->name;
    EXPECT_EQ(c[0].from + ">" + c[0].to, "tokens>tokens.cuda");
    EXPECT_EQ(c[1].from + ">" + c[1].to, "positions>positions.cuda");
    EXPECT_EQ(c[2].from + ">" + c[2].to, "logits.cuda>logits");
    EXPECT_EQ(g->ops().size(), ops + 3);
    for (const ir::Value& v : g->values()) {
      if (v.storage == Storage::kWeight || v.storage == Storage::kKvCache) EXPECT_EQ(v.device, Device::kCuda);
    }
  }
}

// -ngl N: the last N layers on CUDA; the embedding, the other layers and the
// head on the CPU; one copy of the residual stream each way (and the
// positions in); a KV cache with its layer. N > n_layer: no split. A graph
// without n_layer cannot be split.
TEST(AssignDevicesTest, GpuLayersSplitsAtTheResidualStream) {
  auto m = test_models::Stories260K();  // 5 layers
  ASSERT_TRUE(m.ok()) << m.status();
  for (int64_t ngl : {0, 1, 3, 5, 6}) {
    absl::StatusOr<Graph> g = (*m)->Lower();
    ASSERT_TRUE(g.ok()) << g.status();
    PassContext ctx = Ctx(DevicePolicy::kCuda, CudaAllBut({}));
    ctx.gpu_layers = ngl;
    ctx.explain_devices = true;
    ASSERT_TRUE(AssignGraphDevices(*g, ctx).ok()) << ngl;
    ExpectConsistentPlacement(*g);
    for (const Op& op : g->ops()) {
      if (op.kind == OpKind::kCopy) continue;
      const int64_t layer = OpLayer(*g, op);
      const bool gpu = ngl > 5 || (layer >= 5 - ngl && layer >= 0 && !(op.kind == OpKind::kEmbedding));
      EXPECT_EQ(op.device, gpu ? Device::kCuda : Device::kCpu)
          << "-ngl " << ngl << ": " << ir::OpName(op.kind) << " " << g->value(op.outputs[0]).name << " (layer "
          << layer << ")";
    }
    for (const ir::Value& v : g->values()) {
      if (v.storage == Storage::kKvCache && v.producer < 0) {
        EXPECT_EQ(v.device, ngl > 5 || ValueLayer(v) >= 5 - ngl ? Device::kCuda : Device::kCpu) << v.name;
      }
    }
    std::vector<std::string> moves;
    for (const Copy& c : Copies(*g)) moves.push_back(c.from + ">" + c.to);
    if (ngl == 0) {
      EXPECT_TRUE(moves.empty()) << ::testing::PrintToString(moves);
    } else if (ngl <= 5) {
      // The stream the GPU's first layer reads: the last CPU layer's output,
      // or with every layer on the GPU the embedding's.
      const std::string in = ngl == 5 ? "inp_embd" : "l_out." + std::to_string(4 - ngl);
      std::vector<std::string> want = {"positions>positions.cuda", in + ">" + in + ".cuda", "l_out.4>l_out.4.cpu"};
      std::sort(moves.begin(), moves.end());
      std::sort(want.begin(), want.end());
      EXPECT_EQ(moves, want) << "-ngl " << ngl;
    } else {
      EXPECT_EQ(moves.size(), 3u);  // tokens and positions in, logits out: the unsplit plan
    }
    bool noted = false;
    for (const std::string& n : ctx.notes) noted |= n.find("--gpu-layers " + std::to_string(ngl)) != std::string::npos;
    EXPECT_TRUE(noted) << ngl;
  }
  absl::StatusOr<Graph> g = (*m)->Lower();
  ASSERT_TRUE(g.ok());
  g->meta.erase("n_layer");
  PassContext ctx = Ctx(DevicePolicy::kCuda, CudaAllBut({}));
  ctx.gpu_layers = 2;
  const absl::Status s = AssignGraphDevices(*g, ctx);
  EXPECT_THAT(std::string(s.message()), HasSubstr("needs the graph's layer count"));
}

// KV caches live in one place: when attention cannot run on CUDA, neither do
// the kv_stores that fill its caches.
TEST(AssignDevicesTest, OpsOfOneKvCacheShareADevice) {
  auto m = test_models::Stories260K();
  ASSERT_TRUE(m.ok()) << m.status();
  absl::StatusOr<Graph> g = (*m)->Lower();
  ASSERT_TRUE(g.ok()) << g.status();
  PassContext ctx = Ctx(DevicePolicy::kAuto, CudaAllBut({OpKind::kAttention}));
  ctx.explain_devices = true;
  ASSERT_TRUE(AssignGraphDevices(*g, ctx).ok());
  ExpectConsistentPlacement(*g);
  int stores = 0;
  for (const Op& op : g->ops()) {
    if (op.kind == OpKind::kKvStore || op.kind == OpKind::kAttention) {
      EXPECT_EQ(op.device, Device::kCpu);
      stores += op.kind == OpKind::kKvStore;
    } else if (op.kind != OpKind::kCopy) {
      EXPECT_EQ(op.device, Device::kCuda) << ir::OpName(op.kind);
    }
  }
  EXPECT_EQ(stores, 10);  // 5 layers x (K, V)
  for (const ir::Value& v : g->values()) {
    if (v.storage == Storage::kKvCache) EXPECT_EQ(v.device, Device::kCpu) << v.name;
  }
  EXPECT_THAT(ctx.notes, ::testing::Contains(HasSubstr(
                             "kv_store k_cache.0: cpu (shares KV cache cache_k.0 with attention attn.0, which runs on cpu)")));
}

std::vector<float> RunModel(const Graph& g, const test_models::TestModel& m, const std::vector<int32_t>& tokens) {
  absl::StatusOr<std::unique_ptr<CpuExecutor>> e = CpuExecutor::Create(g, m.Resolver());
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return {};
  absl::StatusOr<absl::Span<const float>> logits = (*e)->Step(tokens, 0);
  EXPECT_TRUE(logits.ok()) << logits.status();
  if (!logits.ok()) return {};
  return std::vector<float>(logits->begin(), logits->end());
}

// Copies move bytes and nothing else: the CPU backend (which runs every op,
// whatever its device) gives bit-identical logits with and without them.
TEST(AssignDevicesTest, PlacementDoesNotChangeResults) {
  auto m = test_models::TinyQwen2();
  ASSERT_TRUE(m.ok()) << m.status();
  LowerOptions opts;
  opts.all_logits = true;
  opts.max_tokens = 8;
  absl::StatusOr<Graph> plain = (*m)->Lower(opts);
  ASSERT_TRUE(plain.ok()) << plain.status();
  const std::vector<int32_t> tokens = {1, 7, 42, 3, 79};
  const std::vector<float> want = RunModel(*plain, **m, tokens);
  ASSERT_EQ(want.size(), tokens.size() * 80);
  for (std::set<OpKind> missing : std::vector<std::set<OpKind>>{{}, {OpKind::kRope}, {OpKind::kEmbedding, OpKind::kMul}}) {
    Graph g = *plain;
    PassContext ctx = Ctx(DevicePolicy::kAuto, CudaAllBut(missing));
    ASSERT_TRUE(AssignGraphDevices(g, ctx).ok());
    ExpectConsistentPlacement(g);
    const std::vector<float> got = RunModel(g, **m, tokens);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0);
  }
}

}  // namespace
}  // namespace vibrant::passes
