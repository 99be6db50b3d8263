// CPU dequantization and quantized dot products, exact to ggml's block formats.
//
// Blocks are read as they are stored in GGUF files (little-endian). These are
// the reference semantics of every quantized type; GPU kernels are checked
// against them.
#ifndef VIBRANT_RUNTIME_CPU_DEQUANTIZE_H_
#define VIBRANT_RUNTIME_CPU_DEQUANTIZE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "ir/dtype.h"

namespace vibrant {

// IEEE half and bfloat16 conversions (round to nearest even on the way in).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BF16ToFloat(uint16_t h);
uint16_t FloatToBF16(float f);

// Writes `n` floats decoded from `src`, which holds n elements of type `t`
// (a whole number of blocks). Works for every DType with a block layout
// (F32, F16, BF16, I8/I16/I32 converted, and all quantized types).
absl::Status Dequantize(DType t, const void* src, int64_t n, float* dst);

// Dot product of one row of `n` elements of type `t` with an F32 vector,
// dequantizing block by block (no temporary of the whole row). `n` must be a
// whole number of blocks; the caller checks this once per tensor.
float DotRow(DType t, const void* row, const float* x, int64_t n);

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CPU_DEQUANTIZE_H_
