// The generated CUDA block decoders, compiled for the host: the device code
// of codegen/kernels/decoders.cc is plain C++ over a few intrinsics, so with
// host versions of those (each a single correctly rounded float operation, as
// on the GPU) it runs here, and must decode every block bit for bit as the
// CPU reference (runtime/cpu/dequantize.h) does. This checks the decoders'
// bit placement in CI, where no GPU runs the real kernels.
#include <bit>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ir/dtype.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/quantize.h"

namespace vibrant::codegen::host {

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;
#define VB_INLINE inline
// volatile: one rounding per operation, never fused into a multiply-add.
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __uint_as_float(u32 u) { return std::bit_cast<float>(u); }
inline float vb_h2f(u16 h) { return HalfToFloat(h); }  // cvt.f32.f16 is exact
inline float vb_bf2f(u16 h) { return BF16ToFloat(h); }
inline u16 vb_ld16(const u8* p) {
  u16 v;
  std::memcpy(&v, p, 2);
  return v;
}
inline u32 vb_ld32(const u8* p) {
  return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}
inline float vb_half_at(const u8* p) { return vb_h2f(vb_ld16(p)); }

#include "decoders.inc"

namespace {

// Decodes `rows` rows of K elements with W::deq8 and compares with Dequantize.
template <class W>
void ExpectBitIdentical(DType t, int K, uint32_t seed) {
  SCOPED_TRACE(std::string(DTypeName(t)) + " K=" + std::to_string(K));
  constexpr int kRows = 9;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-4, 4);
  std::vector<float> v(kRows * K);
  for (float& x : v) x = dist(rng);
  std::vector<uint8_t> bytes(*DTypeBytes(t, kRows * K));
  ASSERT_TRUE(Quantize(t, v.data(), kRows * K, bytes.data()).ok());
  // Random bytes too, for the quantized types: every bit pattern of the
  // quants and scales (the f16 scales are made finite).
  if (IsQuantized(t) && seed % 2 == 1) {
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
    const DTypeInfo& info = GetDTypeInfo(t);
    for (size_t blk = 0; blk < bytes.size() / info.block_bytes; ++blk) {
      uint8_t* p = bytes.data() + blk * info.block_bytes;
      for (size_t i = 0; i + 1 < static_cast<size_t>(info.block_bytes); i += 2) {
        // Clear exponent bit 4 of every 16-bit word: no inf/NaN halves
        // anywhere (scales live at even offsets in every format).
        p[i + 1] &= 0xbf;
      }
    }
  }
  std::vector<float> ref(kRows * K);
  ASSERT_TRUE(Dequantize(t, bytes.data(), kRows * K, ref.data()).ok());
  const int64_t row_bytes = *DTypeBytes(t, K);
  int mismatches = 0;
  for (int r = 0; r < kRows; ++r) {
    for (int g = 0; g < (K + 7) / 8; ++g) {
      float out[8];
      W::deq8(bytes.data() + r * row_bytes, g, K, out);
      for (int e = 0; e < 8 && 8 * g + e < K; ++e) {
        const float want = ref[r * K + 8 * g + e];
        if (std::bit_cast<uint32_t>(out[e]) != std::bit_cast<uint32_t>(want) && ++mismatches <= 3) {
          ADD_FAILURE() << "row " << r << " element " << 8 * g + e << ": " << out[e] << " != " << want;
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
}

template <class W>
void CheckType(DType t, std::vector<int> ks) {
  for (int K : ks) {
    ExpectBitIdentical<W>(t, K, 2);  // quantizer output
    ExpectBitIdentical<W>(t, K, 3);  // random blocks
  }
}

TEST(GeneratedDecodersOnTheHost, MatchTheCpuReferenceBitForBit) {
  CheckType<W_f32>(DType::kF32, {8, 100, 256});
  CheckType<W_f16>(DType::kF16, {8, 100, 256});
  CheckType<W_bf16>(DType::kBF16, {8, 100, 256});
  CheckType<W_q4_0>(DType::kQ4_0, {32, 512});
  CheckType<W_q4_1>(DType::kQ4_1, {32, 512});
  CheckType<W_q5_0>(DType::kQ5_0, {32, 512});
  CheckType<W_q5_1>(DType::kQ5_1, {32, 512});
  CheckType<W_q8_0>(DType::kQ8_0, {32, 512});
  CheckType<W_q2_K>(DType::kQ2_K, {256, 1024});
  CheckType<W_q3_K>(DType::kQ3_K, {256, 1024});
  CheckType<W_q4_K>(DType::kQ4_K, {256, 1024});
  CheckType<W_q5_K>(DType::kQ5_K, {256, 1024});
  CheckType<W_q6_K>(DType::kQ6_K, {256, 1024});
  CheckType<W_q8_K>(DType::kQ8_K, {256, 1024});
  CheckType<W_iq4_nl>(DType::kIQ4_NL, {32, 512});
  CheckType<W_iq4_xs>(DType::kIQ4_XS, {256, 1024});
}

}  // namespace
}  // namespace vibrant::codegen::host
