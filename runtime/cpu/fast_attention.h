// The CPU backend's fast attention: f32 SIMD with an online softmax over
// chunks of 64 cache rows (flash attention), beside the exact reference
// (kernels.h Attention, which accumulates in double). Selected by the
// compiler like the fast matmul (kernel_select.h).
//
// Per query row t and head h (KV head h / (H / KVH)), over cache rows
// j = j0..positions[t] (j0 = 0, or with a window W > 0
// max(0, positions[t] - W + 1)) taken in chunks of 64 (j = j0 + 64c ..):
//   s_j   = scale * Dot(q, k_j)      Dot: 8 lanes, lane l accumulates
//           fma(q[d], k_j[d], lane) over d = l mod 8 in order (q and k
//           zero-padded to a multiple of 8), then
//           ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))
//   per chunk: m = max(M, max_j s_j); a = Exp(M - m) (0 when M = -inf);
//           p_j = Exp(s_j - m); S = fma(S, a, Σ_j p_j) (Σ in order of j);
//           acc[d] = acc[d] * a, then acc[d] = fma(p_j, v_j[d], acc[d]) in
//           order of j; M = m
//   out[d] = acc[d] / S
// where Exp is a polynomial exp (below, ~2 ulp on [-87, 0], 0 below -87.3).
// f16 caches are converted to f32 exactly, q8_0 rows to code * d (as the
// exact kernel reads them). Every ISA computes these bits, so
// results do not depend on the instruction set or the thread count (work is
// split by (token, KV head), never inside one output).
#ifndef VIBRANT_RUNTIME_CPU_FAST_ATTENTION_H_
#define VIBRANT_RUNTIME_CPU_FAST_ATTENTION_H_

#include "absl/status/status.h"
#include "ir/dtype.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu/thread_pool.h"

namespace vibrant::cpu {

// Same contract as Attention (kernels.h): q[T, H, hd], K/V caches
// [C, KVH, hd] of f32, f16 or q8_0 (hd % 32 == 0), positions[T],
// out[T, H, hd], shape.window; the same errors.
absl::Status AttentionFast(ThreadPool* pool, const float* q, const void* k, const void* v,
                           DType k_dtype, DType v_dtype, const int32_t* positions,
                           const AttentionShape& shape, float scale, float* out);
// The same with one dtype for both caches.
absl::Status AttentionFast(ThreadPool* pool, const float* q, const void* k, const void* v,
                           DType cache_dtype, const int32_t* positions,
                           const AttentionShape& shape, float scale, float* out);

// The Exp of the semantics above, for tests.
float FastExpForTesting(float x);

}  // namespace vibrant::cpu

#endif  // VIBRANT_RUNTIME_CPU_FAST_ATTENTION_H_
