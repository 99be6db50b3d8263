// The MoE router's device functions (codegen/kernels/moe.cc), compiled for
// the host: with host versions of the few intrinsics they use (each one
// correctly rounded float operation, as on the GPU, and the host's expf), a
// token's top-k experts and weights must equal the CPU reference's
// (runtime/cpu/kernels.h: MoeTopK, MoeWeights) bit for bit, ties included.
// On the GPU only expf may differ (by an ulp), which the GPU tests bound.
#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/cpu/kernels.h"

namespace vibrant::codegen::host {

#define VB_INLINE inline
#define VB_NEG_INF (-INFINITY)
#define VB_NAN NAN
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
inline float __int_as_float(unsigned u) { return std::bit_cast<float>(u); }

#include "moe_router.inc"

namespace {

void ExpectSameAsCpu(const std::vector<float>& logits, int T, int E, int k) {
  SCOPED_TRACE(testing::Message() << "T=" << T << " E=" << E << " k=" << k);
  std::vector<int32_t> want_ids(T * k), got_ids(T * k);
  ASSERT_TRUE(cpu::MoeTopK(logits.data(), T, E, k, want_ids.data()).ok());
  std::vector<float> want_w(T * k), got_w(T * k);
  ASSERT_TRUE(cpu::MoeWeights(logits.data(), T, E, want_ids.data(), k, true, want_w.data()).ok());
  for (int t = 0; t < T; ++t) {
    vb_moe_topk_row(logits.data() + t * E, E, k, got_ids.data() + t * k);
    vb_moe_weights_row(logits.data() + t * E, E, got_ids.data() + t * k, k, 1, got_w.data() + t * k);
  }
  EXPECT_EQ(got_ids, want_ids);
  for (int i = 0; i < T * k; ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(got_w[i]), std::bit_cast<uint32_t>(want_w[i])) << i;
  }
}

TEST(MoeRouterHost, RandomLogitsMatchTheCpu) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  for (int E : {4, 8, 128}) {
    for (int k : {1, 2, std::min(E, 8)}) {
      std::vector<float> logits(16 * E);
      for (float& v : logits) v = dist(rng);
      ExpectSameAsCpu(logits, 16, E, k);
    }
  }
}

TEST(MoeRouterHost, TiesEveryExpertAndOneExpertForAll) {
  // Ties (all equal; pairs equal), every expert chosen (k = E), one expert
  // far ahead for every token.
  ExpectSameAsCpu({0.5f, 0.5f, 0.5f, 0.5f, 1, 2, 1, 2}, 2, 4, 3);
  ExpectSameAsCpu({3, 1, 2, -1, 0, 4}, 2, 3, 3);
  ExpectSameAsCpu({9, 0, 0.1f, 0.2f, 9, 0.3f, 0, 0, 9, 1, 1, 1}, 3, 4, 2);
  std::vector<int> ids(2);
  const std::vector<float> l = {9, 0, 0.1f, 0.2f};
  vb_moe_topk_row(l.data(), 4, 2, ids.data());
  EXPECT_EQ(ids, (std::vector<int>{0, 3}));
}

TEST(MoeRouterHost, BadIdGivesNaNWeight) {
  const std::vector<float> l = {1, 2, 3};
  const int ids[2] = {2, 7};
  float w[2];
  vb_moe_weights_row(l.data(), 3, ids, 2, 0, w);
  EXPECT_FALSE(std::isnan(w[0]));
  EXPECT_TRUE(std::isnan(w[1]));
}

}  // namespace
}  // namespace vibrant::codegen::host
