// add / mul with suffix broadcast, silu, gelu and scale: grid-stride loops.
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
// GELU, tanh approximation, in the CPU reference's float operations
// (runtime/cpu/kernels.h, Gelu): (0.5 x) (1 + tanh((c x) (1 + (a x) x))).
VB_INLINE float vb_gelu1(float v) {
  const float inner = __fmul_rn(__fmul_rn(0.79788456080286535587989211986876f, v),
                                __fadd_rn(1.0f, __fmul_rn(__fmul_rn(0.044715f, v), v)));
  return __fmul_rn(__fmul_rn(0.5f, v), __fadd_rn(1.0f, tanhf(inner)));
}
extern "C" __global__ void vb_gelu(const float* x, float* out, i64 n) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    out[i] = vb_gelu1(x[i]);
  }
}
// x * s (gemma3's embedding scale).
extern "C" __global__ void vb_scale(const float* x, float* out, i64 n, float s) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    out[i] = __fmul_rn(x[i], s);
  }
}
)CUDA";
}

}  // namespace vibrant::codegen
