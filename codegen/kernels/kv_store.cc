// kv_store: rows of src written at their positions in the cache (f16: round
// to nearest even, as the CPU's FloatToHalf; q8_0: ggml's block rounding,
// bit for bit as cpu::KvStore).
#include <string>

#include "codegen/kernels/families.h"

namespace vibrant::codegen {

std::string KvStoreSource() {
  return R"CUDA(
extern "C" __global__ void vb_kv_store_f16(const float* __restrict__ src, const int* __restrict__ pos,
                                           u16* cache, i64 T, int row, int n_ctx) {
  const i64 n = T * row;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    const i64 t = i / row;
    const int p = pos[t];
    if (p < 0 || p >= n_ctx) continue;
    cache[(i64)p * row + (i - t * row)] = vb_f2h(src[i]);
  }
}
extern "C" __global__ void vb_kv_store_f32(const float* __restrict__ src, const int* __restrict__ pos,
                                           float* cache, i64 T, int row, int n_ctx) {
  const i64 n = T * row;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    const i64 t = i / row;
    const int p = pos[t];
    if (p < 0 || p >= n_ctx) continue;
    cache[(i64)p * row + (i - t * row)] = src[i];
  }
}
// q8_0 (row % 32 == 0): one warp per block of 32, lane i quantizes element i:
// amax = max |x|, d = amax / 127, id = d != 0 ? 1 / d : 0, code = roundf(x * id)
// (IEEE division and reciprocal: NVRTC's default --prec-div), d stored as
// f16; a block with a non-finite value stores d = NaN (0x7e00) and codes 0.
// Grid-stride over the T * row / 32 blocks in warps.
extern "C" __global__ void vb_kv_store_q8_0(const float* __restrict__ src, const int* __restrict__ pos,
                                            u8* cache, i64 T, int row, int n_ctx) {
  const int nb = row >> 5;  // blocks per cache row
  const int lane = threadIdx.x & 31;
  const i64 n = T * nb;
  const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
  for (i64 b = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; b < n; b += warps) {
    const i64 t = b / nb;
    const int blk = (int)(b - t * nb);
    const int p = pos[t];
    if (p < 0 || p >= n_ctx) continue;  // uniform over the warp
    const float x = src[t * row + 32 * blk + lane];
    u8* out = cache + ((i64)p * nb + blk) * 34;
    if (!__all_sync(0xffffffffu, fabsf(x) <= 3.402823466e38f)) {  // false for inf and NaN
      if (lane == 0) *(u16*)out = (u16)0x7e00;
      out[2 + lane] = 0;
      continue;
    }
    float amax = fabsf(x);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (lane == 0) *(u16*)out = vb_f2h(d);
    out[2 + lane] = (u8)(signed char)(int)roundf(__fmul_rn(x, id));
  }
}
)CUDA";
}

}  // namespace vibrant::codegen
