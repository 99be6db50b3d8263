// Attention on tensor cores (mma.sync m16n8k16, f16 operands, f32
// accumulation; NVRTC, sm_80+): a flash-decoding kernel for one-token and
// small-T steps (attention_decode.cc) and a flash-attention kernel for prompts
// (attention_prefill.cc), with their shared helpers (attention_common.cc).
// Each kernel comes with its launch rule (grid, block, shared memory,
// arguments) as a function here, so that the compiler's dispatch lowering
// can record it in the plan; the runtime only evaluates it.
//
// Both kernels compute the op of ir/ops.h (GQA, causal by position) with
// these numeric choices, the same as llama.cpp's CUDA flash attention:
// - q is rounded to f16 (nearest even); f16 K/V are used as stored; q8_0 and
//   f32 K/V are dequantized (code * d, one float product, as the CPU) and
//   rounded to f16;
// - scores are f32 sums of f16 products (the tensor cores' accumulation),
//   times scale * log2(e); softmax runs in base 2 with a running maximum
//   (online softmax); each probability is rounded to f16 before it weights V,
//   and the row sum adds the rounded values, so the output is a convex
//   combination of the V rows;
// - the result is divided by the row sum in f32.
// So results differ from cpu::Attention by f16 rounding, not bit for bit: the
// tests assert 4e-3 * max|v| (f16 caches) and 8e-3 (q8_0/f32) for |q|, |k|,
// |v| <= 1 and head_dim <= 128 (derivation in codegen/attention_host_test.cc;
// the emulated kernels measure 7e-6 .. 2.5e-4).
//
// Both read only the cache rows a step can see (rows 0 .. max position), never
// the rest of the capacity, and take the positions from device memory, so a
// captured CUDA graph replays them at any position.
#ifndef VIBRANT_CODEGEN_KERNELS_ATTENTION_MMA_H_
#define VIBRANT_CODEGEN_KERNELS_ATTENTION_MMA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/dtype.h"

namespace vibrant::codegen {

// One instantiation: the K and V cache types and the head size.
struct AttnConfig {
  DType k_type = DType::kF16;  // f32, f16 or q8_0
  DType v_type = DType::kF16;
  int head_dim = 128;  // 64 or 128
  friend bool operator<(const AttnConfig& a, const AttnConfig& b) {
    if (a.k_type != b.k_type) return a.k_type < b.k_type;
    if (a.v_type != b.v_type) return a.v_type < b.v_type;
    return a.head_dim < b.head_dim;
  }
  friend bool operator==(const AttnConfig& a, const AttnConfig& b) {
    return a.k_type == b.k_type && a.v_type == b.v_type && a.head_dim == b.head_dim;
  }
};

// OK when the tensor-core kernels serve (k, v, head_dim): cache types f32,
// f16, q8_0 and head_dim 64 or 128 (96, 80, 256 ... keep the scalar
// vb_attn_split_* kernels of attention.cc). The error says why not.
absl::Status AttnMmaSupports(DType k_type, DType v_type, int64_t head_dim);

// Kernel names: vb_attn_dec_<k>_<v>_hd<N> and vb_attn_pre_<k>_<v>_hd<N>
// ("vb_attn_dec_f16_f16_hd128", "vb_attn_pre_q8_0_q8_0_hd64").
std::string AttnDecodeKernelName(const AttnConfig& c);
std::string AttnPrefillKernelName(const AttnConfig& c);
inline constexpr char kAttnDecodeCombineKernel[] = "vb_attn_dec_combine";

// The CUDA source of the shared helpers, both kernel templates, the combine
// kernel and one extern "C" entry point per config (deduplicated, sorted).
// Needs PreludeSource before it. Empty configs give the helpers and the
// combine only.
std::string AttentionMmaSource(const std::vector<AttnConfig>& configs);

// Fixed parameters of the kernels (attention_decode.cc, attention_prefill.cc).
inline constexpr int kAttnDecWarps = 4;         // warps per decode block
inline constexpr int kAttnDecRows = 16;         // query rows per decode block
inline constexpr int kAttnDecStep = 16;         // keys per warp step
inline constexpr int kAttnDecMaxSplits = 1024;  // the combine's shared table
inline constexpr int kAttnPreWarps = 4;         // warps per prefill block
inline constexpr int kAttnPreRows = 64;         // query rows per prefill block (16 per warp)
inline constexpr int kAttnPreKeys = 32;         // keys per shared-memory tile

// A kernel launch: what cudaLaunchKernel needs besides the argument values.
struct AttnLaunch {
  std::string kernel;
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  int dynamic_smem = 0;  // bytes; the kernels use static shared memory only
};

// The op's shape at a launch. T is the step's token count (known on the host);
// the positions are device data the kernels read.
struct AttnShape {
  int64_t T = 1;
  int64_t n_head = 0;     // H
  int64_t n_head_kv = 0;  // KVH, divides H
  int64_t head_dim = 0;
  int64_t n_ctx = 0;      // cache capacity C (rows)
  DType k_type = DType::kF16;
  DType v_type = DType::kF16;
};

// Decode (flash decoding). Two launches on one stream (combine: grid (T * H,
// ceil(hd / 32)), block 128):
//   attn:    (const float* q [T, H, hd], const void* k, const void* v
//             [C, KVH, hd] caches, const int* pos [T], float* part,
//             int T, int H, int KVH, int n_ctx, float scale, int n_split)
//   combine: (const float* part, const int* pos, float* out [T, H, hd],
//             int T, int H, int hd, int n_ctx, int n_split)
// `part` is scratch of partial_floats floats, written by attn and read by
// combine (nothing else; no initialization needed).
// Work: each block serves 16 query rows of one KV head (the rows (t, g) of
// the step's T tokens and the G = H / KVH heads that share the KV head, so a
// KV row is read once per 16 rows, e.g. once per token for G = 8) and one of
// n_split splits of the context; the keys in use (0 .. max_t pos[t]) are cut
// into steps of 16, spread evenly over the n_split * 4 warps, each warp a
// contiguous run (DecodePartition). Blocks past the used splits return at
// once; the combine reads only the used splits. n_split depends on the GPU
// and the shape, never on the positions: it is chosen so that the grid has
// about two blocks per multiprocessor (and no more splits than the capacity
// can use), so a short context costs the same as in a small cache.
// As dispatch rules in T (runtime/dispatch.h): the kernels are correct for
// any T >= 1 and any n_split in [1, kAttnDecMaxSplits] (an argument), so a
// launch serving a range of T keeps one n_split (PlanAttentionDecode's at the
// range's smallest T is the fast choice for T = 1) and its grids and scratch
// are rules: attn grid (n_split, KVH, ceil(T * G / 16)), combine grid
// (T * H, hd / 32), partial floats T * H * n_split * (hd + 2).
struct AttnDecodePlan {
  AttnLaunch attn;
  AttnLaunch combine;
  int n_split = 1;
  int64_t partial_floats = 0;  // T * H * n_split * (hd + 2)
};
absl::StatusOr<AttnDecodePlan> PlanAttentionDecode(const AttnShape& s, int sm_count);

// How a decode step's keys are split (the kernels' vb_attn_dec_partition):
// keys = min(max_t pos[t] + 1, n_ctx) (0 when negative), steps = ceil(keys /
// 16), steps_per_warp = max(1, ceil(steps / (n_split * 4))), warp w of split
// s takes steps [(4 s + w) * steps_per_warp, ... + steps_per_warp) ∩ [0,
// steps), used = ceil(steps / (4 * steps_per_warp)) <= n_split.
struct DecodePartition {
  int keys = 0;
  int steps = 0;
  int steps_per_warp = 1;
  int used = 0;
};
DecodePartition PartitionDecode(int max_pos, int n_ctx, int n_split);

// Prefill (flash attention), one launch:
//   (const float* q [T, H, hd], const void* k, const void* v, const int* pos
//    [T], float* out [T, H, hd], int T, int H, int KVH, int n_ctx, float scale)
// Grid (ceil(T * G / 64), KVH) (a rule in T), block 128, no dynamic shared
// memory, no scratch: each block serves 64 query rows of
// one KV head (16 per warp; rows are (t, g) pairs, g fastest, so GQA heads
// share every K/V tile) over keys 0 .. max pos of its tokens, in tiles of 32
// keys staged in shared memory (the next tile's loads in flight while the
// current one is multiplied); blocks with the latest tokens (the most keys)
// start first. Any T >= 1, positions in any order (causal by each token's
// position); typical use T >= 16, below that the decode kernel spreads the
// keys over more of the GPU.
absl::StatusOr<AttnLaunch> PlanAttentionPrefill(const AttnShape& s, int sm_count);

// The pieces AttentionMmaSource assembles (one file each).
std::string AttnCommonSource();                             // attention_common.cc
std::string AttnDecodeSource();                             // attention_decode.cc
std::string AttnDecodeEntry(const AttnConfig& c);
std::string AttnPrefillSource();                            // attention_prefill.cc
std::string AttnPrefillEntry(const AttnConfig& c);
std::string AttnTemplateArgs(const AttnConfig& c);          // "<VB_KV_F16, VB_KV_F16, 128>"

// Which of the two a step of T tokens should use (a measured choice belongs
// to the compiler's select-kernels; this is the default rule): decode for T
// below kAttnPrefillMinTokens.
inline constexpr int kAttnPrefillMinTokens = 16;

}  // namespace vibrant::codegen

#endif  // VIBRANT_CODEGEN_KERNELS_ATTENTION_MMA_H_
