// FillRandom: valid blocks whose dequantized values (by the reference
// Dequantize) have the requested spread, deterministic for a seed.
#include "bench/synth/random_blocks.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/cpu/dequantize.h"

namespace vibrant::synth {
namespace {

constexpr DType kTypes[] = {DType::kF32,  DType::kF16,  DType::kQ4_0, DType::kQ4_1,
                            DType::kQ5_0, DType::kQ5_1, DType::kQ8_0, DType::kQ4_K,
                            DType::kQ5_K, DType::kQ6_K};

std::vector<uint8_t> Make(DType t, int64_t n, uint64_t seed, float mean, int threads) {
  std::vector<uint8_t> buf(*DTypeBytes(t, n));
  absl::Status s = FillRandom(t, seed, 0.02f, mean, absl::MakeSpan(buf), threads);
  EXPECT_TRUE(s.ok()) << s;
  return buf;
}

TEST(FillRandom, DequantizedValuesHaveTheRequestedSpread) {
  const int64_t n = 256 * 512;
  for (DType t : kTypes) {
    const std::vector<uint8_t> buf = Make(t, n, 7, 0.0f, 1);
    std::vector<float> x(n);
    ASSERT_TRUE(Dequantize(t, buf.data(), n, x.data()).ok());
    double sum = 0, sum2 = 0;
    for (float v : x) {
      ASSERT_TRUE(std::isfinite(v)) << DTypeName(t);
      sum += v;
      sum2 += double(v) * v;
    }
    const double mean = sum / n;
    const double sd = std::sqrt(sum2 / n - mean * mean);
    // Uniform quants with offsets of half a step (q4_0: d * (q - 8)) are
    // centred within 0.15 sigma.
    EXPECT_NEAR(mean, 0.0, 0.15 * 0.02) << DTypeName(t);
    EXPECT_NEAR(sd, 0.02, 0.1 * 0.02) << DTypeName(t);
  }
}

TEST(FillRandom, MeanForFloatTypes) {
  const int64_t n = 4096;
  for (DType t : {DType::kF32, DType::kF16}) {
    const std::vector<uint8_t> buf = Make(t, n, 3, 1.0f, 1);
    std::vector<float> x(n);
    ASSERT_TRUE(Dequantize(t, buf.data(), n, x.data()).ok());
    double sum = 0;
    for (float v : x) sum += v;
    EXPECT_NEAR(sum / n, 1.0, 0.002) << DTypeName(t);
  }
  std::vector<uint8_t> q(*DTypeBytes(DType::kQ4_K, 256));
  EXPECT_FALSE(FillRandom(DType::kQ4_K, 1, 0.02f, 1.0f, absl::MakeSpan(q)).ok());
}

TEST(FillRandom, SameBytesForASeedWhateverTheThreadCount) {
  // Several chunks (2^20 elements each) so that threads share the work.
  const int64_t n = (int64_t{1} << 20) * 3 + 256 * 5;
  for (DType t : {DType::kQ4_K, DType::kF16, DType::kQ8_0}) {
    const std::vector<uint8_t> one = Make(t, n, 42, 0.0f, 1);
    EXPECT_EQ(Make(t, n, 42, 0.0f, 4), one) << DTypeName(t);
    EXPECT_NE(Make(t, n, 43, 0.0f, 1), one) << DTypeName(t);
  }
}

TEST(FillRandom, RejectsPartialBlocksAndUnsupportedTypes) {
  std::vector<uint8_t> buf(145);
  EXPECT_FALSE(FillRandom(DType::kQ4_K, 1, 0.02f, 0.0f, absl::MakeSpan(buf)).ok());
  std::vector<uint8_t> q2(*DTypeBytes(DType::kQ2_K, 256));
  EXPECT_FALSE(FillRandom(DType::kQ2_K, 1, 0.02f, 0.0f, absl::MakeSpan(q2)).ok());
}

}  // namespace
}  // namespace vibrant::synth
