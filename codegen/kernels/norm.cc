// rms_norm: one block per row. As the CPU reference: squares in float, their
// sum in double, mean = (float)(sum / D), scale = 1.0f / sqrtf(mean + eps)
// (IEEE division and square root: NVRTC's defaults -prec-div/-prec-sqrt).
#include <string>

#include "codegen/kernels/families.h"

namespace vibrant::codegen {

std::string NormSource() {
  return R"CUDA(
extern "C" __global__ void vb_rms_norm(const float* __restrict__ x, float* out, int D, float eps) {
  __shared__ double scratch[32];
  const float* xr = x + (i64)blockIdx.x * D;
  float* yr = out + (i64)blockIdx.x * D;
  double s = 0.0;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    const float v = xr[i];
    s += (double)__fmul_rn(v, v);
  }
  s = vb_block_sum_d(s, scratch);
  const float mean = (float)(s / (double)D);
  const float scale = 1.0f / sqrtf(__fadd_rn(mean, eps));
  // In place (out == x) is safe: every read above precedes the block sum's
  // barrier, and each element is then read and written by one thread.
  for (int i = threadIdx.x; i < D; i += blockDim.x) yr[i] = __fmul_rn(xr[i], scale);
}
)CUDA";
}

}  // namespace vibrant::codegen
