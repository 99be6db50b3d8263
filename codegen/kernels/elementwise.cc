// add / mul with suffix broadcast, and silu: grid-stride loops.
#include <string>

#include "codegen/kernels/families.h"

namespace vibrant::codegen {

std::string ElementwiseSource() {
  return R"CUDA(
extern "C" __global__ void vb_add(const float* a, const float* b, float* out, i64 n, i64 nb) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    out[i] = __fadd_rn(a[i], b[i % nb]);
  }
}
extern "C" __global__ void vb_mul(const float* a, const float* b, float* out, i64 n, i64 nb) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    out[i] = __fmul_rn(a[i], b[i % nb]);
  }
}
// x / (1 + expf(-x)), ggml's form of x * sigmoid(x).
extern "C" __global__ void vb_silu(const float* x, float* out, i64 n) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    const float v = x[i];
    out[i] = v / __fadd_rn(1.0f, expf(-v));
  }
}
)CUDA";
}

}  // namespace vibrant::codegen
