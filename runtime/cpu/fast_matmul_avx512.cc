// The fast matmul for x86-64 CPUs with AVX-512 F/BW/VL/VNNI (256-bit registers: vpdpbusd, vpdpwssd): fast_matmul_x86.inc compiled
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
namespace avx512 {
namespace {

#define VB_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define VB_VNNI 1
#include "runtime/cpu/fast_matmul_x86.inc"
#undef VB_VNNI
#undef VB_TARGET

}  // namespace
}  // namespace avx512

TileFn Avx512Tile(DType wtype) { return avx512::SelectTile(wtype); }

}  // namespace vibrant::cpu::internal

#else  // not x86-64 with GCC/Clang

namespace vibrant::cpu::internal {
TileFn Avx512Tile(DType) { return nullptr; }
}  // namespace vibrant::cpu::internal

#endif
