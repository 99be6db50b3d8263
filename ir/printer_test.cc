#include "ir/printer.h"

#include <limits>
#include <memory>
#include <random>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/graph.h"
#include "ir/verifier.h"

namespace vibrant::ir {
namespace {

using ::testing::HasSubstr;

// A two-token-dims model fragment touching every printed feature: meta of
// each attr type, all declaration kinds, attrs, an aliasing kv_store, devices,
// a fused op with a body, quoted names.
Graph SmallGraph() {
  Graph g;
  g.max_tokens = 8;
  g.meta["arch"] = std::string("llama");
  g.meta["n_layer"] = int64_t{1};
  g.meta["rms_eps"] = 1e-5;
  g.meta["rope_freq_base"] = 10000.0;
  g.meta["dims"] = std::vector<int64_t>{4, 2};
  ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  ValueId positions = g.AddInput("positions", DType::kI32, {kTokens});
  ValueId embd = g.AddWeight("token_embd.weight", DType::kQ4_0, {10, 32}, "token_embd.weight");
  ValueId norm = g.AddWeight("norm w", DType::kF32, {32}, "output_norm.weight");
  ValueId cache = g.AddKvCache("cache_k.0", DType::kF16, {16, 2, 16});
  ValueId x = *g.AddOp(OpKind::kEmbedding, {embd, tokens}, "x");
  ValueId n = *g.AddOp(OpKind::kRmsNorm, {x}, "n", {{"eps", 1e-5}});
  ValueId k = *g.AddOp(OpKind::kReshape, {n}, "k", {{"shape", std::vector<int64_t>{-1, 2, 16}}});
  ValueId kr = *g.AddOp(OpKind::kRope, {k, positions}, "kr",
                        {{"mode", int64_t{2}}, {"n_rot", int64_t{16}}, {"freq_base", 10000.0},
                         {"freq_scale", 0.25}});
  *g.AddOp(OpKind::kKvStore, {kr, cache, positions}, "cache_k.0'");
  g.mutable_ops().back().device = Device::kCuda;
  g.mutable_value(g.ops().back().outputs[0]).device = Device::kCuda;
  // Fused: y = silu(n) * norm w.
  auto body = std::make_shared<Graph>();
  body->max_tokens = 8;
  ValueId a = body->AddInput("a", DType::kF32, {kTokens, 32});
  ValueId b = body->AddInput("b", DType::kF32, {32});
  ValueId s = *body->AddOp(OpKind::kSilu, {a}, "s");
  body->MarkOutput(*body->AddOp(OpKind::kMul, {s, b}, "m"));
  Value y;
  y.name = "y";
  y.shape = {kTokens, 32};
  ValueId yid = g.AddValue(y);
  Op fused;
  fused.kind = OpKind::kFused;
  fused.inputs = {n, norm};
  fused.outputs = {yid};
  fused.body = body;
  fused.device = Device::kCpu;
  g.AddRawOp(fused);
  ValueId last = *g.AddOp(OpKind::kLastRow, {yid}, "last");
  g.MarkOutput(last);
  return g;
}

constexpr char kSmallText[] = R"(graph max_tokens=8 {
  meta arch="llama"
  meta dims=[4, 2]
  meta n_layer=1
  meta rms_eps=1e-05
  meta rope_freq_base=10000.0
  input %tokens : i32[T]
  input %positions : i32[T]
  weight %token_embd.weight : q4_0[10, 32] = gguf("token_embd.weight")
  weight %"norm w" : f32[32] = gguf("output_norm.weight")
  kv %cache_k.0 : f16[16, 2, 16]
  %x : f32[T, 32] = embedding(%token_embd.weight, %tokens)
  %n : f32[T, 32] = rms_norm(%x) {eps=1e-05}
  %k : f32[T, 2, 16] = reshape(%n) {shape=[-1, 2, 16]}
  %kr : f32[T, 2, 16] = rope(%k, %positions) {freq_base=10000.0, freq_scale=0.25, mode=2, n_rot=16}
  %cache_k.0' : f16[16, 2, 16] @cuda = kv_store(%kr, %cache_k.0, %positions) @cuda  // aliases %cache_k.0
  %y : f32[T, 32] = fused(%n, %"norm w") @cpu {
    input %a : f32[T, 32]
    input %b : f32[32]
    %s : f32[T, 32] = silu(%a)
    %m : f32[T, 32] = mul(%s, %b)
    output %m
  }
  %last : f32[1, 32] = last_row(%y)
  output %last
}
)";

TEST(PrinterTest, Golden) {
  Graph g = SmallGraph();
  ASSERT_TRUE(Verify(g).ok()) << Verify(g);
  EXPECT_EQ(PrintGraph(g), kSmallText);
}

TEST(PrinterTest, ParseRoundTrip) {
  auto g = ParseGraph(kSmallText);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(PrintGraph(*g), kSmallText);
  // Parsed structure, not just text.
  ValueId c = g->FindValue("cache_k.0'");
  ASSERT_GE(c, 0);
  EXPECT_EQ(g->value(c).storage, Storage::kKvCache);
  EXPECT_EQ(g->value(c).alias_of, g->FindValue("cache_k.0"));
  EXPECT_EQ(g->value(c).device, Device::kCuda);
  EXPECT_EQ(g->value(g->FindValue("norm w")).source, "output_norm.weight");
  EXPECT_EQ(g->ops()[3].FloatAttr("freq_scale"), 0.25);
  EXPECT_EQ(g->ops()[3].IntAttr("mode"), 2);
  EXPECT_EQ(std::get<double>(g->meta.at("rope_freq_base")), 10000.0);
  EXPECT_EQ(std::get<int64_t>(g->meta.at("n_layer")), 1);
  ASSERT_NE(g->ops()[5].body, nullptr);
  EXPECT_EQ(g->ops()[5].body->max_tokens, 8);
  EXPECT_EQ(g->ops()[5].device, Device::kCpu);
}

// A memory plan prints as `memory` lines and offsets after the device, and
// parses back: hand-written text, checked field by field.
TEST(PrinterTest, MemoryPlanRoundTrip) {
  constexpr char kText[] = R"(graph max_tokens=4 {
  memory @cpu arena=512 kv=0
  memory @cuda arena=4096 kv=1024
  input %tokens : i32[T] @cpu+0x0
  weight %w : f32[8, 8] @cuda = gguf("w")
  %tokens.cuda : i32[T] @cuda+0x100 = copy(%tokens) @cuda
  %x : f32[T, 8] @cuda+0x200 = embedding(%w, %tokens.cuda) @cuda
  %y : f32[T, 8] @cuda+0x200 = silu(%x) @cuda
  %z : f32[T, 2, 4] @cuda+0x200 = reshape(%y) {shape=[-1, 2, 4]} @cuda
  %out : f32[T, 2, 4] @cpu+0x100 = copy(%z) @cpu
  output %out
}
)";
  auto g = ParseGraph(kText);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(PrintGraph(*g), kText);
  ASSERT_EQ(g->memory.size(), 2u);
  EXPECT_EQ(g->memory.at(Device::kCpu).arena_bytes, 512);
  EXPECT_EQ(g->memory.at(Device::kCuda).arena_bytes, 4096);
  EXPECT_EQ(g->memory.at(Device::kCuda).kv_bytes, 1024);
  EXPECT_EQ(g->value(g->FindValue("tokens")).arena_offset, 0);
  EXPECT_EQ(g->value(g->FindValue("y")).arena_offset, 0x200);
  EXPECT_EQ(g->value(g->FindValue("w")).arena_offset, -1);
  // Without a device the offset stands alone.
  Graph u;
  u.max_tokens = 2;
  ValueId t = u.AddInput("t", DType::kI32, {kTokens});
  u.mutable_value(t).arena_offset = 0x300;
  u.memory[Device::kUnassigned].arena_bytes = 1024;
  EXPECT_THAT(PrintGraph(u), HasSubstr("  memory arena=1024 kv=0\n  input %t : i32[T] +0x300\n"));
  // Offsets outside the arena are the verifier's error.
  std::string bad = kText;
  bad.replace(bad.find("@cuda+0x200 = silu"), 11, "@cuda+0xff0");
  auto r = ParseGraph(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("exceed the cuda arena of 4096 bytes"));
}

TEST(PrinterTest, FormatDouble) {
  EXPECT_EQ(FormatDouble(1e-5), "1e-05");
  EXPECT_EQ(FormatDouble(10000.0), "10000.0");
  EXPECT_EQ(FormatDouble(0.1), "0.1");
  EXPECT_EQ(FormatDouble(-0.0), "-0.0");
  EXPECT_EQ(FormatDouble(0.125), "0.125");
  EXPECT_EQ(FormatDouble(1e300), "1e+300");
  EXPECT_EQ(FormatDouble(std::numeric_limits<double>::infinity()), "inf");
  EXPECT_EQ(FormatDouble(-std::numeric_limits<double>::infinity()), "-inf");
  EXPECT_EQ(FormatDouble(std::numeric_limits<double>::quiet_NaN()), "nan");
}

TEST(PrinterTest, AttrValuesRoundTrip) {
  Graph g;
  g.meta["a"] = 0.1 + 0.2;  // needs 17 digits
  g.meta["b"] = -3.0;
  g.meta["c"] = std::string("q\"\\\n\t\x01 é");
  g.meta["d"] = std::vector<int64_t>{};
  g.meta["e"] = int64_t{-9223372036854775807 - 1};
  g.meta["f"] = 5e-324;
  g.meta["g"] = -std::numeric_limits<double>::infinity();
  g.meta["key with space"] = int64_t{1};
  const std::string text = PrintGraph(g);
  EXPECT_THAT(text, HasSubstr("meta c=\"q\\\"\\\\\\n\\t\\x01 é\"\n"));
  EXPECT_THAT(text, HasSubstr("meta \"key with space\"=1\n"));
  auto back = ParseGraph(text);
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
  EXPECT_EQ(back->meta, g.meta);
}

TEST(PrinterTest, CommentsAndWhitespaceAreFree) {
  auto g = ParseGraph(R"(graph max_tokens = 4 {  // header
    input %x:f32[T,4]   // the input
    %y:f32[T,4]=silu(%x)
    output %y })");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(PrintGraph(*g),
            "graph max_tokens=4 {\n  input %x : f32[T, 4]\n  %y : f32[T, 4] = silu(%x)\n  output %y\n}\n");
}

TEST(PrinterTest, ParseErrors) {
  struct Case {
    const char* text;
    const char* want;
  };
  const Case cases[] = {
      {"graph max_tokens=4 {\n  %y : f32[T, 4] = silu(%x)\n}", "line 2, column 25: unknown value %x"},
      {"graph max_tokens=4 {\n  input %x : f33[4]\n}", "line 2, column 14: unknown dtype 'f33'"},
      {"graph max_tokens=4 {\n  input %x : f32[4]\n  input %x : f32[4]\n}", "line 3, column 9: %x is defined twice"},
      {"graph max_tokens=4 {\n  input %x : f32[4]\n  %y : f32[4] = frob(%x)\n}", "line 3, column 17: unknown op 'frob'"},
      {"graph max_tokens=4 {\n  input %x : f32[4]", "missing '}'"},
      {"graph max_tokens=4 {\n  bogus\n}", "line 2, column 3: unknown statement 'bogus'"},
      {"graph max_tokens=4 {} trailing", "unexpected text after the graph"},
      {"graph max_tokens=x {}", "line 1, column 18: expected an integer"},
      {"graph max_tokens=4 {\n  input %x : f32[4] @tpu\n}", "unknown device 'tpu'"},
      {"graph max_tokens=4 {\n  meta a=\"abc\n}", "unterminated string"},
      {"graph max_tokens=4 {\n  meta a=1.5x\n}", "bad number '1.5x'"},
      // Parses, but the verifier rejects it.
      {"graph max_tokens=4 {\n  input %x : f32[T, 4]\n  %y : f32[T, 5] = silu(%x)\n  output %y\n}",
       "parsed graph does not verify: op 0: silu y: output records f32[T, 5] but the op produces f32[T, 4]"},
  };
  for (const Case& c : cases) {
    auto g = ParseGraph(c.text);
    ASSERT_FALSE(g.ok()) << c.text;
    EXPECT_THAT(std::string(g.status().message()), HasSubstr(c.want)) << c.text;
  }
}

TEST(PrinterTest, MutatedTextNeverCrashes) {
  const std::string base = kSmallText;
  const char alphabet[] = "%:=@{}[](),\"\\/ \nT-.e0123456789abfxyz'";
  std::mt19937 rng(7);
  for (int t = 0; t < 3000; ++t) {
    std::string text = base;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % text.size();
      const char c = alphabet[rng() % (sizeof(alphabet) - 1)];
      switch (rng() % 3) {
        case 0: text[at] = c; break;
        case 1: text.insert(text.begin() + at, c); break;
        default: text.erase(at, 1 + rng() % 8); break;
      }
      if (text.empty()) text = "g";
    }
    auto g = ParseGraph(text);
    if (g.ok()) {
      EXPECT_TRUE(Verify(*g).ok());
      // What parses prints to text that parses to the same print.
      auto again = ParseGraph(PrintGraph(*g));
      ASSERT_TRUE(again.ok()) << again.status() << "\n" << PrintGraph(*g);
      EXPECT_EQ(PrintGraph(*again), PrintGraph(*g));
    }
  }
  for (size_t n = 0; n + 1 < base.size(); ++n) EXPECT_FALSE(ParseGraph(base.substr(0, n)).ok()) << n;
}

TEST(PrinterTest, PrintsBrokenGraphs) {
  Graph g;
  g.AddInput("x", DType::kF32, {4});
  Value orphan;
  orphan.name = "o";
  orphan.shape = {4};
  g.AddValue(orphan);
  Op op;
  op.kind = OpKind::kSilu;
  op.inputs = {42};
  op.outputs = {7};
  g.AddRawOp(op);
  EXPECT_EQ(PrintGraph(g),
            "graph max_tokens=1 {\n  input %x : f32[4]\n  // undefined activation %o : f32[4]\n"
            "  %<bad:7> = silu(%<bad:42>)\n}\n");
}

}  // namespace
}  // namespace vibrant::ir
