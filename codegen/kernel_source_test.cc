#include "codegen/kernel_source.h"

#include <string>

#include "codegen/kernel_bundle.h"
#include "codegen/kernels/families.h"
#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant::codegen {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(ModuleSource, AllKernelsHasEveryEntryPoint) {
  const std::string src = ModuleSource(AllKernels());
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ4_0, DType::kQ4_1,
                  DType::kQ5_0, DType::kQ5_1, DType::kQ8_0, DType::kQ2_K, DType::kQ3_K,
                  DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kQ8_K}) {
    EXPECT_TRUE(CudaSupportsWeightType(t)) << DTypeName(t);
    EXPECT_THAT(src, HasSubstr(MatmulKernelName(t, 1) + "("));
    EXPECT_THAT(src, HasSubstr(MatmulKernelName(t, 8) + "("));
    EXPECT_THAT(src, HasSubstr(EmbeddingKernelName(t) + "("));
    EXPECT_THAT(src, HasSubstr(DequantF16KernelName(t) + "("));
  }
  for (const char* k : {"vb_f32_to_f16(", "vb_rms_norm(", "vb_add(", "vb_mul(", "vb_silu(",
                        "vb_rope(", "vb_kv_store_f16(", "vb_kv_store_f32(", "vb_attn_split_f16(",
                        "vb_attn_split_f32(", "vb_attn_combine("}) {
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
            absl::StatusCode::kUnimplemented);
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

}  // namespace
}  // namespace vibrant::codegen
