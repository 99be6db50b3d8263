// matmul over weights as stored (quantized blocks decoded in registers).
//
// `wpr` warps per output row n (1, 2, 4 or 8; more when there are too few
// rows to fill the GPU): thread i of the row's 32*wpr takes the 8-element
// groups i, i + 32*wpr, ... of the row (for a K-quant, 32 consecutive threads
// cover one 256-element super-block, reading it once, coalesced), decodes its
// 8 weights and multiplies them with the same 8 elements of each of up to TT
// token rows of x; sums are reduced with shuffles, then across the row's
// warps in shared memory (fixed order: deterministic). The weight row is read
// once per TT tokens.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernels/families.h"

namespace vibrant::codegen {

int MatmulWarpsPerRow(int64_t N, int64_t K, int sm_count) {
  const int64_t groups = (K + 7) / 8;
  const int64_t warps = kMatmulThreads / 32;
  int wpr = 1;
  while (wpr < warps && (N * wpr + warps - 1) / warps < 2 * sm_count && 64 * wpr <= groups) {
    wpr *= 2;
  }
  return wpr;
}

std::string MatmulKernelName(DType t, int tokens_per_pass) {
  return absl::StrCat("vb_matmul", tokens_per_pass, "_", TypeTag(t));
}

std::string MatmulSource(const std::vector<DType>& types) {
  std::string out = R"CUDA(
template <class W, int TT>
VB_INLINE void vb_matmul_impl(const u8* __restrict__ w, i64 row_bytes,
                              const float* __restrict__ x, const float* __restrict__ bias,
                              float* __restrict__ out, int K, int N, int T, int wpr) {
  __shared__ float red[TT][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int rows_per_block = (blockDim.x >> 5) / wpr;
  const int sub = warp % wpr;  // this warp's slice of the row
  const int n = blockIdx.x * rows_per_block + warp / wpr;
  const bool active = n < N;  // no early return: the block synchronizes below
  const int t0 = blockIdx.y * TT;
  const u8* row = w + (i64)(active ? n : 0) * row_bytes;
  float acc[TT];
#pragma unroll
  for (int tt = 0; tt < TT; ++tt) acc[tt] = 0.0f;
  const int ng = active ? (K + 7) >> 3 : 0;
  for (int g = sub * 32 + lane; g < ng; g += 32 * wpr) {
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
    if (lane == 0) red[tt][warp] = s;
  }
  if (wpr > 1) __syncthreads();
  if (active && sub == 0 && lane == 0) {
#pragma unroll
    for (int tt = 0; tt < TT; ++tt) {
      if (t0 + tt < T) {
        float s = red[tt][warp];
        for (int k = 1; k < wpr; ++k) s += red[tt][warp + k];
        out[(i64)(t0 + tt) * N + n] = bias != 0 ? s + bias[n] : s;
      }
    }
  }
}
)CUDA";
  for (DType t : types) {
    if (!CudaSupportsWeightType(t)) continue;
    for (int tt : {1, 8}) {
      std::string k = R"CUDA(
extern "C" __global__ void __launch_bounds__($THREADS) $NAME(const u8* w, i64 row_bytes, const float* x, const float* bias,
                                       float* out, int K, int N, int T, int wpr) {
  vb_matmul_impl<W_$TAG, $TT>(w, row_bytes, x, bias, out, K, N, T, wpr);
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
