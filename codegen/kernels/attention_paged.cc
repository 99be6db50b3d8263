// Paged attention on tensor cores (continuous batching: ir/ops.h, the paged
// variant of attention). The decode kernel of attention_decode.cc (flash
// decoding, mma.sync m16n8k16: its Q fragments, key steps, warp merge and
// partials are the same functions, vb_attn_dec_*, so the same numbers as
// there) with two changes:
//  - a block serves the G query heads of ONE token (its sequence's K/V rows
//    are not another token's): row blocks are (token, ceil(G / 16) groups of
//    16 heads), so for G = 8 half of the 16 mma rows are padding (decode is
//    bandwidth-bound: the K/V bytes, read once per token and KV head, are
//    what counts);
//  - key j of token t's sequence s = seq[t] is cache row
//    table[s * max_blocks + j / block_size] * block_size + j % block_size; the
//    keys in use are that token's 0 .. pos[t] (capped at max_blocks *
//    block_size), split over n_split * 4 warps as the decode kernel splits its
//    keys. A block id outside [0, n_rows / block_size) or a sequence id
//    outside [0, n_seq) reads nothing (zeros; the runtime checks the table
//    before a step, so this never happens in a valid step).
// Every T (decode tokens of many sequences and prefill chunks mixed) runs this
// kernel; a chunk of many tokens of one sequence reads its K/V once per token
// (a paged flash-attention prefill kernel, tiles per sequence, is the next
// step for long prompts). The combine is vb_attn_paged_combine: per row, the
// splits its own token used.
//
// Launch (PlanAttentionPaged): attn grid (n_split, KVH, T * ceil(G / 16)),
// block 128, args (q, k, v, pos, seq, table, part, T, H, KVH, n_rows, scale,
// n_split, n_seq, max_blocks, block_size); combine grid (T * H, ceil(hd /
// 32)), block 128, args (part, pos, out, T, H, hd, ctx, n_split) with ctx =
// max_blocks * block_size. Scratch: T * H * n_split * (hd + 2) floats.
#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernels/attention_mma.h"

namespace vibrant::codegen {

std::string AttnPagedSource() {
  return R"CUDA(
// ---- paged decode attention (codegen/kernels/attention_paged.cc)
// The cache row of key `key` of sequence `s`, or -1 when outside the pool.
VB_INLINE i64 vb_paged_row(const int* __restrict__ table, int s, int key, int n_seq, int max_blocks,
                           int block_size, int n_rows) {
  if (s < 0 || s >= n_seq) return -1;
  const int b = key / block_size;
  if (b >= max_blocks) return -1;
  const int blk = table[(i64)s * max_blocks + b];
  if (blk < 0 || (i64)blk * block_size >= n_rows) return -1;
  return (i64)blk * block_size + (key - b * block_size);
}

template <int KT, int VT, int HD>
VB_INLINE void vb_attn_paged_impl(const float* __restrict__ q, const u8* __restrict__ kc,
                                  const u8* __restrict__ vc, const int* __restrict__ pos,
                                  const int* __restrict__ seq, const int* __restrict__ table,
                                  float* __restrict__ part, int T, int H, int KVH, int n_rows,
                                  float scale, int n_split, int n_seq, int max_blocks,
                                  int block_size) {
  constexpr int QW = HD / 4;
  constexpr int QS = QW + (40 - QW % 32) % 32;
  constexpr int RS = 4 * QS + 1;
  __shared__ float sm_o[16 * RS];
  __shared__ float sm_m[VB_AD_WARPS][16];
  __shared__ float sm_l[VB_AD_WARPS][16];
  const int split = blockIdx.x, kvh = blockIdx.y;
  const int G = H / KVH;
  const int RB = (G + 15) / 16;  // row blocks per token
  const int t = blockIdx.z / RB, rb = blockIdx.z - t * RB;
  if (t >= T) return;
  const int ctx = max_blocks * block_size;
  const int s_id = seq[t];
  int keys, steps, spw;
  const int used = vb_attn_dec_partition(pos + t, 1, ctx, n_split, &keys, &steps, &spw);
  if (split >= used) return;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;

  // Rows g and g + 8: heads kvh * G + 16 rb + g (+ 8) of token t.
  int prow[2];
  u32 qa[HD / 16][4];
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int hr = rb * 16 + g + 8 * e;
    const float* qr = nullptr;
    prow[e] = -1;
    if (hr < G) {
      prow[e] = min(pos[t], ctx - 1);
      qr = q + ((i64)t * H + kvh * G + hr) * HD;
    }
    vb_attn_dec_load_q<HD>(qr, e, c, qa);
  }

  const int st0 = (split * VB_AD_WARPS + warp) * spw;
  vb_attn_dec_steps<KT, VT, HD>(
      qa, prow, kc, vc, KVH, kvh, st0, min(st0 + spw, steps), scale,
      [&](int key) -> i64 {
        return key < keys ? vb_paged_row(table, s_id, key, n_seq, max_blocks, block_size, n_rows) : -1;
      },
      sm_o, sm_m, sm_l);
  vb_attn_dec_write_part<HD>(sm_o, sm_m, sm_l, [&](int rr) -> float* {
    const int hr = rb * 16 + rr;
    return hr < G ? part + (((i64)t * H + kvh * G + hr) * n_split + split) * (HD + 2) : nullptr;
  });
}

// The combine of vb_attn_dec_combine with each row's own token's splits.
extern "C" __global__ void vb_attn_paged_combine(const float* __restrict__ part,
                                                 const int* __restrict__ pos,
                                                 float* __restrict__ out, int T, int H, int hd,
                                                 int ctx, int n_split) {
  const int r = blockIdx.x;
  const int t = r / H;
  vb_attn_dec_combine_rows(part, pos + t, out, 1, H, hd, ctx, n_split, r);
}
)CUDA";
}

std::string AttnPagedKernelName(const AttnConfig& c) {
  std::string name = AttnDecodeKernelName(c);
  return absl::StrReplaceAll(name, {{"vb_attn_dec_", "vb_attn_paged_"}});
}

std::string AttnPagedEntry(const AttnConfig& c) {
  std::string s = R"CUDA(
extern "C" __global__ void __launch_bounds__($THREADS) $NAME(const float* q, const void* k, const void* v,
    const int* pos, const int* seq, const int* table, float* part, int T, int H, int KVH, int n_rows,
    float scale, int n_split, int n_seq, int max_blocks, int block_size) {
  vb_attn_paged_impl$TARGS(q, (const u8*)k, (const u8*)v, pos, seq, table, part, T, H, KVH, n_rows,
                           scale, n_split, n_seq, max_blocks, block_size);
}
)CUDA";
  absl::StrReplaceAll({{"$THREADS", absl::StrCat(kAttnDecWarps * 32)},
                       {"$NAME", AttnPagedKernelName(c)},
                       {"$TARGS", AttnTemplateArgs(c)}},
                      &s);
  return s;
}

absl::StatusOr<AttnPagedPlan> PlanAttentionPaged(const AttnShape& s, int64_t ctx_per_seq,
                                                 int sm_count) {
  if (absl::Status st = AttnMmaSupports(s.k_type, s.v_type, s.head_dim); !st.ok()) return st;
  if (s.T < 1 || s.n_head < 1 || s.n_head_kv < 1 || s.n_head % s.n_head_kv != 0 || s.n_ctx < 1 ||
      ctx_per_seq < 1 || sm_count < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "paged attention: bad shape T=", s.T, " H=", s.n_head, " KVH=", s.n_head_kv, " rows=", s.n_ctx,
        " per sequence ", ctx_per_seq, " on ", sm_count, " multiprocessors"));
  }
  const int64_t G = s.n_head / s.n_head_kv;
  const int64_t rb = (G + kAttnDecRows - 1) / kAttnDecRows;
  if (s.n_head_kv > 65535 || s.T * rb > 65535 || s.T * s.n_head > (int64_t{1} << 31) - 1 ||
      s.n_ctx > (int64_t{1} << 31) - 1 || ctx_per_seq > (int64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("paged attention: T=", s.T, " H=", s.n_head, " is too large for one launch"));
  }
  // About two blocks per multiprocessor at this T, no more splits than one
  // sequence's context has warp runs of 16-key steps.
  const int64_t per_split = s.n_head_kv * rb * s.T;
  const int64_t full_steps = (ctx_per_seq + kAttnDecStep - 1) / kAttnDecStep;
  const int64_t useful = (full_steps + kAttnDecWarps - 1) / kAttnDecWarps;
  int64_t n_split = (2 * int64_t{sm_count} + per_split - 1) / per_split;
  n_split = std::max<int64_t>(1, std::min({n_split, useful, int64_t{kAttnDecMaxSplits}}));
  AttnPagedPlan p;
  p.n_split = static_cast<int>(n_split);
  p.row_blocks_per_token = static_cast<int>(rb);
  const AttnConfig cfg{s.k_type, s.v_type, static_cast<int>(s.head_dim)};
  p.attn.kernel = AttnPagedKernelName(cfg);
  p.attn.grid[0] = static_cast<unsigned>(n_split);
  p.attn.grid[1] = static_cast<unsigned>(s.n_head_kv);
  p.attn.grid[2] = static_cast<unsigned>(s.T * rb);
  p.attn.block[0] = kAttnDecWarps * 32;
  p.combine.kernel = kAttnPagedCombineKernel;
  p.combine.grid[0] = static_cast<unsigned>(s.T * s.n_head);
  p.combine.grid[1] = static_cast<unsigned>((s.head_dim + 31) / 32);
  p.combine.block[0] = 128;
  p.partial_floats = s.T * s.n_head * n_split * (s.head_dim + 2);
  return p;
}

}  // namespace vibrant::codegen
