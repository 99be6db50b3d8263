// Reference quantizers for every GGUF block type, following the math of
// ggml's quantize_row_*_ref (what llama-quantize uses without an importance
// matrix): same scale searches (make_qkx2_quants for Q2_K/Q4_K/Q5_K,
// make_q3_quants for Q3_K, make_qx_quants for Q6_K), same rounding, same bit
// packing. Used to synthesize quantized test and benchmark models.
//
// Cost (one core of the 2-core build machine, dequantize_benchmark
// BM_Quantize): F16/BF16/Q4_0..Q8_0/Q8_K take 1-8 ns per element; the
// K-quants run ggml's iterative scale searches per sub-block: Q3_K ~15 ns,
// Q6_K ~45 ns, Q5_K ~50 ns, Q2_K ~60 ns, Q4_K ~70 ns per element -- about
// 3.5 CPU-minutes for a 3e9-weight Q4_K model. The searches are kept exactly as
// ggml's (same float operation order, so the bytes match llama-quantize's; see
// dequantize_test), which is what makes them latency-bound. Quantize is
// thread-safe and block-local: callers can split a tensor at any block
// boundary across threads and get the same bytes.
#ifndef VIBRANT_RUNTIME_CPU_QUANTIZE_H_
#define VIBRANT_RUNTIME_CPU_QUANTIZE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ir/dtype.h"

namespace vibrant {

// Encodes `n` floats of `src` as type `t` into `dst`, which must hold
// QuantizedBytes(t, n) bytes. Supports F32 (copy), F16, BF16, Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ4_NL and IQ4_XS
// (ggml's quantize_iq4_nl / quantize_iq4_xs without an importance matrix).
// Fails for the unsupported types and when `n` is
// not a whole number of blocks, for the integer types, and (for the quantized
// types) when an input value is not finite, naming the element.
absl::Status Quantize(DType t, const float* src, int64_t n, void* dst);

// The CUDA backend's decode mat-vec rounds activations to 8 bits before it
// multiplies them with quantized weights (codegen/kernels/matvec_q8.cc, as
// llama.cpp's q8_1): per block of 32 values, d = amax / 127 and
// out = round(x / d) * d (round half away from zero; d = 0 gives 0), each
// operation correctly rounded in float. This is that rounding on the CPU, so
// that GPU results can be checked against matmul(RoundActivationsToQ8(x), w).
// `n` must be a multiple of 32.
absl::Status RoundActivationsToQ8(const float* x, int64_t n, float* out);

// The same rounding in the q8a layout (ir/dtype.h, DType::kQ8A): `n` codes,
// then n / 32 pairs of f32 {d, d * sum of the block's codes}. This is the
// quantize_q8 op; DequantizeQ8A(QuantizeQ8A(x)) equals RoundActivationsToQ8(x)
// bit for bit.
absl::Status QuantizeQ8A(const float* x, int64_t n, uint8_t* out);
absl::Status DequantizeQ8A(const uint8_t* q, int64_t n, float* out);

// Bytes needed by `n` elements of type `t` (DTypeBytes).
absl::StatusOr<int64_t> QuantizedBytes(DType t, int64_t n);

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CPU_QUANTIZE_H_
