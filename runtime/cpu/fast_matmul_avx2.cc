// AVX2 (+FMA, F16C) version of the fast matmul: the semantics and bits of the
// portable version (fast_matmul.cc), computed 8 weight rows at a time.
//
// Structure of a tile (8 rows x up to 16 tokens): the rows' blocks are
// decoded, a chunk of blocks at a time, into a panel on the stack (unsigned
// 8-bit codes and 16-bit scale vectors, one register per 32 values and row),
// then every token of the tile runs over the panel: per 32 values and row one
// vpmaddubsw (u8 codes x i8 activations, pairs summed in 16 bits, which
// cannot saturate: codes are < 64 except q8_0's, which use the sign trick)
// and one vpmaddwd (by 1, or by the K-quant group scales); the 8 rows' 32-bit
// lane vectors are then reduced to one vector of 8 exact block sums (lane =
// row) by a tree of vphaddd, converted to float, and accumulated with one FMA
// per block into 8 lanes, one per row: exactly the portable float sequence.
#include "runtime/cpu/fast_matmul_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/fast_matmul_portable.h"

#define VB_TARGET __attribute__((target("avx2,fma,f16c")))
#define VB_INLINE inline __attribute__((always_inline)) VB_TARGET

namespace vibrant::cpu::internal {
namespace {

VB_INLINE __m256i Load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Lane r of the result = the sum of the 8 lanes of p[r] (exact).
VB_INLINE __m256i Tree8(const __m256i* p) {
  const __m256i t01 = _mm256_hadd_epi32(p[0], p[1]);
  const __m256i t23 = _mm256_hadd_epi32(p[2], p[3]);
  const __m256i t45 = _mm256_hadd_epi32(p[4], p[5]);
  const __m256i t67 = _mm256_hadd_epi32(p[6], p[7]);
  const __m256i u03 = _mm256_hadd_epi32(t01, t23);
  const __m256i u47 = _mm256_hadd_epi32(t45, t67);
  return _mm256_add_epi32(_mm256_permute2x128_si256(u03, u47, 0x20),
                          _mm256_permute2x128_si256(u03, u47, 0x31));
}

VB_INLINE int32_t HsumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
  return _mm_cvtsi128_si32(s);
}

VB_INLINE float HalfF(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// 32 bytes, byte i = 0xFF where bit i of x is set, else 0.
VB_INLINE __m256i BytesFromBits(uint32_t x) {
  const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                         0x0101010101010101, 0x0000000000000000);
  __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(x)), shuf);
  bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

// 16 nibbles -> 32 bytes: low nibbles first, then high nibbles.
VB_INLINE __m256i Nibbles(const uint8_t* p) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(15));
}

// ---- 32-value blocks -------------------------------------------------------------

template <DType T>
struct Q32Traits;
template <>
struct Q32Traits<DType::kQ4_0> {
  static constexpr int kBytes = 18, kOffset = 8;
  static constexpr bool kMin = false, kSigned = false;
};
template <>
struct Q32Traits<DType::kQ4_1> {
  static constexpr int kBytes = 20, kOffset = 0;
  static constexpr bool kMin = true, kSigned = false;
};
template <>
struct Q32Traits<DType::kQ5_0> {
  static constexpr int kBytes = 22, kOffset = 16;
  static constexpr bool kMin = false, kSigned = false;
};
template <>
struct Q32Traits<DType::kQ5_1> {
  static constexpr int kBytes = 24, kOffset = 0;
  static constexpr bool kMin = true, kSigned = false;
};
template <>
struct Q32Traits<DType::kQ8_0> {
  static constexpr int kBytes = 34, kOffset = 0;
  static constexpr bool kMin = false, kSigned = true;
};

// 8 rows x one block: codes (q8_0: |w| in u, w in s), d and m per row.
struct alignas(32) PanelQ32 {
  __m256i u[8];
  __m256i s[8];
  float d[8];
  float m[8];
};

constexpr int kChunkQ32 = 16;  // blocks per panel chunk (512 values)

template <DType T>
VB_INLINE void DecodeQ32Block(const uint8_t* p, PanelQ32* panel, int r) {
  panel->d[r] = HalfF(p);
  if constexpr (T == DType::kQ4_0) {
    panel->u[r] = Nibbles(p + 2);
  } else if constexpr (T == DType::kQ4_1) {
    panel->m[r] = HalfF(p + 2);
    panel->u[r] = Nibbles(p + 4);
  } else if constexpr (T == DType::kQ5_0) {
    uint32_t qh;
    std::memcpy(&qh, p + 2, 4);
    panel->u[r] = _mm256_or_si256(Nibbles(p + 6),
                                  _mm256_and_si256(BytesFromBits(qh), _mm256_set1_epi8(16)));
  } else if constexpr (T == DType::kQ5_1) {
    panel->m[r] = HalfF(p + 2);
    uint32_t qh;
    std::memcpy(&qh, p + 4, 4);
    panel->u[r] = _mm256_or_si256(Nibbles(p + 8),
                                  _mm256_and_si256(BytesFromBits(qh), _mm256_set1_epi8(16)));
  } else {
    const __m256i w = Load(p + 2);
    panel->s[r] = w;
    panel->u[r] = _mm256_sign_epi8(w, w);
  }
}

template <DType T>
VB_INLINE __m256 DotQ32(const PanelQ32& pn, const int8_t* q, float dx, int32_t sum, float dsum,
                        __m256 acc) {
  using Tr = Q32Traits<T>;
  const __m256i x = Load(q);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i p[8];
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r) {
    if constexpr (Tr::kSigned) {
      p[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(pn.u[r], _mm256_sign_epi8(x, pn.s[r])), ones);
    } else {
      p[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(pn.u[r], x), ones);
    }
  }
  __m256i I = Tree8(p);
  if constexpr (Tr::kOffset != 0) I = _mm256_sub_epi32(I, _mm256_set1_epi32(Tr::kOffset * sum));
  const __m256 s = _mm256_mul_ps(_mm256_load_ps(pn.d), _mm256_set1_ps(dx));
  acc = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(I), acc);
  if constexpr (Tr::kMin) acc = _mm256_fmadd_ps(_mm256_load_ps(pn.m), _mm256_set1_ps(dsum), acc);
  return acc;
}

VB_TARGET void StoreTile(const MatMulArgs& a, int64_t n0, int64_t t0, int64_t t1,
                         const __m256* acc) {
  const int64_t nr = std::min<int64_t>(8, a.N - n0);
  for (int64_t t = t0; t < t1; ++t) {
    alignas(32) float v[8];
    _mm256_store_ps(v, acc[t - t0]);
    float* o = a.out + t * a.N + n0;
    if (a.bias != nullptr) {
      for (int64_t r = 0; r < nr; ++r) o[r] = v[r] + a.bias[n0 + r];
    } else {
      for (int64_t r = 0; r < nr; ++r) o[r] = v[r];
    }
  }
}

template <DType T>
VB_TARGET void TileQ32(const MatMulArgs& a, int64_t n0, int64_t t0, int64_t t1) {
  using Tr = Q32Traits<T>;
  const uint8_t* rows[8];
  for (int r = 0; r < 8; ++r) rows[r] = a.w + std::min<int64_t>(n0 + r, a.N - 1) * a.row_bytes;
  const int64_t nb = a.K / 32;
  __m256 acc[kTileTokens];
  for (int64_t t = t0; t < t1; ++t) acc[t - t0] = _mm256_setzero_ps();
  PanelQ32 panel[kChunkQ32];
  for (int64_t b0 = 0; b0 < nb; b0 += kChunkQ32) {
    const int nc = static_cast<int>(std::min<int64_t>(kChunkQ32, nb - b0));
    for (int c = 0; c < nc; ++c) {
      for (int r = 0; r < 8; ++r) {
        DecodeQ32Block<T>(rows[r] + (b0 + c) * Tr::kBytes, &panel[c], r);
      }
    }
    for (int64_t t = t0; t < t1; ++t) {
      const uint8_t* xr = a.x + t * a.layout.bytes;
      const int8_t* q = reinterpret_cast<const int8_t*>(xr + a.layout.q) + 32 * b0;
      const float* d = reinterpret_cast<const float*>(xr + a.layout.d) + b0;
      const int32_t* sum = reinterpret_cast<const int32_t*>(xr + a.layout.sum) + b0;
      const float* dsum = reinterpret_cast<const float*>(xr + a.layout.dsum) + b0;
      __m256 s = acc[t - t0];
      for (int c = 0; c < nc; ++c) s = DotQ32<T>(panel[c], q + 32 * c, d[c], sum[c], dsum[c], s);
      acc[t - t0] = s;
    }
  }
  StoreTile(a, n0, t0, t1, acc);
}

// ---- K-quants ----------------------------------------------------------------------

// 8 rows x one 256-value block: codes per slice of 32, the slice's 16-bit
// scale vector (group 2j in the low half, 2j+1 in the high half), the 16
// group scales and mins, d and dmin per row.
struct alignas(32) PanelK {
  __m256i u[8][8];    // [row][slice]
  __m256i scv[8][8];  // [row][slice]
  __m256i sc16[8];    // [row]
  __m256i mn16[8];    // [row]
  float d[8];
  float dmin[8];
};

constexpr int kChunkK = 2;  // blocks per panel chunk (512 values)

VB_INLINE void ScaleVectors(const int16_t* sc, __m256i* scv) {
  const __m256i s = Load(sc);
  const __m256i lo = _mm256_permute4x64_epi64(s, 0x44);  // groups 0-7 in both halves
  const __m256i hi = _mm256_permute4x64_epi64(s, 0xEE);  // groups 8-15 in both halves
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    // Low half: i16 element 2j (bytes 4j, 4j+1) x 8; high half: 2j+1.
    const char a0 = static_cast<char>(4 * j), a1 = static_cast<char>(4 * j + 1);
    const char b0 = static_cast<char>(4 * j + 2), b1 = static_cast<char>(4 * j + 3);
    const __m256i mask = _mm256_setr_epi8(a0, a1, a0, a1, a0, a1, a0, a1, a0, a1, a0, a1, a0, a1,
                                          a0, a1, b0, b1, b0, b1, b0, b1, b0, b1, b0, b1, b0, b1,
                                          b0, b1, b0, b1);
    scv[j] = _mm256_shuffle_epi8(lo, mask);
    scv[j + 4] = _mm256_shuffle_epi8(hi, mask);
  }
}

template <DType T>
VB_INLINE void DecodeKBlock(const uint8_t* p, PanelK* pn, int r) {
  KBlock s;  // scales only
  DecodeKScales(T, p, &s);
  pn->d[r] = s.d;
  pn->dmin[r] = s.dmin;
  pn->sc16[r] = Load(s.sc);
  pn->mn16[r] = Load(s.mn);
  ScaleVectors(s.sc, pn->scv[r]);
  __m256i* u = pn->u[r];
  const __m256i m15 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3), m1 = _mm256_set1_epi8(1);
  if constexpr (T == DType::kQ4_K || T == DType::kQ5_K) {
    const uint8_t* qs = p + (T == DType::kQ4_K ? 16 : 48);
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const __m256i v = Load(qs + 32 * k);
      u[2 * k] = _mm256_and_si256(v, m15);
      u[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);
    }
    if constexpr (T == DType::kQ5_K) {
      const __m256i qh = Load(p + 16);
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        const __m256i bit = _mm256_and_si256(_mm256_srli_epi16(qh, j), m1);
        u[j] = _mm256_or_si256(u[j], _mm256_slli_epi16(bit, 4));
      }
    }
  } else if constexpr (T == DType::kQ6_K) {
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i la = Load(p + 64 * h), lb = Load(p + 64 * h + 32);
      const __m256i qh = Load(p + 128 + 32 * h);
      u[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(la, m15),
                                     _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
      u[4 * h + 1] = _mm256_or_si256(
          _mm256_and_si256(lb, m15),
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
      u[4 * h + 2] = _mm256_or_si256(
          _mm256_and_si256(_mm256_srli_epi16(la, 4), m15),
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
      u[4 * h + 3] = _mm256_or_si256(
          _mm256_and_si256(_mm256_srli_epi16(lb, 4), m15),
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
    }
  } else {  // q2_K, q3_K
    const uint8_t* qs = p + (T == DType::kQ2_K ? 16 : 32);
    [[maybe_unused]] const __m256i hm = T == DType::kQ3_K ? Load(p) : _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i v = Load(qs + 32 * h);
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        __m256i x = _mm256_and_si256(_mm256_srli_epi16(v, 2 * g), m3);
        if constexpr (T == DType::kQ3_K) {
          const __m256i bit = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + g), m1);
          x = _mm256_or_si256(x, _mm256_slli_epi16(bit, 2));
        }
        u[4 * h + g] = x;
      }
    }
  }
}

template <DType T>
VB_INLINE __m256 DotK(const PanelK& pn, const int8_t* q, float dx, const int16_t* bsum,
                      __m256 acc) {
  constexpr int kOffsetShift = T == DType::kQ6_K ? 5 : (T == DType::kQ3_K ? 2 : -1);
  constexpr bool kMin = T == DType::kQ2_K || T == DType::kQ4_K || T == DType::kQ5_K;
  __m256i ia[8];
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r) ia[r] = _mm256_setzero_si256();
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    const __m256i x = Load(q + 32 * j);
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) {
      ia[r] = _mm256_add_epi32(
          ia[r], _mm256_madd_epi16(_mm256_maddubs_epi16(pn.u[r][j], x), pn.scv[r][j]));
    }
  }
  const __m256i bs = Load(bsum);
  if constexpr (kOffsetShift >= 0) {
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) {
      ia[r] = _mm256_sub_epi32(ia[r],
                               _mm256_slli_epi32(_mm256_madd_epi16(pn.sc16[r], bs), kOffsetShift));
    }
  }
  const __m256i I = Tree8(ia);
  const __m256 vdx = _mm256_set1_ps(dx);
  acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_load_ps(pn.d), vdx), _mm256_cvtepi32_ps(I), acc);
  if constexpr (kMin) {
    __m256i im[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) im[r] = _mm256_madd_epi16(pn.mn16[r], bs);
    const __m256i M = Tree8(im);
    acc = _mm256_fnmadd_ps(_mm256_mul_ps(_mm256_load_ps(pn.dmin), vdx), _mm256_cvtepi32_ps(M), acc);
  }
  return acc;
}

template <DType T>
VB_TARGET void TileK(const MatMulArgs& a, int64_t n0, int64_t t0, int64_t t1) {
  const int64_t bb = KBlockBytes(T);
  const uint8_t* rows[8];
  for (int r = 0; r < 8; ++r) rows[r] = a.w + std::min<int64_t>(n0 + r, a.N - 1) * a.row_bytes;
  const int64_t nb = a.K / 256;
  __m256 acc[kTileTokens];
  for (int64_t t = t0; t < t1; ++t) acc[t - t0] = _mm256_setzero_ps();
  PanelK panel[kChunkK];
  for (int64_t b0 = 0; b0 < nb; b0 += kChunkK) {
    const int nc = static_cast<int>(std::min<int64_t>(kChunkK, nb - b0));
    for (int c = 0; c < nc; ++c) {
      for (int r = 0; r < 8; ++r) DecodeKBlock<T>(rows[r] + (b0 + c) * bb, &panel[c], r);
    }
    for (int64_t t = t0; t < t1; ++t) {
      const uint8_t* xr = a.x + t * a.layout.bytes;
      const int8_t* q = reinterpret_cast<const int8_t*>(xr + a.layout.q) + 256 * b0;
      const float* d = reinterpret_cast<const float*>(xr + a.layout.d) + b0;
      const int16_t* bsum = reinterpret_cast<const int16_t*>(xr + a.layout.bsum) + 16 * b0;
      __m256 s = acc[t - t0];
      for (int c = 0; c < nc; ++c) s = DotK<T>(panel[c], q + 256 * c, d[c], bsum + 16 * c, s);
      acc[t - t0] = s;
    }
  }
  StoreTile(a, n0, t0, t1, acc);
}

// ---- float weights ---------------------------------------------------------------

// Row n of a float-family weight as f32, zero-padded to a multiple of 32.
VB_TARGET void RowToF32(const MatMulArgs& a, int64_t n, float* dst, int64_t K32) {
  const uint8_t* src = a.w + n * a.row_bytes;
  int64_t i = 0;
  if (a.wtype == DType::kF16) {
    for (; i + 8 <= a.K; i += 8) {
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(
                                    reinterpret_cast<const __m128i*>(src + 2 * i))));
    }
    for (; i < a.K; ++i) dst[i] = HalfF(src + 2 * i);
  } else if (a.wtype == DType::kBF16) {
    for (; i + 8 <= a.K; i += 8) {
      const __m256i h = _mm256_cvtepu16_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i)));
      _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
    }
    for (; i < a.K; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      dst[i] = BF16ToFloat(h);
    }
  } else if (a.wtype == DType::kF32) {
    std::memcpy(dst, src, static_cast<size_t>(a.K) * 4);
    i = a.K;
  } else {
    // Rare types: the reference decoder (never fails: sizes were checked).
    (void)Dequantize(a.wtype, src, a.K, dst);
    i = a.K;
  }
  for (; i < K32; ++i) dst[i] = 0.0f;
}

VB_INLINE float Reduce32(__m256 v0, __m256 v1, __m256 v2, __m256 v3) {
  const __m256 c = _mm256_add_ps(_mm256_add_ps(v0, v1), _mm256_add_ps(v2, v3));
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

VB_TARGET void TileFloat(const MatMulArgs& a, int64_t n0, int64_t t0, int64_t t1) {
  const int64_t K32 = (a.K + 31) / 32 * 32;
  thread_local std::vector<float> wbuf;
  if (static_cast<int64_t>(wbuf.size()) < K32 + 32) wbuf.resize(static_cast<size_t>(K32 + 32));
  float* w = wbuf.data();
  alignas(32) float xt[32];
  const int64_t main = a.K / 32 * 32;
  for (int64_t n = n0; n < std::min(n0 + 8, a.N); ++n) {
    RowToF32(a, n, w, K32);
    for (int64_t t = t0; t < t1; ++t) {
      const float* x = reinterpret_cast<const float*>(a.x + t * a.layout.bytes);
      __m256 v0 = _mm256_setzero_ps(), v1 = v0, v2 = v0, v3 = v0;
      for (int64_t i = 0; i < main; i += 32) {
        v0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), v0);
        v1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), v1);
        v2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), v2);
        v3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), v3);
      }
      if (main < a.K) {
        for (int k = 0; k < 32; ++k) xt[k] = main + k < a.K ? x[main + k] : 0.0f;
        v0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + main), _mm256_load_ps(xt), v0);
        v1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + main + 8), _mm256_load_ps(xt + 8), v1);
        v2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + main + 16), _mm256_load_ps(xt + 16), v2);
        v3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + main + 24), _mm256_load_ps(xt + 24), v3);
      }
      const float r = Reduce32(v0, v1, v2, v3);
      a.out[t * a.N + n] = a.bias != nullptr ? r + a.bias[n] : r;
    }
  }
}

// ---- activation rounding ---------------------------------------------------------------

// Rounds 8*nv floats at x (nv a multiple of 4) with their block's scale;
// writes the codes, returns d.
VB_INLINE float QuantizeBlockAvx2(const float* x, int nv, int8_t* q) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 mx = _mm256_setzero_ps();
  // max(|x|, mx) keeps mx where |x| is NaN, as std::max(amax, |x|) does.
  for (int i = 0; i < nv; ++i) mx = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * i)), mx);
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
  const float amax = _mm_cvtss_f32(m4);
  const float d = amax / 127.0f;
  const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
  const __m256 vid = _mm256_set1_ps(id);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int i = 0; i < nv; i += 4) {
    const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * i), vid));
    const __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * i + 8), vid));
    const __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * i + 16), vid));
    const __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * i + 24), vid));
    __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    b = _mm256_permutevar8x32_epi32(b, perm);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 8 * i), b);
  }
  return d;
}

// Sum of 16 int8 codes starting at p.
VB_INLINE int32_t Sum16(const int8_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i w = _mm256_cvtepi8_epi16(v);
  const __m256i s = _mm256_madd_epi16(w, _mm256_set1_epi16(1));
  return HsumI32(s);
}

VB_TARGET void QuantizeAvx2(ActivationFormat f, const float* x, int64_t K, int64_t t0, int64_t t1,
                            uint8_t* dst, const RowLayout& layout) {
  if (f == ActivationFormat::kFloat) {
    QuantizePortable(f, x, K, t0, t1, dst, layout);
    return;
  }
  for (int64_t t = t0; t < t1; ++t) {
    const float* xr = x + t * K;
    uint8_t* row = dst + t * layout.bytes;
    int8_t* q = reinterpret_cast<int8_t*>(row + layout.q);
    float* d = reinterpret_cast<float*>(row + layout.d);
    if (f == ActivationFormat::kQ8x32) {
      int32_t* sum = reinterpret_cast<int32_t*>(row + layout.sum);
      float* dsum = reinterpret_cast<float*>(row + layout.dsum);
      for (int64_t b = 0; b < K / 32; ++b) {
        d[b] = QuantizeBlockAvx2(xr + 32 * b, 4, q + 32 * b);
        const int32_t s = Sum16(q + 32 * b) + Sum16(q + 32 * b + 16);
        sum[b] = s;
        dsum[b] = d[b] * static_cast<float>(s);
      }
    } else {
      int16_t* bsum = reinterpret_cast<int16_t*>(row + layout.bsum);
      for (int64_t b = 0; b < K / 256; ++b) {
        d[b] = QuantizeBlockAvx2(xr + 256 * b, 32, q + 256 * b);
        for (int g = 0; g < 16; ++g) {
          bsum[16 * b + g] = static_cast<int16_t>(Sum16(q + 256 * b + 16 * g));
        }
      }
    }
  }
}

}  // namespace

TileFn Avx2Tile(DType wtype) {
  switch (wtype) {
    case DType::kQ4_0: return TileQ32<DType::kQ4_0>;
    case DType::kQ4_1: return TileQ32<DType::kQ4_1>;
    case DType::kQ5_0: return TileQ32<DType::kQ5_0>;
    case DType::kQ5_1: return TileQ32<DType::kQ5_1>;
    case DType::kQ8_0: return TileQ32<DType::kQ8_0>;
    case DType::kQ2_K: return TileK<DType::kQ2_K>;
    case DType::kQ3_K: return TileK<DType::kQ3_K>;
    case DType::kQ4_K: return TileK<DType::kQ4_K>;
    case DType::kQ5_K: return TileK<DType::kQ5_K>;
    case DType::kQ6_K: return TileK<DType::kQ6_K>;
    default: return TileFloat;
  }
}

QuantizeFn Avx2Quantize() { return QuantizeAvx2; }

}  // namespace vibrant::cpu::internal

#else  // not x86-64 with GCC/Clang

namespace vibrant::cpu::internal {
TileFn Avx2Tile(DType) { return nullptr; }
QuantizeFn Avx2Quantize() { return nullptr; }
}  // namespace vibrant::cpu::internal

#endif
