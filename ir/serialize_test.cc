#include "ir/serialize.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/graph.h"
#include "ir/printer.h"
#include "ir/verifier.h"

namespace vibrant::ir {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// A two-layer llama-shaped graph (D=64, H=4, KVH=2, hd=16, C=32, vocab=50)
// with a fused op per layer, devices and meta of every attribute type.
Graph Llama2() {
  Graph g;
  g.max_tokens = 8;
  g.meta["arch"] = std::string("llama");
  g.meta["n_layer"] = int64_t{2};
  g.meta["rms_eps"] = 1e-5;
  g.meta["list"] = std::vector<int64_t>{1, -1, 3};
  const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  const ValueId pos = g.AddInput("positions", DType::kI32, {kTokens});
  const ValueId embd = g.AddWeight("token_embd.weight", DType::kQ4_K, {50, 256}, "token_embd.weight");
  const ValueId proj = g.AddWeight("proj.weight", DType::kQ8_0, {64, 256}, "proj.weight");
  const ValueId bias = g.AddWeight("proj.bias", DType::kF32, {64}, "proj.bias");
  ValueId x = *g.AddOp(OpKind::kEmbedding, {embd, tokens}, "inp_embd");
  x = *g.AddOp(OpKind::kMatMul, {x, proj, bias}, "inp_proj");
  for (int l = 0; l < 2; ++l) {
    auto w = [&](const std::string& n, DType t, Shape s) {
      const std::string name = absl::StrCat("blk.", l, ".", n);
      return g.AddWeight(name, t, std::move(s), name);
    };
    const ValueId norm_w = w("attn_norm.weight", DType::kF32, {64});
    const ValueId wq = w("attn_q.weight", DType::kF16, {64, 64});
    const ValueId wk = w("attn_k.weight", DType::kF16, {32, 64});
    const ValueId wv = w("attn_v.weight", DType::kF32, {32, 64});
    const ValueId ff = w("rope_freqs.weight", DType::kF32, {8});
    const ValueId ck = g.AddKvCache(absl::StrCat("cache_k.", l), DType::kF16, {32, 2, 16});
    const ValueId cv = g.AddKvCache(absl::StrCat("cache_v.", l), DType::kF32, {32, 2, 16});
    auto s = [&](const std::string& n) { return absl::StrCat(n, ".", l); };
    const ValueId n = *g.AddOp(OpKind::kRmsNorm, {x}, s("norm"), {{"eps", 1e-5}});
    // Fused n * norm_w.
    auto body = std::make_shared<Graph>();
    body->max_tokens = g.max_tokens;
    const ValueId ba = body->AddInput("a", DType::kF32, {kTokens, 64});
    const ValueId bb = body->AddInput("b", DType::kF32, {64});
    body->MarkOutput(*body->AddOp(OpKind::kMul, {ba, bb}, "m"));
    Value nwv;
    nwv.name = s("norm_w");
    nwv.shape = {kTokens, 64};
    const ValueId nw = g.AddValue(nwv);
    Op fused;
    fused.kind = OpKind::kFused;
    fused.inputs = {n, norm_w};
    fused.outputs = {nw};
    fused.body = body;
    fused.device = Device::kCuda;
    g.AddRawOp(fused);
    g.mutable_value(nw).device = Device::kCuda;
    Attrs rope = {{"mode", int64_t{0}}, {"n_rot", int64_t{16}}, {"freq_base", 500000.0}, {"freq_scale", 1.0}};
    const ValueId q = *g.AddOp(OpKind::kMatMul, {nw, wq}, s("q"));
    const ValueId k = *g.AddOp(OpKind::kMatMul, {nw, wk}, s("k"));
    const ValueId v = *g.AddOp(OpKind::kMatMul, {nw, wv}, s("v"));
    const ValueId q3 = *g.AddOp(OpKind::kReshape, {q}, s("q3"), {{"shape", std::vector<int64_t>{kTokens, 4, 16}}});
    const ValueId k3 = *g.AddOp(OpKind::kReshape, {k}, s("k3"), {{"shape", std::vector<int64_t>{kTokens, 2, 16}}});
    const ValueId v3 = *g.AddOp(OpKind::kReshape, {v}, s("v3"), {{"shape", std::vector<int64_t>{kTokens, 2, 16}}});
    const ValueId qr = *g.AddOp(OpKind::kRope, {q3, pos, ff}, s("qr"), rope);
    const ValueId kr = *g.AddOp(OpKind::kRope, {k3, pos, ff}, s("kr"), rope);
    const ValueId ck2 = *g.AddOp(OpKind::kKvStore, {kr, ck, pos}, absl::StrCat("cache_k.", l, "'"));
    const ValueId cv2 = *g.AddOp(OpKind::kKvStore, {v3, cv, pos}, absl::StrCat("cache_v.", l, "'"));
    const ValueId a = *g.AddOp(OpKind::kAttention, {qr, ck2, cv2, pos}, s("attn"), {{"scale", 0.25}});
    const ValueId af = *g.AddOp(OpKind::kReshape, {a}, s("attn_flat"), {{"shape", std::vector<int64_t>{kTokens, 64}}});
    const ValueId sl = *g.AddOp(OpKind::kSilu, {af}, s("silu"));
    x = *g.AddOp(OpKind::kAdd, {x, sl}, s("res"));
    g.mutable_ops().back().device = Device::kCpu;
  }
  const ValueId last = *g.AddOp(OpKind::kLastRow, {x}, "last");
  const ValueId out = *g.AddOp(OpKind::kCopy, {last}, "logits");
  g.MarkOutput(out);
  return g;
}

TEST(SerializeTest, RoundTrip) {
  Graph g = Llama2();
  ASSERT_TRUE(Verify(g).ok()) << Verify(g);
  const std::string bytes = SerializeGraph(g);
  auto back = DeserializeGraph(Bytes(bytes));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(PrintGraph(*back), PrintGraph(g));
  // Binary keeps ids and every field exactly.
  ASSERT_EQ(back->values().size(), g.values().size());
  for (size_t i = 0; i < g.values().size(); ++i) {
    const Value& a = g.values()[i];
    const Value& b = back->values()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.dtype, b.dtype);
    EXPECT_EQ(a.shape, b.shape);
    EXPECT_EQ(a.storage, b.storage);
    EXPECT_EQ(a.device, b.device);
    EXPECT_EQ(a.source, b.source);
    EXPECT_EQ(a.source_offset, b.source_offset);
    EXPECT_EQ(a.producer, b.producer);
    EXPECT_EQ(a.alias_of, b.alias_of);
  }
  ASSERT_EQ(back->ops().size(), g.ops().size());
  for (size_t i = 0; i < g.ops().size(); ++i) {
    EXPECT_EQ(back->ops()[i].attrs, g.ops()[i].attrs);
    EXPECT_EQ(back->ops()[i].inputs, g.ops()[i].inputs);
  }
  EXPECT_EQ(back->meta, g.meta);
  EXPECT_EQ(back->outputs(), g.outputs());
  // Encoding is deterministic.
  EXPECT_EQ(SerializeGraph(*back), bytes);
}

// A weight that is a view of part of its GGUF tensor (phi3's fused attn_qkv)
// keeps its offset through both encodings; the verifier refuses offsets that
// are not whole rows or sit on a non-weight.
TEST(SerializeTest, WeightViewsRoundTrip) {
  Graph g;
  g.max_tokens = 4;
  const ValueId x = g.AddInput("x", DType::kF32, {kTokens, 64});
  const ValueId q = g.AddWeight("q_w", DType::kQ8_0, {32, 64}, "qkv.weight", 0);
  const ValueId k = g.AddWeight("k_w", DType::kQ8_0, {16, 64}, "qkv.weight", 32 * 64);
  g.MarkOutput(*g.AddOp(OpKind::kMatMul, {x, q}, "q"));
  g.MarkOutput(*g.AddOp(OpKind::kMatMul, {x, k}, "k"));
  ASSERT_TRUE(Verify(g).ok()) << Verify(g);
  auto back = DeserializeGraph(Bytes(SerializeGraph(g)));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->value(k).source_offset, 32 * 64);
  EXPECT_EQ(back->value(q).source_offset, 0);
  const std::string text = PrintGraph(g);
  EXPECT_NE(text.find("gguf(\"qkv.weight\", offset=2048)"), std::string::npos) << text;
  auto parsed = ParseGraph(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->value(k).source_offset, 32 * 64);
  EXPECT_EQ(PrintGraph(*parsed), text);

  Graph bad = g;
  bad.mutable_value(k).source_offset = 100;  // not a whole row of 64
  EXPECT_NE(std::string(Verify(bad).message()).find("source offset 100 is not a whole number of rows"),
            std::string::npos)
      << Verify(bad);
  Graph bad2 = g;
  bad2.mutable_value(x).source_offset = 64;
  EXPECT_NE(std::string(Verify(bad2).message()).find("source offset 64 on a input"), std::string::npos)
      << Verify(bad2);
}

// Tensor-parallel shards (passes/shard_tensor_parallel.h): rank offsets and
// a row stride survive the binary and the text format.
TEST(SerializeTest, TensorParallelShardsRoundTrip) {
  Graph g;
  g.max_tokens = 4;
  g.meta["tp"] = int64_t{2};
  const ValueId x = g.AddInput("x", DType::kF32, {kTokens, 32});
  const ValueId w = g.AddWeight("down.tp", DType::kQ8_0, {16, 32}, "down.weight");
  g.mutable_value(w).rank_offsets = {0, 32};
  g.mutable_value(w).source_row_stride = 64;
  absl::StatusOr<ValueId> part = g.AddOp(OpKind::kMatMul, {x, w}, "part");
  ASSERT_TRUE(part.ok()) << part.status();
  absl::StatusOr<ValueId> sum = g.AddOp(OpKind::kAllReduce, {*part}, "sum", {{"ranks", int64_t{2}}});
  ASSERT_TRUE(sum.ok()) << sum.status();
  absl::StatusOr<ValueId> all = g.AddOp(OpKind::kAllGather, {*sum}, "all", {{"ranks", int64_t{2}}});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(g.value(*all).shape, (Shape{kTokens, 32}));
  g.MarkOutput(*all);
  ASSERT_TRUE(Verify(g).ok()) << Verify(g);
  auto back = DeserializeGraph(Bytes(SerializeGraph(g)));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->value(w).rank_offsets, (std::vector<int64_t>{0, 32}));
  EXPECT_EQ(back->value(w).source_row_stride, 64);
  const std::string text = PrintGraph(g);
  EXPECT_NE(text.find("gguf(\"down.weight\", ranks=[0, 32], row_stride=64)"), std::string::npos) << text;
  auto parsed = ParseGraph(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(PrintGraph(*parsed), text);
  // Fields out of order, or unknown, are parse errors.
  std::string swapped = text;
  swapped.replace(swapped.find("ranks=[0, 32], row_stride=64"), 29, "row_stride=64, ranks=[0, 32]");
  EXPECT_FALSE(ParseGraph(swapped).ok());
  // A collective outside a sharded graph.
  Graph one = g;
  one.meta.erase("tp");
  one.mutable_value(w).rank_offsets.clear();
  EXPECT_NE(std::string(Verify(one).message()).find("ranks is 2"), std::string::npos) << Verify(one);
}

TEST(SerializeTest, HeaderLayout) {
  Graph g;
  g.max_tokens = 3;
  const std::string b = SerializeGraph(g);
  // magic, version 5, max_tokens 3, 0 meta, 0 values, 0 ops, 0 outputs, 0 memory
  // entries: hand-laid.
  const std::string want = std::string("VIRG\x05\x00\x00\x00", 8) + std::string("\x03\0\0\0\0\0\0\0", 8) +
                           std::string(20, '\0');
  EXPECT_EQ(b, want);
  // Version 4 (no tensor-parallel fields) still reads.
  std::string v4 = want;
  v4[4] = 4;
  EXPECT_TRUE(DeserializeGraph(Bytes(v4)).ok());
  auto back = DeserializeGraph(Bytes(b));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->max_tokens, 3);
}

TEST(SerializeTest, NamedErrors) {
  Graph g = Llama2();
  std::string b = SerializeGraph(g);
  {
    std::string bad = b;
    bad[0] = 'X';
    auto r = DeserializeGraph(Bytes(bad));
    EXPECT_EQ(std::string(r.status().message()), "graph section: bad magic (expected \"VIRG\")");
  }
  {
    std::string bad = b;
    bad[4] = 9;
    auto r = DeserializeGraph(Bytes(bad));
    EXPECT_EQ(std::string(r.status().message()), "graph section: unsupported version 9 (this build reads 4 and 5)");
  }
  {
    std::string bad = b + "xy";
    auto r = DeserializeGraph(Bytes(bad));
    EXPECT_EQ(std::string(r.status().message()),
              absl::StrCat("graph section: end at offset ", b.size(), ": 2 trailing bytes"));
  }
  {
    // Locate op 0's input 1 by re-encoding a graph whose only difference is
    // that id, then patch it to 9999.
    Graph g2 = g;
    g2.mutable_ops()[0].inputs[1] = 0x7eadbeef;
    const std::string b2 = SerializeGraph(g2);
    ASSERT_EQ(b2.size(), b.size());
    size_t at = 0;
    while (b[at] == b2[at]) ++at;
    std::string bad = b;
    const uint32_t id = 9999;
    for (int i = 0; i < 4; ++i) bad[at + i] = static_cast<char>(id >> (8 * i));
    auto r = DeserializeGraph(Bytes(bad));
    EXPECT_EQ(std::string(r.status().message()),
              absl::StrCat("graph section: op 0 input 1 at offset ", at, ": value id 9999 out of range (",
                           g.values().size(), " values)"));
  }
  {
    auto r = DeserializeGraph(Bytes(b.substr(0, 20)));
    EXPECT_EQ(std::string(r.status().message()),
              "graph section: meta attribute count at offset 16: count 4 needs at least 36 bytes, 0 left");
  }
}

TEST(SerializeTest, SemanticErrorsComeFromVerify) {
  Graph g = Llama2();
  ASSERT_GE(g.FindValue("q.0"), 0);
  g.mutable_value(g.FindValue("q.0")).shape = {kTokens, 63};
  auto r = DeserializeGraph(Bytes(SerializeGraph(g)));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), StartsWith("graph section: op "));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("matmul q.0: output records f32[T, 63]"));
}

// Llama2() with a memory plan: every step value gets its own slot in its
// device's arena (the verifier checks bounds only, not overlap).
Graph PlannedLlama2() {
  Graph g = Llama2();
  for (ValueId v = 0; v < static_cast<ValueId>(g.values().size()); ++v) {
    Value& val = g.mutable_value(v);
    if (val.storage == Storage::kWeight || val.storage == Storage::kKvCache) continue;
    DeviceMemory& mem = g.memory[val.device];
    val.arena_offset = mem.arena_bytes;
    mem.arena_bytes += (*DTypeBytes(val.dtype, NumElements(val.shape, g.max_tokens)) + 255) / 256 * 256;
  }
  g.memory[Device::kCpu].kv_bytes = 4096;
  return g;
}

TEST(SerializeTest, MemoryPlanRoundTrip) {
  const Graph g = PlannedLlama2();
  ASSERT_TRUE(Verify(g).ok()) << Verify(g);
  const std::string bytes = SerializeGraph(g);
  auto back = DeserializeGraph(Bytes(bytes));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->memory.size(), g.memory.size());
  for (const auto& [device, mem] : g.memory) {
    EXPECT_EQ(back->memory.at(device).arena_bytes, mem.arena_bytes);
    EXPECT_EQ(back->memory.at(device).kv_bytes, mem.kv_bytes);
  }
  for (size_t v = 0; v < g.values().size(); ++v) {
    EXPECT_EQ(back->values()[v].arena_offset, g.values()[v].arena_offset) << g.values()[v].name;
  }
  EXPECT_EQ(SerializeGraph(*back), bytes);
}

// Op::kernels (select-kernels) survive both encodings, and the verifier holds
// them to ranges that cover 1..max_tokens in order.
TEST(SerializeTest, KernelVariantsRoundTrip) {
  Graph g = Llama2();
  g.max_tokens = 16;
  ir::KernelVariant a{1, 1, "matvec.one", {{"tokens", int64_t{1}}}, {"vb_a", "vb_b"}};
  ir::KernelVariant b{2, 16, "gemm.cublaslt", {}, {"vb_c", "cublaslt", "memcpy"}};
  g.mutable_ops()[1].kernels = {a, b};
  g.mutable_ops()[2].kernels = {{1, 16, "view", {}, {}}};
  ASSERT_TRUE(ir::Verify(g).ok()) << ir::Verify(g);
  const std::string bytes = SerializeGraph(g);
  auto back = DeserializeGraph(Bytes(bytes));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ops()[1].kernels, g.ops()[1].kernels);
  EXPECT_EQ(back->ops()[2].kernels, g.ops()[2].kernels);
  EXPECT_EQ(SerializeGraph(*back), bytes);
  const std::string text = ir::PrintGraph(g);
  EXPECT_NE(text.find("kernels[T=1: matvec.one {tokens=1} -> vb_a, vb_b; T=2..16: gemm.cublaslt -> "
                      "vb_c, cublaslt, memcpy]"),
            std::string::npos)
      << text;
  auto parsed = ir::ParseGraph(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(ir::PrintGraph(*parsed), text);
  // A gap in the ranges, or ranges that stop short of max_tokens, are errors.
  Graph gap = g;
  gap.mutable_ops()[1].kernels[1].t_min = 3;
  EXPECT_NE(ir::Verify(gap).message().find("covers T=3..16, expected T=2.."), std::string::npos)
      << ir::Verify(gap);
  Graph short_of = g;
  short_of.mutable_ops()[1].kernels[1].t_max = 15;
  EXPECT_NE(ir::Verify(short_of).message().find("end at T=15, not max_tokens 16"), std::string::npos)
      << ir::Verify(short_of);
}

TEST(SerializeTest, RejectsVersion1AndBadPlans) {
  std::string b = SerializeGraph(Llama2());
  b[4] = 1;
  auto r = DeserializeGraph(Bytes(b));
  EXPECT_EQ(std::string(r.status().message()), "graph section: unsupported version 1 (this build reads 4 and 5)");
  // An offset past the arena end is the verifier's error.
  Graph g = PlannedLlama2();
  const ValueId x = g.FindValue("inp_embd");
  g.mutable_value(x).arena_offset = g.memory.at(g.value(x).device).arena_bytes;
  auto r2 = DeserializeGraph(Bytes(SerializeGraph(g)));
  ASSERT_FALSE(r2.ok());
  EXPECT_THAT(std::string(r2.status().message()), HasSubstr("%inp_embd: bytes ["));
  EXPECT_THAT(std::string(r2.status().message()), HasSubstr("exceed the"));
}

TEST(SerializeTest, EveryTruncationFailsCleanly) {
  const std::string b = SerializeGraph(Llama2());
  for (size_t n = 0; n < b.size(); ++n) {
    auto r = DeserializeGraph(Bytes(b.substr(0, n)));
    ASSERT_FALSE(r.ok()) << "prefix " << n;
    EXPECT_THAT(std::string(r.status().message()), StartsWith("graph section: ")) << "prefix " << n;
  }
}

TEST(SerializeTest, RandomCorruptionNeverCrashes) {
  const std::string b = SerializeGraph(Llama2());
  std::mt19937_64 rng(1234);
  int rejected = 0;
  // VIBRANT_IR_FUZZ_TRIALS raises the count for a long run under sanitizers.
  const char* env = std::getenv("VIBRANT_IR_FUZZ_TRIALS");
  const int kTrials = env != nullptr ? std::max(1, std::atoi(env)) : 4000;
  for (int t = 0; t < kTrials; ++t) {
    std::string bad = b;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      const size_t bit = rng() % (bad.size() * 8);
      bad[bit / 8] = static_cast<char>(bad[bit / 8] ^ (1 << (bit % 8)));
    }
    if (t % 4 == 3) {  // also whole random bytes
      bad[rng() % bad.size()] = static_cast<char>(rng());
    }
    auto r = DeserializeGraph(Bytes(bad));
    if (!r.ok()) {
      ++rejected;
      EXPECT_THAT(std::string(r.status().message()), StartsWith("graph section: "));
    } else {
      // Whatever decodes must be a verified graph that re-encodes to itself.
      EXPECT_TRUE(Verify(*r).ok());
      EXPECT_TRUE(SerializeGraph(*r) == bad) << "trial " << t << ": decoded graph re-encodes differently";
    }
  }
  // Most corruptions must be caught (flips in float payloads/names may not be).
  EXPECT_GT(rejected, kTrials / 2);
}

TEST(SerializeTest, RandomBytesNeverCrash) {
  std::mt19937_64 rng(99);
  for (int t = 0; t < 2000; ++t) {
    std::string bad(static_cast<size_t>(rng() % 200), '\0');
    for (char& c : bad) c = static_cast<char>(rng());
    if (bad.size() >= 8 && t % 2 == 0) bad.replace(0, 8, std::string("VIRG\x02\0\0\0", 8));
    auto r = DeserializeGraph(Bytes(bad));
    if (!r.ok()) {
      EXPECT_THAT(std::string(r.status().message()), StartsWith("graph section: "));
    }
  }
}

}  // namespace
}  // namespace vibrant::ir
