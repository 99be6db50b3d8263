// The fast matmul (fast_matmul.h) against the exact reference MatMul
// (kernels.h) for every weight type, and against itself: every instruction
// set this machine has, thread counts, token tilings and step sizes must give
// the same bits.
#include "runtime/cpu/fast_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/cpu/cpu_features.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/fast_matmul_internal.h"
#include "runtime/cpu/fast_matmul_portable.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu/quantize.h"
#include "runtime/cpu/thread_pool.h"

namespace vibrant::cpu {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A weight [N, K] of type t quantized from Gaussian values by the reference
// quantizers (row by row: Quantize is block-local).
std::vector<uint8_t> RandomWeight(DType t, int64_t N, int64_t K, uint32_t seed) {
  const std::vector<float> f = Random(static_cast<size_t>(N * K), seed, 0.05f);
  const int64_t row = *DTypeBytes(t, K);
  std::vector<uint8_t> w(static_cast<size_t>(row * N));
  if (t == DType::kI8 || t == DType::kI16 || t == DType::kI32) {
    std::mt19937 rng(seed);
    for (uint8_t& b : w) b = static_cast<uint8_t>(rng() % 7);
    if (t == DType::kI16 || t == DType::kI32) {
      for (size_t i = 0; i < w.size(); ++i) {
        if (i % (t == DType::kI16 ? 2 : 4) != 0) w[i] = 0;
      }
    }
    return w;
  }
  for (int64_t n = 0; n < N; ++n) {
    EXPECT_TRUE(Quantize(t, f.data() + n * K, K, w.data() + n * row).ok()) << DTypeName(t);
  }
  return w;
}

int64_t BlockOf(DType t) {
  if (internal::IsKFamily(t) || t == DType::kQ8_K || t == DType::kIQ4_XS) return 256;
  if (internal::IsQ32Family(t) || t == DType::kIQ4_NL) return 32;
  return 1;
}

const DType kAllTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ4_0,
                           DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                           DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K,
                           DType::kQ6_K, DType::kQ8_K, DType::kI8,   DType::kI16,
                           DType::kI32,  DType::kIQ4_NL, DType::kIQ4_XS};

std::vector<Isa> AvailableIsas() {
  std::vector<Isa> v = {Isa::kPortable};
  if (DetectedIsa() >= Isa::kAvx2) v.push_back(Isa::kAvx2);
  if (DetectedIsa() >= Isa::kAvx512) v.push_back(Isa::kAvx512);
  return v;
}

// Restores the ISA cap at scope exit.
class IsaScope {
 public:
  explicit IsaScope(Isa isa) : before_(SetIsaForTesting(isa)) {}
  ~IsaScope() { SetIsaForTesting(before_); }

 private:
  Isa before_;
};

std::vector<float> RunFast(DType t, const std::vector<uint8_t>& w, const std::vector<float>& x,
                           int64_t T, int64_t K, int64_t N, const float* bias, ThreadPool* pool) {
  std::vector<float> out(static_cast<size_t>(T * N), -1.0f);
  std::vector<uint8_t> scratch;
  absl::Status s = MatMulFast(pool, x.data(), T, K, t, w.data(), N, bias, out.data(), &scratch);
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

bool BitsEqual(const std::vector<float>& a, const std::vector<float>& b, std::string* where) {
  if (a.size() != b.size()) {
    *where = "sizes differ";
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], 4) != 0) {
      *where = "element " + std::to_string(i) + ": " + std::to_string(a[i]) + " vs " +
               std::to_string(b[i]);
      return false;
    }
  }
  return true;
}

// ---- decoding -------------------------------------------------------------------

// The canonical decoded form reproduces the reference dequantization exactly
// (same float operations: (d * sc) * (u - o) - dmin * mn, d * v + m).
TEST(FastMatMulDecode, CanonicalFormEqualsDequantize) {
  for (DType t : kAllTypes) {
    if (!internal::IsQ32Family(t) && !internal::IsKFamily(t)) continue;
    SCOPED_TRACE(std::string(DTypeName(t)));
    const int64_t K = 1024;
    const std::vector<uint8_t> w = RandomWeight(t, 4, K, 7);
    const int64_t row = *DTypeBytes(t, K);
    for (int64_t n = 0; n < 4; ++n) {
      std::vector<float> ref(K);
      ASSERT_TRUE(Dequantize(t, w.data() + n * row, K, ref.data()).ok());
      for (int64_t b = 0; b < K / BlockOf(t); ++b) {
        for (int64_t i = 0; i < BlockOf(t); ++i) {
          float got;
          if (internal::IsQ32Family(t)) {
            internal::Q32Block blk;
            internal::DecodeQ32(t, w.data() + n * row, b, &blk);
            got = static_cast<float>(blk.v[i]) * blk.d;
            if (blk.has_min) got = got + blk.m;
          } else {
            internal::KBlock blk;
            internal::DecodeK(t, w.data() + n * row, b, &blk);
            const int g = static_cast<int>(i / 16);
            got = (blk.d * static_cast<float>(blk.sc[g])) * static_cast<float>(blk.u[i] - blk.o);
            if (blk.has_min) got = got - blk.dmin * static_cast<float>(blk.mn[g]);
          }
          ASSERT_EQ(got, ref[b * BlockOf(t) + i]) << "row " << n << " block " << b << " elem " << i;
        }
      }
    }
  }
}

// ---- activation rounding ------------------------------------------------------------

TEST(FastMatMulQuantize, EveryIsaWritesTheSameBytesAndRoundsToNearest) {
  const int64_t K = 512, T = 3;
  std::vector<float> x = Random(T * K, 3);
  for (int i = 0; i < 32; ++i) x[i] = 0.0f;           // an all-zero block
  x[40] = 1e30f;                                      // a huge value
  for (int i = 64; i < 96; ++i) x[i] = (i % 3) * 0.5f;  // ties after scaling
  for (ActivationFormat f : {ActivationFormat::kQ8x32, ActivationFormat::kQ8x256}) {
    const int64_t bs = f == ActivationFormat::kQ8x32 ? 32 : 256;
    const internal::RowLayout l = internal::LayoutFor(f, K);
    std::vector<uint8_t> ref(static_cast<size_t>(l.bytes * T));
    {
      IsaScope scope(Isa::kPortable);
      ASSERT_TRUE(QuantizeActivations(f, x.data(), T, K, ref.data(), nullptr).ok());
    }
    // Rounding: |x - d q| <= d / 2 (+ rounding of x * 127 / amax), q in [-127, 127].
    for (int64_t t = 0; t < T; ++t) {
      const uint8_t* row = ref.data() + t * l.bytes;
      const int8_t* q = reinterpret_cast<const int8_t*>(row + l.q);
      const float* d = reinterpret_cast<const float*>(row + l.d);
      for (int64_t i = 0; i < K; ++i) {
        const float db = d[i / bs];
        ASSERT_GE(q[i], -127);
        EXPECT_LE(std::fabs(x[t * K + i] - db * q[i]), 0.5f * db * 1.0001f + 1e-30f)
            << "t=" << t << " i=" << i;
      }
      if (f == ActivationFormat::kQ8x32) {
        const int32_t* sum = reinterpret_cast<const int32_t*>(row + l.sum);
        const float* dsum = reinterpret_cast<const float*>(row + l.dsum);
        for (int64_t b = 0; b < K / 32; ++b) {
          int32_t s = 0;
          for (int i = 0; i < 32; ++i) s += q[32 * b + i];
          EXPECT_EQ(sum[b], s);
          EXPECT_EQ(dsum[b], d[b] * static_cast<float>(s));
        }
      } else {
        const int16_t* bsum = reinterpret_cast<const int16_t*>(row + l.bsum);
        for (int64_t g = 0; g < K / 16; ++g) {
          int s = 0;
          for (int i = 0; i < 16; ++i) s += q[16 * g + i];
          EXPECT_EQ(bsum[g], s);
        }
      }
    }
    if (f == ActivationFormat::kQ8x32) {  // the all-zero block
      EXPECT_EQ(reinterpret_cast<const float*>(ref.data() + l.d)[0], 0.0f);
    }
    for (Isa isa : AvailableIsas()) {
      IsaScope scope(isa);
      std::vector<uint8_t> got(ref.size());
      ASSERT_TRUE(QuantizeActivations(f, x.data(), T, K, got.data(), nullptr).ok());
      // Compare the defined parts (padding between them is not written).
      for (int64_t t = 0; t < T; ++t) {
        const uint8_t* a = ref.data() + t * l.bytes;
        const uint8_t* b = got.data() + t * l.bytes;
        EXPECT_EQ(std::memcmp(a, b, K), 0) << IsaName(isa) << " codes, row " << t;
        EXPECT_EQ(std::memcmp(a + l.d, b + l.d, 4 * (K / bs)), 0) << IsaName(isa) << " scales";
        if (f == ActivationFormat::kQ8x32) {
          EXPECT_EQ(std::memcmp(a + l.sum, b + l.sum, 4 * (K / 32)), 0) << IsaName(isa);
          EXPECT_EQ(std::memcmp(a + l.dsum, b + l.dsum, 4 * (K / 32)), 0) << IsaName(isa);
        } else {
          EXPECT_EQ(std::memcmp(a + l.bsum, b + l.bsum, 2 * (K / 16)), 0) << IsaName(isa);
        }
      }
    }
  }
}

TEST(FastMatMulQuantize, RejectsPartialBlocks) {
  std::vector<float> x(48);
  std::vector<uint8_t> d(4096);
  EXPECT_FALSE(QuantizeActivations(ActivationFormat::kQ8x32, x.data(), 1, 48, d.data(), nullptr).ok());
  EXPECT_FALSE(QuantizeActivations(ActivationFormat::kQ8x256, x.data(), 1, 48, d.data(), nullptr).ok());
}

// ---- the matmul: self-consistency -----------------------------------------------------

struct Shape {
  int64_t T, K, N;
};

class FastMatMulTypes : public testing::TestWithParam<DType> {};

// Every ISA, 1 and 3 threads, and token by token (T = 1 steps) give the bits
// of the portable version with all tokens in one call.
TEST_P(FastMatMulTypes, BitIdenticalAcrossIsasThreadsAndSteps) {
  const DType t = GetParam();
  const int64_t blk = BlockOf(t);
  // K: 2 and 5 blocks of 256 (K-quants), or odd numbers of 32 / of 1;
  // N not a multiple of 8; T across several token tiles.
  std::vector<Shape> shapes;
  if (blk == 256) {
    shapes = {{1, 512, 13}, {21, 1280, 19}, {40, 512, 8}};
  } else if (blk == 32) {
    shapes = {{1, 96, 13}, {21, 800, 19}, {40, 544, 8}};
  } else {
    shapes = {{1, 45, 13}, {21, 800, 19}, {40, 100, 8}};
  }
  ThreadPool pool3(3);
  for (const Shape& s : shapes) {
    SCOPED_TRACE(std::string(DTypeName(t)) + " T=" + std::to_string(s.T) + " K=" +
                 std::to_string(s.K) + " N=" + std::to_string(s.N));
    const std::vector<uint8_t> w = RandomWeight(t, s.N, s.K, 11);
    const std::vector<float> x = Random(s.T * s.K, 12);
    const std::vector<float> bias = Random(s.N, 13);
    std::vector<float> ref;
    {
      IsaScope scope(Isa::kPortable);
      ref = RunFast(t, w, x, s.T, s.K, s.N, bias.data(), nullptr);
    }
    for (Isa isa : AvailableIsas()) {
      IsaScope scope(isa);
      std::string where;
      EXPECT_TRUE(BitsEqual(RunFast(t, w, x, s.T, s.K, s.N, bias.data(), nullptr), ref, &where))
          << IsaName(isa) << ", 1 thread: " << where;
      EXPECT_TRUE(BitsEqual(RunFast(t, w, x, s.T, s.K, s.N, bias.data(), &pool3), ref, &where))
          << IsaName(isa) << ", 3 threads: " << where;
      std::vector<float> steps;
      for (int64_t tok = 0; tok < s.T; ++tok) {
        std::vector<float> xt(x.begin() + tok * s.K, x.begin() + (tok + 1) * s.K);
        std::vector<float> o = RunFast(t, w, xt, 1, s.K, s.N, bias.data(), &pool3);
        steps.insert(steps.end(), o.begin(), o.end());
      }
      EXPECT_TRUE(BitsEqual(steps, ref, &where)) << IsaName(isa) << ", token by token: " << where;
    }
  }
}

// Error against the exact reference: max over the T x N outputs of
// |fast - exact|, relative to the RMS of the exact outputs. Measured with this
// test (x ~ N(0, 1), weights ~ N(0, 0.05) quantized by the reference
// quantizers, K = 2048, N = 64, T = 8; 2026-12-07, the numbers are the same
// on every ISA since the results are) and bounded at about 1.5x:
//   f32, f16, bf16, q8_K, i8/i16/i32 (summation order only): <= 6.5e-7 -> 1e-6
//   q4_0 0.0173, q4_1 0.0173, q5_0 0.0166, q5_1 0.0166, q8_0 0.0166  -> 0.026
//   q2_K 0.0234, q3_K 0.0222, q4_K 0.0222, q5_K 0.0220, q6_K 0.0223  -> 0.035
// This is the rounding of x to 8 bits: per value an error of about
// amax / 127 / sqrt(12), amax of 32 (or 256) Gaussian values being ~2.1 (~2.8)
// sigma, i.e. 0.5% (0.65%) of the RMS, and ~3.3 of those at the worst of 512
// outputs.
double ToleranceFor(DType t) {
  if (internal::IsQ32Family(t)) return 0.026;
  if (internal::IsKFamily(t)) return 0.035;
  return 1e-6;
}

TEST_P(FastMatMulTypes, CloseToTheExactReference) {
  const DType t = GetParam();
  const int64_t T = 8, K = 2048, N = 64;
  const std::vector<uint8_t> w = RandomWeight(t, N, K, 21);
  const std::vector<float> x = Random(T * K, 22);
  const std::vector<float> bias = Random(N, 23, 0.1f);
  std::vector<float> exact(T * N);
  ASSERT_TRUE(MatMul(nullptr, x.data(), T, K, t, w.data(), N, bias.data(), exact.data()).ok());
  const std::vector<float> fast = RunFast(t, w, x, T, K, N, bias.data(), nullptr);
  double ss = 0, worst = 0;
  for (float v : exact) ss += double(v) * v;
  const double rms = std::sqrt(ss / exact.size());
  for (size_t i = 0; i < exact.size(); ++i) worst = std::max(worst, std::fabs(double(fast[i]) - exact[i]));
  std::printf("[ MEASURED ] %s: max |fast - exact| / rms(exact) = %.3g (rms %.3g)\n",
              std::string(DTypeName(t)).c_str(), worst / rms, rms);
  EXPECT_LE(worst / rms, ToleranceFor(t));
  EXPECT_GT(rms, 0.0);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, FastMatMulTypes, testing::ValuesIn(kAllTypes),
                         [](const testing::TestParamInfo<DType>& i) {
                           return std::string(DTypeName(i.param));
                         });

TEST(FastMatMul, ZeroActivationsGiveTheBias) {
  const int64_t K = 256, N = 9;
  const std::vector<uint8_t> w = RandomWeight(DType::kQ4_K, N, K, 5);
  const std::vector<float> x(K, 0.0f);
  const std::vector<float> bias = Random(N, 6);
  for (Isa isa : AvailableIsas()) {
    IsaScope scope(isa);
    const std::vector<float> o = RunFast(DType::kQ4_K, w, x, 1, K, N, bias.data(), nullptr);
    for (int64_t n = 0; n < N; ++n) EXPECT_EQ(o[n], bias[n]) << IsaName(isa);
  }
}

// matmul_id on the fast kernels (the executor's cpu.matmul_id.* variants):
// tokens grouped by expert, each expert's rows one MatMulFast. Every output
// row must be the fast matmul of that row alone with its expert's weights
// (results do not depend on how many rows a call has), for x shared by the
// slots and x per slot; an expert id out of range is an error.
TEST(FastMatMul, MatMulIdGroupsEqualEachRowAlone) {
  for (DType t : {DType::kQ4_K, DType::kQ8_0, DType::kF16}) {
    const int64_t T = 5, k = 2, K = 256, N = 24, E = 4;
    std::vector<std::vector<uint8_t>> experts;
    std::vector<uint8_t> w;
    for (int64_t e = 0; e < E; ++e) {
      experts.push_back(RandomWeight(t, N, K, 40 + static_cast<uint32_t>(e)));
      w.insert(w.end(), experts.back().begin(), experts.back().end());
    }
    const int32_t ids[T * k] = {3, 0, 1, 3, 3, 2, 0, 1, 2, 3};
    ThreadPool pool(2);
    std::vector<uint8_t> scratch;
    for (bool per_slot : {false, true}) {
      const std::vector<float> x = Random(static_cast<size_t>((per_slot ? T * k : T) * K), per_slot ? 9 : 8);
      std::vector<float> out(T * k * N);
      const int64_t row_bytes = *DTypeBytes(t, K);
      ASSERT_TRUE(MatMulIdGrouped(x.data(), per_slot, T, k, K, E, N, ids, out.data(),
                                  [&](int64_t e, const float* xs, int64_t n, float* ys) {
                                    return MatMulFast(&pool, xs, n, K, t, w.data() + e * N * row_bytes, N,
                                                      nullptr, ys, &scratch);
                                  })
                      .ok());
      for (int64_t i = 0; i < T * k; ++i) {
        const float* row = x.data() + (per_slot ? i : i / k) * K;
        std::vector<float> want(N);
        ASSERT_TRUE(MatMulFast(nullptr, row, 1, K, t, experts[ids[i]].data(), N, nullptr, want.data(), &scratch).ok());
        std::string where;
        EXPECT_TRUE(BitsEqual(std::vector<float>(out.begin() + i * N, out.begin() + (i + 1) * N), want, &where))
            << DTypeName(t) << " slot " << i << (per_slot ? " (x per slot)" : "") << ": " << where;
      }
    }
    const int32_t bad[T * k] = {3, 0, 1, 3, 3, 2, 0, 4, 2, 3};
    std::vector<float> out(T * k * N), x(T * K);
    EXPECT_FALSE(MatMulIdGrouped(x.data(), false, T, k, K, E, N, bad, out.data(),
                                 [](int64_t, const float*, int64_t, float*) { return absl::OkStatus(); })
                     .ok());
  }
}

TEST(FastMatMul, RejectsRowsThatAreNotWholeBlocks) {
  std::vector<uint8_t> w(4096);
  std::vector<float> x(300), out(4);
  std::vector<uint8_t> scratch;
  EXPECT_FALSE(MatMulFast(nullptr, x.data(), 1, 300, DType::kQ4_K, w.data(), 1, nullptr,
                          out.data(), &scratch)
                   .ok());
  EXPECT_FALSE(MatMulFast(nullptr, x.data(), 1, 40, DType::kQ8_0, w.data(), 1, nullptr,
                          out.data(), &scratch)
                   .ok());
}

TEST(CpuFeatures, ReportsSomething) {
  std::printf("[ INFO ] detected ISA %s; features: %s; physical cores %d\n",
              IsaName(DetectedIsa()), CpuFeatureString().c_str(), PhysicalCoreCount());
  EXPECT_GE(PhysicalCoreCount(), 1);
  EXPECT_LE(ActiveIsa(), DetectedIsa());
}

}  // namespace
}  // namespace vibrant::cpu
