// AVX-512 version of the fast matmul (not yet written: the AVX2 version runs
// on AVX-512 machines).
#include "runtime/cpu/fast_matmul_internal.h"

namespace vibrant::cpu::internal {
TileFn Avx512Tile(DType) { return nullptr; }
}  // namespace vibrant::cpu::internal
