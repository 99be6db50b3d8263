// The CPU backend's fast matmul: quantized dot products on 8-bit activations,
// as llama.cpp's CPU backend computes them, with SIMD versions chosen at run
// time (cpu_features.h). The exact kernel (kernels.h MatMul) stays the
// reference; the compiler chooses between the two (kernel_select.h).
//
// What it computes, out[t, n] for x[T, K] f32 and a weight w[N, K]:
//
// 1. The activations are rounded once per matmul input (QuantizeActivations)
//    into the format the weight type pairs with (ActivationFormat):
//    - kQ8x32 for q4_0, q4_1, q5_0, q5_1, q8_0: blocks of 32 values,
//      d = amax / 127, q_i = round_half_even(x_i * (127 / amax)) in
//      [-127, 127] (0 when amax = 0), d stored in f32 (llama.cpp's q8_0 and
//      q8_1 store it in f16), plus Σq and dx * Σq per block.
//    - kQ8x256 for q2_K .. q6_K: the same rounding per block of 256 (as
//      llama.cpp's q8_K, whose scale is the signed extreme; ours is
//      symmetric) plus the sums of q over each 16 values.
//    - kFloat for every other weight type (f32, f16, bf16, q8_K, iq4_nl,
//      iq4_xs, integers; llama.cpp rounds x to 8 bits for the iq4 types):
//      x is used as it is.
// 2. Each weight block is decoded to small integers u and integer scales
//    (w = d * (u - o) for q4_0/q5_0/q8_0, d * u + m for q4_1/q5_1, and
//    d * sc_g * (u - o) - dmin * mn_g per group g of 16 for the K-quants) and
//    the dot product of one weight block with one activation block is an
//    exact integer I (and M = Σ_g mn_g * bsum_g for the K-quants with mins).
// 3. The floats, in this order, per output, over the blocks b of the row:
//      acc = 0
//      32-value types: acc = fma(dw_b * dx_b, (float)I_b, acc)
//                      q4_1/q5_1 then: acc = fma(m_b, dx_b * Σq_b, acc)
//      K-quants:       acc = fma(d_b * dx_b, (float)I_b, acc)
//                      with mins then: acc = fma(-(dmin_b * dx_b), (float)M_b, acc)
//    out = acc (+ bias[n], one add).
//    Float weights (the row decoded to f32 exactly as Dequantize does): 32
//    lanes, lane k accumulates fma(w_i, x_i, lane) over i = k mod 32 in order
//    (the row zero-padded to a multiple of 32); the lanes v0..v3 (8 each)
//    are added as (v0 + v1) + (v2 + v3) = c and c's 8 lanes as
//    ((c0 + c4) + (c2 + c6)) + ((c1 + c5) + (c3 + c7)).
//
// Every version (portable, AVX2, AVX-512) computes exactly these operations,
// so results are bit-identical across instruction sets, thread counts, token
// tilings and step sizes: out[t, n] depends only on x[t] and w[n].
//
// Accuracy against the exact reference (kernels.h MatMul) is that of 8-bit
// activations: measured bounds are in fast_matmul_test.cc.
#ifndef VIBRANT_RUNTIME_CPU_FAST_MATMUL_H_
#define VIBRANT_RUNTIME_CPU_FAST_MATMUL_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "ir/dtype.h"
#include "runtime/cpu/thread_pool.h"

namespace vibrant::cpu {

enum class ActivationFormat { kFloat, kQ8x32, kQ8x256 };

// The activation format the fast matmul uses with weights of type `w`.
ActivationFormat ActivationFormatFor(DType w);

// Bytes of one row of K activations in `f` (kFloat: 4 * K), a multiple of 64.
// K must be a multiple of the format's block (32 or 256).
int64_t ActivationRowBytes(ActivationFormat f, int64_t K);

// Rounds T rows of x (K floats each) into `dst` (T rows of
// ActivationRowBytes(f, K) bytes; 64-byte aligned for speed). kFloat copies.
// Parallel over rows when `pool` is given. Fails when K is not a whole number
// of blocks.
absl::Status QuantizeActivations(ActivationFormat f, const float* x, int64_t T, int64_t K,
                                 uint8_t* dst, ThreadPool* pool);

// The fast matmul on activations already rounded by QuantizeActivations with
// ActivationFormatFor(wtype) (rows of ActivationRowBytes bytes):
// out[t, n] = the sum above (+ bias[n]) for t < T, n < N; out is [T, N].
// Parallel over tiles of 8 rows x up to 32 tokens. Fails if K is not a whole
// number of the weight's blocks.
absl::Status MatMulQuantized(ThreadPool* pool, const uint8_t* xq, int64_t T, int64_t K,
                             DType wtype, const void* w, int64_t N, const float* bias,
                             float* out);

// QuantizeActivations into `scratch` (grown as needed) + MatMulQuantized.
absl::Status MatMulFast(ThreadPool* pool, const float* x, int64_t T, int64_t K, DType wtype,
                        const void* w, int64_t N, const float* bias, float* out,
                        std::vector<uint8_t>* scratch);

// One weight of a multi_matmul (ir/ops.h): out[T, N] = x w^T (+ bias).
struct MatMulMember {
  DType wtype;
  const void* w;
  int64_t N;
  const float* bias;  // [N] or null
  float* out;
};

// Several matmuls of one input (q, k and v; gate and up): x is rounded once
// per activation format the members need, and all members' tiles run as one
// parallel job. Each output is what MatMulFast gives for its member.
absl::Status MultiMatMulFast(ThreadPool* pool, const float* x, int64_t T, int64_t K,
                             const std::vector<MatMulMember>& members,
                             std::vector<uint8_t>* scratch);

// Whether `wtype` has a SIMD path (the others go through an f32 decode of
// each row, still with the semantics above).
bool HasFastPath(DType wtype);

}  // namespace vibrant::cpu

#endif  // VIBRANT_RUNTIME_CPU_FAST_MATMUL_H_
