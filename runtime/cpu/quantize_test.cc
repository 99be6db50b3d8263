#include "runtime/cpu/quantize.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/cpu/dequantize.h"

namespace vibrant {
namespace {

// Comparisons with llama.cpp's own quantized files (byte-identical blocks,
// per-tensor error) live in dequantize_test.cc (QuantizerVsLlamaCppTest),
// next to the other tests that read ../shared/models.

std::vector<float> Gaussian(int64_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> v(n);
  for (float& f : v) f = normal(rng);
  return v;
}

std::vector<float> RoundTrip(DType t, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  auto bytes = QuantizedBytes(t, n);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  std::vector<uint8_t> q(*bytes);
  const absl::Status st = Quantize(t, x.data(), n, q.data());
  EXPECT_TRUE(st.ok()) << st;
  std::vector<float> y(n);
  const absl::Status st2 = Dequantize(t, q.data(), n, y.data());
  EXPECT_TRUE(st2.ok()) << st2;
  return y;
}

double RelRms(const std::vector<float>& x, const std::vector<float>& y) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(y[i]) - x[i];
    num += d * d;
    den += static_cast<double>(x[i]) * x[i];
  }
  return std::sqrt(num / den);
}

std::vector<uint8_t> Encode(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> q(*QuantizedBytes(t, static_cast<int64_t>(x.size())));
  const absl::Status st = Quantize(t, x.data(), static_cast<int64_t>(x.size()), q.data());
  EXPECT_TRUE(st.ok()) << st;
  return q;
}

const DType kAllEncodable[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ4_0,
                               DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                               DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K,
                               DType::kQ6_K, DType::kQ8_K};

struct Bound {
  DType type;
  double max_rel_rms;  // upper bound on ||dequant(quant(x)) - x|| / ||x||
};

TEST(QuantizeTest, RoundTripErrorOnGaussianData) {
  // Measured on 64K N(0,1) samples (printed below): f16 2.1e-4, bf16 1.7e-3,
  // q8_0 0.54%, q8_K 0.69%, q6_K 1.77%, q5_0 4.27%, q5_1 3.79%, q5_K 3.61%,
  // q4_0 8.59%, q4_1 7.81%, q4_K 7.15%, q3_K 15.1%, q2_K 29.8% -- the same as
  // llama.cpp's files in ../shared reach against their high-precision weights
  // (see dequantize_test). Bounds leave ~10% headroom.
  const Bound bounds[] = {
      {DType::kF16, 2.5e-4}, {DType::kBF16, 2e-3},  {DType::kQ8_0, 0.006},
      {DType::kQ8_K, 0.008}, {DType::kQ6_K, 0.02},  {DType::kQ5_0, 0.047},
      {DType::kQ5_1, 0.042}, {DType::kQ5_K, 0.04},  {DType::kQ4_0, 0.095},
      {DType::kQ4_1, 0.086}, {DType::kQ4_K, 0.08},  {DType::kQ3_K, 0.166},
      {DType::kQ2_K, 0.33}};
  const std::vector<float> x = Gaussian(65536, 42);
  for (const Bound& b : bounds) {
    const double rel = RelRms(x, RoundTrip(b.type, x));
    std::cout << "  " << DTypeName(b.type) << ": relative RMS error " << rel << "\n";
    EXPECT_LT(rel, b.max_rel_rms) << DTypeName(b.type);
  }
}

TEST(QuantizeTest, RoundTripErrorIsScaleInvariant) {
  // Small (typical LLM weights) and large values quantize as well as
  // unit-scale ones. (Much smaller values lose precision in every format whose
  // scales are f16: Q6_K's d = max/(32*128) becomes an f16 subnormal for
  // sigma below ~0.005, as in ggml.)
  for (float sigma : {0.02f, 30.0f}) {
    const std::vector<float> x = Gaussian(8192, 7, sigma);
    for (DType t : {DType::kQ4_0, DType::kQ8_0, DType::kQ2_K, DType::kQ3_K, DType::kQ4_K,
                    DType::kQ5_K, DType::kQ6_K}) {
      const double unit = RelRms(Gaussian(8192, 7), RoundTrip(t, Gaussian(8192, 7)));
      EXPECT_LT(RelRms(x, RoundTrip(t, x)), unit * 1.05 + 1e-6)
          << DTypeName(t) << " sigma " << sigma;
    }
  }
}

TEST(QuantizeTest, ExactlyRepresentableValuesSurvive) {
  std::mt19937 rng(5);
  {  // Q8_0: q * 0.5 with some |q| = 127 in every block, so d = 0.5 exactly.
    std::vector<float> x(256);
    for (size_t i = 0; i < x.size(); ++i) {
      const int q = i % 32 == 7 ? (i % 64 == 7 ? 127 : -127) : static_cast<int>(rng() % 255) - 127;
      x[i] = 0.5f * static_cast<float>(q);
    }
    EXPECT_EQ(RoundTrip(DType::kQ8_0, x), x);
  }
  {  // Q8_K: q * 2^-3, |q| <= 127, with a 127 in every block.
    std::vector<float> x(512);
    for (size_t i = 0; i < x.size(); ++i) {
      const int q = i % 256 == 100 ? 127 : static_cast<int>(rng() % 255) - 127;
      x[i] = 0.125f * static_cast<float>(q);
    }
    EXPECT_EQ(RoundTrip(DType::kQ8_K, x), x);
  }
  {  // Q4_0: (q - 8) * 0.25 with q = 0 (the largest magnitude) in every block.
    std::vector<float> x(128);
    for (size_t i = 0; i < x.size(); ++i) {
      const int q = i % 32 == 3 ? 0 : static_cast<int>(rng() % 16);
      x[i] = 0.25f * static_cast<float>(q - 8);
    }
    EXPECT_EQ(RoundTrip(DType::kQ4_0, x), x);
  }
  {  // F16 and BF16: every finite value of the type.
    std::vector<float> h, bf;
    for (uint32_t v = 0; v < 65536; ++v) {
      const float fh = HalfToFloat(static_cast<uint16_t>(v));
      const float fb = BF16ToFloat(static_cast<uint16_t>(v));
      if (std::isfinite(fh)) h.push_back(fh);
      if (std::isfinite(fb)) bf.push_back(fb);
    }
    EXPECT_EQ(RoundTrip(DType::kF16, h), h);
    EXPECT_EQ(RoundTrip(DType::kBF16, bf), bf);
  }
  {  // F32 is a copy.
    const std::vector<float> x = Gaussian(100, 3);
    EXPECT_EQ(RoundTrip(DType::kF32, x), x);
  }
}

TEST(QuantizeTest, HandComputedQ4_0Bytes) {
  // x = -8..7 then 7..-8: the largest magnitude is -8, so d = -8 / -8 = 1 and
  // each element is stored as x + 8.
  std::vector<float> x(32);
  for (int j = 0; j < 16; ++j) {
    x[j] = static_cast<float>(j - 8);
    x[16 + j] = static_cast<float>(7 - j);
  }
  const auto q = Encode(DType::kQ4_0, x);
  ASSERT_EQ(q.size(), 18u);
  EXPECT_EQ(q[0], 0x00);  // f16 1.0 = 0x3C00, little-endian
  EXPECT_EQ(q[1], 0x3C);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(q[2 + j], j | ((15 - j) << 4)) << j;
}

TEST(QuantizeTest, HandComputedQ8_0AndQ5_0Bytes) {
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;  // d = 1
  x[1] = -3.5f;   // rounds half away from zero: -4
  x[2] = 2.5f;    // 3
  x[31] = -1.0f;
  const auto q8 = Encode(DType::kQ8_0, x);
  EXPECT_EQ(q8[0], 0x00);
  EXPECT_EQ(q8[1], 0x3C);
  EXPECT_EQ(static_cast<int8_t>(q8[2]), 127);
  EXPECT_EQ(static_cast<int8_t>(q8[3]), -4);
  EXPECT_EQ(static_cast<int8_t>(q8[4]), 3);
  EXPECT_EQ(static_cast<int8_t>(q8[33]), -1);

  // Q5_0: max magnitude -16 gives d = 1 and q = x + 16 (5 bits, bit 4 in qh).
  std::vector<float> y(32);
  for (int i = 0; i < 32; ++i) y[i] = static_cast<float>(i - 16);  // -16..15
  const auto q5 = Encode(DType::kQ5_0, y);
  EXPECT_EQ(q5[0], 0x00);
  EXPECT_EQ(q5[1], 0x3C);
  // q_i = i: elements 16..31 have bit 4 set -> qh = 0xFFFF0000.
  EXPECT_EQ(q5[2], 0x00);
  EXPECT_EQ(q5[3], 0x00);
  EXPECT_EQ(q5[4], 0xFF);
  EXPECT_EQ(q5[5], 0xFF);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(q5[6 + j], j | (j << 4)) << j;
}

TEST(QuantizeTest, ZeroAndConstantBlocks) {
  for (DType t : kAllEncodable) {
    const int64_t bs = GetDTypeInfo(t).block_size;
    const int64_t n = bs == 1 ? 256 : 2 * bs;
    const std::vector<float> zeros(n, 0.0f);
    EXPECT_EQ(RoundTrip(t, zeros), zeros) << DTypeName(t);
    for (float c : {0.3f, -2.0f}) {
      const std::vector<float> x(n, c);
      const auto y = RoundTrip(t, x);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(y[i], c, 0.02f * std::fabs(c)) << DTypeName(t) << " " << c << " at " << i;
      }
    }
  }
}

TEST(QuantizeTest, OutlierBlocksStayFinite) {
  // One large value per block, the rest small: the scales must not overflow
  // and the small values must not become NaN.
  for (DType t : kAllEncodable) {
    std::vector<float> x = Gaussian(512, 11, 0.01f);
    for (size_t i = 0; i < x.size(); i += 37) x[i] = 1000.0f;
    const auto y = RoundTrip(t, x);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_TRUE(std::isfinite(y[i])) << DTypeName(t);
    for (size_t i = 0; i < x.size(); i += 37) EXPECT_NEAR(y[i], 1000.0f, 70.0f) << DTypeName(t);
  }
}

TEST(QuantizeTest, Errors) {
  std::vector<float> x(256, 1.0f);
  std::vector<uint8_t> out(4096);
  EXPECT_FALSE(Quantize(DType::kQ4_K, x.data(), 100, out.data()).ok());
  EXPECT_FALSE(Quantize(DType::kQ4_0, x.data(), 31, out.data()).ok());
  EXPECT_FALSE(Quantize(DType::kQ4_0, x.data(), -32, out.data()).ok());
  EXPECT_EQ(Quantize(DType::kI32, x.data(), 4, out.data()).code(),
            absl::StatusCode::kUnimplemented);
  x[40] = std::numeric_limits<float>::quiet_NaN();
  const absl::Status nan = Quantize(DType::kQ8_0, x.data(), 64, out.data());
  EXPECT_FALSE(nan.ok());
  EXPECT_NE(std::string(nan.message()).find("element 40"), std::string::npos) << nan;
  x[40] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(Quantize(DType::kQ6_K, x.data(), 256, out.data()).ok());
  // F16/BF16 keep non-finite values.
  EXPECT_TRUE(Quantize(DType::kF16, x.data(), 256, out.data()).ok());
  EXPECT_TRUE(Quantize(DType::kQ4_0, x.data(), 0, out.data()).ok());
  EXPECT_EQ(*QuantizedBytes(DType::kQ4_K, 512), 288);
  EXPECT_FALSE(QuantizedBytes(DType::kQ4_K, 100).ok());
}

TEST(QuantizeTest, DeterministicAndBlockLocal) {
  // Quantizing a tensor in pieces (as a multithreaded caller would) gives the
  // same bytes as quantizing it whole.
  const std::vector<float> x = Gaussian(4096, 21);
  for (DType t : kAllEncodable) {
    const auto whole = Encode(t, x);
    const int64_t half = 2048;
    const int64_t half_bytes = *QuantizedBytes(t, half);
    std::vector<uint8_t> pieces(whole.size());
    ASSERT_TRUE(Quantize(t, x.data(), half, pieces.data()).ok());
    ASSERT_TRUE(Quantize(t, x.data() + half, half, pieces.data() + half_bytes).ok());
    EXPECT_EQ(pieces, whole) << DTypeName(t);
  }
}


// quantize_q8 of a block whose largest |x| is so small that d = amax / 127
// underflows to 0: every code is 0 (ir/ops.h: "0 when d == 0"), not x / 0 =
// inf cast to int (undefined; found by the plan fuzzer under UBSan). Likewise
// a block of zeros, one holding NaN (its codes 0) and one holding inf.
TEST(QuantizeTest, Q8ABlocksWithoutAScaleRoundToZero) {
  std::vector<float> x(128, 0.0f);
  for (int j = 0; j < 32; ++j) x[j] = (j % 2 ? -1 : 1) * 1e-44f;  // subnormal: d == 0
  x[64] = std::numeric_limits<float>::quiet_NaN();
  x[65] = 1.0f;
  x[96] = std::numeric_limits<float>::infinity();
  x[97] = 2.0f;
  std::vector<uint8_t> q(128 + 4 * 8);
  ASSERT_TRUE(QuantizeQ8A(x.data(), 128, q.data()).ok());
  const int8_t* codes = reinterpret_cast<const int8_t*>(q.data());
  for (int j = 0; j < 64; ++j) EXPECT_EQ(codes[j], 0) << j;  // the subnormal block and the zeros
  EXPECT_EQ(codes[64], 0);                                     // NaN
  EXPECT_EQ(codes[65], 127);
  EXPECT_EQ(codes[97], 0);  // 2 / (inf / 127) = 0
  std::vector<float> r(128);
  ASSERT_TRUE(RoundActivationsToQ8(x.data(), 128, r.data()).ok());
  for (int j = 0; j < 64; ++j) EXPECT_EQ(r[j], 0.0f) << j;
}
}  // namespace
}  // namespace vibrant
