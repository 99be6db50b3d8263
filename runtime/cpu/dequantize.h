// CPU dequantization and quantized dot products, exact to ggml's block formats.
//
// Blocks are read as they are stored in GGUF files (little-endian). These are
// the reference semantics of every quantized type; GPU kernels are checked
// against them.
//
// Block layouts (bytes, in storage order; "f16" is an IEEE half, QK_K = 256):
//   Q4_0  (32 el, 18 B): f16 d | u8 qs[16]            x = d*(nib-8)
//   Q4_1  (32 el, 20 B): f16 d, m | u8 qs[16]         x = d*nib + m
//   Q5_0  (32 el, 22 B): f16 d | u32 qh | u8 qs[16]    x = d*(q5-16)
//   Q5_1  (32 el, 24 B): f16 d, m | u32 qh | qs[16]    x = d*q5 + m
//   Q8_0  (32 el, 34 B): f16 d | i8 qs[32]             x = d*q
//     In the 32-element formats element j < 16 is the low nibble of qs[j] and
//     element j + 16 its high nibble; bit j of qh is the 5th bit of element j.
//   Q2_K  (256, 84 B):  u8 scales[16] | qs[64] | f16 d, dmin
//   Q3_K  (256, 110 B): u8 hmask[32] | qs[64] | scales[12] | f16 d
//   Q4_K  (256, 144 B): f16 d, dmin | scales[12] | qs[128]
//   Q5_K  (256, 176 B): f16 d, dmin | scales[12] | qh[32] | qs[128]
//   Q6_K  (256, 210 B): ql[128] | qh[64] | i8 scales[16] | f16 d
//   Q8_K  (256, 292 B): f32 d | i8 qs[256] | i16 bsums[16] (bsums unused here)
//   IQ4_NL (32 el, 18 B): f16 d | u8 qs[16]            x = d*kv[nib]
//   IQ4_XS (256, 136 B): f16 d | u16 scales_h | u8 scales_l[4] | qs[128]
//     kv = {-127,-104,-83,-65,-49,-35,-22,-10,1,13,25,38,53,69,89,113} (ggml's
//     kvalues_iq4nl), nibbles placed as Q4_0's (per 32 elements: element j < 16
//     the low nibble of qs[j], j + 16 its high nibble). IQ4_XS: sub-block s
//     (32 elements, qs[16s..16s+15]) has the 6-bit scale
//     ls = (scales_l[s/2] >> 4*(s%2)) & 15 | ((scales_h >> 2s) & 3) << 4 and
//     x = (d*(ls-32))*kv[nib].
// The exact bit placement of each K-quant is documented in dequantize.cc.
#ifndef VIBRANT_RUNTIME_CPU_DEQUANTIZE_H_
#define VIBRANT_RUNTIME_CPU_DEQUANTIZE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "ir/dtype.h"

namespace vibrant {

// IEEE half and bfloat16 conversions. HalfToFloat/BF16ToFloat are exact
// (subnormals, infinities and NaN payloads included). FloatToHalf/FloatToBF16
// round to nearest, ties to even; overflow gives infinity; NaN stays NaN (the
// quiet bit is set, the top payload bits are kept).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BF16ToFloat(uint16_t h);
uint16_t FloatToBF16(float f);

// Writes `n` floats decoded from `src`, which holds n elements of type `t`
// (a whole number of blocks). Works for every DType with a block layout
// (F32, F16, BF16, I8/I16/I32 converted, and all supported quantized types;
// an unsupported type (IsSupported) is an error). The values
// are bit-identical to ggml's dequantize_row_* (each element is computed with
// the same float operations in the same order).
absl::Status Dequantize(DType t, const void* src, int64_t n, float* dst);

// Dot product of one row of `n` elements of type `t` with an F32 vector,
// dequantizing block by block (no temporary of the whole row). `n` must be a
// whole number of blocks; the caller checks this once per tensor (rows that
// are not are truncated to whole blocks).
//
// Semantics: sum over i of Dequantize(row)[i] * x[i], where the dequantized
// values are exactly those of Dequantize. Summation order: the row is cut into
// chunks of 256 elements (one K-quant super-block, 8 blocks of a 32-element
// format, or 256 elements of F32/F16/BF16/I*; the last chunk may be shorter).
// Inside a chunk the products are summed in float in 8 interleaved lanes
// (lane k takes the elements i % 8 == k, in order) and the lanes are added as
// ((l0+l4)+(l1+l5))+((l2+l6)+(l3+l7)); chunk sums are accumulated in double and
// the total is rounded to float once.
//
// On x86-64 CPUs with AVX2 the loops run in an AVX2-compiled copy; both
// copies compute bit-identical results (no FMA). An unsupported type gives
// NaN (callers check IsSupported; the verifier refuses such graphs).
float DotRow(DType t, const void* row, const float* x, int64_t n);

// DotRow restricted to the baseline-ISA code path (tests compare the two).
float DotRowPortableForTesting(DType t, const void* row, const float* x, int64_t n);

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CPU_DEQUANTIZE_H_
