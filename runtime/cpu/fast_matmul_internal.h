// Internal to the fast matmul: the activation row layout and the per-ISA
// kernel entry points (fast_matmul.cc dispatches; fast_matmul_avx2.cc and
// fast_matmul_avx512.cc hold the SIMD versions).
#ifndef VIBRANT_RUNTIME_CPU_FAST_MATMUL_INTERNAL_H_
#define VIBRANT_RUNTIME_CPU_FAST_MATMUL_INTERNAL_H_

#include <cstdint>

#include "ir/dtype.h"
#include "runtime/cpu/fast_matmul.h"

namespace vibrant::cpu::internal {

// One activation row of K values, ActivationRowBytes(f, K) bytes:
//   kQ8x32:  int8 q[K] | f32 d[K/32] | i32 sum[K/32] | f32 dsum[K/32] (d * sum)
//   kQ8x256: int8 q[K] | f32 d[K/256] | i16 bsum[K/16]
//   kFloat:  f32 x[K]
// Each part starts on a 32-byte boundary.
struct RowLayout {
  int64_t q = 0, d = 0, sum = 0, dsum = 0, bsum = 0, bytes = 0;
};
RowLayout LayoutFor(ActivationFormat f, int64_t K);

inline int64_t Align32(int64_t n) { return (n + 31) / 32 * 32; }

// Everything a tile kernel needs.
struct MatMulArgs {
  DType wtype;
  const uint8_t* w = nullptr;  // N rows of row_bytes
  int64_t row_bytes = 0;
  int64_t N = 0, K = 0;
  const uint8_t* x = nullptr;  // T activation rows of layout.bytes
  RowLayout layout;
  const float* bias = nullptr;
  float* out = nullptr;  // [T, N]
};

// Tokens per tile (the accumulators of a tile live on the stack). 32 rather
// than 16 made the 64-token GEMMs of cpu_matvec_benchmark 5-8 % faster (the
// panel decode is shared by more tokens).
constexpr int64_t kTileTokens = 32;

// Computes out[t, n] for n in [n0, n0 + 8) ∩ [0, N) and t in [t0, t1),
// t1 - t0 <= kTileTokens. Rows past N are computed as copies of row N - 1
// and not written.
using TileFn = void (*)(const MatMulArgs& a, int64_t n0, int64_t t0, int64_t t1);

// Per ISA: the tile kernel for wtype, or null (then the portable one).
TileFn PortableTile(DType wtype);
TileFn Avx2Tile(DType wtype);    // null when not built for x86-64
TileFn Avx512Tile(DType wtype);  // null when not built for x86-64

// Activation quantizers per ISA (rows [t0, t1)). Same bytes on every ISA.
using QuantizeFn = void (*)(ActivationFormat f, const float* x, int64_t K, int64_t t0,
                            int64_t t1, uint8_t* dst, const RowLayout& layout);
void QuantizePortable(ActivationFormat f, const float* x, int64_t K, int64_t t0, int64_t t1,
                      uint8_t* dst, const RowLayout& layout);
QuantizeFn Avx2Quantize();  // null when not built for x86-64

// The 32-value and 256-value weight families.
bool IsQ32Family(DType t);
bool IsKFamily(DType t);

}  // namespace vibrant::cpu::internal

#endif  // VIBRANT_RUNTIME_CPU_FAST_MATMUL_INTERNAL_H_
