#include "codegen/kernel_source.h"

#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/kernel_bundle.h"
#include "codegen/cuda_target.h"
#include "codegen/kernels/families.h"
#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "passes/pass.h"
#include "passes/test_models.h"

namespace vibrant::codegen {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(ModuleSource, AllKernelsHasEveryEntryPoint) {
  const std::string src = ModuleSource(AllKernels());
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ4_0, DType::kQ4_1,
                  DType::kQ5_0, DType::kQ5_1, DType::kQ8_0, DType::kQ2_K, DType::kQ3_K,
                  DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kQ8_K, DType::kIQ4_NL,
                  DType::kIQ4_XS}) {
    EXPECT_TRUE(CudaSupportsWeightType(t)) << DTypeName(t);
    EXPECT_THAT(src, HasSubstr(MatmulKernelName(t, 1) + "("));
    EXPECT_THAT(src, HasSubstr(MatmulKernelName(t, 8) + "("));
    EXPECT_THAT(src, HasSubstr(EmbeddingKernelName(t) + "("));
    EXPECT_THAT(src, HasSubstr(DequantF16KernelName(t) + "("));
  }
  for (const char* k : {"vb_f32_to_f16(", "vb_rms_norm(", "vb_add(", "vb_mul(", "vb_silu(",
                        "vb_rope(", "vb_kv_store_f16(", "vb_kv_store_f32(", "vb_attn_split_f16(",
                        "vb_attn_split_f32(", "vb_attn_combine(", "vb_gelu(", "vb_scale(",
                        "vb_moe_topk(", "vb_moe_weights(", "vb_moe_sum(", "vb_matmul_id_q4_K(",
                        "vb_matmul_id_iq4_xs("}) {
    EXPECT_THAT(src, HasSubstr(k));
  }
  EXPECT_EQ(MatmulKernelName(DType::kQ4_K, 1), "vb_matmul1_q4_K");
  EXPECT_EQ(DequantF16KernelName(DType::kQ6_K), "vb_dequant_f16_q6_K");
  EXPECT_FALSE(CudaSupportsWeightType(DType::kI32));
}

TEST(ModuleSource, OnlyTheGraphsTypesAreInstantiated) {
  auto file = GgufFile::Open(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  auto graph = LowerGguf(**file, LowerOptions{});
  ASSERT_TRUE(graph.ok()) << graph.status();
  KernelSet set = KernelSetForGraph(*graph);
  EXPECT_EQ(set.matmul_types, std::set<DType>{DType::kF32});
  EXPECT_EQ(set.embed_types, std::set<DType>{DType::kF32});
  const std::string src = ModuleSource(set);
  EXPECT_THAT(src, HasSubstr("vb_matmul1_f32("));
  EXPECT_THAT(src, Not(HasSubstr("vb_matmul1_q4_K(")));
  EXPECT_THAT(src, HasSubstr("vb_dequant_f16_f32("));
  EXPECT_THAT(src, Not(HasSubstr("vb_dequant_f16_q4_K(")));
  EXPECT_EQ(src, ModuleSource(set)) << "generation must be deterministic";
  for (const ir::Op& op : graph->ops()) {
    EXPECT_TRUE(CudaSupportsOp(*graph, op)) << ir::OpName(op.kind);
  }
  std::string fused;
  EXPECT_EQ(GenerateFusedKernel(*graph, graph->ops()[0], &fused).code(),
            absl::StatusCode::kInvalidArgument)
      << "ops()[0] is an embedding, not a fused op";
  EXPECT_TRUE(set.fused.empty()) << "the lowered graph is not fused yet";
}

// The tensor-core attention kernels are instantiated for the graph's cache
// types and head size, and the GPU runs q8_0 caches (vb_kv_store_q8_0 and the
// tensor-core attention), so every op of such a graph stays on the GPU.
TEST(ModuleSource, AttentionKernelsFollowTheCacheTypes) {
  for (DType kt : {DType::kF16, DType::kQ8_0}) {
    LowerOptions lo;
    lo.n_ctx = 1024;
    lo.cache_type_k = kt;
    auto g = LowerShapes(ShapesFromSpec(passes::test_models::Qwen25_3BSpec()), lo);
    ASSERT_TRUE(g.ok()) << g.status();
    const KernelSet set = KernelSetForGraph(*g);
    EXPECT_EQ(set.attention, (std::set<AttnConfig>{AttnConfig{kt, DType::kF16, 128}}));
    const std::string src = ModuleSource(set);
    EXPECT_THAT(src, HasSubstr(AttnDecodeKernelName(AttnConfig{kt, DType::kF16, 128}) + "("));
    EXPECT_THAT(src, HasSubstr(AttnPrefillKernelName(AttnConfig{kt, DType::kF16, 128}) + "("));
    int attn = 0, stores = 0;
    for (const ir::Op& op : g->ops()) {
      if (op.kind == ir::OpKind::kAttention) {
        ++attn;
        EXPECT_TRUE(CudaSupportsOp(*g, op));
      } else if (op.kind == ir::OpKind::kKvStore) {
        ++stores;
        EXPECT_TRUE(CudaSupportsOp(*g, op));  // cache_k.* follow kt, cache_v.* are f16
      }
    }
    EXPECT_EQ(attn, 36);
    EXPECT_EQ(stores, 72);
  }
  EXPECT_EQ(AllKernels().attention.size(), 6u);  // f32, f16, q8_0 for K = V, head_dim 64, 128
}

// ---- fused kernels ---------------------------------------------------------------

// `g` through the default pipeline for the GPU (as vibrantc compile --device cuda).
ir::Graph CompileForCuda(ir::Graph g) {
  passes::PassContext ctx;
  ctx.device = passes::DevicePolicy::kCuda;
  ctx.cuda_supports = [&g](const ir::Op& op) { return CudaSupportsOp(g, op); };
  std::ostringstream log;
  absl::Status s = passes::DefaultPipeline().Run(g, ctx, passes::PipelineOptions(), log);
  EXPECT_TRUE(s.ok()) << s << log.str();
  return g;
}

TransformerSpec Qwen25_3B() { return passes::test_models::Qwen25_3BSpec(); }

ir::Graph CompiledShapes(const TransformerSpec& spec) {
  LowerOptions opts;
  opts.n_ctx = 4096;
  opts.max_tokens = 1;
  auto g = LowerShapes(ShapesFromSpec(spec), opts);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? CompileForCuda(*std::move(g)) : ir::Graph();
}

std::string FusedOutputName(const ir::Graph& g, const ir::Op& op) {
  return g.value(op.outputs.back()).name;
}

TEST(FusedKernels, Qwen25_3BHasOneKernelPerDistinctBody) {
  const ir::Graph g = CompiledShapes(Qwen25_3B());
  std::map<std::string, std::string> kernel_of;  // last output name -> kernel name
  std::set<std::string> names;
  int fused = 0;
  for (const ir::Op& op : g.ops()) {
    if (op.kind != ir::OpKind::kFused) continue;
    ++fused;
    auto k = GenerateFused(g, op);
    ASSERT_TRUE(k.ok()) << FusedOutputName(g, op) << ": " << k.status();
    EXPECT_THAT(k->name, ::testing::MatchesRegex("vb_fused_[0-9a-f]{16}"));
    EXPECT_THAT(k->source, HasSubstr("void " + k->name + "("));
    kernel_of[FusedOutputName(g, op)] = k->name;
    names.insert(k->name);
  }
  // Per layer: attention bias+rope for q and for k, swiglu, the residual add
  // + ffn_norm, and the residual add + the next layer's attn_norm (the last
  // layer's goes into output_norm with a single output); plus attn_norm.0.
  EXPECT_EQ(fused, 36 * 5 + 1);
  // Distinct bodies: attn_norm.0 (rms*w), residual+norm with 2 outputs,
  // residual+output_norm (1 output), q rope (16 heads), k rope (2 heads),
  // swiglu.
  EXPECT_EQ(names.size(), 6u);
  for (const char* a : {"q_rope", "k_rope", "ffn_act", "ffn_norm"}) {
    EXPECT_EQ(kernel_of[absl::StrCat(a, ".0")], kernel_of[absl::StrCat(a, ".35")]) << a;
  }
  EXPECT_EQ(kernel_of["attn_norm.1"], kernel_of["attn_norm.35"]);
  EXPECT_EQ(kernel_of["attn_norm.1"], kernel_of["ffn_norm.7"]) << "the same residual+norm body";
  EXPECT_NE(kernel_of["attn_norm.0"], kernel_of["attn_norm.1"]) << "no residual add in layer 0";
  EXPECT_NE(kernel_of["q_rope.0"], kernel_of["k_rope.0"]) << "16 heads vs 2";
  EXPECT_NE(kernel_of["result_norm"], kernel_of["attn_norm.1"]) << "one output vs two";
  for (const char* out : {"attn_norm.0", "attn_norm.1", "result_norm", "q_rope.0", "k_rope.0",
                          "ffn_act.0"}) {
    std::printf("[ INFO ] %s: %s\n", out, kernel_of[out].c_str());
  }

  const KernelSet set = KernelSetForGraph(g);
  EXPECT_EQ(set.fused.size(), 6u);
  const std::string src = ModuleSource(set);
  for (const std::string& n : names) {
    EXPECT_EQ(src.find("void " + n + "("), src.rfind("void " + n + "(")) << n << " defined once";
    EXPECT_NE(src.find("void " + n + "("), std::string::npos) << n;
  }
  EXPECT_EQ(src, ModuleSource(KernelSetForGraph(g))) << "generation must be deterministic";
}

TEST(FusedKernels, AttributesArePartOfTheKernel) {
  // eps is baked into the norm kernels and rope's base into the rope ones:
  // another value is another kernel; the layer count changes nothing.
  TransformerSpec a = Qwen25_3B(), b = a, c = a;
  a.n_layer = b.n_layer = c.n_layer = 2;
  b.rms_eps = 1e-5;
  c.rope_freq_base = 1e4;
  TransformerSpec d = a;
  d.n_layer = 3;
  const KernelSet ka = KernelSetForGraph(CompiledShapes(a));
  const KernelSet kb = KernelSetForGraph(CompiledShapes(b));
  const KernelSet kc = KernelSetForGraph(CompiledShapes(c));
  const KernelSet kd = KernelSetForGraph(CompiledShapes(d));
  auto common = [](const KernelSet& x, const KernelSet& y) {
    int n = 0;
    for (const auto& [name, src] : x.fused) n += y.fused.count(name);
    return n;
  };
  ASSERT_EQ(ka.fused.size(), 6u);
  EXPECT_EQ(common(ka, kd), 6);
  EXPECT_EQ(common(ka, kb), 3) << "the 3 norm kernels change with eps";
  EXPECT_EQ(common(ka, kc), 4) << "the 2 rope kernels change with the base";
}

TEST(FusedKernels, StoriesBodiesAllGenerate) {
  auto file = GgufFile::Open(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  auto lowered = LowerGguf(**file, LowerOptions{});
  ASSERT_TRUE(lowered.ok()) << lowered.status();
  const ir::Graph g = CompileForCuda(*std::move(lowered));
  int fused = 0;
  for (const ir::Op& op : g.ops()) {
    if (op.kind != ir::OpKind::kFused) continue;
    ++fused;
    auto k = GenerateFused(g, op);
    ASSERT_TRUE(k.ok()) << k.status();
    // Shape: llama (no biases) fuses norms and swiglu only.
    EXPECT_NE(k->shape, FusedKernel::Shape::kRope);
    if (k->shape == FusedKernel::Shape::kRowReduce) {
      EXPECT_EQ(k->row_elems, 64);
      EXPECT_EQ(k->threads, kNormThreads);
      EXPECT_THAT(k->source, HasSubstr("vb_block_sum_d"));
    }
  }
  EXPECT_EQ(fused, 5 * 3 + 1);
}

TEST(FusedKernels, RejectsBodiesItCannotGenerate) {
  // A body holding an op the generator does not handle (the verifier would
  // refuse it too; the generator must not trust that).
  auto body = std::make_shared<ir::Graph>();
  body->max_tokens = 4;
  ir::ValueId t = body->AddInput("table", DType::kF32, {8, 4});
  ir::ValueId ids = body->AddInput("ids", DType::kI32, {ir::kTokens});
  auto e = body->AddOp(ir::OpKind::kEmbedding, {t, ids}, "e");
  ASSERT_TRUE(e.ok());
  body->MarkOutput(*e);
  ir::Graph g;
  g.max_tokens = 4;
  ir::Op op;
  op.kind = ir::OpKind::kFused;
  op.inputs = {g.AddInput("table", DType::kF32, {8, 4}), g.AddInput("ids", DType::kI32, {ir::kTokens})};
  ir::Value out;
  out.name = "y";
  out.dtype = DType::kF32;
  out.shape = {ir::kTokens, 4};
  op.outputs = {g.AddValue(out)};
  op.body = body;
  auto k = GenerateFused(g, op);
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("'y'"));
}

TEST(MatmulWarpsPerRow, SplitsRowsOnlyWhenTheGridIsSmall) {
  // 132 SMs: a grid below 264 blocks doubles the warps per row while each
  // thread keeps two groups of 8 (64 * wpr <= K / 8).
  EXPECT_EQ(MatmulWarpsPerRow(151936, 896, 132), 1);   // lm_head: plenty of rows
  EXPECT_EQ(MatmulWarpsPerRow(896, 896, 132), 2);      // 112 groups: 2 warps
  EXPECT_EQ(MatmulWarpsPerRow(896, 4864, 132), 4);     // 224 blocks -> 448
  EXPECT_EQ(MatmulWarpsPerRow(67, 4096, 132), 8);
  EXPECT_EQ(MatmulWarpsPerRow(67, 100, 132), 1);       // too short to split
  EXPECT_EQ(MatmulWarpsPerRow(2048, 2048, 132), 2);    // 256 blocks -> 512
}

TEST(KernelBundle, RoundTripsAndRejectsDamage) {
  KernelBundle b;
  b.source_hash = 0x0123456789abcdefull;
  b.arch = "sm_90";
  b.nvrtc_version = "13.0";
  b.cubin = std::string("\x7f" "ELF\0\1\2", 7);
  b.ptx = ".version 9.0\n";
  const std::string bytes = SerializeKernelBundle(b);
  auto span = [](const std::string& s) {
    return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  auto back = ParseKernelBundle(span(bytes), "k");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->source_hash, b.source_hash);
  EXPECT_EQ(back->arch, b.arch);
  EXPECT_EQ(back->nvrtc_version, b.nvrtc_version);
  EXPECT_EQ(back->cubin, b.cubin);
  EXPECT_EQ(back->ptx, b.ptx);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    EXPECT_FALSE(ParseKernelBundle(span(bytes.substr(0, cut)), "k").ok()) << cut;
  }
  std::string bad = bytes;
  bad[0] = 'X';
  EXPECT_THAT(std::string(ParseKernelBundle(span(bad), "k").status().message()),
              HasSubstr("bad magic"));
  EXPECT_THAT(std::string(ParseKernelBundle(span(bytes + "z"), "k").status().message()),
              HasSubstr("trailing"));
}

TEST(HashText, IsFnv1a64) {
  // FNV-1a 64 test vectors.
  EXPECT_EQ(HashText(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(HashText("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(HashText("foobar"), 0x85944171f73967e8ull);
}

// Programmatic dependent launch is only safe when no kernel touches memory
// before griddepcontrol.wait: every kernel of a module starts with it.
TEST(KernelSource, EveryKernelFirstWaitsForThePreviousGrid) {
  const std::string src = ModuleSource(AllKernels());
  size_t kernels = 0, at = 0;
  while ((at = src.find("extern \"C\" __global__", at)) != std::string::npos) {
    const size_t brace = src.find('{', at);
    ASSERT_NE(brace, std::string::npos);
    EXPECT_EQ(src.compare(brace, 25, "{\n  VB_GRID_DEPENDENCY();"), 0)
        << src.substr(at, brace - at + 40);
    ++kernels;
    at = brace;
  }
  EXPECT_GT(kernels, 20u);
  EXPECT_EQ(WithGridDependency("int x;"), "int x;");
  EXPECT_EQ(WithGridDependency("extern \"C\" __global__ void k(int a) { a = 1; }"),
            "extern \"C\" __global__ void k(int a) {\n  VB_GRID_DEPENDENCY(); a = 1; }");
}

// Sliding-window attention runs on the scalar kernels (vb_attn_split_*),
// whose window the tensor-core kernels do not have yet; with a q8_0 cache
// (which only those read) it is a named error.
TEST(CudaTargetAttention, WindowTakesTheScalarKernels) {
  auto build = [](DType cache, int64_t window) {
    ir::Graph g;
    g.max_tokens = 32;
    const ir::ValueId q = g.AddInput("q", DType::kF32, {ir::kTokens, 4, 128});
    const ir::ValueId pos = g.AddInput("pos", DType::kI32, {ir::kTokens});
    const ir::ValueId k = g.AddKvCache("k", cache, {256, 2, 128});
    const ir::ValueId v = g.AddKvCache("v", cache, {256, 2, 128});
    ir::Attrs a = {{"scale", 0.1}};
    if (window > 0) a["window"] = window;
    EXPECT_TRUE(g.AddOp(ir::OpKind::kAttention, {q, k, v, pos}, "attn", a).ok());
    for (ir::Op& op : g.mutable_ops()) op.device = ir::Device::kCuda;
    return g;
  };
  const CudaTarget target;
  auto names = [&](const ir::Graph& g) {
    absl::StatusOr<std::vector<ir::KernelVariant>> vs = target.SelectKernels(g, 0);
    std::set<std::string> out;
    if (!vs.ok()) return std::set<std::string>{std::string(vs.status().message())};
    for (const ir::KernelVariant& v : *vs) out.insert(v.name);
    return out;
  };
  EXPECT_EQ(names(build(DType::kF16, 8)), std::set<std::string>({"attention.split"}));
  EXPECT_THAT(names(build(DType::kF16, 0)), ::testing::Contains("attention.flash_decode"));
  EXPECT_THAT(*names(build(DType::kQ8_0, 8)).begin(),
              HasSubstr("sliding-window attention needs f16 or f32 caches of one type"));
}

}  // namespace
}  // namespace vibrant::codegen
