#include "passes/append_sample.h"

#include <sstream>
#include <string>

#include "codegen/cuda_target.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/memory_check.h"
#include "passes/pass.h"
#include "passes/test_models.h"

namespace vibrant::passes {
namespace {

using ::testing::HasSubstr;
using ir::Device;
using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Storage;
using ir::ValueId;

Graph TinyQwen2Graph(int64_t max_tokens = 16) {
  auto m = test_models::TinyQwen2();
  EXPECT_TRUE(m.ok()) << m.status();
  LowerOptions lo;
  lo.max_tokens = max_tokens;
  lo.n_ctx = 64;
  absl::StatusOr<Graph> g = (*m)->Lower(lo);
  EXPECT_TRUE(g.ok()) << g.status();
  return *std::move(g);
}

const Op* FindOp(const Graph& g, OpKind kind) {
  for (const Op& op : g.ops()) {
    if (op.kind == kind) return &op;
  }
  return nullptr;
}

TEST(AppendSampleTest, AddsTheOpItsInputAndItsOutputAndKeepsTheLogits) {
  Graph g = TinyQwen2Graph();
  const size_t ops = g.ops().size();
  ASSERT_TRUE(AppendSampleOp(g, /*required=*/true).ok());
  ASSERT_TRUE(ir::Verify(g).ok()) << ir::Verify(g);
  ASSERT_EQ(g.ops().size(), ops + 1);
  const Op& op = g.ops().back();
  EXPECT_EQ(op.kind, OpKind::kSample);
  const ValueId logits = g.FindValue("logits"), params = g.FindValue("sampling"), token = g.FindValue("token");
  ASSERT_GE(logits, 0);
  ASSERT_GE(params, 0);
  ASSERT_GE(token, 0);
  EXPECT_EQ(op.inputs, (std::vector<ValueId>{logits, params}));
  EXPECT_EQ(g.value(params).storage, Storage::kInput);
  EXPECT_EQ(g.value(params).shape, ir::Shape{8});
  EXPECT_EQ(g.value(token).storage, Storage::kOutput);
  EXPECT_EQ(g.outputs(), (std::vector<ValueId>{logits, token}));
  EXPECT_EQ(*ir::FindLogitsOutput(g), logits);
  // The IR text round-trips with the new op.
  absl::StatusOr<Graph> back = ir::ParseGraph(ir::PrintGraph(g));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(ir::PrintGraph(*back), ir::PrintGraph(g));
}

TEST(AppendSampleTest, LeavesAGraphItCannotSampleUnlessRequired) {
  Graph g;
  g.max_tokens = 4;
  const ValueId x = g.AddInput("tokens", DType::kI32, {ir::kTokens});
  const ValueId w = g.AddWeight("w", DType::kF32, {8, 4}, "w");
  absl::StatusOr<ValueId> e = g.AddOp(OpKind::kEmbedding, {w, x}, "out");
  ASSERT_TRUE(e.ok());
  g.MarkOutput(*e);  // f32[T, 4]: rows of logits, so it can be sampled
  Graph vec = g;
  // A rank-3 output is not a row of logits.
  absl::StatusOr<ValueId> r = vec.AddOp(OpKind::kReshape, {*e}, "out3", {{"shape", std::vector<int64_t>{ir::kTokens, 2, 2}}});
  ASSERT_TRUE(r.ok()) << r.status();
  vec.mutable_outputs() = {};
  vec.MarkOutput(*r);
  const std::string before = ir::PrintGraph(vec);
  EXPECT_TRUE(AppendSampleOp(vec, /*required=*/false).ok());
  EXPECT_EQ(ir::PrintGraph(vec), before);
  EXPECT_THAT(std::string(AppendSampleOp(vec, /*required=*/true).message()), HasSubstr("not [rows, n_vocab]"));
  // Sampling twice is a no-op (and an error when required).
  ASSERT_TRUE(AppendSampleOp(g, true).ok());
  const std::string once = ir::PrintGraph(g);
  EXPECT_TRUE(AppendSampleOp(g, false).ok());
  EXPECT_EQ(ir::PrintGraph(g), once);
  EXPECT_FALSE(AppendSampleOp(g, true).ok());
}

TEST(AppendSampleTest, OnlyInThePipelineWhenAsked) {
  std::vector<std::string> names;
  const Pipeline plain = DefaultPipeline();
  for (const Pass& p : plain.passes()) names.push_back(p.name);
  EXPECT_EQ(std::count(names.begin(), names.end(), "append-sample"), 0);
  PipelineConfig c;
  c.append_sample = true;
  const Pipeline p = DefaultPipeline(c);
  EXPECT_EQ(p.passes().front().name, "append-sample");
  EXPECT_TRUE(p.passes().front().optional);
}

// A cuda pipeline: the op runs on the GPU next to the logits, its I/O are the
// step's transfers, and its kernels are listed.
TEST(AppendSampleTest, CudaPlanSamplesOnTheGpu) {
  Graph g = TinyQwen2Graph();
  PassContext ctx;
  ctx.device = DevicePolicy::kCuda;
  ctx.cuda_supports = [](const Op&) { return true; };
  const codegen::CudaTarget target;
  ctx.cuda_kernels = &target;
  PipelineConfig c;
  c.append_sample = true;
  c.sample_required = true;
  std::ostringstream log;
  ASSERT_TRUE(DefaultPipeline(c).Run(g, ctx, PipelineOptions(), log).ok());
  const Op* sample = FindOp(g, OpKind::kSample);
  ASSERT_NE(sample, nullptr);
  EXPECT_EQ(sample->device, Device::kCuda);
  EXPECT_EQ(g.value(sample->inputs[0]).name, "logits.cuda");
  EXPECT_EQ(g.value(sample->inputs[1]).name, "sampling.cuda");
  ASSERT_EQ(sample->kernels.size(), 1u);
  EXPECT_EQ(sample->kernels[0].name, "sample");
  EXPECT_EQ(sample->kernels[0].launches, (std::vector<std::string>{"vb_sample_gather", "vb_sample_pick"}));
  int io = 0;
  for (const Op& op : g.ops()) {
    if (op.kind != OpKind::kCopy) continue;
    const std::string& from = g.value(op.inputs[0]).name;
    if (from == "sampling" || from == "token.cuda") {
      ++io;
      EXPECT_EQ(op.kernels[0].name, "io") << from;
    }
  }
  EXPECT_EQ(io, 2);
  EXPECT_TRUE(CheckMemoryPlan(g).ok()) << CheckMemoryPlan(g);
  // The dispatch table names the parameter and token buffers.
  absl::StatusOr<dispatch::Table> t = codegen::LowerDispatch(g, codegen::CudaTargetOptions());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->sampling.region, dispatch::Region::kArena);
  EXPECT_EQ(t->token.region, dispatch::Region::kArena);
  EXPECT_EQ(t->sampling.offset.Eval(1), g.value(g.FindValue("sampling.cuda")).arena_offset);
  EXPECT_EQ(t->token.offset.Eval(1), g.value(g.FindValue("token.cuda")).arena_offset);
  int gather = 0, pick = 0;
  for (const dispatch::Launch* l : dispatch::LaunchesFor(*t, 1)) {
    gather += l->name == "vb_sample_gather";
    pick += l->name == "vb_sample_pick";
  }
  EXPECT_EQ(gather, 1);
  EXPECT_EQ(pick, 1);
}

// The runtime writes every step input before the first launch and reads the
// outputs after the last, while each one's `copy` op sits where it is first
// needed (late for positions and the sampling parameters): the device side
// of an input must keep its bytes from the start of the step to its last
// reader, that of an output from its producer to the end.
TEST(AppendSampleTest, StepTransfersKeepTheirBytes) {
  Graph g = TinyQwen2Graph(64);
  PassContext ctx;
  ctx.device = DevicePolicy::kCuda;
  ctx.cuda_supports = [](const Op&) { return true; };
  const codegen::CudaTarget target;
  ctx.cuda_kernels = &target;
  PipelineConfig c;
  c.append_sample = true;
  std::ostringstream log;
  ASSERT_TRUE(DefaultPipeline(c).Run(g, ctx, PipelineOptions(), log).ok());
  const int nops = static_cast<int>(g.ops().size());
  auto bytes = [&](ValueId v) { return *DTypeBytes(g.value(v).dtype, ir::NumElements(g.value(v).shape, g.max_tokens)); };
  // The op range in which each arena value (or a view of it) is used.
  std::vector<int> first(g.values().size(), -1), last(g.values().size(), -1);
  std::vector<ValueId> root(g.values().size());
  for (ValueId v = 0; v < static_cast<ValueId>(g.values().size()); ++v) {
    root[v] = v;
    first[v] = last[v] = g.value(v).producer;
  }
  for (int i = 0; i < nops; ++i) {
    const Op& op = g.ops()[i];
    if (op.kind == OpKind::kReshape) root[op.outputs[0]] = root[op.inputs[0]];
    for (ValueId in : op.inputs) last[root[in]] = std::max(last[root[in]], i);
  }
  int checked = 0;
  for (const char* name : {"tokens.cuda", "positions.cuda", "sampling.cuda", "token.cuda", "logits.cuda"}) {
    const ValueId io = g.FindValue(name);
    ASSERT_GE(io, 0) << name;
    const bool input_side = g.value(g.ops()[g.value(io).producer].inputs[0]).storage == Storage::kInput;
    // [from, to]: the ops during which the runtime relies on its bytes.
    const int from = input_side ? -1 : g.value(io).producer;
    const int to = input_side ? last[io] : nops;
    const int64_t a0 = g.value(io).arena_offset, a1 = a0 + bytes(io);
    for (ValueId v = 0; v < static_cast<ValueId>(g.values().size()); ++v) {
      const ir::Value& val = g.value(v);
      if (root[v] != v || v == io || val.device != Device::kCuda || val.arena_offset < 0) continue;
      if (val.storage != Storage::kActivation) continue;
      const int64_t b0 = val.arena_offset, b1 = b0 + bytes(v);
      if (a1 <= b0 || b1 <= a0) continue;
      // Sharing bytes is fine only outside [from, to].
      EXPECT_TRUE(last[v] < from || val.producer > to)
          << name << " [" << a0 << ", " << a1 << ") needed during ops " << from << ".." << to << " shares bytes with "
          << val.name << " [" << b0 << ", " << b1 << "), made at op " << val.producer << ", last read at op " << last[v];
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);  // some bytes are shared (tokens.cuda's after the embedding), legitimately
}

}  // namespace
}  // namespace vibrant::passes
