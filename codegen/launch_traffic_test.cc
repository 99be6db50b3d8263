#include "codegen/launch_traffic.h"

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "codegen/cuda_target.h"
#include "gtest/gtest.h"
#include "passes/pass.h"
#include "passes/test_models.h"

namespace vibrant::codegen {
namespace {

// tiny-qwen2 (2 layers, f32 weights, tied embeddings, 2 KV heads of 16,
// vocab 80) compiled for the GPU with its sampler, n_ctx 256.
struct Plan {
  ir::Graph g;
  dispatch::Table t;
  int64_t weight_file_bytes = 0;  // every tensor of the GGUF once
  int64_t embd_row_bytes = 0;
};

Plan Compile(int decode_blocks_per_sm = 0) {
  Plan p;
  auto m = passes::test_models::TinyQwen2();
  EXPECT_TRUE(m.ok()) << m.status();
  LowerOptions lo;
  lo.max_tokens = 64;
  lo.n_ctx = 256;
  absl::StatusOr<ir::Graph> g = (*m)->Lower(lo);
  EXPECT_TRUE(g.ok()) << g.status();
  passes::PassContext ctx;
  ctx.device = passes::DevicePolicy::kCuda;
  ctx.cuda_supports = [](const ir::Op&) { return true; };
  const CudaTarget target;
  ctx.cuda_kernels = &target;
  ctx.decode_blocks_per_sm = decode_blocks_per_sm;
  passes::PipelineConfig c;
  c.append_sample = true;
  std::ostringstream log;
  EXPECT_TRUE(passes::DefaultPipeline(c).Run(*g, ctx, passes::PipelineOptions(), log).ok());
  absl::StatusOr<dispatch::Table> t = LowerDispatch(*g, CudaTargetOptions());
  EXPECT_TRUE(t.ok()) << t.status();
  p.g = *std::move(g);
  p.t = *std::move(t);
  for (const GgufTensorInfo& ti : (*m)->file->tensors()) {
    p.weight_file_bytes += static_cast<int64_t>(ti.bytes);
    if (ti.name == "token_embd.weight") p.embd_row_bytes = static_cast<int64_t>(ti.bytes) / ti.dims[1];
  }
  return p;
}

// Decode at depth p: every weight once (the tied embedding table in full for
// the output projection, plus the one row the embedding reads), K and V rows
// 0..p read and row p written in each of the 2 layers.
TEST(LaunchTraffic, DecodeReadsEveryWeightOnceAndTheKvRowsInUse) {
  Plan p = Compile();
  const int64_t kv_row = 2 * 16 * 2;  // KVH * hd f16
  for (int64_t depth : {int64_t{0}, int64_t{100}, int64_t{255}}) {
    TrafficOptions o;
    o.pos0 = depth;
    const std::vector<LaunchBytes> b = StepTraffic(p.g, p.t, 1, o);
    ASSERT_EQ(b.size(), dispatch::LaunchesFor(p.t, 1).size());
    LaunchBytes sum;
    for (const LaunchBytes& x : b) {
      EXPECT_GE(x.weights, 0);
      EXPECT_GE(x.kv, 0);
      EXPECT_GE(x.activations, 0);
      EXPECT_GE(x.scratch, 0);
      sum.weights += x.weights;
      sum.kv += x.kv;
      sum.activations += x.activations;
      sum.scratch += x.scratch;
    }
    EXPECT_EQ(sum.weights, p.weight_file_bytes + p.embd_row_bytes) << "depth " << depth;
    EXPECT_EQ(sum.kv, 2 /*layers*/ * 2 /*K, V*/ * ((depth + 1) + 1) * kv_row) << "depth " << depth;
    EXPECT_GT(sum.activations, 0);
    EXPECT_GT(sum.scratch, 0);  // attention partials, the sampler's maxima
  }
}

TEST(LaunchTraffic, PrefillScalesWithTokensAndTheSamplerWithItsKeys) {
  Plan p = Compile();
  auto total = [&](int64_t T, TrafficOptions o) {
    LaunchBytes s;
    for (const LaunchBytes& x : StepTraffic(p.g, p.t, T, o)) {
      s.weights += x.weights;
      s.kv += x.kv;
      s.activations += x.activations;
      s.scratch += x.scratch;
    }
    return s;
  };
  const LaunchBytes t1 = total(1, {}), t8 = total(8, {});
  EXPECT_GT(t8.activations, 4 * t1.activations);
  // 8 tokens from position 0: rows 0..7 read, 8 written, per K and V and layer.
  EXPECT_EQ(t8.kv, 2 * 2 * (8 + 8) * (2 * 16 * 2));
  // A non-greedy draw moves the gathered keys too.
  std::map<std::string, int64_t> greedy, topk;
  TrafficOptions o;
  const auto launches = dispatch::LaunchesFor(p.t, 1);
  const std::vector<LaunchBytes> a = StepTraffic(p.g, p.t, 1, o);
  o.greedy_sample = false;
  o.sample_top_k = 40;
  const std::vector<LaunchBytes> b = StepTraffic(p.g, p.t, 1, o);
  for (size_t i = 0; i < launches.size(); ++i) {
    greedy[launches[i]->name] += a[i].scratch;
    topk[launches[i]->name] += b[i].scratch;
  }
  EXPECT_EQ(greedy["vb_sample_gather"], 16);  // one gather block for 80 logits: max and count
  EXPECT_EQ(topk["vb_sample_gather"], 8 * (2 + 40));
}

// With --decode-schedule persistent a decode step is one persistent kernel,
// with the sample op's two launches after it; the kernel moves what its
// tasks' op-by-op launches move, so both views of a step sum to the same bytes.
TEST(LaunchTraffic, APersistentKernelMovesWhatItsTasksMove) {
  Plan p = Compile(/*decode_blocks_per_sm=*/2);
  std::vector<std::string> names;
  for (const dispatch::Launch* l : dispatch::LaunchesFor(p.t, 1)) names.push_back(l->name);
  ASSERT_EQ(names.size(), 3u);
  EXPECT_EQ(names[0], "vb_decode_step");
  EXPECT_EQ(names[1], "vb_sample_gather");
  EXPECT_EQ(names[2], "vb_sample_pick");
  const std::vector<const dispatch::Launch*> per_op = dispatch::LaunchesFor(p.t, 1, /*per_op=*/true);
  EXPECT_GT(per_op.size(), 10u);
  for (int64_t depth : {int64_t{0}, int64_t{200}}) {
    TrafficOptions o;
    o.pos0 = depth;
    const std::vector<LaunchBytes> plain = StepTraffic(p.g, p.t, 1, o);
    o.per_op = true;
    const std::vector<LaunchBytes> ops = StepTraffic(p.g, p.t, 1, o);
    ASSERT_EQ(plain.size(), 3u);
    ASSERT_EQ(ops.size(), per_op.size());
    LaunchBytes a, b;
    for (const LaunchBytes& x : plain) a.weights += x.weights, a.kv += x.kv, a.activations += x.activations;
    for (const LaunchBytes& x : ops) b.weights += x.weights, b.kv += x.kv, b.activations += x.activations;
    EXPECT_EQ(a.weights, p.weight_file_bytes + p.embd_row_bytes);
    EXPECT_EQ(a.weights, b.weights);
    EXPECT_EQ(a.kv, b.kv);
    EXPECT_EQ(a.activations, b.activations);
    // The sample launches are the last two of both views.
    EXPECT_EQ(plain[1].total(), ops[ops.size() - 2].total());
    EXPECT_EQ(plain[2].total(), ops.back().total());
    EXPECT_EQ(plain[1].weights + plain[2].weights, 0);
  }
}

}  // namespace
}  // namespace vibrant::codegen
