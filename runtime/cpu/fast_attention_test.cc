// The fast attention (fast_attention.h) and elementwise kernels
// (fast_elementwise.h) against the exact references (kernels.h) and against
// themselves across ISAs and thread counts.
#include "runtime/cpu/fast_attention.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/cpu/cpu_features.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/fast_elementwise.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu/quantize.h"
#include "runtime/cpu/thread_pool.h"

namespace vibrant::cpu {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Exp: relative error against std::exp (double) over [-87, 0], measured
// 8.3e-8 (under 1 ulp) with this test; bounded at 1.3e-7. Below -87.34 it is 0.
TEST(FastAttentionExp, CloseToExp) {
  double worst = 0;
  for (int i = 0; i <= 2000000; ++i) {
    const float x = -87.0f * static_cast<float>(i) / 2000000.0f;
    const double want = std::exp(static_cast<double>(x));
    const double got = FastExpForTesting(x);
    worst = std::max(worst, std::fabs(got - want) / want);
  }
  std::printf("[ MEASURED ] Exp max relative error on [-87, 0]: %.3g\n", worst);
  EXPECT_LT(worst, 1.3e-7);
  EXPECT_EQ(FastExpForTesting(0.0f), 1.0f);
  EXPECT_EQ(FastExpForTesting(-88.0f), 0.0f);
  EXPECT_EQ(FastExpForTesting(-std::numeric_limits<float>::infinity()), 0.0f);
}

// silu: relative error against the exact kernel (expf) where |silu| > 1e-30,
// measured 2.4e-7 over x in [-90, 90] with this test; bounded at 3.6e-7.
// Every ISA gives the same bits.
TEST(FastElementwise, SiluCloseToExactAndIsaIndependent) {
  std::vector<float> x(360001 + 5);
  for (size_t i = 0; i < 360001; ++i) x[i] = -90.0f + 180.0f * static_cast<float>(i) / 360000.0f;
  x[360001] = 0.0f;
  x[360002] = -0.0f;
  x[360003] = 1e-30f;
  x[360004] = -200.0f;
  std::vector<float> exact(x.size()), fast(x.size());
  Silu(x.data(), static_cast<int64_t>(x.size()), exact.data());
  const Isa before = SetIsaForTesting(Isa::kPortable);
  SiluFast(x.data(), static_cast<int64_t>(x.size()), fast.data());
  SetIsaForTesting(before);
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::fabs(exact[i]) < 1e-30f) {
      // Far left tail: Exp flushes below -87.3 where expf gives ~1e-38.
      EXPECT_LT(std::fabs(fast[i] - exact[i]), 1e-30f) << x[i];
      continue;
    }
    worst = std::max(worst, std::fabs(double(fast[i]) - exact[i]) / std::fabs(double(exact[i])));
  }
  std::printf("[ MEASURED ] silu max relative error vs the exact kernel: %.3g\n", worst);
  EXPECT_LT(worst, 3.6e-7);
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (isa > DetectedIsa()) continue;
    const Isa prev = SetIsaForTesting(isa);
    std::vector<float> got(x.size());
    SiluFast(x.data(), static_cast<int64_t>(x.size()), got.data());
    SetIsaForTesting(prev);
    EXPECT_EQ(std::memcmp(got.data(), fast.data(), 4 * x.size()), 0) << IsaName(isa);
  }
}

struct Case {
  int64_t T, H, KVH, hd, C;
  DType k_cache;
  int32_t pos0;
  DType v_cache = DType::kQ8A;  // kQ8A (not a cache type): as k_cache
  int64_t window = 0;
  DType v() const { return v_cache == DType::kQ8A ? k_cache : v_cache; }
};

// Fills a cache of C rows of type `t` with Gaussian values.
std::vector<uint8_t> RandomCache(const Case& c, DType t, uint32_t seed) {
  const int64_t n = c.C * c.KVH * c.hd;
  const std::vector<float> f = Random(n, seed, 1.0f);
  std::vector<uint8_t> out(DTypeBytes(t, n).value());
  if (t == DType::kF32) {
    std::memcpy(out.data(), f.data(), 4 * n);
  } else {
    EXPECT_TRUE(Quantize(t, f.data(), n, out.data()).ok());
  }
  return out;
}

std::vector<float> RunAttention(bool fast, const Case& c, const std::vector<float>& q,
                       const std::vector<uint8_t>& k, const std::vector<uint8_t>& v,
                       ThreadPool* pool) {
  std::vector<int32_t> pos(c.T);
  for (int64_t t = 0; t < c.T; ++t) pos[t] = c.pos0 + static_cast<int32_t>(t);
  AttentionShape s;
  s.T = c.T;
  s.n_head = c.H;
  s.n_head_kv = c.KVH;
  s.head_dim = c.hd;
  s.n_ctx = c.C;
  s.window = c.window;
  std::vector<float> out(c.T * c.H * c.hd, -1.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  absl::Status st = fast ? AttentionFast(pool, q.data(), k.data(), v.data(), c.k_cache, c.v(),
                                         pos.data(), s, scale, out.data())
                         : Attention(pool, q.data(), k.data(), v.data(), c.k_cache, c.v(), pos.data(),
                                     s, scale, out.data());
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

const Case kCases[] = {
    {1, 14, 2, 64, 300, DType::kF16, 250},  // decode, several chunks
    {9, 8, 2, 128, 200, DType::kF16, 60},   // prefill crossing a chunk boundary
    {5, 4, 4, 12, 40, DType::kF32, 0},      // head_dim not a multiple of 8
    {3, 6, 3, 64, 70, DType::kF32, 64},
    {4, 8, 2, 64, 300, DType::kQ8_0, 200},                 // q8_0 caches
    {2, 4, 1, 32, 100, DType::kQ8_0, 90, DType::kF16},     // q8_0 K, f16 V
    {6, 8, 4, 64, 300, DType::kF16, 100, DType::kQ8A, 70},  // sliding window of 70
    {1, 4, 2, 64, 300, DType::kF16, 250, DType::kQ8A, 1},   // window of 1 (one row)
};

// Error against the exact (double) reference: max |fast - exact| over the
// outputs, whose values are ~0.1-1 (weighted means of N(0, 1) values).
// Measured with this test: 6.0e-7 (f16, f32 and q8_0 caches, windows);
// bounded at 1e-6. Both read q8_0 rows as the same floats (code * d).
TEST(FastAttention, CloseToTheExactReference) {
  double worst = 0;
  for (const Case& c : kCases) {
    const std::vector<float> q = Random(c.T * c.H * c.hd, 1, 1.0f);
    const std::vector<uint8_t> k = RandomCache(c, c.k_cache, 2), v = RandomCache(c, c.v(), 3);
    const std::vector<float> exact = RunAttention(false, c, q, k, v, nullptr);
    const std::vector<float> fast = RunAttention(true, c, q, k, v, nullptr);
    for (size_t i = 0; i < exact.size(); ++i) {
      worst = std::max(worst, std::fabs(double(fast[i]) - exact[i]));
    }
  }
  std::printf("[ MEASURED ] fast attention: max |fast - exact| = %.3g\n", worst);
  EXPECT_LT(worst, 1e-6);
}

TEST(FastAttention, BitIdenticalAcrossIsasAndThreads) {
  ThreadPool pool(3);
  for (const Case& c : kCases) {
    const std::vector<float> q = Random(c.T * c.H * c.hd, 4, 1.0f);
    const std::vector<uint8_t> k = RandomCache(c, c.k_cache, 5), v = RandomCache(c, c.v(), 6);
    const Isa before = SetIsaForTesting(Isa::kPortable);
    const std::vector<float> ref = RunAttention(true, c, q, k, v, nullptr);
    SetIsaForTesting(before);
    for (Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512}) {
      if (isa > DetectedIsa()) continue;
      const Isa prev = SetIsaForTesting(isa);
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
        const std::vector<float> got = RunAttention(true, c, q, k, v, p);
        EXPECT_EQ(std::memcmp(got.data(), ref.data(), ref.size() * 4), 0)
            << IsaName(isa) << (p ? ", 3 threads" : ", 1 thread") << ", hd " << c.hd;
      }
      SetIsaForTesting(prev);
    }
  }
}

TEST(FastAttention, RejectsPositionsOutsideTheCache) {
  const std::vector<float> q(16, 0.0f);
  const std::vector<uint8_t> k(4 * 8 * 4), v(4 * 8 * 4);
  std::vector<int32_t> pos = {4};
  AttentionShape s{1, 2, 1, 8, 4};
  std::vector<float> out(16);
  EXPECT_FALSE(AttentionFast(nullptr, q.data(), k.data(), v.data(), DType::kF32, pos.data(), s,
                             1.0f, out.data())
                   .ok());
  EXPECT_FALSE(AttentionFast(nullptr, q.data(), k.data(), v.data(), DType::kQ8_0, pos.data(), s,
                             1.0f, out.data())
                   .ok());
}

}  // namespace
}  // namespace vibrant::cpu
