// attention, split over the context ("flash decoding"): every (token, head)
// row is cut into chunks of kAttnChunk cache rows, one block each, so that a
// long context keeps the whole GPU busy even for one token; a second kernel
// merges the chunks' partial softmax sums. The grid depends only on the cache
// length, never on the positions (read from device memory), so one captured
// CUDA graph serves every decode step.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernels/families.h"

namespace vibrant::codegen {

std::string AttentionSource() {
  std::string s = R"CUDA(
#define VB_ATTN_CHUNK $CHUNK
#define VB_ATTN_MAX_HD $MAXHD
#define VB_ATTN_WARPS ($THREADS / 32)

template <bool F16>
VB_INLINE float vb_kv_at(const void* p, i64 i) {
  if (F16) return vb_h2f(((const u16*)p)[i]);
  return ((const float*)p)[i];
}

template <bool F16>
VB_INLINE void vb_attn_split_impl(const float* __restrict__ q, const void* __restrict__ k,
                                  const void* __restrict__ v, const int* __restrict__ pos,
                                  float* __restrict__ part, int H, int KVH, int hd, int n_ctx,
                                  float scale, int n_split, int chunk, int window) {
  __shared__ float q_sh[VB_ATTN_MAX_HD];
  __shared__ float e_sh[VB_ATTN_CHUNK];
  __shared__ float red[32];
  const int r = blockIdx.x;  // t * H + h
  const int t = r / H, h = r - t * H;
  const int kvh = h / (H / KVH);
  const int split = blockIdx.y;
  float* pp = part + ((i64)r * n_split + split) * (hd + 2);
  int n = pos[t] + 1;
  if (n > n_ctx) n = n_ctx;
  int j0 = split * chunk;  // chunk <= VB_ATTN_CHUNK
  const int j1 = n < j0 + chunk ? n : j0 + chunk;
  // Sliding window: only rows j > pos - window are visible.
  if (window > 0 && n - window > j0) j0 = n - window;
  if (j0 >= j1) {  // the whole block: nothing of this chunk is visible
    for (int d = threadIdx.x; d < hd + 2; d += blockDim.x) pp[d] = d == 0 ? VB_NEG_INF : 0.0f;
    return;
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) q_sh[d] = q[(i64)r * hd + d];
  __syncthreads();
  const i64 stride = (i64)KVH * hd;
  const i64 head_off = (i64)kvh * hd;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  // Scores: one thread per cache row (a row's keys are contiguous: 16-byte
  // loads for f16 when hd % 8 == 0), so every row's loads are in flight at
  // once instead of one row per warp at a time.
  for (int j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
    const i64 off = (i64)j * stride + head_off;
    float dot = 0.0f;
    if (F16 && (hd & 7) == 0) {
      const uint4* kr = (const uint4*)((const u16*)k + off);
      for (int d8 = 0; d8 < (hd >> 3); ++d8) {
        const uint4 w = kr[d8];
        const u32 ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          dot = fmaf(q_sh[8 * d8 + 2 * i], vb_h2f((u16)(ws[i] & 0xffffu)), dot);
          dot = fmaf(q_sh[8 * d8 + 2 * i + 1], vb_h2f((u16)(ws[i] >> 16)), dot);
        }
      }
    } else {
      for (int d = 0; d < hd; ++d) dot = fmaf(q_sh[d], vb_kv_at<F16>(k, off + d), dot);
    }
    e_sh[j - j0] = __fmul_rn(dot, scale);
  }
  __syncthreads();
  const int len = j1 - j0;
  float m = VB_NEG_INF;
  for (int jj = threadIdx.x; jj < len; jj += blockDim.x) m = fmaxf(m, e_sh[jj]);
  m = vb_block_max(m, red);
  float sum = 0.0f;
  for (int jj = threadIdx.x; jj < len; jj += blockDim.x) {
    const float e = expf(e_sh[jj] - m);
    e_sh[jj] = e;
    sum += e;
  }
  sum = vb_block_sum(sum, red);  // its barriers publish e_sh
  // Values: each warp takes every nw-th row, lane covers dims lane + 32 i
  // (coalesced), then the warps' partial sums are added in warp order.
  float acc[VB_ATTN_MAX_HD / 32];
#pragma unroll
  for (int i = 0; i < VB_ATTN_MAX_HD / 32; ++i) acc[i] = 0.0f;
  for (int jj = warp; jj < len; jj += nw) {
    const float e = e_sh[jj];
    const i64 off = (i64)(j0 + jj) * stride + head_off;
#pragma unroll
    for (int i = 0; i < VB_ATTN_MAX_HD / 32; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) acc[i] = fmaf(e, vb_kv_at<F16>(v, off + d), acc[i]);
    }
  }
  __shared__ float v_sh[VB_ATTN_WARPS][VB_ATTN_MAX_HD];
#pragma unroll
  for (int i = 0; i < VB_ATTN_MAX_HD / 32; ++i) {
    const int d = lane + 32 * i;
    if (d < hd) v_sh[warp][d] = acc[i];
  }
  __syncthreads();
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float a = 0.0f;
    for (int w = 0; w < nw; ++w) a += v_sh[w][d];
    pp[2 + d] = a;
  }
  if (threadIdx.x == 0) {
    pp[0] = m;
    pp[1] = sum;
  }
}

extern "C" __global__ void vb_attn_split_f16(const float* q, const void* k, const void* v,
                                             const int* pos, float* part, int H, int KVH, int hd,
                                             int n_ctx, float scale, int n_split,
                                             int chunk, int window) {
  vb_attn_split_impl<true>(q, k, v, pos, part, H, KVH, hd, n_ctx, scale, n_split, chunk, window);
}
extern "C" __global__ void vb_attn_split_f32(const float* q, const void* k, const void* v,
                                             const int* pos, float* part, int H, int KVH, int hd,
                                             int n_ctx, float scale, int n_split,
                                             int chunk, int window) {
  vb_attn_split_impl<false>(q, k, v, pos, part, H, KVH, hd, n_ctx, scale, n_split, chunk, window);
}

// out[r, d] = sum_s acc_s[d] * exp(m_s - M) / sum_s sum_s * exp(m_s - M)
// over the splits s that saw any row (sum_s > 0), M = max of their m_s.
extern "C" __global__ void vb_attn_combine(const float* __restrict__ part, float* __restrict__ out,
                                           int hd, int n_split) {
  const int r = blockIdx.x;
  const i64 w = hd + 2;
  const float* pp = part + (i64)r * n_split * w;
  float M = VB_NEG_INF;
  for (int s = 0; s < n_split; ++s) {
    if (pp[s * w + 1] > 0.0f) M = fmaxf(M, pp[s * w]);
  }
  float S = 0.0f;
  for (int s = 0; s < n_split; ++s) {
    const float sum = pp[s * w + 1];
    if (sum > 0.0f) S += sum * expf(pp[s * w] - M);
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < n_split; ++s) {
      if (pp[s * w + 1] > 0.0f) acc += pp[s * w + 2 + d] * expf(pp[s * w] - M);
    }
    out[(i64)r * hd + d] = acc / S;
  }
}
)CUDA";
  absl::StrReplaceAll(
      {{"$CHUNK", absl::StrCat(kAttnChunk)},
       {"$MAXHD", absl::StrCat(kAttnMaxHeadDim)},
       {"$THREADS", absl::StrCat(kAttnThreads)}},
      &s);
  return s;
}

}  // namespace vibrant::codegen
