#include "ir/graph.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant::ir {
namespace {

using ::testing::HasSubstr;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

TEST(ShapeTest, ToStringAndCount) {
  EXPECT_EQ(ShapeToString({kTokens, 256}), "[T, 256]");
  EXPECT_EQ(ShapeToString({}), "[]");
  EXPECT_EQ(ShapeToString({4, 2, 64}), "[4, 2, 64]");
  EXPECT_EQ(NumElements({kTokens, 256}, 3), 768);
  EXPECT_EQ(NumElements({}, 3), 1);
  EXPECT_EQ(NumElements({4, 2, 64}, 100), 512);
  EXPECT_EQ(NumElements({int64_t{1} << 40, int64_t{1} << 40}, 1), -1);  // overflow
}

TEST(OpsTest, NamesRoundTrip) {
  const char* names[] = {"embedding", "matmul", "rms_norm", "add",       "mul",      "silu", "reshape",
                         "rope",      "kv_store", "attention", "last_row", "copy",  "fused"};
  int i = 0;
  for (const char* name : names) {
    auto kind = OpKindFromName(name);
    ASSERT_TRUE(kind.ok()) << name;
    EXPECT_EQ(static_cast<int>(*kind), i++);
    EXPECT_EQ(OpName(*kind), name);
  }
  EXPECT_FALSE(OpKindFromName("conv2d").ok());
  EXPECT_TRUE(GetOpInfo(OpKind::kAdd).elementwise);
  EXPECT_FALSE(GetOpInfo(OpKind::kRmsNorm).elementwise);
  EXPECT_EQ(StorageName(Storage::kKvCache), "kv");
  EXPECT_EQ(DeviceName(Device::kCuda), "cuda");
}

// sample(logits[R, V] f32, params i32[8]) -> i32[1] (ir/ops.h).
TEST(OpsTest, SampleInfersOneTokenId) {
  Graph g;
  g.max_tokens = 8;
  const ValueId logits = g.AddInput("logits", DType::kF32, {kTokens, 100});
  const ValueId params = g.AddInput("sampling", DType::kI32, {8});
  absl::StatusOr<ValueId> token = g.AddOp(OpKind::kSample, {logits, params}, "token");
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(g.value(*token).dtype, DType::kI32);
  EXPECT_EQ(g.value(*token).shape, Shape{1});
  EXPECT_EQ(OpName(OpKind::kSample), "sample");
  EXPECT_EQ(*OpKindFromName("sample"), OpKind::kSample);
  EXPECT_FALSE(GetOpInfo(OpKind::kSample).side_effects);
  // Wrong operands are errors that name them.
  const ValueId ids = g.AddInput("ids", DType::kI32, {kTokens, 100});
  EXPECT_THAT(Msg(g.AddOp(OpKind::kSample, {ids, params}, "t2").status()), HasSubstr("logits"));
  const ValueId flat = g.AddInput("flat", DType::kF32, {100});
  EXPECT_THAT(Msg(g.AddOp(OpKind::kSample, {flat, params}, "t3").status()), HasSubstr("[R, V]"));
  const ValueId p7 = g.AddInput("p7", DType::kI32, {7});
  EXPECT_THAT(Msg(g.AddOp(OpKind::kSample, {logits, p7}, "t4").status()), HasSubstr("i32[8]"));
  const ValueId pf = g.AddInput("pf", DType::kF32, {8});
  EXPECT_THAT(Msg(g.AddOp(OpKind::kSample, {logits, pf}, "t5").status()), HasSubstr("i32[8]"));
  EXPECT_FALSE(g.AddOp(OpKind::kSample, {logits}, "t6").ok());
}

TEST(OpTest, AttrGetters) {
  Op op;
  op.attrs = {{"i", int64_t{3}}, {"f", 0.5}, {"s", std::string("x")}, {"l", std::vector<int64_t>{1}}};
  EXPECT_EQ(op.IntAttr("i"), 3);
  EXPECT_EQ(op.IntAttr("f", 7), 7);  // wrong type -> default
  EXPECT_EQ(op.IntAttr("missing", 9), 9);
  EXPECT_EQ(op.FloatAttr("f"), 0.5);
  EXPECT_EQ(op.FloatAttr("i"), 3.0);  // integers convert
  EXPECT_EQ(op.StringAttr("s"), "x");
  EXPECT_EQ(op.StringAttr("i", "d"), "d");
}

// One llama layer, hand-sized: D=256, H=4, KVH=2, hd=64, C=512, vocab 1000.
class LayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    g.max_tokens = 512;
    tokens = g.AddInput("tokens", DType::kI32, {kTokens});
    positions = g.AddInput("positions", DType::kI32, {kTokens});
    embd = g.AddWeight("token_embd.weight", DType::kQ4_K, {1000, 256}, "token_embd.weight");
    wq = g.AddWeight("blk.0.attn_q.weight", DType::kQ8_0, {256, 256}, "blk.0.attn_q.weight");
    wk = g.AddWeight("blk.0.attn_k.weight", DType::kF16, {128, 256}, "blk.0.attn_k.weight");
    norm_w = g.AddWeight("blk.0.attn_norm.weight", DType::kF32, {256}, "blk.0.attn_norm.weight");
    cache_k = g.AddKvCache("cache_k.0", DType::kF16, {512, 2, 64});
  }
  ValueId Must(absl::StatusOr<ValueId> v) {
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *v : -1;
  }
  Graph g;
  ValueId tokens, positions, embd, wq, wk, norm_w, cache_k;
};

TEST_F(LayerTest, InfersShapesAndDtypes) {
  ValueId x = Must(g.AddOp(OpKind::kEmbedding, {embd, tokens}, "inp_embd"));
  EXPECT_EQ(g.value(x).shape, (Shape{kTokens, 256}));
  EXPECT_EQ(g.value(x).dtype, DType::kF32);
  EXPECT_EQ(g.value(x).producer, 0);
  EXPECT_EQ(g.value(x).storage, Storage::kActivation);
  ValueId n = Must(g.AddOp(OpKind::kRmsNorm, {x}, "attn_norm.0", {{"eps", 1e-5}}));
  ValueId nw = Must(g.AddOp(OpKind::kMul, {n, norm_w}, "attn_norm_w.0"));
  EXPECT_EQ(g.value(nw).shape, (Shape{kTokens, 256}));
  ValueId q = Must(g.AddOp(OpKind::kMatMul, {nw, wq}, "q.0"));
  ValueId k = Must(g.AddOp(OpKind::kMatMul, {nw, wk}, "k.0"));
  EXPECT_EQ(g.value(k).shape, (Shape{kTokens, 128}));
  ValueId q3 = Must(g.AddOp(OpKind::kReshape, {q}, "q3.0", {{"shape", std::vector<int64_t>{kTokens, 4, 64}}}));
  ValueId k3 = Must(g.AddOp(OpKind::kReshape, {k}, "k3.0", {{"shape", std::vector<int64_t>{kTokens, 2, 64}}}));
  Attrs rope = {{"mode", int64_t{0}}, {"n_rot", int64_t{64}}, {"freq_base", 10000.0}, {"freq_scale", 1.0}};
  ValueId qr = Must(g.AddOp(OpKind::kRope, {q3, positions}, "qr.0", rope));
  ValueId kr = Must(g.AddOp(OpKind::kRope, {k3, positions}, "kr.0", rope));
  ValueId ck = Must(g.AddOp(OpKind::kKvStore, {kr, cache_k, positions}, "cache_k.0'"));
  EXPECT_EQ(g.value(ck).storage, Storage::kKvCache);
  EXPECT_EQ(g.value(ck).alias_of, cache_k);
  EXPECT_EQ(g.value(ck).dtype, DType::kF16);
  EXPECT_EQ(g.value(ck).shape, (Shape{512, 2, 64}));
  // A second store into the same cache still aliases the declaration.
  ValueId ck2 = Must(g.AddOp(OpKind::kKvStore, {kr, ck, positions}, "cache_k.0''"));
  EXPECT_EQ(g.value(ck2).alias_of, cache_k);
  ValueId att = Must(g.AddOp(OpKind::kAttention, {qr, ck2, ck2, positions}, "attn.0", {{"scale", 0.125}}));
  EXPECT_EQ(g.value(att).shape, (Shape{kTokens, 4, 64}));
  ValueId s = Must(g.AddOp(OpKind::kSilu, {att}, "silu.0"));
  ValueId flat = Must(g.AddOp(OpKind::kReshape, {s}, "flat.0", {{"shape", std::vector<int64_t>{kTokens, 256}}}));
  ValueId last = Must(g.AddOp(OpKind::kLastRow, {flat}, "last"));
  EXPECT_EQ(g.value(last).shape, (Shape{1, 256}));
  ValueId c = Must(g.AddOp(OpKind::kCopy, {last}, "last_copy"));
  EXPECT_EQ(g.value(c).shape, (Shape{1, 256}));
  g.MarkOutput(c);
  EXPECT_EQ(g.value(c).storage, Storage::kOutput);
  EXPECT_EQ(g.outputs(), std::vector<ValueId>{c});
  EXPECT_EQ(g.FindValue("cache_k.0'"), ck);
  EXPECT_EQ(g.FindValue("nope"), -1);
  EXPECT_EQ(g.ops().size(), 16u);
  EXPECT_EQ(g.ops()[1].attrs.at("eps"), AttrValue(1e-5));
}

TEST_F(LayerTest, MatMulColumnMismatchIsNamed) {
  ValueId x = g.AddInput("x128", DType::kF32, {kTokens, 128});
  auto r = g.AddOp(OpKind::kMatMul, {x, wq}, "blk.0.attn_q");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Msg(r.status()), "matmul blk.0.attn_q: x has 128 columns but weight blk.0.attn_q.weight has 256");
  EXPECT_TRUE(g.ops().empty());
  EXPECT_EQ(g.values().size(), 8u);  // nothing added on failure
}

TEST_F(LayerTest, InferenceErrors) {
  ValueId x = Must(g.AddOp(OpKind::kEmbedding, {embd, tokens}, "x"));
  ValueId x3 = Must(g.AddOp(OpKind::kReshape, {x}, "x3", {{"shape", std::vector<int64_t>{kTokens, 4, 64}}}));
  ValueId bias_bad = g.AddWeight("bias", DType::kF32, {128}, "bias");
  ValueId w100 = g.AddWeight("w100", DType::kQ4_K, {8, 100}, "w100");
  ValueId xi = g.AddInput("xi", DType::kI32, {kTokens, 256});
  ValueId p2 = g.AddInput("p2", DType::kI32, {2});
  ValueId ff = g.AddWeight("ff", DType::kF32, {16}, "ff");
  struct Case {
    OpKind kind;
    std::vector<ValueId> in;
    Attrs attrs;
    std::string want;
  };
  Attrs rope = {{"n_rot", int64_t{64}}, {"freq_base", 10000.0}};
  const std::vector<Case> cases = {
      {OpKind::kMatMul, {x}, {}, "matmul y: takes 2 to 3 inputs, got 1"},
      {OpKind::kMatMul, {x, wq, bias_bad}, {}, "bias bias has shape [128] but weight blk.0.attn_q.weight has 256 rows"},
      {OpKind::kMatMul, {xi, wq}, {}, "x xi must be f32, is i32"},
      {OpKind::kMatMul, {x, 999}, {}, "input 1 is value id 999, out of range (14 values)"},
      {OpKind::kEmbedding, {w100, tokens}, {}, "w100: rows of 100 elements are not whole q4_K blocks of 256"},
      {OpKind::kEmbedding, {embd, positions, tokens}, {}, "takes 2 inputs, got 3"},
      {OpKind::kEmbedding, {embd, x}, {}, "ids x must be i32, is f32"},
      {OpKind::kRmsNorm, {x}, {}, "missing float attribute 'eps'"},
      {OpKind::kRmsNorm, {x}, {{"eps", std::string("a")}}, "attribute 'eps' must be a number"},
      {OpKind::kAdd, {x, bias_bad}, {}, "b bias has shape [128], not a suffix of a x's shape [T, 256]"},
      {OpKind::kMul, {norm_w, x}, {}, "not a suffix"},
      {OpKind::kReshape, {x}, {{"shape", std::vector<int64_t>{kTokens, 3, 64}}}, "element count differs"},
      {OpKind::kReshape, {x}, {{"shape", std::vector<int64_t>{256, kTokens}}}, "T only as the outermost dim"},
      {OpKind::kReshape, {x}, {{"shape", std::vector<int64_t>{256}}}, "lacks the outer T dim"},
      {OpKind::kReshape, {norm_w}, {{"shape", std::vector<int64_t>{kTokens, 256}}}, "has the outer T dim"},
      {OpKind::kReshape, {embd}, {{"shape", std::vector<int64_t>{1000 * 256}}}, "quantized"},
      {OpKind::kReshape, {x}, {}, "missing integer-list attribute 'shape'"},
      {OpKind::kRope, {x, positions}, rope, "x x must have rank 3 [T, H, hd], has shape [T, 256]"},
      {OpKind::kRope, {x3, p2}, rope, "positions p2 has 2 rows but x has T"},
      {OpKind::kRope, {x3, positions}, {{"n_rot", int64_t{65}}, {"freq_base", 1.0}}, "n_rot must be even"},
      {OpKind::kRope, {x3, positions}, {{"n_rot", int64_t{64}}}, "missing float attribute 'freq_base'"},
      {OpKind::kRope, {x3, positions, ff}, rope, "freq_factors ff has shape [16], expected [32] (n_rot/2)"},
      {OpKind::kRope, {x3, positions}, {{"n_rot", int64_t{64}}, {"freq_base", 1.0}, {"mode", int64_t{1}}}, "mode must be 0"},
      {OpKind::kKvStore, {x3, cache_k, positions}, {}, "does not match the rows of cache"},
      {OpKind::kKvStore, {x3, x3, positions}, {}, "cache x3 must be a KV cache, is activation"},
      {OpKind::kAttention, {x3, cache_k, cache_k, positions}, {}, "missing float attribute 'scale'"},
      {OpKind::kLastRow, {x3}, {}, "x x3 must have rank 2 [T, D]"},
      {OpKind::kFused, {x}, {}, "AddRawOp"},
      {OpKind::kRope, {x3, positions}, {{"n_rot", int64_t{64}}, {"freq_base", 1.0}, {"freq_sacle", 2.0}},
       "unknown attribute 'freq_sacle' (rope takes freq_base, freq_scale, mode, n_rot)"},
      {OpKind::kSilu, {x}, {{"eps", 1.0}}, "unknown attribute 'eps' (silu takes none)"},
  };
  for (const Case& c : cases) {
    auto r = g.AddOp(c.kind, c.in, "y", c.attrs);
    ASSERT_FALSE(r.ok()) << c.want;
    EXPECT_THAT(Msg(r.status()), HasSubstr(c.want));
    EXPECT_THAT(Msg(r.status()), ::testing::StartsWith(absl::StrCat(std::string(OpName(c.kind)), " y: ")));
  }
}

TEST_F(LayerTest, AttentionGqaRule) {
  ValueId q = g.AddInput("q", DType::kF32, {kTokens, 3, 64});
  auto r = g.AddOp(OpKind::kAttention, {q, cache_k, cache_k, positions}, "a", {{"scale", 1.0}});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), HasSubstr("q has 3 heads, not a multiple of k's 2 KV heads"));
  ValueId q6 = g.AddInput("q6", DType::kF32, {kTokens, 6, 32});
  r = g.AddOp(OpKind::kAttention, {q6, cache_k, cache_k, positions}, "a", {{"scale", 1.0}});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), HasSubstr("has head_dim 32 but k"));
}

TEST_F(LayerTest, RawOpAndReindex) {
  ValueId x = Must(g.AddOp(OpKind::kEmbedding, {embd, tokens}, "x"));
  Value v;
  v.name = "y";
  v.shape = {kTokens, 256};
  ValueId y = g.AddValue(v);
  EXPECT_EQ(g.value(y).producer, -1);
  Op op;
  op.kind = OpKind::kSilu;
  op.inputs = {x};
  op.outputs = {y};
  EXPECT_EQ(g.AddRawOp(op), 1);
  EXPECT_EQ(g.value(y).producer, 1);
  // Edit: drop the embedding op, rename y; Reindex fixes producers and names.
  g.mutable_ops().erase(g.mutable_ops().begin());
  g.mutable_value(y).name = "z";
  g.Reindex();
  EXPECT_EQ(g.value(y).producer, 0);
  EXPECT_EQ(g.value(x).producer, -1);
  EXPECT_EQ(g.FindValue("z"), y);
  EXPECT_EQ(g.FindValue("y"), -1);
}

// The ops of the new architectures: inferred shapes and named errors.
TEST(NewOpsTest, ScaleGeluWindowAndMoeShapes) {
  Graph g;
  g.max_tokens = 8;
  const ValueId x = g.AddInput("x", DType::kF32, {kTokens, 64});
  auto scaled = g.AddOp(OpKind::kScale, {x}, "xs", {{"scale", 16.0}});
  ASSERT_TRUE(scaled.ok()) << scaled.status();
  EXPECT_EQ(g.value(*scaled).shape, Shape({kTokens, 64}));
  EXPECT_THAT(Msg(g.AddOp(OpKind::kScale, {x}, "bad", {}).status()),
              HasSubstr("missing float attribute 'scale'"));
  auto ge = g.AddOp(OpKind::kGelu, {x}, "xg");
  ASSERT_TRUE(ge.ok());
  EXPECT_TRUE(GetOpInfo(OpKind::kGelu).elementwise);
  EXPECT_FALSE(GetOpInfo(OpKind::kScale).elementwise);  // an attribute: its own kernels
  EXPECT_NE(GetOpInfo(OpKind::kGelu).scalar.unary, nullptr);

  // Router: logits [T, 4] -> ids i32 [T, 2], weights f32 [T, 2].
  const ValueId router = g.AddWeight("router", DType::kF32, {4, 64}, "r");
  const ValueId logits = *g.AddOp(OpKind::kMatMul, {x, router}, "logits");
  auto ids = g.AddOp(OpKind::kMoeTopK, {logits}, "ids", {{"k", int64_t{2}}});
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(g.value(*ids).dtype, DType::kI32);
  EXPECT_EQ(g.value(*ids).shape, Shape({kTokens, 2}));
  EXPECT_THAT(Msg(g.AddOp(OpKind::kMoeTopK, {logits}, "bad", {{"k", int64_t{5}}}).status()),
              HasSubstr("k must be in [1, 4] (the experts), is 5"));
  auto w = g.AddOp(OpKind::kMoeWeights, {logits, *ids}, "w", {{"norm", int64_t{1}}});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(g.value(*w).dtype, DType::kF32);
  EXPECT_EQ(g.value(*w).shape, Shape({kTokens, 2}));
  EXPECT_THAT(Msg(g.AddOp(OpKind::kMoeWeights, {logits, *ids}, "bad", {{"norm", int64_t{2}}}).status()),
              HasSubstr("norm must be 0 or 1"));

  // Experts [E=4, N=32, K=64] on x [T, 64] -> [T, 2, 32]; down [4, 64, 32] on [T, 2, 32].
  const ValueId up = g.AddWeight("up", DType::kQ8_0, {4, 32, 64}, "up");
  const ValueId down = g.AddWeight("down", DType::kQ8_0, {4, 64, 32}, "down");
  auto h = g.AddOp(OpKind::kMatMulId, {x, up, *ids}, "h");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(g.value(*h).shape, Shape({kTokens, 2, 32}));
  auto y = g.AddOp(OpKind::kMatMulId, {*h, down, *ids}, "y");
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(g.value(*y).shape, Shape({kTokens, 2, 64}));
  EXPECT_THAT(Msg(g.AddOp(OpKind::kMatMulId, {x, down, *ids}, "bad").status()),
              HasSubstr("must be [rows of ids, K]"));
  auto out = g.AddOp(OpKind::kMoeSum, {*y, *w}, "out");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(g.value(*out).shape, Shape({kTokens, 64}));
  EXPECT_THAT(Msg(g.AddOp(OpKind::kMoeSum, {*y, logits}, "bad").status()),
              HasSubstr("must be [T, k] of y"));
}

TEST(NewOpsTest, AttentionWindowAttribute) {
  Graph g;
  g.max_tokens = 4;
  const ValueId q = g.AddInput("q", DType::kF32, {kTokens, 2, 8});
  const ValueId pos = g.AddInput("pos", DType::kI32, {kTokens});
  const ValueId k = g.AddKvCache("k", DType::kF16, {16, 1, 8});
  const ValueId v = g.AddKvCache("v", DType::kF16, {16, 1, 8});
  EXPECT_TRUE(g.AddOp(OpKind::kAttention, {q, k, v, pos}, "a", {{"scale", 0.5}, {"window", int64_t{4}}}).ok());
  EXPECT_THAT(Msg(g.AddOp(OpKind::kAttention, {q, k, v, pos}, "b", {{"scale", 0.5}, {"window", int64_t{-1}}})
                      .status()),
              HasSubstr("window must be >= 0"));
  EXPECT_THAT(Msg(g.AddOp(OpKind::kAttention, {q, k, v, pos}, "c", {{"scale", 0.5}, {"window", 2.5}}).status()),
              HasSubstr("attribute 'window' must be an integer"));
}

}  // namespace
}  // namespace vibrant::ir
