#include "runtime/cpu/dequantize.h"

#include <bit>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

// Bit placement of the K-quants (element i of a 256-element super-block):
//   Q2_K: sub-block s = i/16 has scale scales[s] & 15 and min scales[s] >> 4;
//         the 2-bit quant is (qs[32*(i/128) + i%32] >> 2*((i%128)/32)) & 3;
//         x = d*scale*q - dmin*min.
//   Q3_K: the 6-bit value v of sub-block s = i/16 has low 4 bits
//         scales[s] & 15 (s < 8) or scales[s-8] >> 4 (s >= 8) and high 2 bits
//         (scales[8 + s%4] >> 2*(s/4)) & 3; the signed scale is v - 32.
//         The 2-bit quant is placed as in Q2_K; its third bit is
//         (hmask[i%32] >> (i/32)) & 1, and a clear bit means "subtract 4":
//         x = d*(v-32)*(q2 - (hbit ? 0 : 4)).
//   Q4_K/Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins packed in 12
//         bytes (ggml's get_scale_min_k4): for s < 4, scale = b[s] & 63 and
//         min = b[s+4] & 63; for s >= 4, scale = (b[s+4] & 15) | (b[s-4] >> 6) << 4
//         and min = (b[s+4] >> 4) | (b[s] >> 6) << 4. The 4-bit quant is
//         qs[32*(s/2) + i%32], low nibble for even s, high for odd s. Q5_K adds
//         16 when bit s of qh[i%32] is set. x = d*scale*q - dmin*min.
//   Q6_K: q = (ql[64*(i/128) + 32*(g&1) + i%32] nibble (low for g<2, high for
//         g>=2)) | ((qh[32*(i/128) + i%32] >> 2g) & 3) << 4, with
//         g = (i%128)/32; x = d*scales[i/16]*(q - 32).
//   Q8_K: x = d*qs[i] (d is an f32).

namespace vibrant {

static_assert(std::endian::native == std::endian::little,
              "GGUF blocks are little-endian; big-endian hosts need byte swaps");

namespace {

constexpr int kQK = 256;

// The decoders and the lane dot product are force-inlined into the dot-product
// loops below, which exist twice on x86-64: for the baseline ISA and for AVX2
// (without FMA, so both compute bit-identical results).
#if defined(__GNUC__) || defined(__clang__)
#define VIBRANT_DECODE inline __attribute__((always_inline))
#else
#define VIBRANT_DECODE inline
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VIBRANT_AVX2_PATH 1
#define VIBRANT_TARGET_AVX2 __attribute__((target("avx2")))
#else
#define VIBRANT_TARGET_AVX2
#endif

bool UseAvx2() {
#ifdef VIBRANT_AVX2_PATH
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return avx2;
#else
  return false;
#endif
}

inline uint16_t Load16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline uint32_t Load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline float BitsToFloat(uint32_t u) { return std::bit_cast<float>(u); }
inline uint32_t FloatToBits(float f) { return std::bit_cast<uint32_t>(f); }

// Written without branches so that loops over halves vectorize.
inline float Half(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  // inf / NaN: all-ones exponent, payload kept.
  const uint32_t special = 0x7f800000u | ((em & 0x3ffu) << 13);
  // normal: rebias the exponent (15 -> 127).
  const uint32_t normal = (em << 13) + (112u << 23);
  // zero or subnormal: em * 2^-24, exact in float.
  const uint32_t small = FloatToBits(static_cast<float>(static_cast<int32_t>(em)) * 0x1p-24f);
  const uint32_t is_special = 0u - static_cast<uint32_t>(em >= 0x7c00u);  // all ones or 0
  const uint32_t is_small = 0u - static_cast<uint32_t>(em < 0x0400u);
  const uint32_t bits =
      (special & is_special) | (small & is_small) | (normal & ~(is_special | is_small));
  return BitsToFloat(sign | bits);
}

inline float Half(const uint8_t* p) { return Half(Load16(p)); }

// ---- block decoders: one block of bytes -> block_size floats ----------------

VIBRANT_DECODE void DecodeQ4_0(const uint8_t* __restrict b, float* __restrict y) {
  const float d = Half(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
    y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

VIBRANT_DECODE void DecodeQ4_1(const uint8_t* __restrict b, float* __restrict y) {
  const float d = Half(b);
  const float m = Half(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

VIBRANT_DECODE void DecodeQ5_0(const uint8_t* __restrict b, float* __restrict y) {
  const float d = Half(b);
  const uint32_t qh = Load32(b + 2);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int hi0 = static_cast<int>((qh >> j) & 1u) << 4;
    const int hi1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    y[j] = static_cast<float>(((qs[j] & 0x0f) | hi0) - 16) * d;
    y[j + 16] = static_cast<float>(((qs[j] >> 4) | hi1) - 16) * d;
  }
}

VIBRANT_DECODE void DecodeQ5_1(const uint8_t* __restrict b, float* __restrict y) {
  const float d = Half(b);
  const float m = Half(b + 2);
  const uint32_t qh = Load32(b + 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int hi0 = static_cast<int>((qh >> j) & 1u) << 4;
    const int hi1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    y[j] = static_cast<float>((qs[j] & 0x0f) | hi0) * d + m;
    y[j + 16] = static_cast<float>((qs[j] >> 4) | hi1) * d + m;
  }
}

VIBRANT_DECODE void DecodeQ8_0(const uint8_t* __restrict b, float* __restrict y) {
  const float d = Half(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(qs[j]) * d;
}

VIBRANT_DECODE void DecodeQ2_K(const uint8_t* __restrict b, float* __restrict y) {
  const uint8_t* scales = b;
  const float d = Half(b + 80);
  const float dmin = Half(b + 82);
  for (int half = 0; half < 2; ++half) {
    // Byte l of qs feeds elements l, l+32, l+64, l+96 of this half (bits 0-1,
    // 2-3, 4-5, 6-7); sub-block 8*half + 2*g + (l >= 16) covers element l + 32*g.
    const uint8_t* qs = b + 16 + 32 * half;
    float* out = y + 128 * half;
    for (int h = 0; h < 2; ++h) {
      float dl[4], ml[4];
      for (int g = 0; g < 4; ++g) {
        const uint8_t sc = scales[8 * half + 2 * g + h];
        dl[g] = d * static_cast<float>(sc & 0x0f);
        ml[g] = dmin * static_cast<float>(sc >> 4);
      }
      for (int l = 16 * h; l < 16 * h + 16; ++l) {
        const int q = qs[l];
        out[l] = dl[0] * static_cast<float>(q & 3) - ml[0];
        out[l + 32] = dl[1] * static_cast<float>((q >> 2) & 3) - ml[1];
        out[l + 64] = dl[2] * static_cast<float>((q >> 4) & 3) - ml[2];
        out[l + 96] = dl[3] * static_cast<float>(q >> 6) - ml[3];
      }
    }
  }
}

// The 16 signed 6-bit scales of a Q3_K block.
VIBRANT_DECODE void UnpackQ3Scales(const uint8_t* sc, int* out) {
  for (int s = 0; s < 16; ++s) {
    const int low = s < 8 ? (sc[s] & 0x0f) : (sc[s - 8] >> 4);
    const int high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
    out[s] = (low | (high << 4)) - 32;
  }
}

VIBRANT_DECODE void DecodeQ3_K(const uint8_t* __restrict b, float* __restrict y) {
  const uint8_t* hmask = b;
  const float d = Half(b + 108);
  int scales[16];
  UnpackQ3Scales(b + 96, scales);
  for (int half = 0; half < 2; ++half) {
    // As in Q2_K; bit 4*half + g of hmask[l] is the third bit of element l + 32*g.
    const uint8_t* qs = b + 32 + 32 * half;
    float* out = y + 128 * half;
    for (int h = 0; h < 2; ++h) {
      float dl[4];
      for (int g = 0; g < 4; ++g) dl[g] = d * static_cast<float>(scales[8 * half + 2 * g + h]);
      for (int l = 16 * h; l < 16 * h + 16; ++l) {
        const int q = qs[l];
        const int m = hmask[l] >> (4 * half);
        // (q2 - 4) + 4*hbit == q2 - (hbit ? 0 : 4)
        out[l] = dl[0] * static_cast<float>((q & 3) - 4 + 4 * (m & 1));
        out[l + 32] = dl[1] * static_cast<float>(((q >> 2) & 3) - 4 + 2 * (m & 2));
        out[l + 64] = dl[2] * static_cast<float>(((q >> 4) & 3) - 4 + (m & 4));
        out[l + 96] = dl[3] * static_cast<float>((q >> 6) - 4 + ((m & 8) >> 1));
      }
    }
  }
}

// 6-bit scale and min of sub-block s (0..7) of a Q4_K/Q5_K block.
inline void ScaleMinK4(int s, const uint8_t* q, int* scale, int* min) {
  if (s < 4) {
    *scale = q[s] & 63;
    *min = q[s + 4] & 63;
  } else {
    *scale = (q[s + 4] & 0x0f) | ((q[s - 4] >> 6) << 4);
    *min = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
  }
}

VIBRANT_DECODE void DecodeQ4_K(const uint8_t* __restrict b, float* __restrict y) {
  const float d = Half(b);
  const float dmin = Half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;
  for (int s = 0; s < 8; ++s) {
    int sc, mn;
    ScaleMinK4(s, scales, &sc, &mn);
    const float d1 = d * static_cast<float>(sc);
    const float m1 = dmin * static_cast<float>(mn);
    const uint8_t* q = qs + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    float* out = y + 32 * s;
    for (int l = 0; l < 32; ++l) {
      out[l] = d1 * static_cast<float>((q[l] >> shift) & 0x0f) - m1;
    }
  }
}

VIBRANT_DECODE void DecodeQ5_K(const uint8_t* __restrict b, float* __restrict y) {
  const float d = Half(b);
  const float dmin = Half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int s = 0; s < 8; ++s) {
    int sc, mn;
    ScaleMinK4(s, scales, &sc, &mn);
    const float d1 = d * static_cast<float>(sc);
    const float m1 = dmin * static_cast<float>(mn);
    const uint8_t* q = qs + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    float* out = y + 32 * s;
    for (int l = 0; l < 32; ++l) {
      const int q5 = ((q[l] >> shift) & 0x0f) | (((qh[l] >> s) & 1) << 4);
      out[l] = d1 * static_cast<float>(q5) - m1;
    }
  }
}

VIBRANT_DECODE void DecodeQ6_K(const uint8_t* __restrict b, float* __restrict y) {
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = Half(b + 208);
  for (int half = 0; half < 2; ++half) {
    // Byte l of ql0/ql1/qh feeds elements l, l+32, l+64 and l+96 of this half.
    const uint8_t* ql0 = b + 64 * half;
    const uint8_t* ql1 = ql0 + 32;
    const uint8_t* qh = b + 128 + 32 * half;
    const int8_t* sc = scales + 8 * half;
    float* out = y + 128 * half;
    for (int h = 0; h < 2; ++h) {  // elements l < 16 and l >= 16 use different scales
      const float d0 = d * static_cast<float>(sc[h]);
      const float d1 = d * static_cast<float>(sc[h + 2]);
      const float d2 = d * static_cast<float>(sc[h + 4]);
      const float d3 = d * static_cast<float>(sc[h + 6]);
      for (int l = 16 * h; l < 16 * h + 16; ++l) {
        const int hi = qh[l];
        const int q0 = ((ql0[l] & 0x0f) | ((hi & 3) << 4)) - 32;
        const int q1 = ((ql1[l] & 0x0f) | (((hi >> 2) & 3) << 4)) - 32;
        const int q2 = ((ql0[l] >> 4) | (((hi >> 4) & 3) << 4)) - 32;
        const int q3 = ((ql1[l] >> 4) | (((hi >> 6) & 3) << 4)) - 32;
        out[l] = d0 * static_cast<float>(q0);
        out[l + 32] = d1 * static_cast<float>(q1);
        out[l + 64] = d2 * static_cast<float>(q2);
        out[l + 96] = d3 * static_cast<float>(q3);
      }
    }
  }
}

VIBRANT_DECODE void DecodeQ8_K(const uint8_t* __restrict b, float* __restrict y) {
  float d;
  std::memcpy(&d, b, sizeof(d));
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 4);
  for (int j = 0; j < kQK; ++j) y[j] = d * static_cast<float>(qs[j]);
}

// The 16 non-linear levels of IQ4_NL and IQ4_XS (ggml's kvalues_iq4nl).
constexpr int8_t kIQ4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

VIBRANT_DECODE void DecodeIQ4_NL(const uint8_t* __restrict b, float* __restrict y) {
  const float d = Half(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(kIQ4Values[qs[j] & 0x0f]);
    y[j + 16] = d * static_cast<float>(kIQ4Values[qs[j] >> 4]);
  }
}

VIBRANT_DECODE void DecodeIQ4_XS(const uint8_t* __restrict b, float* __restrict y) {
  const float d = Half(b);
  const uint16_t scales_h = Load16(b + 2);
  const uint8_t* scales_l = b + 4;
  const uint8_t* qs = b + 8;
  for (int s = 0; s < 8; ++s) {
    const int ls = ((scales_l[s / 2] >> (4 * (s % 2))) & 0x0f) | (((scales_h >> (2 * s)) & 3) << 4);
    const float dl = d * static_cast<float>(ls - 32);
    const uint8_t* q = qs + 16 * s;
    float* out = y + 32 * s;
    for (int j = 0; j < 16; ++j) {
      out[j] = dl * static_cast<float>(kIQ4Values[q[j] & 0x0f]);
      out[j + 16] = dl * static_cast<float>(kIQ4Values[q[j] >> 4]);
    }
  }
}

using BlockDecoder = void (*)(const uint8_t*, float*);

// The decoder of a quantized type, or null for plain types.
BlockDecoder DecoderFor(DType t) {
  switch (t) {
    case DType::kQ4_0: return DecodeQ4_0;
    case DType::kQ4_1: return DecodeQ4_1;
    case DType::kQ5_0: return DecodeQ5_0;
    case DType::kQ5_1: return DecodeQ5_1;
    case DType::kQ8_0: return DecodeQ8_0;
    case DType::kQ2_K: return DecodeQ2_K;
    case DType::kQ3_K: return DecodeQ3_K;
    case DType::kQ4_K: return DecodeQ4_K;
    case DType::kQ5_K: return DecodeQ5_K;
    case DType::kQ6_K: return DecodeQ6_K;
    case DType::kQ8_K: return DecodeQ8_K;
    case DType::kIQ4_NL: return DecodeIQ4_NL;
    case DType::kIQ4_XS: return DecodeIQ4_XS;
    default: return nullptr;
  }
}

// ---- plain element types -----------------------------------------------------

// Converts n elements of a plain (block size 1) type to float.
void ConvertPlain(DType t, const uint8_t* src, int64_t n, float* y) {
  switch (t) {
    case DType::kF32:
      std::memcpy(y, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) y[i] = Half(Load16(src + 2 * i));
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        y[i] = BitsToFloat(static_cast<uint32_t>(Load16(src + 2 * i)) << 16);
      }
      return;
    case DType::kI8:
      for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(static_cast<int8_t>(src[i]));
      return;
    case DType::kI16:
      for (int64_t i = 0; i < n; ++i) {
        y[i] = static_cast<float>(static_cast<int16_t>(Load16(src + 2 * i)));
      }
      return;
    case DType::kI32:
      for (int64_t i = 0; i < n; ++i) {
        y[i] = static_cast<float>(static_cast<int32_t>(Load32(src + 4 * i)));
      }
      return;
    default:
      return;
  }
}

// ---- dot products --------------------------------------------------------------

// Sum of a[i]*b[i] in 8 interleaved float lanes (see DotRow's contract).
// Written so that the compiler turns the lanes into SIMD registers.
VIBRANT_DECODE float LaneDot(const float* __restrict a, const float* __restrict b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  }
  for (; i < n; ++i) acc[i & 7] += a[i] * b[i];  // i % 8 == lane
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Rows are processed in chunks of kChunk elements: one K-quant super-block,
// 8 blocks of the 32-element formats, or 256 plain elements (the last chunk
// may be shorter). Each chunk is decoded to floats and dotted in 8 lanes; the
// chunk sums are accumulated in double.
constexpr int kChunk = 256;

template <int kBlock, BlockDecoder kDecode, int kBytes>
VIBRANT_DECODE double DotBlocksImpl(const uint8_t* row, const float* x, int64_t nblocks) {
  static_assert(kChunk % kBlock == 0);
  constexpr int64_t kPerChunk = kChunk / kBlock;
  alignas(64) float buf[kChunk];
  double total = 0.0;
  for (int64_t i = 0; i < nblocks; i += kPerChunk) {
    const int64_t count = nblocks - i < kPerChunk ? nblocks - i : kPerChunk;
    for (int64_t k = 0; k < count; ++k) kDecode(row + (i + k) * kBytes, buf + k * kBlock);
    total += LaneDot(buf, x + i * kBlock, static_cast<int>(count * kBlock));
  }
  return total;
}

VIBRANT_DECODE double DotPlainImpl(DType t, const uint8_t* row, const float* x, int64_t n) {
  alignas(64) float buf[kChunk];
  double total = 0.0;
  for (int64_t i = 0; i < n; i += kChunk) {
    const int len = static_cast<int>(n - i < kChunk ? n - i : kChunk);
    switch (t) {
      case DType::kF32:
        total += LaneDot(reinterpret_cast<const float*>(row) + i, x + i, len);
        continue;
      case DType::kF16:
        for (int k = 0; k < len; ++k) buf[k] = Half(Load16(row + 2 * (i + k)));
        break;
      case DType::kBF16:
        for (int k = 0; k < len; ++k) {
          buf[k] = BitsToFloat(static_cast<uint32_t>(Load16(row + 2 * (i + k))) << 16);
        }
        break;
      default:
        ConvertPlain(t, row + i * GetDTypeInfo(t).block_bytes, len, buf);
        break;
    }
    total += LaneDot(buf, x + i, len);
  }
  return total;
}

// Each hot loop is instantiated for the baseline ISA and for AVX2.
template <int kBlock, BlockDecoder kDecode, int kBytes>
double DotBlocksBaseline(const uint8_t* row, const float* x, int64_t nblocks) {
  return DotBlocksImpl<kBlock, kDecode, kBytes>(row, x, nblocks);
}
template <int kBlock, BlockDecoder kDecode, int kBytes>
VIBRANT_TARGET_AVX2 double DotBlocksAvx2(const uint8_t* row, const float* x, int64_t nblocks) {
  return DotBlocksImpl<kBlock, kDecode, kBytes>(row, x, nblocks);
}
double DotPlainBaseline(DType t, const uint8_t* row, const float* x, int64_t n) {
  return DotPlainImpl(t, row, x, n);
}
VIBRANT_TARGET_AVX2 double DotPlainAvx2(DType t, const uint8_t* row, const float* x, int64_t n) {
  return DotPlainImpl(t, row, x, n);
}

template <bool kAvx2, int kBlock, BlockDecoder kDecode, int kBytes>
double DotBlocks(const uint8_t* row, const float* x, int64_t nblocks) {
  if constexpr (kAvx2) {
    return DotBlocksAvx2<kBlock, kDecode, kBytes>(row, x, nblocks);
  } else {
    return DotBlocksBaseline<kBlock, kDecode, kBytes>(row, x, nblocks);
  }
}

template <bool kAvx2>
double DotRowIsa(DType t, const uint8_t* p, const float* x, int64_t n) {
  switch (t) {
    case DType::kQ4_0: return DotBlocks<kAvx2, 32, DecodeQ4_0, 18>(p, x, n / 32);
    case DType::kQ4_1: return DotBlocks<kAvx2, 32, DecodeQ4_1, 20>(p, x, n / 32);
    case DType::kQ5_0: return DotBlocks<kAvx2, 32, DecodeQ5_0, 22>(p, x, n / 32);
    case DType::kQ5_1: return DotBlocks<kAvx2, 32, DecodeQ5_1, 24>(p, x, n / 32);
    case DType::kQ8_0: return DotBlocks<kAvx2, 32, DecodeQ8_0, 34>(p, x, n / 32);
    case DType::kQ2_K: return DotBlocks<kAvx2, kQK, DecodeQ2_K, 84>(p, x, n / kQK);
    case DType::kQ3_K: return DotBlocks<kAvx2, kQK, DecodeQ3_K, 110>(p, x, n / kQK);
    case DType::kQ4_K: return DotBlocks<kAvx2, kQK, DecodeQ4_K, 144>(p, x, n / kQK);
    case DType::kQ5_K: return DotBlocks<kAvx2, kQK, DecodeQ5_K, 176>(p, x, n / kQK);
    case DType::kQ6_K: return DotBlocks<kAvx2, kQK, DecodeQ6_K, 210>(p, x, n / kQK);
    case DType::kQ8_K: return DotBlocks<kAvx2, kQK, DecodeQ8_K, 292>(p, x, n / kQK);
    case DType::kIQ4_NL: return DotBlocks<kAvx2, 32, DecodeIQ4_NL, 18>(p, x, n / 32);
    case DType::kIQ4_XS: return DotBlocks<kAvx2, kQK, DecodeIQ4_XS, 136>(p, x, n / kQK);
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kI8:
    case DType::kI16:
    case DType::kI32:
      return kAvx2 ? DotPlainAvx2(t, p, x, n) : DotPlainBaseline(t, p, x, n);
    default:
      break;  // unsupported types: callers check IsSupported (the verifier does)
  }
  return std::numeric_limits<double>::quiet_NaN();
}

}  // namespace

float HalfToFloat(uint16_t h) { return Half(h); }

uint16_t FloatToHalf(float f) {
  const uint32_t u = FloatToBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) {  // inf or NaN
    if (a == 0x7f800000u) return sign | 0x7c00u;
    return sign | 0x7e00u | static_cast<uint16_t>((a >> 13) & 0x3ffu);
  }
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf
  if (a < 0x38800000u) {                         // below 2^-14: subnormal half
    if (a <= 0x33000000u) return sign;           // <= 2^-25 rounds to zero
    const uint32_t exp = a >> 23;                // 102..112
    const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exp;           // 14..24
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return sign | static_cast<uint16_t>(h);
  }
  // Normal half: rebias, keep 10 mantissa bits, round the 13 dropped bits to
  // nearest even. A carry out of the mantissa correctly bumps the exponent.
  uint32_t h = ((a >> 13) - (112u << 10));
  const uint32_t rem = a & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return sign | static_cast<uint16_t>(h);
}

float BF16ToFloat(uint16_t h) { return BitsToFloat(static_cast<uint32_t>(h) << 16); }

uint16_t FloatToBF16(float f) {
  const uint32_t u = FloatToBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it NaN (set the quiet bit)
    return static_cast<uint16_t>((u >> 16) | 0x0040u);
  }
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

absl::Status Dequantize(DType t, const void* src, int64_t n, float* dst) {
  const DTypeInfo& info = GetDTypeInfo(t);
  if (info.type != t || !info.supported) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Dequantize: unsupported type ", std::string(GgmlTypeName(static_cast<uint32_t>(t))), " (",
        static_cast<uint32_t>(t), ")"));
  }
  if (n < 0 || n % info.block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Dequantize: ", n, " elements of type ", std::string(info.name),
        " is not a whole number of ", info.block_size, "-element blocks"));
  }
  if (n == 0) return absl::OkStatus();
  if (src == nullptr || dst == nullptr) {
    return absl::InvalidArgumentError("Dequantize: null buffer");
  }
  const uint8_t* p = static_cast<const uint8_t*>(src);
  const BlockDecoder decode = DecoderFor(t);
  if (decode == nullptr) {
    ConvertPlain(t, p, n, dst);
    return absl::OkStatus();
  }
  const int64_t nb = n / info.block_size;
  for (int64_t i = 0; i < nb; ++i) {
    decode(p + i * info.block_bytes, dst + i * info.block_size);
  }
  return absl::OkStatus();
}

float DotRow(DType t, const void* row, const float* x, int64_t n) {
  if (n <= 0) return 0.0f;
  const uint8_t* p = static_cast<const uint8_t*>(row);
  const double total = UseAvx2() ? DotRowIsa<true>(t, p, x, n) : DotRowIsa<false>(t, p, x, n);
  return static_cast<float>(total);
}

float DotRowPortableForTesting(DType t, const void* row, const float* x, int64_t n) {
  if (n <= 0) return 0.0f;
  return static_cast<float>(DotRowIsa<false>(t, static_cast<const uint8_t*>(row), x, n));
}

}  // namespace vibrant
