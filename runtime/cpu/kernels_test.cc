// Each kernel against an independent double-precision reference written
// here, on random inputs, plus hand-computed cases.
#include "runtime/cpu/kernels.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/ops.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/quantize.h"
#include "runtime/cpu/thread_pool.h"

namespace vibrant::cpu {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// ---- thread pool -------------------------------------------------------------

TEST(ThreadPoolTest, CoversEveryIndexOnce) {
  ThreadPool pool(3);
  EXPECT_EQ(pool.num_threads(), 3);
  for (int64_t n : {1, 2, 7, 64, 1000, 4097}) {
    for (int64_t min_chunk : {1, 16}) {
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(
          n,
          [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
          },
          min_chunk);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
    }
  }
}

// More threads than cores (workers get descheduled mid-job, jobs follow each
// other faster than sleeping workers wake): every index is still done exactly
// once per job and ParallelFor returns only when it is.
TEST(ThreadPoolTest, OversubscribedJobsCoverEveryIndexOnce) {
  ThreadPool pool(8);
  std::vector<std::atomic<int>> hits(1000);
  for (int job = 0; job < 3000; ++job) {
    const int64_t n = 1 + (job * 37) % 1000;
    pool.ParallelFor(
        n,
        [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
        },
        1 + job % 5);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(hits[i].exchange(0), 1) << "job " << job << " index " << i;
    }
    if (job % 500 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // workers sleep
  }
}

TEST(ThreadPoolTest, ManyJobsAndNestedCalls) {
  ThreadPool pool(4);
  std::atomic<int64_t> total{0};
  for (int rep = 0; rep < 500; ++rep) {
    pool.ParallelFor(8, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        // A nested call runs inline on the calling worker.
        pool.ParallelFor(3, [&](int64_t b2, int64_t e2) { total += e2 - b2; });
      }
    });
  }
  EXPECT_EQ(total.load(), 500 * 8 * 3);
}

TEST(ThreadPoolTest, SingleThreadRunsInline) {
  ThreadPool pool(1);
  EXPECT_EQ(pool.num_threads(), 1);
  int64_t covered = 0;
  pool.ParallelFor(10, [&](int64_t b, int64_t e) { covered += e - b; });
  EXPECT_EQ(covered, 10);
}

// ---- embedding ---------------------------------------------------------------

TEST(EmbeddingTest, F32RowsAndRangeCheck) {
  const int64_t V = 5, D = 6;
  std::vector<float> table = Random(V * D, 1);
  std::vector<int32_t> ids = {4, 0, 4, 2};
  std::vector<float> out(ids.size() * D, -7.0f);
  ASSERT_TRUE(Embedding(DType::kF32, table.data(), V, D, ids.data(), ids.size(), out.data()).ok());
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int64_t d = 0; d < D; ++d) EXPECT_EQ(out[t * D + d], table[ids[t] * D + d]);
  }
  for (int32_t bad : {5, -1, 1 << 30}) {
    std::vector<int32_t> bad_ids = {0, bad};
    absl::Status s = Embedding(DType::kF32, table.data(), V, D, bad_ids.data(), 2, out.data());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), testing::HasSubstr(std::to_string(bad)));
  }
}

TEST(EmbeddingTest, QuantizedRowsDequantize) {
  const int64_t V = 4, D = 64;
  std::vector<float> src = Random(V * D, 2);
  for (DType t : {DType::kF16, DType::kQ8_0, DType::kQ4_1}) {
    std::vector<uint8_t> table(*DTypeBytes(t, V * D));
    ASSERT_TRUE(Quantize(t, src.data(), V * D, table.data()).ok());
    std::vector<float> all(V * D);
    ASSERT_TRUE(Dequantize(t, table.data(), V * D, all.data()).ok());
    std::vector<int32_t> ids = {3, 1};
    std::vector<float> out(2 * D);
    ASSERT_TRUE(Embedding(t, table.data(), V, D, ids.data(), 2, out.data()).ok());
    for (int t2 = 0; t2 < 2; ++t2) {
      for (int64_t d = 0; d < D; ++d) {
        ASSERT_EQ(out[t2 * D + d], all[ids[t2] * D + d]) << DTypeName(t);
      }
    }
  }
}

// ---- matmul ------------------------------------------------------------------

class MatMulTest : public testing::TestWithParam<DType> {};

TEST_P(MatMulTest, MatchesDoubleReference) {
  const DType wt = GetParam();
  const int64_t T = 3, K = 512, N = 37;
  std::vector<float> wsrc = Random(N * K, 3);
  std::vector<uint8_t> w(*DTypeBytes(wt, N * K));
  ASSERT_TRUE(Quantize(wt, wsrc.data(), N * K, w.data()).ok());
  std::vector<float> wd(N * K);  // the weights' defined values
  ASSERT_TRUE(Dequantize(wt, w.data(), N * K, wd.data()).ok());
  std::vector<float> x = Random(T * K, 4);
  std::vector<float> bias = Random(N, 5);

  ThreadPool pool(3);
  std::vector<float> out(T * N);
  ASSERT_TRUE(MatMul(&pool, x.data(), T, K, wt, w.data(), N, bias.data(), out.data()).ok());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        ref += static_cast<double>(wd[n * K + k]) * x[t * K + k];
        mag += std::fabs(static_cast<double>(wd[n * K + k]) * x[t * K + k]);
      }
      ref += bias[n];
      ASSERT_NEAR(out[t * N + n], ref, 1e-6 * mag + 1e-6) << "t=" << t << " n=" << n;
    }
  }

  // One token at a time, without a pool, and without bias: the same bits.
  std::vector<float> row(N), nobias(T * N);
  for (int64_t t = 0; t < T; ++t) {
    ASSERT_TRUE(MatMul(nullptr, x.data() + t * K, 1, K, wt, w.data(), N, bias.data(), row.data()).ok());
    for (int64_t n = 0; n < N; ++n) ASSERT_EQ(row[n], out[t * N + n]);
  }
  ASSERT_TRUE(MatMul(&pool, x.data(), T, K, wt, w.data(), N, nullptr, nobias.data()).ok());
  for (int64_t i = 0; i < T * N; ++i) ASSERT_EQ(nobias[i] + bias[i % N], out[i]);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, MatMulTest,
                         testing::Values(DType::kF32, DType::kF16, DType::kBF16, DType::kQ4_0,
                                         DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                                         DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K,
                                         DType::kQ6_K),
                         [](const testing::TestParamInfo<DType>& i) {
                           return std::string(DTypeName(i.param));
                         });

TEST(MatMulErrorTest, RowsNotWholeBlocks) {
  std::vector<float> x(100), out(1);
  std::vector<uint8_t> w(1000);
  EXPECT_FALSE(MatMul(nullptr, x.data(), 1, 100, DType::kQ4_0, w.data(), 1, nullptr, out.data()).ok());
}

// ---- rms_norm, add, mul, silu, last_row ----------------------------------------

TEST(RmsNormTest, MatchesDoubleReference) {
  const int64_t rows = 4, D = 96;
  const float eps = 1e-5f;
  std::vector<float> x = Random(rows * D, 6, -3.0f, 3.0f);
  std::vector<float> out(rows * D);
  RmsNorm(x.data(), rows, D, eps, out.data());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(x[r * D + d]) * x[r * D + d];
    const double inv = 1.0 / std::sqrt(ss / D + eps);
    for (int64_t d = 0; d < D; ++d) {
      const double ref = x[r * D + d] * inv;
      ASSERT_NEAR(out[r * D + d], ref, 1e-6 * std::fabs(ref) + 1e-7);
    }
  }
  RmsNorm(x.data(), rows, D, eps, x.data());  // in place
  EXPECT_EQ(x, out);
}

TEST(RmsNormTest, HandComputed) {
  // x = (3, 4): mean of squares 12.5, eps 0 -> scale 1/sqrt(12.5).
  std::vector<float> x = {3, 4}, out(2);
  RmsNorm(x.data(), 1, 2, 0.0f, out.data());
  EXPECT_NEAR(out[0], 3 / std::sqrt(12.5), 1e-7);
  EXPECT_NEAR(out[1], 4 / std::sqrt(12.5), 1e-7);
}

TEST(ElementwiseTest, AddMulBroadcastSuffix) {
  std::vector<float> a = Random(4 * 3 * 5, 7), b = Random(3 * 5, 8), full = Random(60, 9);
  std::vector<float> out(60);
  Add(a.data(), 60, b.data(), 15, out.data());
  for (int i = 0; i < 60; ++i) ASSERT_EQ(out[i], a[i] + b[i % 15]);
  Mul(a.data(), 60, b.data() + 10, 5, out.data());
  for (int i = 0; i < 60; ++i) ASSERT_EQ(out[i], a[i] * b[10 + i % 5]);
  Add(a.data(), 60, full.data(), 60, out.data());
  for (int i = 0; i < 60; ++i) ASSERT_EQ(out[i], a[i] + full[i]);
  // Aliasing the output with an input.
  std::vector<float> c = a;
  Mul(c.data(), 60, b.data(), 15, c.data());
  for (int i = 0; i < 60; ++i) ASSERT_EQ(c[i], a[i] * b[i % 15]);
}

TEST(ElementwiseTest, Silu) {
  std::vector<float> x = Random(200, 10, -12.0f, 12.0f);
  x.push_back(0.0f);
  x.push_back(-100.0f);
  std::vector<float> out(x.size());
  Silu(x.data(), x.size(), out.data());
  for (size_t i = 0; i < x.size(); ++i) {
    const double ref = x[i] / (1.0 + std::exp(-static_cast<double>(x[i])));
    ASSERT_NEAR(out[i], ref, 1e-6 * std::fabs(ref) + 1e-30) << x[i];
  }
  EXPECT_EQ(out[x.size() - 2], 0.0f);
}

TEST(LastRowTest, CopiesLastRow) {
  std::vector<float> x = Random(3 * 4, 11), out(4);
  LastRow(x.data(), 3, 4, out.data());
  for (int d = 0; d < 4; ++d) EXPECT_EQ(out[d], x[8 + d]);
}

// ---- rope --------------------------------------------------------------------

// Independent reference: the ops.h formula evaluated in double.
std::vector<float> RopeReference(const std::vector<float>& x, int64_t T, int64_t H, int64_t hd,
                                 const std::vector<int32_t>& pos, int mode, int64_t n_rot,
                                 double base, double scale, const std::vector<float>* ff) {
  std::vector<float> out = x;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const float* s = x.data() + (t * H + h) * hd;
      float* d = out.data() + (t * H + h) * hd;
      for (int64_t i = 0; i < n_rot / 2; ++i) {
        double angle = pos[t] * scale * std::pow(base, -2.0 * i / n_rot);
        if (ff != nullptr) angle /= (*ff)[i];
        const int64_t a = mode == 0 ? 2 * i : i;
        const int64_t b = mode == 0 ? 2 * i + 1 : i + n_rot / 2;
        d[a] = static_cast<float>(s[a] * std::cos(angle) - s[b] * std::sin(angle));
        d[b] = static_cast<float>(s[a] * std::sin(angle) + s[b] * std::cos(angle));
      }
    }
  }
  return out;
}

struct RopeCase {
  int mode;
  int64_t hd, n_rot;
  double base, scale;
  bool factors;
};

class RopeTest : public testing::TestWithParam<RopeCase> {};

TEST_P(RopeTest, MatchesDoubleReference) {
  const RopeCase c = GetParam();
  const int64_t T = 5, H = 3;
  std::vector<float> x = Random(T * H * c.hd, 12);
  std::vector<int32_t> pos = {0, 1, 17, 63, 200};
  std::vector<float> ff = Random(c.n_rot / 2, 13, 1.0f, 8.0f);
  RopeParams p;
  p.mode = c.mode;
  p.n_rot = c.n_rot;
  p.freq_base = static_cast<float>(c.base);
  p.freq_scale = static_cast<float>(c.scale);
  p.freq_factors = c.factors ? ff.data() : nullptr;
  std::vector<float> out(x.size());
  ASSERT_TRUE(Rope(x.data(), T, H, c.hd, pos.data(), p, out.data()).ok());
  std::vector<float> ref =
      RopeReference(x, T, H, c.hd, pos, c.mode, c.n_rot, c.base, c.scale, c.factors ? &ff : nullptr);
  // The float angle sequence (as ggml computes it) drifts from the exact
  // angle by ~p * 1e-7 rad; at p = 200 that is a few 1e-5.
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(out[i], ref[i], 3e-5) << i;
  // Position 0 is the identity, dims past n_rot pass through.
  for (int64_t i = 0; i < H * c.hd; ++i) ASSERT_EQ(out[i], x[i]);
  for (int64_t r = 0; r < T * H; ++r) {
    for (int64_t d = c.n_rot; d < c.hd; ++d) ASSERT_EQ(out[r * c.hd + d], x[r * c.hd + d]);
  }
  // In place gives the same bits.
  std::vector<float> y = x;
  ASSERT_TRUE(Rope(y.data(), T, H, c.hd, pos.data(), p, y.data()).ok());
  EXPECT_EQ(y, out);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, RopeTest,
    testing::Values(RopeCase{0, 64, 64, 10000, 1, false}, RopeCase{2, 64, 64, 10000, 1, false},
                    RopeCase{0, 64, 32, 10000, 1, false}, RopeCase{2, 128, 64, 1e6, 1, false},
                    RopeCase{0, 32, 32, 500000, 0.25, true}, RopeCase{2, 48, 24, 10000, 0.5, true}),
    [](const testing::TestParamInfo<RopeCase>& i) {
      const RopeCase& c = i.param;
      return std::string(c.mode == 0 ? "normal" : "neox") + "_hd" + std::to_string(c.hd) +
             "_rot" + std::to_string(c.n_rot) + (c.factors ? "_factors" : "") +
             (c.scale != 1 ? "_scaled" : "");
    });

TEST(RopeHandTest, NormalAndNeoxPairs) {
  // hd = n_rot = 4, base 10000, p = 1: angles 1 and 10000^(-1/2) = 0.01.
  std::vector<float> x = {1, 0, 0, 1}, out(4);
  std::vector<int32_t> pos = {1};
  RopeParams p;
  p.n_rot = 4;
  ASSERT_TRUE(Rope(x.data(), 1, 1, 4, pos.data(), p, out.data()).ok());
  // Normal: pairs (0,1) at angle 1, (2,3) at angle 0.01.
  EXPECT_NEAR(out[0], std::cos(1.0), 1e-7);
  EXPECT_NEAR(out[1], std::sin(1.0), 1e-7);
  EXPECT_NEAR(out[2], -std::sin(0.01), 1e-7);
  EXPECT_NEAR(out[3], std::cos(0.01), 1e-7);
  // Neox: pairs (0,2) at angle 1, (1,3) at angle 0.01.
  p.mode = 2;
  ASSERT_TRUE(Rope(x.data(), 1, 1, 4, pos.data(), p, out.data()).ok());
  EXPECT_NEAR(out[0], std::cos(1.0), 1e-7);
  EXPECT_NEAR(out[2], std::sin(1.0), 1e-7);
  EXPECT_NEAR(out[1], -std::sin(0.01), 1e-7);
  EXPECT_NEAR(out[3], std::cos(0.01), 1e-7);
  // Bad parameters are errors.
  p.mode = 1;
  EXPECT_FALSE(Rope(x.data(), 1, 1, 4, pos.data(), p, out.data()).ok());
  p.mode = 0;
  p.n_rot = 3;
  EXPECT_FALSE(Rope(x.data(), 1, 1, 4, pos.data(), p, out.data()).ok());
  p.n_rot = 6;
  EXPECT_FALSE(Rope(x.data(), 1, 1, 4, pos.data(), p, out.data()).ok());
}

// ---- kv_store ------------------------------------------------------------------

TEST(KvStoreTest, F32AndF16Rows) {
  const int64_t C = 6, row = 4;
  std::vector<float> src = {1.5f, -2.0f, 0.1f, 65504.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  std::vector<int32_t> pos = {4, 1};
  std::vector<float> c32(C * row, 0.0f);
  ASSERT_TRUE(KvStore(src.data(), 2, row, pos.data(), DType::kF32, c32.data(), C).ok());
  for (int64_t i = 0; i < row; ++i) {
    EXPECT_EQ(c32[4 * row + i], src[i]);
    EXPECT_EQ(c32[1 * row + i], src[row + i]);
  }
  EXPECT_EQ(c32[0], 0.0f);
  std::vector<uint16_t> c16(C * row, 0);
  ASSERT_TRUE(KvStore(src.data(), 2, row, pos.data(), DType::kF16, c16.data(), C).ok());
  EXPECT_EQ(c16[4 * row + 0], 0x3E00);  // 1.5
  EXPECT_EQ(c16[4 * row + 1], 0xC000);  // -2
  EXPECT_EQ(c16[4 * row + 2], 0x2E66);  // 0.1 rounded to nearest half
  EXPECT_EQ(c16[4 * row + 3], 0x7BFF);  // 65504, the largest half
  EXPECT_EQ(c16[1 * row + 0], 0x4200);  // 3
}

TEST(KvStoreTest, PositionOutOfRangeWritesNothing) {
  const int64_t C = 3, row = 2;
  std::vector<float> src = {1, 2, 3, 4};
  std::vector<float> cache(C * row, 0.0f);
  for (std::vector<int32_t> pos : {std::vector<int32_t>{0, 3}, std::vector<int32_t>{-1, 0}}) {
    absl::Status s = KvStore(src.data(), 2, row, pos.data(), DType::kF32, cache.data(), C);
    EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
    for (float v : cache) EXPECT_EQ(v, 0.0f);
  }
  std::vector<int32_t> pos = {0};
  EXPECT_THAT(KvStore(src.data(), 1, row, pos.data(), DType::kQ4_0, cache.data(), C).message(),
              testing::HasSubstr("q4_0 is not supported"));
  EXPECT_THAT(KvStore(src.data(), 1, row, pos.data(), DType::kQ8_0, cache.data(), C).message(),
              testing::HasSubstr("rows of 2 elements are not whole blocks of 32"));
}

// q8_0 caches (llama.cpp's --cache-type-k/v q8_0): ggml's rounding, by hand.
TEST(KvStoreTest, Q8_0HandComputed) {
  // amax = 127, so d = 1 exactly (0x3C00) and codes = roundf(x): halves away
  // from zero.
  std::vector<float> src(64, 0.0f);
  const float vals[] = {127.0f, -2.5f, 2.5f, 0.49f, -0.5f, -127.0f, 1.5f, 100.2f};
  for (int i = 0; i < 8; ++i) src[i] = vals[i];
  // Second block all zeros: d = 0, codes 0.
  std::vector<uint8_t> cache(3 * 2 * 34, 0xAB);
  std::vector<int32_t> pos = {2};
  ASSERT_TRUE(KvStore(src.data(), 1, 64, pos.data(), DType::kQ8_0, cache.data(), 3).ok());
  const uint8_t* b = cache.data() + 2 * 68;
  EXPECT_EQ(b[0] | (b[1] << 8), 0x3C00);
  const int8_t want[] = {127, -3, 3, 0, -1, -127, 2, 100};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(static_cast<int8_t>(b[2 + i]), want[i]) << i;
  for (int i = 8; i < 32; ++i) EXPECT_EQ(b[2 + i], 0) << i;
  EXPECT_EQ(b[34] | (b[35] << 8), 0);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(b[36 + i], 0) << i;
  for (int i = 0; i < 2 * 68; ++i) ASSERT_EQ(cache[i], 0xAB) << "row 0/1 written at byte " << i;
}

// The same bytes as the reference quantizer (quantize.h, checked against
// llama-quantize's output in dequantize_test), and a block with a non-finite
// value stores d = NaN with codes 0 while its neighbours are unaffected.
TEST(KvStoreTest, Q8_0MatchesQuantizeAndNonFinite) {
  const int64_t C = 5, row = 2 * 64;  // KVH 2, hd 64
  std::vector<float> src = Random(2 * row, 7, -3.0f, 3.0f);
  std::vector<int32_t> pos = {3, 0};
  std::vector<uint8_t> cache(C * row / 32 * 34, 0);
  ASSERT_TRUE(KvStore(src.data(), 2, row, pos.data(), DType::kQ8_0, cache.data(), C).ok());
  std::vector<uint8_t> want(2 * row / 32 * 34);
  ASSERT_TRUE(Quantize(DType::kQ8_0, src.data(), 2 * row, want.data()).ok());
  const int64_t rb = row / 32 * 34;
  EXPECT_EQ(0, std::memcmp(cache.data() + 3 * rb, want.data(), rb));
  EXPECT_EQ(0, std::memcmp(cache.data(), want.data() + rb, rb));
  src[40] = INFINITY;  // block 1 of token 0
  src[row + 5] = NAN;  // block 0 of token 1
  ASSERT_TRUE(KvStore(src.data(), 2, row, pos.data(), DType::kQ8_0, cache.data(), C).ok());
  const uint8_t* r3 = cache.data() + 3 * rb;
  EXPECT_EQ(r3[34] | (r3[35] << 8), 0x7e00);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(r3[36 + i], 0);
  EXPECT_EQ(0, std::memcmp(r3, want.data(), 34));  // block 0 unchanged
  EXPECT_EQ(0, std::memcmp(r3 + 68, want.data() + 68, rb - 68));
  EXPECT_EQ(cache[0] | (cache[1] << 8), 0x7e00);
  std::vector<float> back(32);
  ASSERT_TRUE(Dequantize(DType::kQ8_0, r3 + 34, 32, back.data()).ok());
  for (float x : back) EXPECT_TRUE(std::isnan(x));
}

// ---- attention -----------------------------------------------------------------

std::vector<float> AttentionReference(const std::vector<float>& q, const std::vector<float>& k,
                                      const std::vector<float>& v,
                                      const std::vector<int32_t>& pos, int64_t H, int64_t KVH,
                                      int64_t hd, double scale) {
  const int64_t T = pos.size();
  std::vector<float> out(T * H * hd);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / (H / KVH);
      std::vector<double> s(pos[t] + 1);
      double m = -1e300;
      for (int64_t j = 0; j <= pos[t]; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < hd; ++d) {
          dot += static_cast<double>(q[(t * H + h) * hd + d]) * k[(j * KVH + kvh) * hd + d];
        }
        s[j] = dot * scale;
        m = std::max(m, s[j]);
      }
      double sum = 0;
      for (double& e : s) sum += (e = std::exp(e - m));
      for (int64_t d = 0; d < hd; ++d) {
        double acc = 0;
        for (int64_t j = 0; j <= pos[t]; ++j) acc += s[j] * v[(j * KVH + kvh) * hd + d];
        out[(t * H + h) * hd + d] = static_cast<float>(acc / sum);
      }
    }
  }
  return out;
}

// The cache as `t` holds `x` (KVH * hd rows; q8_0 in blocks along them), and
// `x` replaced by the values it reads back.
std::vector<uint8_t> StoreAs(DType t, std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> bytes(DTypeBytes(t, n).value());
  EXPECT_TRUE(Quantize(t, x.data(), n, bytes.data()).ok());
  EXPECT_TRUE(Dequantize(t, bytes.data(), n, x.data()).ok());
  return bytes;
}

class AttentionTest : public testing::TestWithParam<std::pair<DType, DType>> {};

TEST_P(AttentionTest, GqaCausalPrefillAtOffset) {
  const auto [kt, vt] = GetParam();
  const int64_t H = 4, KVH = 2, hd = 32, C = 12;
  // A prefill of 3 tokens at positions 5..7 after 5 cached ones.
  std::vector<int32_t> pos = {5, 6, 7};
  const int64_t T = pos.size();
  std::vector<float> q = Random(T * H * hd, 14, -2.0f, 2.0f);
  std::vector<float> k = Random(C * KVH * hd, 15, -2.0f, 2.0f);
  std::vector<float> v = Random(C * KVH * hd, 16);
  // Rows past position 7 hold huge values: reading them would show.
  for (int64_t i = 8 * KVH * hd; i < C * KVH * hd; ++i) k[i] = v[i] = 1e4f;
  // The reference reads the values the caches hold (f16: rounded; q8_0:
  // code * d).
  std::vector<uint8_t> kc = StoreAs(kt, k), vc = StoreAs(vt, v);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  AttentionShape shape{T, H, KVH, hd, C};
  ThreadPool pool(3);
  std::vector<float> out(T * H * hd);
  ASSERT_TRUE(Attention(&pool, q.data(), kc.data(), vc.data(), kt, vt, pos.data(), shape, scale,
                        out.data())
                  .ok());
  std::vector<float> ref = AttentionReference(q, k, v, pos, H, KVH, hd, scale);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-6) << i;

  // Single-token decode of the last row, single-threaded: the same bits.
  std::vector<float> one(H * hd);
  AttentionShape shape1{1, H, KVH, hd, C};
  ASSERT_TRUE(Attention(nullptr, q.data() + 2 * H * hd, kc.data(), vc.data(), kt, vt,
                        pos.data() + 2, shape1, scale, one.data())
                  .ok());
  for (int64_t i = 0; i < H * hd; ++i) ASSERT_EQ(one[i], out[2 * H * hd + i]);

  // Position past the cache.
  std::vector<int32_t> bad = {static_cast<int32_t>(C)};
  EXPECT_EQ(Attention(nullptr, q.data(), kc.data(), vc.data(), kt, vt, bad.data(), shape1, scale,
                      one.data())
                .code(),
            absl::StatusCode::kOutOfRange);
  // q8_0 rows must be whole blocks.
  if (kt == DType::kQ8_0) {
    AttentionShape odd{1, 2, 1, 48, C};
    EXPECT_THAT(Attention(nullptr, q.data(), kc.data(), vc.data(), kt, vt, pos.data(), odd, scale,
                          one.data())
                    .message(),
                testing::HasSubstr("rows of 48 elements are not whole blocks of 32"));
  }
}

INSTANTIATE_TEST_SUITE_P(
    CacheTypes, AttentionTest,
    testing::Values(std::pair{DType::kF32, DType::kF32}, std::pair{DType::kF16, DType::kF16},
                    std::pair{DType::kQ8_0, DType::kQ8_0}, std::pair{DType::kQ8_0, DType::kF16},
                    std::pair{DType::kF16, DType::kQ8_0}),
    [](const testing::TestParamInfo<std::pair<DType, DType>>& i) {
      return "k_" + std::string(DTypeName(i.param.first)) + "_v_" + std::string(DTypeName(i.param.second));
    });

TEST(AttentionHandTest, PositionZeroReturnsFirstValue) {
  // Attending to one row gives that row's value exactly.
  std::vector<float> q = {1, 2}, k = {3, 4, 100, 100}, v = {0.25f, -7, 9, 9}, out(2);
  std::vector<int32_t> pos = {0};
  AttentionShape shape{1, 1, 1, 2, 2};
  ASSERT_TRUE(Attention(nullptr, q.data(), k.data(), v.data(), DType::kF32, pos.data(), shape,
                        1.0f, out.data())
                  .ok());
  EXPECT_EQ(out[0], 0.25f);
  EXPECT_EQ(out[1], -7.0f);
  // Two equal scores average the values.
  std::vector<float> k2 = {1, 0, 1, 0}, v2 = {1, 2, 3, 6};
  pos[0] = 1;
  ASSERT_TRUE(Attention(nullptr, q.data(), k2.data(), v2.data(), DType::kF32, pos.data(), shape,
                        1.0f, out.data())
                  .ok());
  EXPECT_EQ(out[0], 2.0f);
  EXPECT_EQ(out[1], 4.0f);
}

// ---- sliding-window attention ---------------------------------------------------

// The reference with a window: query t sees rows j with pos[t] - W < j <= pos[t].
std::vector<float> WindowReference(const std::vector<float>& q, const std::vector<float>& k,
                                   const std::vector<float>& v, const std::vector<int32_t>& pos,
                                   int64_t H, int64_t KVH, int64_t hd, double scale, int64_t W) {
  const int64_t T = pos.size();
  std::vector<float> out(T * H * hd);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / (H / KVH);
      std::vector<double> w;
      std::vector<int64_t> rows;
      for (int64_t j = 0; j <= pos[t]; ++j) {
        if (pos[t] - j >= W) continue;  // masked iff p - p_k >= W (llama.cpp's SWA)
        double dot = 0;
        for (int64_t d = 0; d < hd; ++d) {
          dot += static_cast<double>(q[(t * H + h) * hd + d]) * k[(j * KVH + kvh) * hd + d];
        }
        w.push_back(dot * scale);
        rows.push_back(j);
      }
      const double m = *std::max_element(w.begin(), w.end());
      double sum = 0;
      for (double& e : w) sum += (e = std::exp(e - m));
      for (int64_t d = 0; d < hd; ++d) {
        double acc = 0;
        for (size_t i = 0; i < rows.size(); ++i) acc += w[i] * v[(rows[i] * KVH + kvh) * hd + d];
        out[(t * H + h) * hd + d] = static_cast<float>(acc / sum);
      }
    }
  }
  return out;
}

TEST(AttentionWindowTest, OnlyTheLastWindowRowsAreRead) {
  const int64_t H = 4, KVH = 1, hd = 8, C = 24, W = 5;
  // Positions before and after the window's first full use (p < W - 1).
  std::vector<int32_t> pos = {0, 3, 4, 9, 10, 17};
  const int64_t T = pos.size();
  std::vector<float> q = Random(T * H * hd, 40, -2.0f, 2.0f);
  std::vector<float> k = Random(C * KVH * hd, 41, -2.0f, 2.0f);
  std::vector<float> v = Random(C * KVH * hd, 42);
  const float scale = 0.3f;
  AttentionShape shape{T, H, KVH, hd, C};
  shape.window = W;
  ThreadPool pool(2);
  std::vector<float> out(T * H * hd);
  ASSERT_TRUE(Attention(&pool, q.data(), k.data(), v.data(), DType::kF32, pos.data(), shape, scale,
                        out.data())
                  .ok());
  const std::vector<float> ref = WindowReference(q, k, v, pos, H, KVH, hd, scale, W);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-6) << i;
  // The window matters: without it, position 17 reads rows 0..12 too.
  std::vector<float> full(T * H * hd);
  shape.window = 0;
  ASSERT_TRUE(Attention(&pool, q.data(), k.data(), v.data(), DType::kF32, pos.data(), shape, scale,
                        full.data())
                  .ok());
  EXPECT_GT(std::fabs(full[5 * H * hd] - out[5 * H * hd]), 1e-3);
  // Rows before the window are never read: poisoning them changes nothing.
  std::vector<float> k2 = k, v2 = v;
  for (int64_t j = 0; j <= 17 - W; ++j) {
    for (int64_t d = 0; d < hd; ++d) k2[j * hd + d] = v2[j * hd + d] = NAN;
  }
  std::vector<float> last(H * hd);
  AttentionShape one{1, H, KVH, hd, C};
  one.window = W;
  ASSERT_TRUE(Attention(nullptr, q.data() + 5 * H * hd, k2.data(), v2.data(), DType::kF32,
                        pos.data() + 5, one, scale, last.data())
                  .ok());
  for (int64_t i = 0; i < H * hd; ++i) ASSERT_EQ(last[i], out[5 * H * hd + i]) << i;
}

// ---- scale, gelu ---------------------------------------------------------------------

TEST(ElementwiseTest, ScaleIsOneMultiply) {
  std::vector<float> x = {1.5f, -2.0f, 0.0f, 3e38f}, out(4);
  Scale(x.data(), 4, 16.0f, out.data());
  EXPECT_THAT(out, testing::ElementsAre(24.0f, -32.0f, 0.0f, INFINITY));
  Scale(x.data(), 4, 0.5f, x.data());  // in place
  EXPECT_THAT(x, testing::ElementsAre(0.75f, -1.0f, 0.0f, 1.5e38f));
}

TEST(ElementwiseTest, GeluTanhApproximation) {
  // gelu is defined by its registry scalar function (ir/ops.cc), applied by Unary.
  float (*gelu)(float) = ir::GetOpInfo(ir::OpKind::kGelu).scalar.unary;
  ASSERT_NE(gelu, nullptr);
  // Hand values of 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))):
  // gelu(1) = 0.8411920, gelu(-1) = -0.1588080, gelu(2) = 1.9545977, gelu(0) = 0.
  std::vector<float> x = {0.0f, 1.0f, -1.0f, 2.0f}, out(4);
  Unary(gelu, x.data(), 4, out.data());
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_NEAR(out[1], 0.8411920f, 1e-6);
  EXPECT_NEAR(out[2], -0.1588080f, 1e-6);
  EXPECT_NEAR(out[3], 1.9545977f, 1e-6);
  // Against the double formula on random inputs: a few float ulps.
  std::vector<float> r = Random(1000, 43, -8.0f, 8.0f), g(1000);
  Unary(gelu, r.data(), 1000, g.data());
  for (int i = 0; i < 1000; ++i) {
    const double v = r[i];
    const double want = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    ASSERT_NEAR(g[i], want, 4e-7 * std::max(1.0, std::fabs(want))) << r[i];
  }
}

// ---- mixture of experts: router, grouping, expert matmul, weighted sum ------------

TEST(MoeRouterTest, SoftmaxTopKAndRenormalizedWeights) {
  // One token, 4 experts with logits 1, 3, 2, 0: p = e^l / sum.
  const std::vector<float> logits = {1, 3, 2, 0};
  std::vector<float> p(4);
  MoeSoftmax(logits.data(), 4, p.data());
  const double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.0) + 1.0;
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(p[i], std::exp(logits[i]) / z, 1e-7);
  std::vector<int32_t> ids(2);
  ASSERT_TRUE(MoeTopK(logits.data(), 1, 4, 2, ids.data()).ok());
  EXPECT_THAT(ids, testing::ElementsAre(1, 2));
  std::vector<float> w(2);
  ASSERT_TRUE(MoeWeights(logits.data(), 1, 4, ids.data(), 2, /*norm=*/true, w.data()).ok());
  // Renormalized over the two: e^3 / (e^3 + e^2) and e^2 / (e^3 + e^2).
  EXPECT_NEAR(w[0], std::exp(3.0) / (std::exp(3.0) + std::exp(2.0)), 1e-7);
  EXPECT_NEAR(w[1], std::exp(2.0) / (std::exp(3.0) + std::exp(2.0)), 1e-7);
  ASSERT_TRUE(MoeWeights(logits.data(), 1, 4, ids.data(), 2, /*norm=*/false, w.data()).ok());
  EXPECT_NEAR(w[0], std::exp(3.0) / z, 1e-7);
  EXPECT_NEAR(w[1], std::exp(2.0) / z, 1e-7);
}

TEST(MoeRouterTest, TiesGoToTheLowerExpert) {
  // Token 0: all equal -> 0, 1, 2. Token 1: experts 3 and 1 tie for first,
  // 0 and 2 tie for third -> 1, 3, 0.
  const std::vector<float> logits = {0.5f, 0.5f, 0.5f, 0.5f, /**/ 1.0f, 2.0f, 1.0f, 2.0f};
  std::vector<int32_t> ids(6);
  ASSERT_TRUE(MoeTopK(logits.data(), 2, 4, 3, ids.data()).ok());
  EXPECT_THAT(ids, testing::ElementsAre(0, 1, 2, 1, 3, 0));
  std::vector<float> w(6);
  ASSERT_TRUE(MoeWeights(logits.data(), 2, 4, ids.data(), 3, true, w.data()).ok());
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(w[j], 1.0f / 3, 1e-7);
  EXPECT_EQ(w[3], w[4]);  // the tied pair gets the same weight
}

TEST(MoeRouterTest, ErrorsAndKEqualsE) {
  const std::vector<float> logits = {3, 1, 2};
  std::vector<int32_t> ids(3);
  ASSERT_TRUE(MoeTopK(logits.data(), 1, 3, 3, ids.data()).ok());  // every expert chosen
  EXPECT_THAT(ids, testing::ElementsAre(0, 2, 1));
  EXPECT_FALSE(MoeTopK(logits.data(), 1, 3, 4, ids.data()).ok());
  EXPECT_FALSE(MoeTopK(logits.data(), 1, 3, 0, ids.data()).ok());
  std::vector<int32_t> bad = {0, 3};
  std::vector<float> w(2);
  absl::Status s = MoeWeights(logits.data(), 1, 3, bad.data(), 2, true, w.data());
  EXPECT_THAT(std::string(s.message()), testing::HasSubstr("expert id 3 at slot 1"));
}

TEST(MoeGroupingTest, HandBuiltCases) {
  // Every expert chosen: 3 tokens x 2 slots over 4 experts.
  const std::vector<int32_t> every = {0, 3, 1, 2, 3, 0};
  auto g = GroupByExpert(every.data(), 3, 2, 4);
  ASSERT_TRUE(g.ok());
  EXPECT_THAT((*g)[0], testing::ElementsAre(0, 5));
  EXPECT_THAT((*g)[1], testing::ElementsAre(2));
  EXPECT_THAT((*g)[2], testing::ElementsAre(3));
  EXPECT_THAT((*g)[3], testing::ElementsAre(1, 4));
  // One expert chosen by all tokens (slot 0), the others by none or one.
  const std::vector<int32_t> one = {2, 0, 2, 1, 2, 0, 2, 3};
  g = GroupByExpert(one.data(), 4, 2, 5);
  ASSERT_TRUE(g.ok());
  EXPECT_THAT((*g)[2], testing::ElementsAre(0, 2, 4, 6));
  EXPECT_THAT((*g)[0], testing::ElementsAre(1, 5));
  EXPECT_TRUE((*g)[4].empty());
  // Out of range.
  const std::vector<int32_t> bad = {0, -1};
  EXPECT_FALSE(GroupByExpert(bad.data(), 1, 2, 4).ok());
}

// matmul_id against each slot's DotRow with its expert's row, directly.
void CheckMatMulId(DType wt, const std::vector<int32_t>& ids, int64_t T, int64_t k, bool per_slot) {
  SCOPED_TRACE(testing::Message() << DTypeName(wt) << " per_slot=" << per_slot);
  const int64_t E = 4, N = 6, K = 64;
  const std::vector<float> wf = Random(E * N * K, 50);
  const int64_t row_bytes = *DTypeBytes(wt, K);
  std::vector<uint8_t> w(E * N * row_bytes);
  ASSERT_TRUE(Quantize(wt, wf.data(), E * N * K, w.data()).ok());
  const std::vector<float> x = Random((per_slot ? T * k : T) * K, 51);
  std::vector<float> out(T * k * N, NAN);
  ThreadPool pool(2);
  ASSERT_TRUE(MatMulId(&pool, x.data(), per_slot, T, k, K, wt, w.data(), E, N, ids.data(),
                       out.data())
                  .ok());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = ids[t * k + j];
      const float* xr = x.data() + (per_slot ? t * k + j : t) * K;
      for (int64_t n = 0; n < N; ++n) {
        const float want = DotRow(wt, w.data() + (e * N + n) * row_bytes, xr, K);
        ASSERT_EQ(out[(t * k + j) * N + n], want) << "t " << t << " j " << j << " n " << n;
      }
    }
  }
}

TEST(MatMulIdTest, EqualsPerSlotDotRows) {
  // Every expert used; one expert used by every token; a token choosing
  // the same expert in both slots cannot happen (top-k) but works.
  for (DType wt : {DType::kF32, DType::kQ8_0, DType::kQ5_0, DType::kIQ4_NL}) {
    CheckMatMulId(wt, {0, 3, 1, 2, 3, 0}, 3, 2, false);
    CheckMatMulId(wt, {2, 0, 2, 1, 2, 3, 2, 2}, 4, 2, true);
  }
  std::vector<float> x(64), out(6);
  std::vector<float> w(4 * 6 * 64);
  std::vector<int32_t> bad = {4};
  EXPECT_FALSE(MatMulId(nullptr, x.data(), false, 1, 1, 64, DType::kF32, w.data(), 4, 6, bad.data(),
                        out.data())
                   .ok());
}

TEST(MoeSumTest, WeightedSumInSlotOrder) {
  // T = 2, k = 2, D = 3.
  const std::vector<float> y = {1, 2, 3, 10, 20, 30, /**/ -1, 0, 1, 4, 4, 4};
  const std::vector<float> w = {0.5f, 0.25f, 2.0f, 0.125f};
  std::vector<float> out(6);
  MoeSum(y.data(), w.data(), 2, 2, 3, out.data());
  EXPECT_THAT(out, testing::ElementsAre(3.0f, 6.0f, 9.0f, -1.5f, 0.5f, 2.5f));
}

}  // namespace
}  // namespace vibrant::cpu
