// The q8 mat-vec's per-type integer dot products (codegen/kernels/matvec_q8.cc),
// compiled for the host: with host versions of the few intrinsics they use
// (__dp4a, __vsub4, the vector types), every lane's `dot` runs here as on the
// GPU, and a row's sum over all lanes must equal the dot product of the
// dequantized weights (runtime/cpu/dequantize.h) with RoundActivationsToQ8(x)
// -- the contract the CUDA executor's --verify relies on. This checks the bit
// placement and the scale/min algebra of each type in CI, where no GPU runs.
#include <bit>
#include <cmath>
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
struct int4 {
  int x, y, z, w;
};
struct uint4 {
  u32 x, y, z, w;
};
struct uint2 {
  u32 x, y;
};
struct float2 {
  float x, y;
};
#define VB_INLINE inline
inline float vb_h2f(u16 h) { return HalfToFloat(h); }
inline float vb_half_at(const u8* p) {
  u16 v;
  std::memcpy(&v, p, 2);
  return vb_h2f(v);
}
// Signed bytes of a and b, multiplied pairwise, summed onto c.
inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; ++i) {
    c += static_cast<int>(static_cast<i8>(a >> (8 * i))) * static_cast<int>(static_cast<i8>(b >> (8 * i)));
  }
  return c;
}
// Per-byte a - b modulo 256.
inline u32 __vsub4(u32 a, u32 b) {
  u32 r = 0;
  for (int i = 0; i < 4; ++i) {
    const u32 d = ((a >> (8 * i)) - (b >> (8 * i))) & 255u;
    r |= d << (8 * i);
  }
  return r;
}

// CUDA's __byte_perm: bytes 0-3 of x and 4-7 of y; result byte i is the
// byte selected by bits 4i..4i+2 of s (the selector nibble's top bit is
// ignored).
inline u32 __byte_perm(u32 x, u32 y, u32 s) {
  const uint64_t in = static_cast<uint64_t>(x) | (static_cast<uint64_t>(y) << 32);
  u32 r = 0;
  for (int i = 0; i < 4; ++i) {
    const int sel = (s >> (4 * i)) & 7;
    r |= static_cast<u32>((in >> (8 * sel)) & 255u) << (8 * i);
  }
  return r;
}

#include "matvec_q8_dots.inc"

namespace {

// x rounded as vb_quantize_q8 rounds it: codes and {d, d * sum} per 32.
void QuantizeActivations(const std::vector<float>& x, std::vector<i8>* q, std::vector<float2>* ds) {
  q->resize(x.size());
  ds->resize(x.size() / 32);
  for (size_t b = 0; b < x.size() / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * b + j]));
    const float d = amax / 127.0f;
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      const int v = amax == 0.0f ? 0 : static_cast<int>(std::round(x[32 * b + j] / d));
      (*q)[32 * b + j] = static_cast<i8>(v);
      sum += v;
    }
    (*ds)[b] = {d, d * static_cast<float>(sum)};
  }
}

// Every lane of every block of `rows` rows (each lane's `dot` over TT tokens)
// against double-precision dot products of the dequantized weights with the
// rounded activations.
template <class D, int TT>
void ExpectMatchesRoundedReference(DType t, int K, int nt, uint32_t seed, bool random_bytes) {
  SCOPED_TRACE(std::string(DTypeName(t)) + " K=" + std::to_string(K) + " TT=" +
               std::to_string(TT) + " nt=" + std::to_string(nt) +
               (random_bytes ? " random bytes" : " quantized"));
  constexpr int kRows = 5;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-3, 3);
  std::vector<float> wv(kRows * K);
  for (float& v : wv) v = dist(rng);
  const int64_t row_bytes = *DTypeBytes(t, K);
  std::vector<uint8_t> w(kRows * row_bytes);
  ASSERT_TRUE(Quantize(t, wv.data(), kRows * K, w.data()).ok());
  if (random_bytes) {
    // Every bit pattern of codes and scales; f16 scales kept finite and small.
    for (uint8_t& b : w) b = static_cast<uint8_t>(rng());
    const int nblk = K / D::QK;
    for (int r = 0; r < kRows; ++r) {
      for (int b = 0; b < nblk; ++b) {
        uint8_t* blk = w.data() + r * row_bytes + b * D::BYTES;
        auto fix_half = [&](uint8_t* p) { p[1] = static_cast<uint8_t>(0x20 | (p[1] & 0x83)); };
        if (t == DType::kQ6_K) {
          fix_half(blk + 208);
        } else {
          fix_half(blk);
          if (t == DType::kQ4_K || t == DType::kQ5_K || t == DType::kQ4_1 || t == DType::kQ5_1) {
            fix_half(blk + 2);
          }
        }
      }
    }
  }
  std::vector<float> x(static_cast<size_t>(TT) * K);
  for (float& v : x) v = dist(rng);
  for (int j = 0; j < 32; ++j) x[j] = 0;  // an all-zero block (d = 0)
  std::vector<i8> q;
  std::vector<float2> ds;
  QuantizeActivations(x, &q, &ds);
  std::vector<float> xr(x.size());
  ASSERT_TRUE(RoundActivationsToQ8(x.data(), static_cast<int64_t>(x.size()), xr.data()).ok());

  std::vector<float> deq(K);
  for (int r = 0; r < kRows; ++r) {
    const uint8_t* row = w.data() + r * row_bytes;
    ASSERT_TRUE(Dequantize(t, row, K, deq.data()).ok());
    float acc[TT] = {};
    for (int b = 0; b < K / D::QK; ++b) {
      for (int sub = 0; sub < D::TPB; ++sub) {
        D::template dot<TT>(row + b * D::BYTES, sub, q.data() + b * D::QK,
                            ds.data() + b * (D::QK / 32), K, nt, acc);
      }
    }
    for (int tt = 0; tt < TT; ++tt) {
      if (tt >= nt) {
        EXPECT_EQ(acc[tt], 0.0f) << "token " << tt << " is not live";
        continue;
      }
      double ref = 0, mag = 0;
      for (int k = 0; k < K; ++k) {
        ref += static_cast<double>(deq[k]) * xr[static_cast<size_t>(tt) * K + k];
        mag += std::fabs(static_cast<double>(deq[k]) * xr[static_cast<size_t>(tt) * K + k]);
      }
      // Float accumulation of a few hundred partial sums: ~1e-6 of the
      // magnitude; a misplaced bit or scale is off by far more.
      EXPECT_NEAR(acc[tt], ref, 2e-6 * mag + 1e-30) << "row " << r << " token " << tt;
    }
  }
}

template <class D>
void CheckType(DType t, int K) {
  for (bool random_bytes : {false, true}) {
    ExpectMatchesRoundedReference<D, 1>(t, K, 1, 11, random_bytes);
    ExpectMatchesRoundedReference<D, 8>(t, K, 8, 12, random_bytes);
    ExpectMatchesRoundedReference<D, 8>(t, K, 3, 13, random_bytes);
  }
}

TEST(MatvecQ8Host, Q4_0) { CheckType<Q8D_q4_0>(DType::kQ4_0, 96); }
TEST(MatvecQ8Host, Q4_1) { CheckType<Q8D_q4_1>(DType::kQ4_1, 96); }
TEST(MatvecQ8Host, Q5_0) { CheckType<Q8D_q5_0>(DType::kQ5_0, 96); }
TEST(MatvecQ8Host, Q5_1) { CheckType<Q8D_q5_1>(DType::kQ5_1, 96); }
TEST(MatvecQ8Host, Q8_0) { CheckType<Q8D_q8_0>(DType::kQ8_0, 96); }
TEST(MatvecQ8Host, Q4_K) { CheckType<Q8D_q4_K>(DType::kQ4_K, 512); }
TEST(MatvecQ8Host, Q5_K) { CheckType<Q8D_q5_K>(DType::kQ5_K, 512); }
TEST(MatvecQ8Host, Q6_K) { CheckType<Q8D_q6_K>(DType::kQ6_K, 512); }
TEST(MatvecQ8Host, IQ4_NL) { CheckType<Q8D_iq4_nl>(DType::kIQ4_NL, 96); }
TEST(MatvecQ8Host, IQ4_XS) { CheckType<Q8D_iq4_xs>(DType::kIQ4_XS, 512); }

// The register lookup of IQ4 levels, for every code in every byte position.
TEST(MatvecQ8Host, IQ4LevelLookup) {
  const int levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                          1,    13,   25,  38,  53,  69,  89,  113};
  for (int c = 0; c < 16; ++c) EXPECT_EQ(vb_iq4_level(c), levels[c]) << c;
  for (u32 a = 0; a < 16; ++a) {
    for (u32 b = 0; b < 16; ++b) {
      const u32 codes = a | (b << 8) | (((a + 5) & 15) << 16) | (((b + 11) & 15) << 24);
      const u32 r = vb_iq4_levels4(codes);
      for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(static_cast<int>(static_cast<i8>(r >> (8 * i))), levels[(codes >> (8 * i)) & 15])
            << "codes " << std::hex << codes << " byte " << i;
      }
    }
  }
}

TEST(MatvecQ8Host, RoundingMatchesTheDefinition) {
  // Hand-computed: amax 127 -> d = 1; 2.5 rounds away from zero to 3.
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = 0.4f;
  std::vector<float> out(32);
  ASSERT_TRUE(RoundActivationsToQ8(x.data(), 32, out.data()).ok());
  EXPECT_EQ(out[0], 127.0f);
  EXPECT_EQ(out[1], 3.0f);
  EXPECT_EQ(out[2], -3.0f);
  EXPECT_EQ(out[3], 0.0f);
  EXPECT_FALSE(RoundActivationsToQ8(x.data(), 31, out.data()).ok());
}

}  // namespace
}  // namespace vibrant::codegen::host
