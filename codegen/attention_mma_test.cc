// Host-side rules of the tensor-core attention kernels: the decode partition
// (which warp of which split takes which keys), the launch plans, naming and
// source assembly. The kernels themselves run on the emulator
// (attention_host_test.cc) and on the GPU (attention_gpu_test.cc).
#include "codegen/kernels/attention_mma.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant::codegen {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Every step of 16 keys in use is taken by exactly one (split, warp), all of
// them in the first `used` splits, each warp a contiguous run of at most
// steps_per_warp steps, and the work is spread: no split past `used`, and
// used * 4 warps * steps_per_warp covers the steps with less than one
// split's worth to spare.
TEST(AttnDecodePartition, CoversEveryKeyOnce) {
  for (int n_split : {1, 2, 3, 66, 132, 1024}) {
    for (int n_ctx : {1, 16, 17, 4096, 32768}) {
      for (int max_pos : {-1, 0, 1, 14, 15, 16, 63, 64, 65, 999, 4095, 16383, 32767, 40000}) {
        SCOPED_TRACE(testing::Message() << "n_split " << n_split << " n_ctx " << n_ctx
                                        << " max_pos " << max_pos);
        const DecodePartition p = PartitionDecode(max_pos, n_ctx, n_split);
        const int keys = std::max(0, std::min(max_pos + 1, n_ctx));
        ASSERT_EQ(p.keys, keys);
        ASSERT_EQ(p.steps, (keys + 15) / 16);
        ASSERT_LE(p.used, n_split);
        ASSERT_EQ(p.used > 0, keys > 0);
        std::vector<int> taken(p.steps, 0);
        for (int s = 0; s < n_split; ++s) {
          for (int w = 0; w < kAttnDecWarps; ++w) {
            const int st0 = (s * kAttnDecWarps + w) * p.steps_per_warp;
            const int st1 = std::min(st0 + p.steps_per_warp, p.steps);
            if (s >= p.used) {
              ASSERT_GE(st0, p.steps) << "split " << s << " past `used` has work";
              continue;
            }
            for (int st = st0; st < st1; ++st) ++taken[st];
          }
        }
        for (int st = 0; st < p.steps; ++st) ASSERT_EQ(taken[st], 1) << "step " << st;
        // Balanced: one fewer step per warp would not cover the steps.
        if (p.steps_per_warp > 1) {
          ASSERT_LT((p.steps_per_warp - 1) * n_split * kAttnDecWarps, p.steps);
        }
      }
    }
  }
}

AttnShape Qwen3B(int64_t T, int64_t n_ctx, DType kv = DType::kF16) {
  return AttnShape{T, 16, 2, 128, n_ctx, kv, kv};
}

// The grid depends on the GPU and the shape, not on the capacity (beyond what
// a small cache can use) and never on the positions.
TEST(AttnDecodePlan, GridIsSizedForTheGpuNotTheCapacity) {
  auto a = PlanAttentionDecode(Qwen3B(1, 20480), 132);
  auto b = PlanAttentionDecode(Qwen3B(1, 32768), 132);
  auto c = PlanAttentionDecode(Qwen3B(1, 1 << 20), 132);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << a.status() << b.status() << c.status();
  EXPECT_EQ(a->n_split, 132);  // 2 blocks per multiprocessor: 132 splits x 2 KV heads
  EXPECT_EQ(b->n_split, 132);
  EXPECT_EQ(c->n_split, 132);
  EXPECT_EQ(a->attn.kernel, "vb_attn_dec_f16_f16_hd128");
  EXPECT_EQ(a->attn.grid[0], 132u);
  EXPECT_EQ(a->attn.grid[1], 2u);
  EXPECT_EQ(a->attn.grid[2], 1u);  // 8 query heads per KV head: one 16-row block
  EXPECT_EQ(a->attn.block[0], 128u);
  EXPECT_EQ(a->combine.kernel, "vb_attn_dec_combine");
  EXPECT_EQ(a->combine.grid[0], 16u);
  EXPECT_EQ(a->combine.grid[1], 4u);  // 32-dimension slices of 128
  EXPECT_EQ(a->partial_floats, 16 * 132 * 130);
  // A smaller cache cannot use 132 splits of 4 warps x 16 keys.
  auto small = PlanAttentionDecode(Qwen3B(1, 512), 132);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->n_split, 8);  // 512 / 16 / 4
  auto c4k = PlanAttentionDecode(Qwen3B(1, 4096), 132);
  ASSERT_TRUE(c4k.ok());
  EXPECT_EQ(c4k->n_split, 64);
  // More tokens: more row blocks, fewer splits.
  auto t4 = PlanAttentionDecode(Qwen3B(4, 32768), 132);
  ASSERT_TRUE(t4.ok());
  EXPECT_EQ(t4->attn.grid[2], 2u);
  EXPECT_EQ(t4->n_split, 66);
  // At most kAttnDecMaxSplits (the combine's table).
  auto many = PlanAttentionDecode(AttnShape{1, 1, 1, 64, 1 << 20, DType::kQ8_0, DType::kQ8_0}, 4096);
  ASSERT_TRUE(many.ok());
  EXPECT_EQ(many->n_split, kAttnDecMaxSplits);
  EXPECT_EQ(many->attn.kernel, "vb_attn_dec_q8_0_q8_0_hd64");
}

TEST(AttnDecodePlan, RejectsWhatTheKernelsCannotRun) {
  AttnShape s = Qwen3B(1, 4096);
  s.head_dim = 96;
  EXPECT_THAT(PlanAttentionDecode(s, 132).status().message(), HasSubstr("head_dim 96"));
  s = Qwen3B(1, 4096);
  s.v_type = DType::kQ4_0;
  EXPECT_THAT(PlanAttentionDecode(s, 132).status().message(), HasSubstr("cache type q4_0"));
  s = Qwen3B(1, 4096);
  s.n_head = 15;
  EXPECT_EQ(PlanAttentionDecode(s, 132).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanAttentionDecode(Qwen3B(1, 4096), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanAttentionPrefill(Qwen3B(0, 4096), 132).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AttnPrefillPlan, OneBlockPer64RowsOfAKvHead) {
  auto p = PlanAttentionPrefill(Qwen3B(512, 4096, DType::kQ8_0), 132);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->kernel, "vb_attn_pre_q8_0_q8_0_hd128");
  EXPECT_EQ(p->grid[0], 64u);  // 512 tokens x 8 heads / 64 rows
  EXPECT_EQ(p->grid[1], 2u);
  EXPECT_EQ(p->grid[2], 1u);
  EXPECT_EQ(p->block[0], 128u);
  EXPECT_EQ(p->dynamic_smem, 0);
  auto one = PlanAttentionPrefill(AttnShape{7, 14, 2, 64, 100, DType::kF16, DType::kF32}, 132);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->grid[0], 1u);  // 7 x 7 = 49 rows
  EXPECT_EQ(one->kernel, "vb_attn_pre_f16_f32_hd64");
}

TEST(AttnSource, OneEntryPointPerSupportedConfig) {
  const std::string s = AttentionMmaSource({AttnConfig{DType::kF16, DType::kF16, 128},
                                            AttnConfig{DType::kF16, DType::kF16, 128},
                                            AttnConfig{DType::kQ8_0, DType::kF16, 64},
                                            AttnConfig{DType::kQ4_0, DType::kF16, 64},
                                            AttnConfig{DType::kF16, DType::kF16, 96}});
  auto count = [&](const std::string& needle) {
    int n = 0;
    for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("void __launch_bounds__(128) vb_attn_dec_f16_f16_hd128("), 1);
  EXPECT_EQ(count("void __launch_bounds__(128) vb_attn_pre_f16_f16_hd128("), 1);
  EXPECT_EQ(count("vb_attn_dec_q8_0_f16_hd64("), 1);
  EXPECT_EQ(count("vb_attn_pre_q8_0_f16_hd64("), 1);
  EXPECT_THAT(s, Not(HasSubstr("q4_0")));
  EXPECT_THAT(s, Not(HasSubstr("hd96")));
  EXPECT_EQ(count("extern \"C\" __global__ void vb_attn_dec_combine("), 1);
  EXPECT_THAT(s, HasSubstr("vb_attn_dec_impl<VB_KV_Q8_0, VB_KV_F16, 64>("));
  EXPECT_EQ(s, AttentionMmaSource({AttnConfig{DType::kQ8_0, DType::kF16, 64},
                                   AttnConfig{DType::kF16, DType::kF16, 128}}))
      << "deduplicated and ordered";
}

}  // namespace
}  // namespace vibrant::codegen
