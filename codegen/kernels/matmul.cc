// matmul over weights as stored (quantized blocks decoded in registers).
//
// One warp per output row n: lane l takes the 8-element groups l, l+32, ...
// of the row (for a K-quant, the 32 lanes cover one 256-element super-block
// per step, reading it once, coalesced), decodes its 8 weights and multiplies
// them with the same 8 elements of each of up to TT token rows of x; the lane
// sums are reduced with shuffles. The weight row is read once per TT tokens.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernels/families.h"

namespace vibrant::codegen {

std::string MatmulKernelName(DType t, int tokens_per_pass) {
  return absl::StrCat("vb_matmul", tokens_per_pass, "_", TypeTag(t));
}

std::string MatmulSource(const std::vector<DType>& types) {
  std::string out = R"CUDA(
template <class W, int TT>
VB_INLINE void vb_matmul_impl(const u8* __restrict__ w, i64 row_bytes,
                              const float* __restrict__ x, const float* __restrict__ bias,
                              float* __restrict__ out, int K, int N, int T) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (n >= N) return;  // the whole warp leaves together
  const int t0 = blockIdx.y * TT;
  const u8* row = w + (i64)n * row_bytes;
  float acc[TT];
#pragma unroll
  for (int tt = 0; tt < TT; ++tt) acc[tt] = 0.0f;
  const int ng = (K + 7) >> 3;
  for (int g = lane; g < ng; g += 32) {
    float v[8];
    W::deq8(row, g, K, v);
    const int k0 = g << 3;
    const int ne = K - k0 < 8 ? K - k0 : 8;  // < 8 only in a plain type's tail
#pragma unroll
    for (int tt = 0; tt < TT; ++tt) {
      if (t0 + tt < T) {
        const float* xr = x + (i64)(t0 + tt) * K + k0;
        float s = acc[tt];
        if (ne == 8) {
#pragma unroll
          for (int e = 0; e < 8; ++e) s = fmaf(v[e], xr[e], s);
        } else {
          for (int e = 0; e < ne; ++e) s = fmaf(v[e], xr[e], s);
        }
        acc[tt] = s;
      }
    }
  }
#pragma unroll
  for (int tt = 0; tt < TT; ++tt) {
    const float s = vb_warp_sum(acc[tt]);
    if (lane == 0 && t0 + tt < T) {
      out[(i64)(t0 + tt) * N + n] = bias != 0 ? s + bias[n] : s;
    }
  }
}
)CUDA";
  for (DType t : types) {
    if (!CudaSupportsWeightType(t)) continue;
    for (int tt : {1, 8}) {
      std::string k = R"CUDA(
extern "C" __global__ void __launch_bounds__($THREADS) $NAME(const u8* w, i64 row_bytes, const float* x, const float* bias,
                                       float* out, int K, int N, int T) {
  vb_matmul_impl<W_$TAG, $TT>(w, row_bytes, x, bias, out, K, N, T);
}
)CUDA";
      absl::StrReplaceAll({{"$NAME", MatmulKernelName(t, tt)},
                           {"$TAG", TypeTag(t)},
                           {"$TT", absl::StrCat(tt)},
                           {"$THREADS", absl::StrCat(kMatmulThreads)}},
                          &k);
      out += k;
    }
  }
  return out;
}

}  // namespace vibrant::codegen
