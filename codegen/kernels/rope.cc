// rope: one block per (token, head); thread i rotates pair i. The angle is
// the CPU reference's float sequence (runtime/cpu/kernels.h, Rope):
// th_0 = (float)p, th_{i+1} = th_i * theta_scale (theta_scale computed on the
// host with powf, as the CPU), angle = freq_scale * (th_i / factor_i).
#include <string>

#include "codegen/kernels/families.h"

namespace vibrant::codegen {

std::string RopeSource() {
  return R"CUDA(
extern "C" __global__ void vb_rope(const float* x, const int* __restrict__ pos,
                                   const float* __restrict__ freq_factors, float* out, int H,
                                   int hd, int n_rot, int mode, float theta_scale,
                                   float freq_scale) {
  const int t = blockIdx.x / H;
  const i64 base = (i64)blockIdx.x * hd;
  const float* src = x + base;
  float* dst = out + base;
  const int half = n_rot >> 1;
  const float p = (float)pos[t];
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float th = p;
    for (int k = 0; k < i; ++k) th = __fmul_rn(th, theta_scale);
    const float ff = freq_factors != 0 ? freq_factors[i] : 1.0f;
    const float angle = __fmul_rn(freq_scale, __fdiv_rn(th, ff));
    const float c = cosf(angle), s = sinf(angle);
    const int i0 = mode == 0 ? 2 * i : i;
    const int i1 = mode == 0 ? 2 * i + 1 : i + half;
    const float x0 = src[i0], x1 = src[i1];
    dst[i0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    dst[i1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
  }
  if (dst != src) {
    for (int d = n_rot + threadIdx.x; d < hd; d += blockDim.x) dst[d] = src[d];
  }
}
)CUDA";
}

}  // namespace vibrant::codegen
