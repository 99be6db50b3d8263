// Prompt attention on tensor cores (flash attention 2; attention_mma.h says
// what it computes and how it is launched). One block = 64 query rows of one
// KV head (16 per warp; rows are (token, head) pairs with the G heads of the
// KV group adjacent, so one K/V tile in shared memory serves every query
// head that reads it); K/V tiles of 32 keys are loaded to registers one tile
// ahead, converted to f16 into shared memory, and read with ldmatrix; the
// softmax is online in registers (FA2), so nothing but the output is written.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernels/attention_mma.h"

namespace vibrant::codegen {

std::string AttnPrefillSource() {
  std::string s = R"CUDA(
// ---- prompt attention (codegen/kernels/attention_prefill.cc)
#define VB_AP_WARPS $WARPS
#define VB_AP_KEYS $KEYS

// Thread's share of a K/V tile of VB_AP_KEYS keys from k0: piece p = tid +
// i * threads is key k0 + p / (hd/8), elements 8 (p % (hd/8)) .. +7. Keys at
// or past `keys` read as 0 (never loaded).
template <int KT, int VT, int HD, int PPT>
VB_INLINE void vb_attn_pre_fetch(typename VbKv<KT>::Raw kraw[PPT], typename VbKv<VT>::Raw vraw[PPT],
                                 const u8* __restrict__ kc, const u8* __restrict__ vc, int k0,
                                 int keys, int KVH, int kvh) {
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    const int p = threadIdx.x + i * VB_AP_WARPS * 32;
    const int key = k0 + p / (HD / 8), d0 = (p % (HD / 8)) * 8;
    if (key < keys) {
      const i64 hr = (i64)key * KVH + kvh;
      kraw[i] = VbKv<KT>::load(kc + hr * VbKv<KT>::row_bytes(HD), d0);
      vraw[i] = VbKv<VT>::load(vc + hr * VbKv<VT>::row_bytes(HD), d0);
    } else {
      kraw[i] = VbKv<KT>::zero();
      vraw[i] = VbKv<VT>::zero();
    }
  }
}

// Block (x, kvh): packed rows r = 64 rb + 16 warp + i (token r / G, head
// kvh * G + r % G), rb = gridDim.x - 1 - x (the latest tokens, which see the
// most keys, first). Per warp and tile (standard fragment orders):
//   S[16 x 32 keys] = Q K^T: 4 n-tiles, B from ldmatrix of the K tile;
//   O[16 x hd] += P V: 2 k-steps of 16 keys, B from ldmatrix.trans of V.
template <int KT, int VT, int HD>
VB_INLINE void vb_attn_pre_impl(const float* __restrict__ q, const u8* __restrict__ kc,
                                const u8* __restrict__ vc, const int* __restrict__ pos,
                                float* __restrict__ out, int T, int H, int KVH, int n_ctx,
                                float scale) {
  constexpr int LD = HD + 8;  // shared row stride (halves): 16-byte rows, ldmatrix conflict-free
  constexpr int NJ = HD / 8;
  constexpr int PPT = VB_AP_KEYS * (HD / 8) / (VB_AP_WARPS * 32);
  __shared__ __align__(16) u16 sk[VB_AP_KEYS * LD];
  __shared__ __align__(16) u16 sv[VB_AP_KEYS * LD];
  const int G = H / KVH, R = T * G;
  const int rb = (int)gridDim.x - 1 - (int)blockIdx.x;
  const int kvh = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;

  // Keys the block needs: 0 .. the largest position among its tokens.
  const int r0 = rb * 16 * VB_AP_WARPS;
  const int r1 = min(R, r0 + 16 * VB_AP_WARPS);
  int kmax = -1;
  for (int t = r0 / G + lane; t <= (r1 - 1) / G; t += 32) kmax = max(kmax, pos[t]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) kmax = max(kmax, __shfl_xor_sync(0xffffffffu, kmax, o));
  const int keys = max(0, min(kmax + 1, n_ctx));

  // This warp's rows g and g + 8: last visible key (-1: padding) and Q.
  int prow[2];
  u32 qa[HD / 16][4];
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int r = r0 + 16 * warp + g + 8 * e;
    const float* qr = nullptr;
    prow[e] = -1;
    if (r < R) {
      const int t = r / G;
      prow[e] = min(pos[t], n_ctx - 1);
      qr = q + ((i64)t * H + kvh * G + (r - t * G)) * HD;
    }
#pragma unroll
    for (int ks = 0; ks < HD / 16; ++ks) {
      float2 x0 = make_float2(0.0f, 0.0f), x1 = x0;
      if (qr != nullptr) {
        x0 = *(const float2*)(qr + 16 * ks + 2 * c);
        x1 = *(const float2*)(qr + 16 * ks + 2 * c + 8);
      }
      qa[ks][e] = vb_h2x(x0.x, x0.y);
      qa[ks][2 + e] = vb_h2x(x1.x, x1.y);
    }
  }
  int wmax = max(prow[0], prow[1]);  // the warp's last visible key
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) wmax = max(wmax, __shfl_xor_sync(0xffffffffu, wmax, o));

  float o[NJ][4];
#pragma unroll
  for (int j = 0; j < NJ; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m[2] = {VB_NEG_INF, VB_NEG_INF}, l[2] = {0.0f, 0.0f};
  const float sl2 = scale * VB_LOG2E;
  typename VbKv<KT>::Raw kraw[PPT];
  typename VbKv<VT>::Raw vraw[PPT];
  const int n_tiles = (keys + VB_AP_KEYS - 1) / VB_AP_KEYS;
  if (n_tiles > 0) vb_attn_pre_fetch<KT, VT, HD, PPT>(kraw, vraw, kc, vc, 0, keys, KVH, kvh);
  for (int tile = 0; tile < n_tiles; ++tile) {
#pragma unroll
    for (int i = 0; i < PPT; ++i) {
      const int p = threadIdx.x + i * VB_AP_WARPS * 32;
      const int at = (p / (HD / 8)) * LD + (p % (HD / 8)) * 8;
      *(uint4*)&sk[at] = VbKv<KT>::f16x8(kraw[i]);
      *(uint4*)&sv[at] = VbKv<VT>::f16x8(vraw[i]);
    }
    __syncthreads();
    const int k0 = tile * VB_AP_KEYS;
    if (tile + 1 < n_tiles) {
      vb_attn_pre_fetch<KT, VT, HD, PPT>(kraw, vraw, kc, vc, k0 + VB_AP_KEYS, keys, KVH, kvh);
    }
    if (wmax >= k0) {  // else every key of the tile is past this warp's rows
      float s[VB_AP_KEYS / 8][4];
#pragma unroll
      for (int nt = 0; nt < VB_AP_KEYS / 8; ++nt) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < HD / 32; ++kk) {
          // Matrices: keys 8 nt .. +7 x dims 32 kk + 8 (lane / 8) .. +7.
          u32 b[4];
          vb_ldsm_x4(b, &sk[(8 * nt + (lane & 7)) * LD + 32 * kk + 8 * (lane >> 3)]);
          vb_mma16816(s[nt], qa[2 * kk], b[0], b[1]);
          vb_mma16816(s[nt], qa[2 * kk + 1], b[2], b[3]);
        }
      }
      u32 pa[VB_AP_KEYS / 16][4];
      vb_attn_online_softmax<VB_AP_KEYS / 8, NJ>(s, k0, c, prow, sl2, m, l, o, pa);
#pragma unroll
      for (int kp = 0; kp < VB_AP_KEYS / 16; ++kp) {
#pragma unroll
        for (int jp = 0; jp < HD / 16; ++jp) {
          // Matrices (transposed): keys 16 kp + 8 ((lane / 8) % 2) .. +7 x
          // dims 16 jp + 8 (lane / 16) .. +7: B of n-tiles 2 jp and 2 jp + 1.
          u32 b[4];
          vb_ldsm_x4_t(b, &sv[(16 * kp + (lane & 7) + 8 * ((lane >> 3) & 1)) * LD + 16 * jp +
                              8 * (lane >> 4)]);
          vb_mma16816(o[2 * jp], pa[kp], b[0], b[1]);
          vb_mma16816(o[2 * jp + 1], pa[kp], b[2], b[3]);
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int e = 0; e < 2; ++e) {
    l[e] += __shfl_xor_sync(0xffffffffu, l[e], 1);
    l[e] += __shfl_xor_sync(0xffffffffu, l[e], 2);
  }
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int r = r0 + 16 * warp + g + 8 * e;
    if (r >= R) continue;
    const int t = r / G;
    float* orow = out + ((i64)t * H + kvh * G + (r - t * G)) * HD;
    const float inv = l[e] > 0.0f ? 1.0f / l[e] : 0.0f;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      *(float2*)(orow + 8 * j + 2 * c) = make_float2(o[j][2 * e] * inv, o[j][2 * e + 1] * inv);
    }
  }
}
)CUDA";
  absl::StrReplaceAll({{"$WARPS", absl::StrCat(kAttnPreWarps)}, {"$KEYS", absl::StrCat(kAttnPreKeys)}},
                      &s);
  return s;
}

std::string AttnPrefillEntry(const AttnConfig& c) {
  std::string s = R"CUDA(
extern "C" __global__ void __launch_bounds__($THREADS) $NAME(const float* q, const void* k, const void* v,
    const int* pos, float* out, int T, int H, int KVH, int n_ctx, float scale) {
  vb_attn_pre_impl$TARGS(q, (const u8*)k, (const u8*)v, pos, out, T, H, KVH, n_ctx, scale);
}
)CUDA";
  absl::StrReplaceAll({{"$THREADS", absl::StrCat(kAttnPreWarps * 32)},
                       {"$NAME", AttnPrefillKernelName(c)},
                       {"$TARGS", AttnTemplateArgs(c)}},
                      &s);
  return s;
}

absl::StatusOr<AttnLaunch> PlanAttentionPrefill(const AttnShape& s, int sm_count) {
  if (absl::Status st = AttnMmaSupports(s.k_type, s.v_type, s.head_dim); !st.ok()) return st;
  if (s.T < 1 || s.n_head < 1 || s.n_head_kv < 1 || s.n_head % s.n_head_kv != 0 || s.n_ctx < 1 ||
      sm_count < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt attention: bad shape T=", s.T, " H=", s.n_head, " KVH=", s.n_head_kv,
        " n_ctx=", s.n_ctx, " on ", sm_count, " multiprocessors"));
  }
  const int64_t rows = s.T * (s.n_head / s.n_head_kv);
  const int64_t blocks = (rows + kAttnPreRows - 1) / kAttnPreRows;
  if (blocks > (int64_t{1} << 31) - 1 || s.n_head_kv > 65535 ||
      s.T * s.n_head > (int64_t{1} << 31) - 1 || s.n_ctx > (int64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError(absl::StrCat("prompt attention: T=", s.T, " H=", s.n_head,
                                                   " is too large for one launch"));
  }
  AttnLaunch l;
  l.kernel = AttnPrefillKernelName(AttnConfig{s.k_type, s.v_type, static_cast<int>(s.head_dim)});
  l.grid[0] = static_cast<unsigned>(blocks);
  l.grid[1] = static_cast<unsigned>(s.n_head_kv);
  l.block[0] = kAttnPreWarps * 32;
  return l;
}

}  // namespace vibrant::codegen
