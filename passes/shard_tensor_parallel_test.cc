#include "passes/shard_tensor_parallel.h"

#include <string>
#include <vector>

#include "frontends/lower/lower.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/test_models.h"

namespace vibrant::passes {
namespace {

using ::testing::HasSubstr;

ir::Graph Lower(const TransformerSpec& spec, LowerOptions lo = {}) {
  if (lo.n_ctx == 0) lo.n_ctx = 1024;
  absl::StatusOr<ir::Graph> g = LowerShapes(ShapesFromSpec(spec), lo);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *std::move(g) : ir::Graph();
}

int Count(const ir::Graph& g, ir::OpKind k) {
  int n = 0;
  for (const ir::Op& op : g.ops()) n += op.kind == k;
  return n;
}

const ir::Value& V(const ir::Graph& g, const std::string& name) {
  const ir::ValueId v = g.FindValue(name);
  EXPECT_GE(v, 0) << name;
  return g.value(v >= 0 ? v : 0);
}

// Llama-3.1-8B's shapes (32 layers cut to 2): d 4096, 32 heads / 8 KV heads
// of 128, FFN 14336, vocab 128256, q4_K matrices.
TransformerSpec Llama8B() {
  TransformerSpec s;
  s.name = "llama-8b-shapes";
  s.arch = "llama";
  s.n_layer = 2;
  s.n_embd = 4096;
  s.n_head = 32;
  s.n_head_kv = 8;
  s.n_ff = 14336;
  s.n_vocab = 128256;
  s.matrix_type = DType::kQ4_K;
  return s;
}

TEST(ShardTensorParallel, MegatronSplitOfALlamaAtFourRanks) {
  ir::Graph g = Lower(Llama8B());
  PassContext ctx;
  ASSERT_TRUE(ShardTensorParallelGraph(g, 4, ctx).ok());
  ASSERT_TRUE(ir::Verify(g).ok()) << ir::Verify(g);
  EXPECT_EQ(ir::TpRanks(g), 4);
  EXPECT_TRUE(ctx.notes.empty()) << ctx.notes[0];
  // Attention output and FFN down of each layer meet in an all_reduce; the
  // logits in one all_gather.
  EXPECT_EQ(Count(g, ir::OpKind::kAllReduce), 2 * 2);
  EXPECT_EQ(Count(g, ir::OpKind::kAllGather), 1);
  // Column-parallel q: 8 of the 32 heads per rank, whole rows.
  const ir::Value& q = V(g, "blk.0.attn_q.weight.tp");
  EXPECT_EQ(q.shape, (ir::Shape{1024, 4096}));
  EXPECT_EQ(q.rank_offsets, (std::vector<int64_t>{0, 1024 * 4096, 2 * 1024 * 4096, 3 * 1024 * 4096}));
  EXPECT_EQ(q.source_row_stride, 0);
  // 2 of the 8 KV heads per rank, and the caches hold them.
  EXPECT_EQ(V(g, "blk.0.attn_k.weight.tp").shape, (ir::Shape{256, 4096}));
  EXPECT_EQ(V(g, "cache_k.0").shape, (ir::Shape{1024, 2, 128}));
  EXPECT_EQ(V(g, "cache_v.1").shape, (ir::Shape{1024, 2, 128}));
  // Row-parallel down: every row's 3584 columns of the rank (14 q4_K blocks).
  const ir::Value& down = V(g, "blk.1.ffn_down.weight.tp");
  EXPECT_EQ(down.shape, (ir::Shape{4096, 3584}));
  EXPECT_EQ(down.source_row_stride, 14336);
  EXPECT_EQ(down.rank_offsets, (std::vector<int64_t>{0, 3584, 7168, 10752}));
  // Vocab-parallel output.
  EXPECT_EQ(V(g, "output.weight.tp").shape, (ir::Shape{128256 / 4, 4096}));
  // The replicated whole weights it replaced are gone.
  EXPECT_LT(g.FindValue("blk.0.attn_q.weight"), 0);
  // The text format carries the shards (and parses back to the same graph).
  const std::string text = ir::PrintGraph(g);
  EXPECT_THAT(text, HasSubstr("gguf(\"blk.1.ffn_down.weight\", ranks=[0, 3584, 7168, 10752], row_stride=14336)"));
  EXPECT_THAT(text, HasSubstr("all_reduce(%ffn_out.1.partial) {ranks=4}"));
  absl::StatusOr<ir::Graph> parsed = ir::ParseGraph(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(ir::PrintGraph(*parsed), text);
}

TEST(ShardTensorParallel, MoreRanksThanKvHeadsReplicateEachKvHead) {
  // Qwen2.5-3B: 16 heads, 2 KV heads. At 4 ranks each KV head serves the two
  // ranks whose 4 query heads read it.
  ir::Graph g = Lower(test_models::Qwen25_3BSpec());
  PassContext ctx;
  ASSERT_TRUE(ShardTensorParallelGraph(g, 4, ctx).ok());
  ASSERT_TRUE(ir::Verify(g).ok()) << ir::Verify(g);
  const ir::Value& k = V(g, "blk.0.attn_k.weight.tp");
  EXPECT_EQ(k.shape, (ir::Shape{128, 2048}));
  EXPECT_EQ(k.rank_offsets, (std::vector<int64_t>{0, 0, 128 * 2048, 128 * 2048}));
  const ir::Value& kb = V(g, "blk.0.attn_k.bias.tp");
  EXPECT_EQ(kb.rank_offsets, (std::vector<int64_t>{0, 0, 128, 128}));
  EXPECT_EQ(V(g, "cache_k.0").shape[1], 1);
  EXPECT_EQ(V(g, "blk.0.attn_q.weight.tp").shape, (ir::Shape{512, 2048}));
  // FFN 11008 = 43 q4_K blocks per row: the down projection cannot split into
  // whole blocks, so its input is gathered and it runs replicated (said in a
  // note); the attention output (2048 = 4 x 2 blocks) is row-parallel.
  EXPECT_EQ(Count(g, ir::OpKind::kAllReduce), 36);
  EXPECT_THAT(ctx.notes.at(0), HasSubstr("blk.0.ffn_down.weight: 11008 columns of q4_K"));
  EXPECT_EQ(V(g, "ffn_act.0.all").shape, (ir::Shape{ir::kTokens, 11008}));
  EXPECT_EQ(V(g, "blk.0.ffn_down.weight").shape, (ir::Shape{2048, 11008}));
}

TEST(ShardTensorParallel, HeadsThatDoNotSplitKeepAttentionReplicated) {
  TransformerSpec s = test_models::TinyQwen2Spec();  // 4 heads, 2 KV heads
  ir::Graph g = Lower(s);
  PassContext ctx;
  ASSERT_TRUE(ShardTensorParallelGraph(g, 3, ctx).ok());
  ASSERT_TRUE(ir::Verify(g).ok()) << ir::Verify(g);
  EXPECT_THAT(ctx.notes.at(0), HasSubstr("attention stays replicated"));
  EXPECT_EQ(V(g, "cache_k.0").shape, V(g, "cache_v.0").shape);
  EXPECT_EQ(V(g, "cache_k.0").shape[1], s.n_head_kv);
}

TEST(ShardTensorParallel, RefusesWhatItCannotShard) {
  PassContext ctx;
  ir::Graph g = Lower(test_models::TinyQwen2Spec());
  for (int64_t n : {0, 1, 65}) {
    ir::Graph copy = g;
    absl::Status s = ShardTensorParallelGraph(copy, n, ctx);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_THAT(s.message(), HasSubstr("--tp"));
  }
  // Twice.
  ir::Graph twice = g;
  ASSERT_TRUE(ShardTensorParallelGraph(twice, 2, ctx).ok());
  EXPECT_THAT(ShardTensorParallelGraph(twice, 2, ctx).message(), HasSubstr("already sharded"));
  // A paged graph (continuous batching).
  LowerOptions paged;
  paged.n_seq = 4;
  ir::Graph p = Lower(test_models::TinyQwen2Spec(), paged);
  EXPECT_EQ(ShardTensorParallelGraph(p, 2, ctx).code(), absl::StatusCode::kUnimplemented);
}

TEST(ShardTensorParallel, VerifierChecksShardsAndCollectives) {
  ir::Graph g = Lower(Llama8B());
  PassContext ctx;
  ASSERT_TRUE(ShardTensorParallelGraph(g, 2, ctx).ok());
  ASSERT_TRUE(ir::Verify(g).ok());
  auto broken = [&](auto edit) {
    ir::Graph b = g;
    edit(b);
    return ir::Verify(b);
  };
  const ir::ValueId down = g.FindValue("blk.0.ffn_down.weight.tp");
  EXPECT_THAT(broken([&](ir::Graph& b) { b.mutable_value(down).rank_offsets = {0}; }).message(),
              HasSubstr("1 rank offsets in a graph of meta tp=2"));
  EXPECT_THAT(broken([&](ir::Graph& b) { b.mutable_value(down).rank_offsets = {0, 100}; }).message(),
              HasSubstr("rank offset 100"));
  EXPECT_THAT(broken([&](ir::Graph& b) { b.mutable_value(down).rank_offsets = {0, 10752}; }).message(),
              HasSubstr("rank offset 10752 is not a block of 7168 columns inside rows of 14336"));
  EXPECT_THAT(broken([&](ir::Graph& b) { b.mutable_value(down).source_row_stride = 256; }).message(),
              HasSubstr("row stride 256"));
  EXPECT_THAT(broken([&](ir::Graph& b) { b.meta["tp"] = int64_t{4}; }).message(), HasSubstr("rank offsets"));
  EXPECT_THAT(broken([&](ir::Graph& b) { b.meta["tp"] = int64_t{0}; }).message(), HasSubstr("meta tp"));
  EXPECT_THAT(broken([&](ir::Graph& b) {
                for (ir::Op& op : b.mutable_ops()) {
                  if (op.kind == ir::OpKind::kAllReduce) op.attrs["ranks"] = int64_t{3};
                }
              }).message(),
              HasSubstr("ranks is 3"));
}

}  // namespace
}  // namespace vibrant::passes
