// NVRTC compiles of every generated kernel. These need libnvrtc but no GPU, so
// they run in CI.
#include "codegen/cuda_target.h"
#include "codegen/nvrtc.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "codegen/kernel_source.h"
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

TEST(Nvrtc, CompilesEveryKernelForSm90) {
  NvrtcOptions opts;
  opts.arch = "sm_90";
  opts.use_cache = false;  // really run NVRTC
  const std::string src = ModuleSource(AllKernels());
  const auto t0 = std::chrono::steady_clock::now();
  auto b = CompileCuda(src, kModuleName, opts);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(b.ok()) << b.status();
  std::printf("[ MEASURED ] NVRTC %s: %zu source bytes -> %zu CUBIN + %zu PTX bytes in %.1f s\n",
              NvrtcVersion().c_str(), src.size(), b->cubin.size(), b->ptx.size(), s);
  EXPECT_EQ(b->arch, "sm_90");
  EXPECT_EQ(b->source_hash, HashText(src));
  ASSERT_GE(b->cubin.size(), 4u);
  EXPECT_EQ(b->cubin.substr(0, 4), "\x7f" "ELF");
  // Every entry point is in the PTX, unmangled.
  for (DType t : AllKernels().matmul_types) {
    EXPECT_THAT(b->ptx, HasSubstr(".entry " + MatmulKernelName(t, 1) + "("));
    EXPECT_THAT(b->ptx, HasSubstr(".entry " + MatmulKernelName(t, 8) + "("));
    EXPECT_THAT(b->ptx, HasSubstr(".entry " + EmbeddingKernelName(t) + "("));
    EXPECT_THAT(b->ptx, HasSubstr(".entry " + DequantF16KernelName(t) + "("));
  }
  for (const char* k : {"vb_f32_to_f16", "vb_rms_norm", "vb_add", "vb_mul", "vb_silu",
                        "vb_rope", "vb_kv_store_f16", "vb_kv_store_f32", "vb_attn_split_f16",
                        "vb_attn_split_f32", "vb_attn_combine", "vb_gelu", "vb_scale", "vb_moe_topk",
                        "vb_moe_weights", "vb_moe_sum"}) {
    EXPECT_THAT(b->ptx, HasSubstr(std::string(".entry ") + k + "("));
  }
  // The router keeps its probabilities in registers (recomputed, not stored).
  for (const std::string k : {"vb_moe_topk", "vb_moe_weights"}) {
    const size_t at = b->ptx.find(".entry " + k + "(");
    ASSERT_NE(at, std::string::npos) << k;
    const std::string body = b->ptx.substr(at, b->ptx.find("\n}\n", at) - at);
    EXPECT_EQ(body.find(".local"), std::string::npos) << k << " uses local memory";
  }
  // The weight-streaming kernels keep their decoded blocks in registers: no
  // local-memory arrays (rope's sinf/cosf slow path legitimately has one).
  for (DType t : AllKernels().matmul_types) {
    for (const std::string& k : {MatmulKernelName(t, 1), MatmulKernelName(t, 8),
                                 EmbeddingKernelName(t), DequantF16KernelName(t), MatmulIdKernelName(t)}) {
      const size_t at = b->ptx.find(".entry " + k + "(");
      ASSERT_NE(at, std::string::npos) << k;
      const size_t end = b->ptx.find("\n}\n", at);
      const std::string body = b->ptx.substr(at, end - at);
      EXPECT_EQ(body.find(".local"), std::string::npos) << k << " uses local memory";
    }
    if (!MatvecQ8Supports(t)) continue;
    for (const std::string& k : {MatvecQ8KernelName(t, 1), MatvecQ8KernelName(t, 8),
                                 MatvecQ8MultiKernelName(t)}) {
      const size_t at = b->ptx.find(".entry " + k + "(");
      ASSERT_NE(at, std::string::npos) << k;
      const size_t end = b->ptx.find("\n}\n", at);
      const std::string body = b->ptx.substr(at, end - at);
      EXPECT_EQ(body.find(".local"), std::string::npos) << k << " uses local memory";
    }
  }
}

// ---- generated fused kernels ----------------------------------------------------

// `g` through the default pipeline for the GPU (as vibrantc compile --device cuda).
absl::StatusOr<ir::Graph> CompileForCuda(ir::Graph g) {
  passes::PassContext ctx;
  ctx.device = passes::DevicePolicy::kCuda;
  ctx.cuda_supports = [&g](const ir::Op& op) { return CudaSupportsOp(g, op); };
  const CudaTarget target;  // the kernel choice too: fused bodies gain their 8-bit outputs
  ctx.cuda_kernels = &target;
  std::ostringstream log;
  absl::Status s = passes::DefaultPipeline().Run(g, ctx, passes::PipelineOptions(), log);
  if (!s.ok()) return s;
  return g;
}

// Adds the fused kernels of `g` to `set`; every fused op must have one.
void AddFused(const ir::Graph& g, const std::string& model, KernelSet* set, int* fused_ops) {
  for (const ir::Op& op : g.ops()) {
    if (op.kind != ir::OpKind::kFused) continue;
    ++*fused_ops;
    auto k = GenerateFused(g, op);
    EXPECT_TRUE(k.ok()) << model << ": " << k.status();
    if (k.ok()) set->fused.emplace(k->name, k->source);
  }
}

// Compiles `set` (fused kernels only: the families are checked above) and
// checks every fused entry point; the elementwise and norm kernels must keep
// their values in registers (no local memory).
void CompileFused(const KernelSet& set) {
  NvrtcOptions opts;
  opts.arch = "sm_90";
  opts.use_cache = false;
  KernelSet only;
  only.fused = set.fused;
  const std::string src = ModuleSource(only);
  auto b = CompileCuda(src, kModuleName, opts);
  ASSERT_TRUE(b.ok()) << b.status();
  for (const auto& [name, text] : set.fused) {
    const size_t at = b->ptx.find(".entry " + name + "(");
    ASSERT_NE(at, std::string::npos) << name;
    if (text.find("cosf(") != std::string::npos) continue;  // sinf/cosf's slow path
    const std::string body = b->ptx.substr(at, b->ptx.find("\n}\n", at) - at);
    EXPECT_EQ(body.find(".local"), std::string::npos) << name << " uses local memory:\n" << text;
  }
}

TEST(NvrtcFused, CompilesQwen25_3BFusedKernels) {
  const TransformerSpec spec = passes::test_models::Qwen25_3BSpec();
  LowerOptions lo;
  lo.n_ctx = 4096;
  auto g = LowerShapes(ShapesFromSpec(spec), lo);
  ASSERT_TRUE(g.ok()) << g.status();
  auto c = CompileForCuda(*std::move(g));
  ASSERT_TRUE(c.ok()) << c.status();
  KernelSet set;
  int fused = 0;
  AddFused(*c, "Qwen2.5-3B", &set, &fused);
  // The norms and swiglu, each also rounding its output to 8 bits where a
  // mat-vec reads it (quantize-activations); the q/k biases moved into the
  // mat-vecs (fold-bias), so rope runs alone.
  EXPECT_EQ(fused, 109);
  EXPECT_EQ(set.fused.size(), 4u);
  CompileFused(set);
}

TEST(NvrtcFused, CompilesTheFusedKernelsOfEverySharedModel) {
  namespace fs = std::filesystem;
  const fs::path dir = VIBRANT_SOURCE_DIR "/../shared/models";
  std::vector<std::string> paths;
  std::error_code ec;
  if (fs::is_directory(dir, ec)) {
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".gguf") paths.push_back(e.path().string());
    }
  }
  if (paths.empty()) GTEST_SKIP() << "no shared models in " << dir.string();
  // ../shared/next: the new architectures and quant types.
  const fs::path next = VIBRANT_SOURCE_DIR "/../shared/next/models";
  if (fs::is_directory(next, ec)) {
    for (const auto& e : fs::directory_iterator(next, ec)) {
      const std::string n = e.path().filename().string();
      if (e.path().extension() == ".gguf") paths.push_back(e.path().string());
    }
  }
  std::sort(paths.begin(), paths.end());
  KernelSet set;
  int fused = 0;
  for (const std::string& p : paths) {
    auto file = GgufFile::Open(p);
    ASSERT_TRUE(file.ok()) << file.status();
    LowerOptions lo;
    lo.max_tokens = 16;
    lo.n_ctx = 256;
    auto g = LowerGguf(**file, lo);
    ASSERT_TRUE(g.ok()) << p << ": " << g.status();
    auto c = CompileForCuda(*std::move(g));
    ASSERT_TRUE(c.ok()) << p << ": " << c.status();
    AddFused(*c, p, &set, &fused);
  }
  std::printf("[ INFO ] %zu shared models: %d fused ops, %zu distinct kernels\n", paths.size(),
              fused, set.fused.size());
  EXPECT_GT(fused, 0);
  CompileFused(set);
}

TEST(Nvrtc, ErrorsShowTheGeneratedSourceLine) {
  NvrtcOptions opts;
  opts.use_cache = false;
  const std::string src =
      "extern \"C\" __global__ void k(float* x) {\n"
      "  x[0] = 1.0f;\n"
      "  x[1] = undefined_thing;\n"
      "}\n";
  auto b = CompileCuda(src, "broken.cu", opts);
  ASSERT_FALSE(b.ok());
  const std::string msg(b.status().message());
  EXPECT_THAT(msg, HasSubstr("broken.cu(3)"));
  EXPECT_THAT(msg, HasSubstr(">    3 |   x[1] = undefined_thing;"));
  EXPECT_THAT(msg, HasSubstr("sm_90"));
}

TEST(Nvrtc, SecondCompileComesFromTheCache) {
  const std::string dir = (std::filesystem::path(::testing::TempDir()) /
                           ("vibrant_nvrtc_cache_" + std::to_string(::getpid())))
                              .string();
  std::filesystem::remove_all(dir);
  NvrtcOptions opts;
  opts.cache_dir = dir;
  const std::string src = "extern \"C\" __global__ void twice(float* x) { x[threadIdx.x] *= 2.0f; }\n";
  bool hit = true;
  auto a = CompileCuda(src, "twice.cu", opts, &hit);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_FALSE(hit);
  auto b = CompileCuda(src, "twice.cu", opts, &hit);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(hit);
  EXPECT_EQ(a->cubin, b->cubin);
  EXPECT_EQ(a->ptx, b->ptx);
  // Another architecture is another key.
  opts.arch = "sm_80";
  auto c = CompileCuda(src, "twice.cu", opts, &hit);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(hit);
  EXPECT_EQ(c->arch, "sm_80");
  std::filesystem::remove_all(dir);
}

TEST(Nvrtc, ValidatesArchitectureNames) {
  EXPECT_TRUE(ValidateCudaArch("sm_90").ok());
  EXPECT_TRUE(ValidateCudaArch("sm_90a").ok());
  EXPECT_TRUE(ValidateCudaArch("sm_120").ok());
  for (const char* bad : {"", "sm", "sm_", "compute_90", "sm_9x", "90", "sm_a", "sm_30"}) {
    EXPECT_FALSE(ValidateCudaArch(bad).ok()) << bad;
  }
  NvrtcOptions opts;
  opts.arch = "gfx90a";
  EXPECT_FALSE(CompileCuda("", "x.cu", opts).ok());
}

TEST(Nvrtc, AnnotatesLogLines) {
  const std::string src = "a\nb\nc\nd\ne\n";
  const std::string out = AnnotateNvrtcLog("m.cu(3): error: bad\nnote\n", "m.cu", src, 1);
  EXPECT_EQ(out,
            "m.cu(3): error: bad\n"
            "       2 | b\n"
            "  >    3 | c\n"
            "       4 | d\n"
            "note\n");
}

}  // namespace
}  // namespace vibrant::codegen
