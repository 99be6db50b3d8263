#include "ir/verifier.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/graph.h"

namespace vibrant::ir {
namespace {

using ::testing::HasSubstr;

// A small valid graph: one attention block and a fused rms-scale.
struct Fixture {
  Graph g;
  ValueId tokens, positions, embd, wq, norm_w, cache_k, x, n, nw, q, q3, qr, ck, att, flat, out;

  explicit Fixture(DType cache_dtype = DType::kF16, int64_t hd = 32) {
    g.max_tokens = 16;
    tokens = g.AddInput("tokens", DType::kI32, {kTokens});
    positions = g.AddInput("positions", DType::kI32, {kTokens});
    embd = g.AddWeight("token_embd.weight", DType::kQ8_0, {100, 64}, "token_embd.weight");
    wq = g.AddWeight("wq", DType::kF32, {64, 64}, "blk.0.attn_q.weight");
    norm_w = g.AddWeight("norm_w", DType::kF32, {64}, "blk.0.attn_norm.weight");
    cache_k = g.AddKvCache("cache_k.0", cache_dtype, {32, 2, hd});
    x = *g.AddOp(OpKind::kEmbedding, {embd, tokens}, "x");                        // op 0
    n = *g.AddOp(OpKind::kRmsNorm, {x}, "n", {{"eps", 1e-6}});                     // op 1
    nw = *g.AddOp(OpKind::kMul, {n, norm_w}, "nw");                                // op 2
    q = *g.AddOp(OpKind::kMatMul, {nw, wq}, "q");                                  // op 3
    q3 = *g.AddOp(OpKind::kReshape, {q}, "q3", {{"shape", std::vector<int64_t>{kTokens, 2, 32}}});
    qr = *g.AddOp(OpKind::kRope, {q3, positions}, "qr", {{"n_rot", int64_t{32}}, {"freq_base", 1e4}});
    ck = *g.AddOp(OpKind::kKvStore, {qr, cache_k, positions}, "cache_k.0'");      // op 6
    att = *g.AddOp(OpKind::kAttention, {qr, ck, ck, positions}, "att", {{"scale", 0.5}});
    flat = *g.AddOp(OpKind::kReshape, {att}, "flat", {{"shape", std::vector<int64_t>{kTokens, 64}}});
    out = *g.AddOp(OpKind::kLastRow, {flat}, "out");                                // op 9
    g.MarkOutput(out);
  }
};

std::string VerifyMsg(const Graph& g) {
  absl::Status s = Verify(g);
  return s.ok() ? "OK" : std::string(s.message());
}

TEST(VerifierTest, AcceptsValidGraph) {
  Fixture f;
  EXPECT_EQ(VerifyMsg(f.g), "OK");
  Graph empty;
  EXPECT_EQ(VerifyMsg(empty), "OK");
}

TEST(VerifierTest, OperandOutOfRange) {
  Fixture f;
  f.g.mutable_ops()[2].inputs[1] = 99;
  EXPECT_EQ(VerifyMsg(f.g), "op 2: mul nw: input 1 is value id 99, out of range (16 values)");
  Fixture h;
  h.g.mutable_ops()[2].outputs[0] = -5;
  EXPECT_THAT(VerifyMsg(h.g), HasSubstr("op 2: mul <no output>: output 0 is value id -5, out of range"));
}

TEST(VerifierTest, UseBeforeDef) {
  Fixture f;
  std::swap(f.g.mutable_ops()[1], f.g.mutable_ops()[2]);
  f.g.Reindex();
  EXPECT_EQ(VerifyMsg(f.g), "op 1: mul nw: input 0 value 7 %n is used before its definition by op 2");
}

TEST(VerifierTest, SelfUse) {
  Fixture f;
  f.g.mutable_ops()[1].inputs[0] = f.n;
  EXPECT_THAT(VerifyMsg(f.g), HasSubstr("op 1: rms_norm n: input 0 value 7 %n is used before its definition by op 1"));
}

TEST(VerifierTest, DefinedTwice) {
  Fixture f;
  f.g.mutable_ops()[3].outputs[0] = f.nw;
  EXPECT_EQ(VerifyMsg(f.g), "op 3: matmul nw: output 0 value 8 %nw is already defined by op 2");
}

TEST(VerifierTest, NeverDefined) {
  Fixture f;
  Value v;
  v.name = "orphan";
  v.shape = {4};
  f.g.AddValue(v);
  EXPECT_EQ(VerifyMsg(f.g), "value 16 %orphan: never defined: no op outputs this activation");
}

TEST(VerifierTest, InputRedefined) {
  Fixture f;
  f.g.mutable_ops()[0].outputs[0] = f.tokens;
  f.g.Reindex();
  EXPECT_THAT(VerifyMsg(f.g), HasSubstr("value 0 %tokens: a graph input cannot be defined by op 0"));
}

TEST(VerifierTest, StaleProducer) {
  Fixture f;
  f.g.mutable_value(f.q).producer = 1;
  EXPECT_THAT(VerifyMsg(f.g), HasSubstr("value 9 %q: records producer op 1 but is defined by op 3"));
}

TEST(VerifierTest, RecordedShapeDiffersFromInference) {
  Fixture f;
  f.g.mutable_value(f.q).shape = {kTokens, 32};
  EXPECT_EQ(VerifyMsg(f.g),
            "op 3: matmul q: output records f32[T, 32] but the op produces f32[T, 64]");
  Fixture h;
  h.g.mutable_value(h.att).dtype = DType::kF16;
  EXPECT_THAT(VerifyMsg(h.g), HasSubstr("op 7: attention att: output records f16[T, 2, 32]"));
}

TEST(VerifierTest, InferenceErrorCarriesOpIndex) {
  Fixture f;
  f.g.mutable_ops()[1].attrs.clear();
  EXPECT_EQ(VerifyMsg(f.g), "op 1: rms_norm n: missing float attribute 'eps'");
  Fixture h;
  h.g.mutable_ops()[3].inputs = {h.nw};
  EXPECT_EQ(VerifyMsg(h.g), "op 3: matmul q: takes 2 to 3 inputs, got 1");
}

TEST(VerifierTest, DuplicateAndEmptyNames) {
  Fixture f;
  f.g.mutable_value(f.n).name = "x";
  EXPECT_EQ(VerifyMsg(f.g), "value 7 %x: duplicate name (also value 6)");
  Fixture h;
  h.g.mutable_value(h.n).name = "";
  EXPECT_EQ(VerifyMsg(h.g), "value 7 %: empty name");
}

TEST(VerifierTest, OutputsChecked) {
  Fixture f;
  f.g.mutable_outputs().push_back(f.out);
  f.g.mutable_value(f.out).storage = Storage::kOutput;
  EXPECT_EQ(VerifyMsg(f.g), "value 15 %out: listed as a graph output twice");
  Fixture a;
  a.g.mutable_outputs().push_back(a.flat);
  EXPECT_THAT(VerifyMsg(a.g), HasSubstr("value 14 %flat: a graph output must have storage output"));
  Fixture b;
  b.g.mutable_outputs().clear();
  EXPECT_EQ(VerifyMsg(b.g), "value 15 %out: has storage output but is not in the graph's outputs");
  Fixture c;
  c.g.mutable_outputs().push_back(77);
  EXPECT_EQ(VerifyMsg(c.g), "output 1 is value id 77, out of range (16 values)");
  Fixture d;
  d.g.MarkOutput(d.tokens);
  EXPECT_EQ(VerifyMsg(d.g), "value 0 %tokens: a graph output must be defined by an op");
}

TEST(VerifierTest, TokensDimPlacement) {
  Fixture f;
  f.g.mutable_value(f.tokens).shape = {4, kTokens};
  EXPECT_EQ(VerifyMsg(f.g), "value 0 %tokens: shape [4, T]: T only as the outermost dim");
  Fixture h;
  h.g.mutable_value(h.wq).shape = {kTokens, 64};
  EXPECT_EQ(VerifyMsg(h.g), "value 3 %wq: shape [T, 64]: a weight must have a static shape");
  Fixture k;
  k.g.mutable_value(k.cache_k).shape = {kTokens, 2, 32};
  EXPECT_THAT(VerifyMsg(k.g), HasSubstr("a kv must have a static shape"));
  Fixture z;
  z.g.mutable_value(z.norm_w).shape = {0};
  EXPECT_EQ(VerifyMsg(z.g), "value 4 %norm_w: shape [0]: dim 0 is 0");
  Fixture r;
  r.g.mutable_ops()[4].attrs["shape"] = std::vector<int64_t>{2, kTokens, 32};
  EXPECT_THAT(VerifyMsg(r.g), HasSubstr("op 4: reshape q3: target shape [2, T, 32]: T only as the outermost dim"));
}

TEST(VerifierTest, ValueFields) {
  Fixture f;
  f.g.mutable_value(f.wq).source = "";
  EXPECT_EQ(VerifyMsg(f.g), "value 3 %wq: weight without a source");
  Fixture a;
  a.g.mutable_value(a.embd).shape = {100, 48};
  EXPECT_EQ(VerifyMsg(a.g), "value 2 %token_embd.weight: shape [100, 48]: rows are not whole q8_0 blocks of 32");
  Fixture b;
  b.g.mutable_value(b.x).dtype = static_cast<DType>(77);
  EXPECT_EQ(VerifyMsg(b.g), "value 6 %x: invalid dtype 77 (unknown)");
  Fixture b2;  // a ggml type with a block layout that Vibrant does not compute with
  b2.g.mutable_value(b2.wq).dtype = DType::kIQ2_XXS;
  EXPECT_EQ(VerifyMsg(b2.g), "value 3 %wq: invalid dtype 16 (iq2_xxs)");
  Fixture c;
  c.g.max_tokens = 0;
  EXPECT_EQ(VerifyMsg(c.g), "max_tokens is 0, must be in [1, 2147483648]");
  Fixture d;
  d.g.mutable_value(d.norm_w).shape = {int64_t{1} << 62, 4};
  EXPECT_EQ(VerifyMsg(d.g), "value 4 %norm_w: shape [4611686018427387904, 4] is too large");
  Fixture e;
  e.g.mutable_value(e.cache_k).dtype = DType::kQ4_0;
  EXPECT_THAT(VerifyMsg(e.g), HasSubstr("%cache_k.0: KV cache must be f16, f32 or q8_0, is q4_0"));
  Fixture h;
  h.g.mutable_value(h.cache_k).dtype = DType::kQ8_0;
  h.g.mutable_value(h.cache_k).shape = {32, 4, 16};
  EXPECT_THAT(VerifyMsg(h.g), HasSubstr("%cache_k.0: shape [32, 4, 16]: rows are not whole q8_0 blocks of 32"));
}

// llama.cpp's --cache-type-k/-v q8_0: blocks of 32 along head_dim.
TEST(VerifierTest, AcceptsQ8_0KvCache) {
  Fixture f(DType::kQ8_0);
  EXPECT_EQ(VerifyMsg(f.g), "OK");
  EXPECT_EQ(f.g.value(f.ck).dtype, DType::kQ8_0);
}

TEST(VerifierTest, KvAliasing) {
  Fixture f;
  f.g.mutable_value(f.ck).alias_of = -1;
  EXPECT_EQ(VerifyMsg(f.g), "op 6: kv_store cache_k.0': output aliases value -1, expected the KV cache value 5 %cache_k.0");
  Fixture a;
  a.g.mutable_value(a.ck).storage = Storage::kActivation;
  EXPECT_THAT(VerifyMsg(a.g), HasSubstr("op 6: kv_store cache_k.0': output storage is activation, expected kv"));
  Fixture b;
  b.g.mutable_value(b.q).alias_of = b.x;
  EXPECT_EQ(VerifyMsg(b.g), "op 3: matmul q: output aliases value 6 but the op updates nothing");
  Fixture c;
  c.g.mutable_value(c.wq).alias_of = c.x;
  EXPECT_EQ(VerifyMsg(c.g), "value 3 %wq: a declaration cannot alias value 6");
}

TEST(VerifierTest, StaleCacheRead) {
  Fixture f;
  // Attention reads the cache version that kv_store already updated in place.
  f.g.mutable_ops()[7].inputs[2] = f.cache_k;
  EXPECT_EQ(VerifyMsg(f.g),
            "op 7: attention att: input 2 value 5 %cache_k.0 was already updated in place by kv_store op 6; "
            "read that op's output instead");
}

// Replaces op 2 with a fused op computing nw = n * norm_w.
std::shared_ptr<Graph> MulBody() {
  auto body = std::make_shared<Graph>();
  ValueId a = body->AddInput("a", DType::kF32, {kTokens, 64});
  ValueId b = body->AddInput("b", DType::kF32, {64});
  ValueId m = *body->AddOp(OpKind::kMul, {a, b}, "m");
  body->MarkOutput(m);
  return body;
}

void FuseMul(Fixture& f, std::shared_ptr<Graph> body) {
  Op& op = f.g.mutable_ops()[2];
  op.kind = OpKind::kFused;
  op.body = std::move(body);
}

TEST(VerifierTest, FusedBodyOk) {
  Fixture f;
  FuseMul(f, MulBody());
  EXPECT_EQ(VerifyMsg(f.g), "OK");
}

TEST(VerifierTest, FusedBodyErrors) {
  {
    Fixture f;
    FuseMul(f, nullptr);
    EXPECT_EQ(VerifyMsg(f.g), "op 2: fused nw: fused op without a body");
  }
  {
    Fixture f;
    auto body = MulBody();
    body->AddInput("c", DType::kF32, {64});
    FuseMul(f, body);
    EXPECT_EQ(VerifyMsg(f.g), "op 2: fused nw: body has 3 inputs but the op has 2");
  }
  {
    Fixture f;
    auto body = std::make_shared<Graph>();
    ValueId a = body->AddInput("a", DType::kF32, {kTokens, 64});
    ValueId b = body->AddInput("b", DType::kF32, {kTokens, 64});
    body->MarkOutput(*body->AddOp(OpKind::kMul, {a, b}, "m"));
    FuseMul(f, body);
    EXPECT_EQ(VerifyMsg(f.g),
              "op 2: fused nw: input 1 value 4 %norm_w is f32[64] but body input %b is f32[T, 64]");
  }
  {
    Fixture f;
    auto body = std::make_shared<Graph>();
    ValueId a = body->AddInput("a", DType::kF32, {kTokens, 64});
    body->AddInput("b", DType::kF32, {64});
    ValueId m = *body->AddOp(OpKind::kRmsNorm, {a}, "m", {{"eps", 1e-5}});
    body->MarkOutput(*body->AddOp(OpKind::kRmsNorm, {m}, "m2", {{"eps", 1e-5}}));
    FuseMul(f, body);
    EXPECT_EQ(VerifyMsg(f.g),
              "op 2: fused nw: body op 1 is rms_norm but body op 0 is rms_norm; a body holds at most one "
              "row-coupling op (rms_norm or rope)");
  }
  {
    Fixture f;
    auto body = MulBody();
    body->mutable_ops()[0].inputs = {1, 0};  // mul(b, a): b's shape is not a suffix
    FuseMul(f, body);
    EXPECT_THAT(VerifyMsg(f.g), HasSubstr("op 2: fused nw: body: op 0: mul m: b a has shape [T, 64], not a suffix"));
  }
  {
    Fixture f;
    auto body = MulBody();
    body->mutable_outputs().clear();
    body->mutable_value(2).storage = Storage::kActivation;
    FuseMul(f, body);
    EXPECT_EQ(VerifyMsg(f.g), "op 2: fused nw: body has 0 outputs but the op has 1");
  }
  {
    Fixture f;
    auto body = MulBody();
    body->mutable_value(1).storage = Storage::kWeight;
    body->mutable_value(1).source = "w";
    FuseMul(f, body);
    EXPECT_EQ(VerifyMsg(f.g), "op 2: fused nw: body: value 1 %b is a weight; a body declares only inputs");
  }
  {
    Fixture f;
    f.g.mutable_ops()[1].body = MulBody();
    EXPECT_EQ(VerifyMsg(f.g), "op 1: rms_norm n: only fused ops have a body");
  }
}

}  // namespace
}  // namespace vibrant::ir
