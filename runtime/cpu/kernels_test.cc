// Each kernel against an independent double-precision reference written
// here, on random inputs, plus hand-computed cases.
#include "runtime/cpu/kernels.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
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
  EXPECT_FALSE(KvStore(src.data(), 1, row, pos.data(), DType::kQ8_0, cache.data(), C).ok());
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

class AttentionTest : public testing::TestWithParam<DType> {};

TEST_P(AttentionTest, GqaCausalPrefillAtOffset) {
  const DType ct = GetParam();
  const int64_t H = 4, KVH = 2, hd = 16, C = 12;
  // A prefill of 3 tokens at positions 5..7 after 5 cached ones.
  std::vector<int32_t> pos = {5, 6, 7};
  const int64_t T = pos.size();
  std::vector<float> q = Random(T * H * hd, 14, -2.0f, 2.0f);
  std::vector<float> k = Random(C * KVH * hd, 15, -2.0f, 2.0f);
  std::vector<float> v = Random(C * KVH * hd, 16);
  // Rows past position 7 hold huge values: reading them would show.
  for (int64_t i = 8 * KVH * hd; i < C * KVH * hd; ++i) k[i] = v[i] = 1e4f;
  std::vector<uint8_t> kc, vc;
  if (ct == DType::kF16) {
    // The reference reads the values the f16 cache holds.
    std::vector<uint16_t> k16(k.size()), v16(v.size());
    for (size_t i = 0; i < k.size(); ++i) {
      k16[i] = FloatToHalf(k[i]);
      v16[i] = FloatToHalf(v[i]);
      k[i] = HalfToFloat(k16[i]);
      v[i] = HalfToFloat(v16[i]);
    }
    kc.assign(reinterpret_cast<uint8_t*>(k16.data()), reinterpret_cast<uint8_t*>(k16.data() + k16.size()));
    vc.assign(reinterpret_cast<uint8_t*>(v16.data()), reinterpret_cast<uint8_t*>(v16.data() + v16.size()));
  } else {
    kc.assign(reinterpret_cast<uint8_t*>(k.data()), reinterpret_cast<uint8_t*>(k.data() + k.size()));
    vc.assign(reinterpret_cast<uint8_t*>(v.data()), reinterpret_cast<uint8_t*>(v.data() + v.size()));
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  AttentionShape shape{T, H, KVH, hd, C};
  ThreadPool pool(3);
  std::vector<float> out(T * H * hd);
  ASSERT_TRUE(Attention(&pool, q.data(), kc.data(), vc.data(), ct, pos.data(), shape, scale,
                        out.data())
                  .ok());
  std::vector<float> ref = AttentionReference(q, k, v, pos, H, KVH, hd, scale);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-6) << i;

  // Single-token decode of the last row, single-threaded: the same bits.
  std::vector<float> one(H * hd);
  AttentionShape shape1{1, H, KVH, hd, C};
  ASSERT_TRUE(Attention(nullptr, q.data() + 2 * H * hd, kc.data(), vc.data(), ct, pos.data() + 2,
                        shape1, scale, one.data())
                  .ok());
  for (int64_t i = 0; i < H * hd; ++i) ASSERT_EQ(one[i], out[2 * H * hd + i]);

  // Position past the cache.
  std::vector<int32_t> bad = {static_cast<int32_t>(C)};
  EXPECT_EQ(Attention(nullptr, q.data(), kc.data(), vc.data(), ct, bad.data(), shape1, scale,
                      one.data())
                .code(),
            absl::StatusCode::kOutOfRange);
}

INSTANTIATE_TEST_SUITE_P(CacheTypes, AttentionTest, testing::Values(DType::kF32, DType::kF16),
                         [](const testing::TestParamInfo<DType>& i) {
                           return std::string(DTypeName(i.param));
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

}  // namespace
}  // namespace vibrant::cpu
