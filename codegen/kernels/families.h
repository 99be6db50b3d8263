// CUDA C++ source text of the kernel families, one file per family (as
// ggml-cuda keeps one .cu per family). Each function returns a fragment of a
// single NVRTC translation unit; codegen/kernel_source.h assembles them.
//
// Conventions shared by every fragment (see PreludeSource):
// - Kernels are `extern "C" __global__` with a "vb_" prefix, so that the
//   runtime finds them by name (cudaLibraryGetKernel) without C++ mangling.
// - Scalars: u8/u16/u32/i64 typedefs; f16 <-> f32 through PTX cvt (exact
//   widening, round-to-nearest-even narrowing, as runtime/cpu/dequantize.h).
// - Dequantization uses __fmul_rn / __fadd_rn / __fsub_rn so that no fused
//   multiply-add changes a value: a dequantized weight is bit-identical to
//   the CPU reference's. Dot products accumulate in float (order differs
//   from the CPU's, so matmul results agree to rounding, not bit for bit).
// - The self-contained source includes no header (NVRTC needs none).
#ifndef VIBRANT_CODEGEN_KERNELS_FAMILIES_H_
#define VIBRANT_CODEGEN_KERNELS_FAMILIES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "ir/dtype.h"
#include "ir/ops.h"

namespace vibrant::codegen {

// Typedefs, f16/bf16 conversions, byte loads, warp and block reductions.
std::string PreludeSource();

// Block decoders: one `struct W_<type>` per weight type with
//   enum { QK (elements per block), BYTES (bytes per block), PLAIN };
//   static void deq8(const u8* row, int g, int K, float v[8]);
// which decodes elements 8g .. 8g+7 of a row of K elements (plain types:
// elements at or past K read as 0; quantized rows are whole blocks).
// Types: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K,
// q5_K, q6_K, q8_K, iq4_nl, iq4_xs.
std::string DecodersSource(const std::vector<DType>& types);
// Whether the CUDA backend can read weights of type `t`.
bool CudaSupportsWeightType(DType t);
// The suffix kernels of a type use ("q4_K", "f32", ...).
std::string TypeTag(DType t);

// matmul(x[T, K], w[N, K] of `t`, bias) for each type in `types`:
//   vb_matmul1_<tag>: one token per warp pass (decode, T small);
//   vb_matmul8_<tag>: 8 tokens per pass (prefill): each weight row is decoded
//   once per 8 tokens.
// Both: block of kMatmulThreads threads, `wpr` warps per output row (1, 2,
// 4 or 8: MatmulWarpsPerRow), grid (ceil(N / (warps / wpr)), ceil(T / tokens
// per pass)).
// Arguments: (const u8* w, i64 row_bytes, const float* x, const float* bias
// or null, float* out, int K, int N, int T, int wpr).
std::string MatmulSource(const std::vector<DType>& types);
inline constexpr int kMatmulThreads = 256;
// Warps per row for N rows of K elements on a GPU of `sm_count`
// multiprocessors: 1, doubled (up to 8) while the grid has fewer than two
// blocks per multiprocessor and every thread still gets two 8-element groups.
int MatmulWarpsPerRow(int64_t N, int64_t K, int sm_count);
std::string MatmulKernelName(DType t, int tokens_per_pass);

// Mat-vec on 8-bit activations (decode path; matvec_q8.cc):
//   vb_quantize_q8(const float* x, i8* qx, float2* ds, i64 nblocks): rounds
//     x in blocks of 32 (d = amax / 127, q = round(x / d)); grid
//     ceil(nblocks / (kQuantizeQ8Threads / 32)), block kQuantizeQ8Threads.
//   vb_mvq<TT>_<tag>(const u8* w, i64 row_bytes, const i8* qx, const float2*
//     ds, const float* bias or null, float* out, int K, int N, int T): TT = 1
//     or 8 tokens per pass; grid (ceil(N / (kMatvecQ8Threads / 32)),
//     ceil(T / TT)), block kMatvecQ8Threads; one warp per output row.
// For the weight types where MatvecQ8Supports (q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K,
// iq4_nl, iq4_xs).
std::string MatvecQ8Source(const std::vector<DType>& types);
// Only the per-type dot products (`struct Q8D_<tag>`) and their helpers, for
// the host test that compiles them as C++.
std::string MatvecQ8DotSource(const std::vector<DType>& types);
bool MatvecQ8Supports(DType t);
std::string MatvecQ8KernelName(DType t, int tokens_per_pass);
inline constexpr int kMatvecQ8Threads = 128;
//   vb_mvs_<tag>(const i8* qx, const float2* ds, int K, i64 row_bytes, then
//     for each of three weights that read the same x: const u8* w, const
//     float* bias or null, float* out, int n (0: unused)): one token, rows of
//     the three weights one after another; grid ceil((n0 + n1 + n2) /
//     (kMatvecQ8Threads / 32)), block kMatvecQ8Threads.
std::string MatvecQ8MultiKernelName(DType t);
inline constexpr int kQuantizeQ8Threads = 256;

// f16 operands for the prefill GEMM (cuBLASLt, runtime/cuda/cublaslt.h):
//   vb_dequant_f16_<tag>(const u8* w, i64 row_bytes, u16* out, int K, int r0,
//       int rows): rows [r0, r0 + rows) of w[N, K] decoded (deq8) and rounded
//       to f16 (nearest even) into out[rows, K], row-major (row r of the
//       chunk at out + r * K; 16-byte stores when K % 8 == 0);
//   vb_f32_to_f16(const float* x, u16* out, i64 n): n elements, rounded to
//       nearest even (|x| > 65504 becomes inf, as any f16 GEMM input);
//   vb_q8a_to_f16(const i8* qx, const float2* ds, u16* out, i64 n): the
//       values of n q8a elements (code * d), rounded to f16.
// Both grid-stride, block kDequantThreads.
std::string DequantSource(const std::vector<DType>& types);
inline constexpr int kDequantThreads = 256;
std::string DequantF16KernelName(DType t);

// Prefill GEMMs on quantized weights on tensor cores, no dequantized copy
// in memory (mmq.cc): for the types where MmqSupports,
//   vb_mmq_<tag>_m<BM>(const u16* x [T, K] f16, int T, int K, i64 row_bytes,
//       then for each of up to three weights that read x: const u8* w [n, K],
//       const float* bias or null, float* out [T, n], int n (0: unused))
// out = x . w^T (+ bias) in f32 (f16 products, f32 accumulation; weights
// decoded exactly as vb_dequant_f16_<tag> rounds them). BM = 64 or 128 token
// rows per block, kMmqBn weight rows: grid (ceil(T / BM), sum of ceil(n /
// kMmqBn)), block kMmqThreads, MmqSharedBytes(BM) bytes of dynamic shared
// memory (more than 48 KiB: the runtime raises the kernel's limit). Needs
// sm_80+ and K % 32 == 0.
bool MmqSupports(DType t);
std::string MmqKernelName(DType t, int bm);
int MmqSharedBytes(int bm);
std::string MmqSource(const std::vector<DType>& types);
// The pieces (the host emulator test compiles them as C++).
std::string MmqCommonSource();
std::string MmqTypesSource(const std::vector<DType>& types);
std::string MmqMainSource();
inline constexpr int kMmqBn = 128;      // weight rows per block
inline constexpr int kMmqKs = 64;       // columns per pipeline step
inline constexpr int kMmqLd = 72;       // shared row stride (halves): kMmqKs + 8
inline constexpr int kMmqXStages = 3;   // cp.async stages of the x tiles
inline constexpr int kMmqThreads = 256;

// embedding: vb_embed_<tag>(const u8* table, i64 row_bytes, const int* ids,
// float* out, int D, int V): grid T, block kEmbedThreads. An id outside
// [0, V) writes NaN (the runtime checks ids before it launches).
std::string EmbeddingSource(const std::vector<DType>& types);
inline constexpr int kEmbedThreads = 256;
std::string EmbeddingKernelName(DType t);

// Mixture of experts (moe.cc):
//   vb_moe_topk(const float* logits, int* ids, int E, int k, int T) and
//   vb_moe_weights(const float* logits, const int* ids, float* w, int E, int k,
//       int T, int norm): one thread per token, grid ceil(T / kMoeRouterThreads);
//   vb_moe_sum(const float* y, const float* w, float* out, int k, int D, i64 n = T * D):
//       grid-stride, block kElementwiseThreads;
//   vb_matmul_id_<tag>(const u8* w, i64 row_bytes, i64 expert_bytes, const float* x,
//       int x_per_slot, const int* ids, float* out, int K, int N, int k, int E):
//       grid (ceil(N / (kMatmulIdThreads / 32)), T * k), block kMatmulIdThreads.
// MoeRouterSource(): only the router's device functions, for the host test.
std::string MoeSource(const std::vector<DType>& types);
std::string MoeRouterSource();
std::string MatmulIdKernelName(DType t);
inline constexpr int kMoeRouterThreads = 64;
inline constexpr int kMatmulIdThreads = 128;

// rms_norm: vb_rms_norm(const float* x, float* out, int D, float eps):
// grid = rows, block kNormThreads. Sum of float squares in double, as the CPU.
std::string NormSource();
inline constexpr int kNormThreads = 256;

// Every elementwise op of the registry (ir/ops.h: OpInfo::scalar), grid-stride:
//   binary (add, mul): vb_<op>(const float* a, const float* b, float* out, i64 n, i64 nb)
//     (b broadcast: b[i % nb]);
//   unary (silu, gelu): vb_<op>(const float* x, float* out, i64 n);
// and scale (an attribute, so not a registry scalar function):
//   vb_scale(const float* x, float* out, i64 n, float s).
std::string ElementwiseSource();
std::string ElementwiseKernelName(ir::OpKind kind);
inline constexpr int kElementwiseThreads = 256;

// rope: vb_rope(const float* x, const int* pos, const float* freq_factors or
// null, float* out, int H, int hd, int n_rot, int mode, float theta_scale,
// float freq_scale): grid (T * H), block kRopeThreads. The angle follows the
// CPU's float sequence exactly (th_0 = p, th_{i+1} = th_i * theta_scale).
std::string RopeSource();
inline constexpr int kRopeThreads = 64;

// kv_store: vb_kv_store_f16 / vb_kv_store_f32(const float* src, const int*
// pos, void* cache, i64 T, int row, int n_ctx): grid-stride over T * row. A
// position outside [0, n_ctx) is skipped (the runtime checks them first).
// vb_kv_store_q8_0 (same arguments; row % 32 == 0): one warp per q8_0 block,
// grid-stride over T * row / 32 blocks (so grid = ceil(T * row / 32 /
// (kKvStoreThreads / 32)) covers them all in one pass); bit-identical to
// cpu::KvStore.
std::string KvStoreSource();
inline constexpr int kKvStoreThreads = 256;

// attention (split over the context, "flash decoding"; scalar f32 math, any
// head_dim <= 256, f16/f32 caches; the tensor-core kernels for head_dim 64 and
// 128 and f16/q8_0/f32 caches are in attention_mma.h):
//   vb_attn_split_<f16|f32>(const float* q, const void* k, const void* v,
//       const int* pos, float* part, int H, int KVH, int hd, int n_ctx,
//       float scale, int n_split, int chunk, int window)
//     grid (T * H, n_split), block kAttnThreads. Block (r, s) covers cache
//     rows [s * chunk, (s+1) * chunk) (chunk <= kAttnChunk; the runtime uses
//     kAttnDecodeChunk for one-token steps) ∩ [0, pos[t]] and writes
//     part[(r * n_split + s) * (hd + 2) + ...] = {max score, sum of exp,
//     unnormalized output[hd]}; a block past pos[t] writes {-inf, 0, 0...}.
//     window > 0 (sliding-window attention): rows at or before
//     pos[t] - window are not visible either (0: no window).
//   vb_attn_combine(const float* part, float* out, int hd, int n_split)
//     grid (T * H), block kAttnThreads: merges the splits.
// Supports head_dim <= kAttnMaxHeadDim.
std::string AttentionSource();
inline constexpr int kAttnThreads = 128;
inline constexpr int kAttnChunk = 256;
// Chunk for one-token (decode) steps: smaller, so that a short context still
// spreads over many blocks (a 256-row chunk left 16 blocks busy at
// position < 256 for 16 heads). Partials stay small at T = 1.
inline constexpr int kAttnDecodeChunk = 64;
inline constexpr int kAttnMaxHeadDim = 256;

// sample (sample.cc; ir/ops.h): the next token from one row of V logits.
//   vb_sample_gather(const float* logits, const int* params, u64* part, int V,
//       int chunk): grid SampleGatherBlocks(V), block kSampleGatherThreads;
//       chunk = ceil(V / blocks) <= kSampleChunk logits per block.
//   vb_sample_pick(const float* logits, const int* params, const u64* part,
//       int* token, int V, int nb): grid 1, block kSamplePickThreads.
//   part: SampleScratchBytes(V) bytes of scratch between the two.
// Parameters as runtime/sampler.h packs them; any top_k/top_p/min_p is exact,
// 1 <= top_k <= kSampleCap (and rows of at most kSampleCap finite logits) on
// the gathered keys, the rest by windows over the whole row (slower).
std::string SampleSource();
inline constexpr int kSampleCap = 1024;
inline constexpr int kSampleChunk = 4096;
inline constexpr int kSampleGatherThreads = 256;
inline constexpr int kSamplePickThreads = 1024;
inline int64_t SampleGatherBlocks(int64_t V) { return V < 1 ? 1 : (V + kSampleChunk - 1) / kSampleChunk; }
inline int64_t SampleScratchBytes(int64_t V) {
  const int64_t nb = SampleGatherBlocks(V);
  return 8 * (2 * nb + nb * kSampleCap);
}

}  // namespace vibrant::codegen

#endif  // VIBRANT_CODEGEN_KERNELS_FAMILIES_H_
