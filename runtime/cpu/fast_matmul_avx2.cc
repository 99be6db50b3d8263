// The fast matmul for x86-64 CPUs with AVX2, FMA and F16C: fast_matmul_x86.inc compiled
// for that instruction set (per function, never for the whole file).
#include "runtime/cpu/fast_matmul_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/fast_matmul_portable.h"

namespace vibrant::cpu::internal {
namespace avx2 {
namespace {

#define VB_TARGET __attribute__((target("avx2,fma,f16c")))
#define VB_VNNI 0
#include "runtime/cpu/fast_matmul_x86.inc"
#undef VB_VNNI
#undef VB_TARGET

}  // namespace
}  // namespace avx2

TileFn Avx2Tile(DType wtype) { return avx2::SelectTile(wtype); }
QuantizeFn Avx2Quantize() { return avx2::QuantizeX86; }

}  // namespace vibrant::cpu::internal

#else  // not x86-64 with GCC/Clang

namespace vibrant::cpu::internal {
TileFn Avx2Tile(DType) { return nullptr; }
QuantizeFn Avx2Quantize() { return nullptr; }
}  // namespace vibrant::cpu::internal

#endif
