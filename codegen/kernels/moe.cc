// Mixture of experts (ir/ops.h: moe_topk, moe_weights, matmul_id, moe_sum).
//
// The router kernels run one thread per token: a router has a few dozen to a
// few hundred experts, so a token's softmax and top-k are a few thousand
// float operations, and one thread computes them in the CPU reference's order
// (runtime/cpu/kernels.h: MoeSoftmax, MoeTopK, MoeWeights): max, expf of the
// differences summed in double, p = e * (float)(1 / sum); top-k by decreasing
// p, ties to the lower expert. The probabilities are recomputed where needed
// rather than stored (no per-thread array: no local memory).
//
// matmul_id is a mat-vec over the chosen experts only: one warp per output
// row of one (token, slot), the expert's row decoded 8 weights at a time
// (the W_<type> decoders, as vb_matmul), so a decode step reads the k
// chosen experts' weights and no others.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernels/families.h"

namespace vibrant::codegen {

std::string MatmulIdKernelName(DType t) { return absl::StrCat("vb_matmul_id_", TypeTag(t)); }

std::string MoeRouterSource() {
  return R"CUDA(
// Max of the row and 1 / sum of expf(l - max) (the sum in double).
VB_INLINE void vb_moe_softmax_stats(const float* l, int E, float* m, float* inv) {
  float mx = VB_NEG_INF;
  for (int i = 0; i < E; ++i) mx = fmaxf(mx, l[i]);
  double sum = 0.0;
  for (int i = 0; i < E; ++i) sum += (double)expf(l[i] - mx);
  *m = mx;
  *inv = (float)(1.0 / sum);
}
VB_INLINE float vb_moe_p(const float* l, int i, float m, float inv) {
  return __fmul_rn(expf(l[i] - m), inv);
}
// ids[0..k) of one token: the k experts of largest p, ties to the lower
// expert. Pass j takes the largest key (p, -i) below the previous pass's.
VB_INLINE void vb_moe_topk_row(const float* l, int E, int k, int* ids) {
  float m, inv;
  vb_moe_softmax_stats(l, E, &m, &inv);
  float prev_p = __int_as_float(0x7f800000);  // +inf
  int prev_i = -1;
  for (int j = 0; j < k; ++j) {
    int best = -1;
    float best_p = 0.0f;
    for (int i = 0; i < E; ++i) {
      const float p = vb_moe_p(l, i, m, inv);
      if (!(p < prev_p || (p == prev_p && i > prev_i))) continue;  // already taken
      if (best < 0 || p > best_p) {
        best = i;
        best_p = p;
      }
    }
    ids[j] = best;
    prev_p = best_p;
    prev_i = best;
  }
}
// w[0..k) of one token: p of each chosen expert, divided by their float sum
// (summed in double) when norm != 0. An id outside [0, E) gives NaN.
VB_INLINE void vb_moe_weights_row(const float* l, int E, const int* ids, int k, int norm, float* w) {
  float m, inv;
  vb_moe_softmax_stats(l, E, &m, &inv);
  double sum = 0.0;
  for (int j = 0; j < k; ++j) {
    const int e = ids[j];
    w[j] = e >= 0 && e < E ? vb_moe_p(l, e, m, inv) : VB_NAN;
    sum += (double)w[j];
  }
  if (norm != 0) {
    const float s = (float)sum;
    for (int j = 0; j < k; ++j) w[j] = __fdiv_rn(w[j], s);
  }
}
)CUDA";
}

std::string MoeSource(const std::vector<DType>& types) {
  std::string out = MoeRouterSource();
  out += absl::StrReplaceAll(R"CUDA(
// One thread per token.
extern "C" __global__ void __launch_bounds__($RTHREADS) vb_moe_topk(const float* logits, int* ids, int E,
                                                                   int k, int T) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= T) return;
  vb_moe_topk_row(logits + (i64)t * E, E, k, ids + (i64)t * k);
}
extern "C" __global__ void __launch_bounds__($RTHREADS) vb_moe_weights(const float* logits, const int* ids,
                                                                      float* w, int E, int k, int T,
                                                                      int norm) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= T) return;
  vb_moe_weights_row(logits + (i64)t * E, E, ids + (i64)t * k, k, norm, w + (i64)t * k);
}
// out[t, d] = w[t,0] y[t,0,d] + w[t,1] y[t,1,d] + ..., j ascending, each
// product and sum rounded (no fused multiply-add): the CPU's bits.
extern "C" __global__ void vb_moe_sum(const float* y, const float* w, float* out, int k, int D, i64 n) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    const i64 t = i / D, d = i - t * D;
    const float* wt = w + t * k;
    const float* yt = y + t * k * D + d;
    float s = __fmul_rn(yt[0], wt[0]);
    for (int j = 1; j < k; ++j) s = __fadd_rn(s, __fmul_rn(yt[(i64)j * D], wt[j]));
    out[i] = s;
  }
}

// out[slot, n] for slot = t * k + j: row n of expert ids[slot] (w is [E, N,
// K], expert_bytes apart) dotted with x's row t (x_per_slot 0) or slot (1).
// Grid (ceil(N / warps per block), T * k); one warp per row.
template <class W>
VB_INLINE void vb_matmul_id_impl(const u8* __restrict__ w, i64 row_bytes, i64 expert_bytes,
                                 const float* __restrict__ x, int x_per_slot,
                                 const int* __restrict__ ids, float* __restrict__ out, int K, int N,
                                 int k, int E) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (n >= N) return;  // whole warps
  const i64 slot = blockIdx.y;
  const int e = ids[slot];
  if (e < 0 || e >= E) {  // never from moe_topk; no out-of-bounds read
    if (lane == 0) out[slot * N + n] = VB_NAN;
    return;
  }
  const u8* row = w + (i64)e * expert_bytes + (i64)n * row_bytes;
  const float* xr = x + (x_per_slot ? slot : slot / k) * K;
  float acc = 0.0f;
  const int ng = (K + 7) >> 3;
  for (int g = lane; g < ng; g += 32) {
    float v[8];
    W::deq8(row, g, K, v);
    const int k0 = g << 3;
    const int ne = K - k0 < 8 ? K - k0 : 8;
    if (ne == 8) {
#pragma unroll
      for (int q = 0; q < 8; ++q) acc = fmaf(v[q], xr[k0 + q], acc);
    } else {
      for (int q = 0; q < ne; ++q) acc = fmaf(v[q], xr[k0 + q], acc);
    }
  }
  const float s = vb_warp_sum(acc);
  if (lane == 0) out[slot * N + n] = s;
}
)CUDA",
                             {{"$RTHREADS", absl::StrCat(kMoeRouterThreads)}});
  for (DType t : types) {
    if (!CudaSupportsWeightType(t)) continue;
    std::string k = R"CUDA(
extern "C" __global__ void __launch_bounds__($THREADS) $NAME(const u8* w, i64 row_bytes, i64 expert_bytes,
    const float* x, int x_per_slot, const int* ids, float* out, int K, int N, int k, int E) {
  vb_matmul_id_impl<W_$TAG>(w, row_bytes, expert_bytes, x, x_per_slot, ids, out, K, N, k, E);
}
)CUDA";
    absl::StrReplaceAll({{"$NAME", MatmulIdKernelName(t)},
                         {"$TAG", TypeTag(t)},
                         {"$THREADS", absl::StrCat(kMatmulIdThreads)}},
                        &k);
    out += k;
  }
  return out;
}

}  // namespace vibrant::codegen
