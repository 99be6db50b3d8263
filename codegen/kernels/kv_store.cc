// kv_store: rows of src written at their positions in the cache (f16: round
// to nearest even, as the CPU's FloatToHalf).
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
)CUDA";
}

}  // namespace vibrant::codegen
