#include "runtime/cpu/fast_attention.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/cpu_features.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/fast_math.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define VB_ATTN_X86 1
#define VB_TARGET __attribute__((target("avx2,fma,f16c")))
#define VB_INLINE inline __attribute__((always_inline)) VB_TARGET
#endif

namespace vibrant::cpu {
namespace {

constexpr int kChunk = 64;  // cache rows per online-softmax step

inline float Reduce8(const float* l) {
  return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

// Dot of q and k (hd values) in the specified 8-lane order.
inline float DotPortable(const float* q, const float* k, int64_t hd) {
  float lane[8] = {};
  for (int64_t d = 0; d < hd; ++d) lane[d % 8] = std::fma(q[d], k[d], lane[d % 8]);
  return Reduce8(lane);
}

// Rows [j0, j0 + n) of KV head kvh of a cache, as f32 rows of hd: f16
// widened exactly, q8_0 as code * d (Dequantize), f32 copied. row_bytes:
// bytes of one head row of hd elements.
void CacheRows(const void* cache, DType dtype, int64_t row_bytes, int64_t KVH, int64_t hd,
               int64_t kvh, int64_t j0, int64_t n, float* dst) {
  const uint8_t* base = static_cast<const uint8_t*>(cache);
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* row = base + ((j0 + j) * KVH + kvh) * row_bytes;
    if (dtype == DType::kF32) {
      std::memcpy(dst + j * hd, row, hd * sizeof(float));
    } else {
      // Cannot fail for the types and sizes AttentionFast checks.
      (void)Dequantize(dtype, row, hd, dst + j * hd);
    }
  }
}

// Per head of a group: the running max, sum and accumulator.
struct HeadState {
  float M, S;
  float* acc;  // hd
};

// One chunk of rows for one head: kf/vf are the chunk's f32 rows.
void ChunkPortable(const float* qh, const float* kf, const float* vf, int64_t rows, int64_t hd,
                   float scale, float* s, HeadState* st) {
  float mc = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < rows; ++j) {
    s[j] = scale * DotPortable(qh, kf + j * hd, hd);
    mc = std::max(mc, s[j]);
  }
  const float m = std::max(st->M, mc);
  const float a = internal::ExpPortable(st->M - m);
  float sum = 0.0f;
  for (int64_t j = 0; j < rows; ++j) {
    s[j] = internal::ExpPortable(s[j] - m);
    sum += s[j];
  }
  st->S = std::fma(st->S, a, sum);
  for (int64_t d = 0; d < hd; ++d) {
    float acc = st->acc[d] * a;
    for (int64_t j = 0; j < rows; ++j) acc = std::fma(s[j], vf[j * hd + d], acc);
    st->acc[d] = acc;
  }
  st->M = m;
}

#ifdef VB_ATTN_X86

VB_INLINE float Reduce8Avx2(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

VB_TARGET void CacheRowsAvx2(const void* cache, DType dtype, int64_t row_bytes, int64_t KVH, int64_t hd,
                             int64_t kvh, int64_t j0, int64_t n, float* dst) {
  if (dtype != DType::kF16) {
    CacheRows(cache, dtype, row_bytes, KVH, hd, kvh, j0, n, dst);
    return;
  }
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t* src = static_cast<const uint16_t*>(cache) + ((j0 + j) * KVH + kvh) * hd;
    for (int64_t d = 0; d < hd; d += 8) {
      _mm256_storeu_ps(dst + j * hd + d,
                       _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + d))));
    }
  }
}

// The chunk step for hd a multiple of 8 (the portable operations, 8 lanes of
// d or of j at a time).
VB_TARGET void ChunkAvx2(const float* qh, const float* kf, const float* vf, int64_t rows, int64_t hd,
                         float scale, float* s, HeadState* st) {
  float mc = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
  for (; j + 4 <= rows; j += 4) {  // four independent dot products in flight
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float* k0 = kf + j * hd;
    for (int64_t d = 0; d < hd; d += 8) {
      const __m256 qv = _mm256_loadu_ps(qh + d);
      a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
      a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + hd + d), a1);
      a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 2 * hd + d), a2);
      a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 3 * hd + d), a3);
    }
    s[j] = scale * Reduce8Avx2(a0);
    s[j + 1] = scale * Reduce8Avx2(a1);
    s[j + 2] = scale * Reduce8Avx2(a2);
    s[j + 3] = scale * Reduce8Avx2(a3);
  }
  for (; j < rows; ++j) {
    __m256 a = _mm256_setzero_ps();
    for (int64_t d = 0; d < hd; d += 8) {
      a = _mm256_fmadd_ps(_mm256_loadu_ps(qh + d), _mm256_loadu_ps(kf + j * hd + d), a);
    }
    s[j] = scale * Reduce8Avx2(a);
  }
  for (j = 0; j < rows; ++j) mc = std::max(mc, s[j]);
  const float m = std::max(st->M, mc);
  const float a = internal::ExpPortable(st->M - m);
  const __m256 vm = _mm256_set1_ps(m);
  for (j = 0; j + 8 <= rows; j += 8) {
    _mm256_storeu_ps(s + j, internal::ExpAvx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm)));
  }
  for (; j < rows; ++j) s[j] = internal::ExpPortable(s[j] - m);
  float sum = 0.0f;
  for (j = 0; j < rows; ++j) sum += s[j];
  st->S = std::fma(st->S, a, sum);
  const __m256 va = _mm256_set1_ps(a);
  for (int64_t d = 0; d < hd; d += 32) {
    if (d + 32 <= hd) {
      __m256 c0 = _mm256_mul_ps(_mm256_loadu_ps(st->acc + d), va);
      __m256 c1 = _mm256_mul_ps(_mm256_loadu_ps(st->acc + d + 8), va);
      __m256 c2 = _mm256_mul_ps(_mm256_loadu_ps(st->acc + d + 16), va);
      __m256 c3 = _mm256_mul_ps(_mm256_loadu_ps(st->acc + d + 24), va);
      for (j = 0; j < rows; ++j) {
        const __m256 p = _mm256_set1_ps(s[j]);
        const float* vr = vf + j * hd + d;
        c0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr), c0);
        c1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 8), c1);
        c2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 16), c2);
        c3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 24), c3);
      }
      _mm256_storeu_ps(st->acc + d, c0);
      _mm256_storeu_ps(st->acc + d + 8, c1);
      _mm256_storeu_ps(st->acc + d + 16, c2);
      _mm256_storeu_ps(st->acc + d + 24, c3);
    } else {
      for (int64_t e = d; e < hd; e += 8) {
        __m256 c = _mm256_mul_ps(_mm256_loadu_ps(st->acc + e), va);
        for (j = 0; j < rows; ++j) {
          c = _mm256_fmadd_ps(_mm256_set1_ps(s[j]), _mm256_loadu_ps(vf + j * hd + e), c);
        }
        _mm256_storeu_ps(st->acc + e, c);
      }
    }
  }
  st->M = m;
}

#endif  // VB_ATTN_X86

}  // namespace

float FastExpForTesting(float x) { return internal::ExpPortable(x); }

absl::Status AttentionFast(ThreadPool* pool, const float* q, const void* k, const void* v,
                           DType cache_dtype, const int32_t* positions,
                           const AttentionShape& shape, float scale, float* out) {
  return AttentionFast(pool, q, k, v, cache_dtype, cache_dtype, positions, shape, scale, out);
}

absl::Status AttentionFast(ThreadPool* pool, const float* q, const void* k, const void* v,
                           DType k_dtype, DType v_dtype, const int32_t* positions,
                           const AttentionShape& shape, float scale, float* out) {
  const int64_t H = shape.n_head, KVH = shape.n_head_kv, hd = shape.head_dim;
  for (DType dt : {k_dtype, v_dtype}) {
    if (dt != DType::kF32 && dt != DType::kF16 && dt != DType::kQ8_0) {
      return absl::InvalidArgumentError(absl::StrCat("KV cache dtype ", std::string(DTypeName(dt)),
                                                     " is not supported (f32, f16 or q8_0)"));
    }
    if (dt == DType::kQ8_0 && hd % 32 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("q8_0 KV cache: rows of ", hd, " elements are not whole blocks of 32"));
    }
  }
  if (KVH <= 0 || H % KVH != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention: ", H, " heads are not a multiple of ", KVH, " KV heads"));
  }
  for (int64_t t = 0; t < shape.T; ++t) {
    if (positions[t] < 0 || positions[t] >= shape.n_ctx) {
      return absl::OutOfRangeError(absl::StrCat("attention: position ", positions[t], " of token ",
                                                t, " is outside the KV cache [0, ", shape.n_ctx, ")"));
    }
  }
  // Bytes of one head row; cannot fail for the types and sizes checked above.
  const int64_t k_row = DTypeBytes(k_dtype, hd).value_or(0);
  const int64_t v_row = DTypeBytes(v_dtype, hd).value_or(0);
  const int64_t group = H / KVH;
#ifdef VB_ATTN_X86
  const bool simd = ActiveIsa() >= Isa::kAvx2 && hd % 8 == 0;
#else
  const bool simd = false;
#endif
  auto items = [&](int64_t i0, int64_t i1) {
    std::vector<float> kf(kChunk * hd), vf(kChunk * hd), s(kChunk), acc(group * hd);
    std::vector<HeadState> st(group);
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t t = item / KVH, kvh = item % KVH;
      // Rows first .. positions[t]: the whole prefix, or the last `window`.
      const int64_t first =
          shape.window > 0 ? std::max<int64_t>(0, positions[t] - shape.window + 1) : 0;
      const int64_t end = static_cast<int64_t>(positions[t]) + 1;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t g = 0; g < group; ++g) {
        st[g] = {-std::numeric_limits<float>::infinity(), 0.0f, acc.data() + g * hd};
      }
      for (int64_t j0 = first; j0 < end; j0 += kChunk) {
        const int64_t rows = std::min<int64_t>(kChunk, end - j0);
#ifdef VB_ATTN_X86
        if (simd) {
          CacheRowsAvx2(k, k_dtype, k_row, KVH, hd, kvh, j0, rows, kf.data());
          CacheRowsAvx2(v, v_dtype, v_row, KVH, hd, kvh, j0, rows, vf.data());
          for (int64_t g = 0; g < group; ++g) {
            ChunkAvx2(q + (t * H + kvh * group + g) * hd, kf.data(), vf.data(), rows, hd, scale,
                      s.data(), &st[g]);
          }
          continue;
        }
#endif
        CacheRows(k, k_dtype, k_row, KVH, hd, kvh, j0, rows, kf.data());
        CacheRows(v, v_dtype, v_row, KVH, hd, kvh, j0, rows, vf.data());
        for (int64_t g = 0; g < group; ++g) {
          ChunkPortable(q + (t * H + kvh * group + g) * hd, kf.data(), vf.data(), rows, hd, scale,
                        s.data(), &st[g]);
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        float* o = out + (t * H + kvh * group + g) * hd;
        for (int64_t d = 0; d < hd; ++d) o[d] = st[g].acc[d] / st[g].S;
      }
    }
  };
  if (pool != nullptr) {
    pool->ParallelFor(shape.T * KVH, items, 1);
  } else {
    items(0, shape.T * KVH);
  }
  return absl::OkStatus();
}

}  // namespace vibrant::cpu
