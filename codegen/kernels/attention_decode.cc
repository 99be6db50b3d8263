// Decode attention on tensor cores (flash decoding; attention_mma.h says what
// it computes and how it is launched). One block = 16 query rows of one KV
// head (the G heads of the group, for each of the step's tokens) x one split
// of the context; its 4 warps each take a contiguous run of 16-key steps,
// keep an online softmax in registers, and merge in shared memory at the end;
// vb_attn_dec_combine merges the used splits. K/V rows go from global memory
// straight into mma B fragments with 16-byte loads (no shared-memory staging:
// each K/V element is used by exactly one warp), and each KV row is read once
// per block, i.e. once for all the query heads of its group.
#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernels/attention_mma.h"

namespace vibrant::codegen {

std::string AttnDecodeSource() {
  return R"CUDA(
// ---- decode attention (codegen/kernels/attention_decode.cc)
// The pieces of the decode kernel that the paged kernel (attention_paged.cc)
// shares: Q into A fragments, a warp's key steps, the block's warp merge and
// its partial. Only how a key's cache row and a row's partial are found
// differs between the two, so those come as functions.

// Query row qr (null: a padding row) as the A fragments of row half e.
template <int HD>
VB_INLINE void vb_attn_dec_load_q(const float* qr, int e, int c, u32 (&qa)[HD / 16][4]) {
#pragma unroll
  for (int i = 0; i < HD / 32; ++i) {
    float4 x0 = make_float4(0.0f, 0.0f, 0.0f, 0.0f), x1 = x0;
    if (qr != nullptr) {
      x0 = *(const float4*)(qr + 32 * i + 8 * c);
      x1 = *(const float4*)(qr + 32 * i + 8 * c + 4);
    }
    qa[2 * i][e] = vb_h2x(x0.x, x0.y);
    qa[2 * i][2 + e] = vb_h2x(x0.z, x0.w);
    qa[2 * i + 1][e] = vb_h2x(x1.x, x1.y);
    qa[2 * i + 1][2 + e] = vb_h2x(x1.z, x1.w);
  }
}

// The warp's key steps st0 .. st1 - 1 of 16 keys (online softmax), then the
// merge of the block's 4 warps into sm_o (row rr, dimension d at
// rr * RS + (d / QW) * QS + d % QW), sm_m and sm_l. row_of(key) is the cache
// row of a key, or -1 for one not to load (zeros).
template <int KT, int VT, int HD, typename RowOf>
VB_INLINE void vb_attn_dec_steps(const u32 (&qa)[HD / 16][4], const int (&prow)[2], const u8* __restrict__ kc,
                                 const u8* __restrict__ vc, int KVH, int kvh, int st0, int st1, float scale,
                                 RowOf row_of, float* sm_o, float (*sm_m)[16], float (*sm_l)[16]) {
  constexpr int NJ = HD / 8;   // O n-tiles
  constexpr int NK = HD / 32;  // 8-element K pieces per key and lane
  constexpr int NV = HD / 64;  // 8-element V pieces per key and lane
  constexpr int QW = HD / 4;   // O dimensions per lane and row
  constexpr int QS = QW + (40 - QW % 32) % 32;
  constexpr int RS = 4 * QS + 1;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  float o[NJ][4];
#pragma unroll
  for (int j = 0; j < NJ; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m[2] = {VB_NEG_INF, VB_NEG_INF}, l[2] = {0.0f, 0.0f};
  const float sl2 = scale * VB_LOG2E;
  const i64 krb = VbKv<KT>::row_bytes(HD), vrb = VbKv<VT>::row_bytes(HD);
  for (int st = st0; st < st1; ++st) {
    const int k0 = st * VB_AD_STEP;
    // Every load of the step first (48 bytes per key and lane in flight).
    typename VbKv<KT>::Raw kr[2][NK];
    typename VbKv<VT>::Raw vr[4][NV];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const i64 cr = row_of(k0 + 8 * nt + g);
      const u8* row = cr >= 0 ? kc + (cr * KVH + kvh) * krb : kc;
#pragma unroll
      for (int i = 0; i < NK; ++i) {
        kr[nt][i] = cr >= 0 ? VbKv<KT>::load(row, 32 * i + 8 * c) : VbKv<KT>::zero();
      }
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const i64 cr = row_of(k0 + 2 * c + (e & 1) + 8 * (e >> 1));
      const u8* row = cr >= 0 ? vc + (cr * KVH + kvh) * vrb : vc;
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        vr[e][i] = cr >= 0 ? VbKv<VT>::load(row, g * (HD / 8) + 8 * i) : VbKv<VT>::zero();
      }
    }
    float s[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int i = 0; i < NK; ++i) {
        const uint4 b = VbKv<KT>::f16x8(kr[nt][i]);
        vb_mma16816(s[nt], qa[2 * i], b.x, b.y);
        vb_mma16816(s[nt], qa[2 * i + 1], b.z, b.w);
      }
    }
    u32 pa[1][4];
    vb_attn_online_softmax<2, NJ>(s, k0, c, prow, sl2, m, l, o, pa);
    uint4 vh[4][NV];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
#pragma unroll
      for (int i = 0; i < NV; ++i) vh[e][i] = VbKv<VT>::f16x8(vr[e][i]);
    }
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      // B of n-tile j: {V[k0+2c][d], V[k0+2c+1][d]}, {V[k0+2c+8][d], V[k0+2c+9][d]},
      // d = g * hd/8 + j: half j % 2 of word (j % 8) / 2 of piece j / 8.
      const int w = (j & 7) >> 1;
      const u32 sel = (j & 1) ? 0x7632u : 0x5410u;
      const u32 b0 = __byte_perm(vb_u4_word(vh[0][j >> 3], w), vb_u4_word(vh[1][j >> 3], w), sel);
      const u32 b1 = __byte_perm(vb_u4_word(vh[2][j >> 3], w), vb_u4_word(vh[3][j >> 3], w), sel);
      vb_mma16816(o[j], pa[0], b0, b1);
    }
  }

  // Merge the 4 warps: M = max of their maxima, each O scaled by 2^(m_w - M)
  // and added in warp order (deterministic), L likewise.
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    l[e] += __shfl_xor_sync(0xffffffffu, l[e], 1);
    l[e] += __shfl_xor_sync(0xffffffffu, l[e], 2);
  }
  if (c == 0) {
    sm_m[warp][g] = m[0];
    sm_m[warp][g + 8] = m[1];
    sm_l[warp][g] = l[0];
    sm_l[warp][g + 8] = l[1];
  }
  __syncthreads();
  float f[2];
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    float M = VB_NEG_INF;
#pragma unroll
    for (int w = 0; w < VB_AD_WARPS; ++w) M = fmaxf(M, sm_m[w][g + 8 * e]);
    f[e] = m[e] == VB_NEG_INF ? 0.0f : exp2f(m[e] - M);
  }
  for (int w = 0; w < VB_AD_WARPS; ++w) {
    if (warp == w) {
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          const int e = x >> 1, b = x & 1;  // row g + 8e, dimension (2c + b) * hd/8 + j
          const int idx = (g + 8 * e) * RS + c * QS + b * (HD / 8) + j;
          const float val = o[j][x] * f[e];
          sm_o[idx] = w == 0 ? val : sm_o[idx] + val;
        }
      }
    }
    __syncthreads();
  }
}

// The block's partial {M, L, O[hd]} of row rr (O relative to 2^M) where
// part_of(rr) points (null: a padding row), from vb_attn_dec_steps's merge.
template <int HD, typename PartOf>
VB_INLINE void vb_attn_dec_write_part(const float* sm_o, const float (*sm_m)[16], const float (*sm_l)[16],
                                      PartOf part_of) {
  constexpr int QW = HD / 4;
  constexpr int QS = QW + (40 - QW % 32) % 32;
  constexpr int RS = 4 * QS + 1;
  for (int idx = threadIdx.x; idx < 16 * HD; idx += blockDim.x) {
    const int rr = idx / HD, d = idx - rr * HD;
    float* pp = part_of(rr);
    if (pp != nullptr) pp[2 + d] = sm_o[rr * RS + (d / QW) * QS + (d % QW)];
  }
  if (threadIdx.x < 16) {
    const int rr = threadIdx.x;
    float* pp = part_of(rr);
    if (pp != nullptr) {
      float M = VB_NEG_INF, L = 0.0f;
      for (int w = 0; w < VB_AD_WARPS; ++w) M = fmaxf(M, sm_m[w][rr]);
      for (int w = 0; w < VB_AD_WARPS; ++w) {
        if (sm_m[w][rr] != VB_NEG_INF) L += sm_l[w][rr] * exp2f(sm_m[w][rr] - M);
      }
      pp[0] = M;
      pp[1] = L;
    }
  }
}

// Block (split, kvh, rb): packed query rows r = 16 rb + i (token r / G, head
// kvh * G + r % G) of KV head kvh. Per warp and step of 16 keys from k0, the
// 16 rows are the M of m16n8k16:
//   S[16 x 16 keys] = Q[16 x hd] K^T (two n-tiles of 8 keys),
//   O[16 x hd]     += P[16 x 16 keys] V[16 keys x hd] (hd / 8 n-tiles).
// Fragments come straight from global memory, in orders that make every
// load 16 bytes (a permutation of the head dimension inside each dot
// product, and of O's columns, neither of which changes the result):
//  - K: thread (g, c) loads key k0 + 8 nt + g, elements 32 i + 8 c .. +7
//    for i < hd / 32 (the 4 lanes c read 64 contiguous bytes); pairs (0,1),
//    (2,3) are its B rows of k-step 2i, (4,5), (6,7) of k-step 2i + 1. The Q
//    A fragments use the same order.
//  - V: thread (g, c) loads keys k0 + 2c, 2c + 1, 2c + 8, 2c + 9 (its B
//    rows), elements g * hd/8 .. g * hd/8 + hd/8 - 1; n-tile j uses element
//    g * hd/8 + j. So O's column n of n-tile j is dimension n * hd/8 + j, and
//    thread (g, c) ends with dimensions (2c + b) * hd/8 + j (b = 0, 1) of
//    rows g and g + 8.
// Keys past the last position in use are never loaded (zeros instead).
template <int KT, int VT, int HD>
VB_INLINE void vb_attn_dec_impl(const float* __restrict__ q, const u8* __restrict__ kc,
                                const u8* __restrict__ vc, const int* __restrict__ pos,
                                float* __restrict__ part, int T, int H, int KVH, int n_ctx,
                                float scale, int n_split) {
  constexpr int QW = HD / 4;   // O dimensions per lane and row
  // Shared O: row rr, lane quarter c at rr * RS + c * QS; QS = 8 and RS = 1
  // (mod 32), so the 32 lanes of a warp store to 32 different banks.
  constexpr int QS = QW + (40 - QW % 32) % 32;
  constexpr int RS = 4 * QS + 1;
  __shared__ float sm_o[16 * RS];
  __shared__ float sm_m[VB_AD_WARPS][16];
  __shared__ float sm_l[VB_AD_WARPS][16];
  const int split = blockIdx.x, kvh = blockIdx.y, rb = blockIdx.z;
  int keys, steps, spw;
  const int used = vb_attn_dec_partition(pos, T, n_ctx, n_split, &keys, &steps, &spw);
  if (split >= used) return;  // the whole block: nothing of the context is left for it
  const int G = H / KVH, R = T * G;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;

  // Rows g and g + 8: their last visible key (-1: a padding row) and Q.
  int prow[2];
  u32 qa[HD / 16][4];
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int r = rb * 16 + g + 8 * e;
    const float* qr = nullptr;
    prow[e] = -1;
    if (r < R) {
      const int t = r / G;
      prow[e] = min(pos[t], n_ctx - 1);
      qr = q + ((i64)t * H + kvh * G + (r - t * G)) * HD;
    }
    vb_attn_dec_load_q<HD>(qr, e, c, qa);
  }

  const int st0 = (split * VB_AD_WARPS + warp) * spw;
  vb_attn_dec_steps<KT, VT, HD>(qa, prow, kc, vc, KVH, kvh, st0, min(st0 + spw, steps), scale,
                                [&](int key) -> i64 { return key < keys ? key : -1; }, sm_o, sm_m, sm_l);
  vb_attn_dec_write_part<HD>(sm_o, sm_m, sm_l, [&](int rr) -> float* {
    const int r = rb * 16 + rr;
    if (r >= R) return nullptr;
    const int t = r / G;
    return part + (((i64)t * H + kvh * G + (r - t * G)) * n_split + split) * (HD + 2);
  });
}

// out[t, h] = sum_s O_s * 2^(m_s - M) / sum_s l_s * 2^(m_s - M) over the
// used splits s with l_s > 0 (M = their max m_s); 0 for a row that saw no
// key. Block (r = t * H + h, 32-dimension slice): every thread helps with the
// split weights, then warp w adds the splits s = w (mod 4) for lane's
// dimension (8 loads in flight), and the 4 warp sums are added in warp order.
// The combine of output row r (its body; the paged combine shares it).
VB_INLINE void vb_attn_dec_combine_rows(const float* __restrict__ part, const int* __restrict__ pos,
                                        float* __restrict__ out, int T, int H, int hd, int n_ctx,
                                        int n_split, int r) {
  __shared__ float w_sh[VB_AD_MAX_SPLIT];
  __shared__ float red[32];
  __shared__ float acc_sh[4][32];
  int keys, steps, spw;
  const int used = vb_attn_dec_partition(pos, T, n_ctx, n_split, &keys, &steps, &spw);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const i64 w = hd + 2;
  const float* pp = part + (i64)r * n_split * w;
  float M = VB_NEG_INF;
  for (int s = threadIdx.x; s < used; s += blockDim.x) {
    if (pp[s * w + 1] > 0.0f) M = fmaxf(M, pp[s * w]);
  }
  M = vb_block_max(M, red);
  float L = 0.0f;
  for (int s = threadIdx.x; s < used; s += blockDim.x) {
    const float ls = pp[s * w + 1];
    const float ws = ls > 0.0f ? exp2f(pp[s * w] - M) : 0.0f;
    w_sh[s] = ws;
    L += ls * ws;
  }
  L = vb_block_sum(L, red);  // its barriers also publish w_sh
  const int d = blockIdx.y * 32 + lane;
  float acc = 0.0f;
  if (d < hd) {
#pragma unroll 8
    for (int s = warp; s < used; s += 4) acc += w_sh[s] * pp[s * w + 2 + d];
  }
  acc_sh[warp][lane] = acc;
  __syncthreads();
  if (warp == 0 && d < hd) {
    const float a = ((acc_sh[0][lane] + acc_sh[1][lane]) + acc_sh[2][lane]) + acc_sh[3][lane];
    out[(i64)r * hd + d] = L > 0.0f ? a / L : 0.0f;
  }
}
extern "C" __global__ void vb_attn_dec_combine(const float* __restrict__ part,
                                               const int* __restrict__ pos,
                                               float* __restrict__ out, int T, int H, int hd,
                                               int n_ctx, int n_split) {
  vb_attn_dec_combine_rows(part, pos, out, T, H, hd, n_ctx, n_split, blockIdx.x);
}
)CUDA";
}

std::string AttnDecodeEntry(const AttnConfig& c) {
  std::string s = R"CUDA(
extern "C" __global__ void __launch_bounds__($THREADS) $NAME(const float* q, const void* k, const void* v,
    const int* pos, float* part, int T, int H, int KVH, int n_ctx, float scale, int n_split) {
  vb_attn_dec_impl$TARGS(q, (const u8*)k, (const u8*)v, pos, part, T, H, KVH, n_ctx, scale,
                         n_split);
}
)CUDA";
  absl::StrReplaceAll({{"$THREADS", absl::StrCat(kAttnDecWarps * 32)},
                       {"$NAME", AttnDecodeKernelName(c)},
                       {"$TARGS", AttnTemplateArgs(c)}},
                      &s);
  return s;
}

absl::StatusOr<AttnDecodePlan> PlanAttentionDecode(const AttnShape& s, int sm_count) {
  if (absl::Status st = AttnMmaSupports(s.k_type, s.v_type, s.head_dim); !st.ok()) return st;
  if (s.T < 1 || s.n_head < 1 || s.n_head_kv < 1 || s.n_head % s.n_head_kv != 0 || s.n_ctx < 1 ||
      sm_count < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode attention: bad shape T=", s.T, " H=", s.n_head, " KVH=", s.n_head_kv,
        " n_ctx=", s.n_ctx, " on ", sm_count, " multiprocessors"));
  }
  const int64_t G = s.n_head / s.n_head_kv;
  const int64_t row_blocks = (s.T * G + kAttnDecRows - 1) / kAttnDecRows;
  if (s.n_head_kv > 65535 || row_blocks > 65535 || s.T * s.n_head > (int64_t{1} << 31) - 1 ||
      s.n_ctx > (int64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError(absl::StrCat("decode attention: T=", s.T, " H=", s.n_head,
                                                   " is too large for one launch"));
  }
  // About two blocks per multiprocessor, but never more splits than a full
  // cache has warp runs of 16-key steps.
  const int64_t per_split = s.n_head_kv * row_blocks;
  const int64_t full_steps = (s.n_ctx + kAttnDecStep - 1) / kAttnDecStep;
  const int64_t useful = (full_steps + kAttnDecWarps - 1) / kAttnDecWarps;
  int64_t n_split = (2 * int64_t{sm_count} + per_split - 1) / per_split;
  n_split = std::max<int64_t>(1, std::min({n_split, useful, int64_t{kAttnDecMaxSplits}}));
  AttnDecodePlan p;
  p.n_split = static_cast<int>(n_split);
  const AttnConfig cfg{s.k_type, s.v_type, static_cast<int>(s.head_dim)};
  p.attn.kernel = AttnDecodeKernelName(cfg);
  p.attn.grid[0] = static_cast<unsigned>(n_split);
  p.attn.grid[1] = static_cast<unsigned>(s.n_head_kv);
  p.attn.grid[2] = static_cast<unsigned>(row_blocks);
  p.attn.block[0] = kAttnDecWarps * 32;
  p.combine.kernel = kAttnDecodeCombineKernel;
  p.combine.grid[0] = static_cast<unsigned>(s.T * s.n_head);
  p.combine.grid[1] = static_cast<unsigned>((s.head_dim + 31) / 32);
  p.combine.block[0] = 128;
  p.partial_floats = s.T * s.n_head * n_split * (s.head_dim + 2);
  return p;
}

}  // namespace vibrant::codegen
