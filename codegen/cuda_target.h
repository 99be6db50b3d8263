// The CUDA target: which kernels run each op (the select-kernels pass asks it
// through passes::KernelTarget) and how each chosen variant becomes launches
// in the plan's dispatch table (LowerDispatch). The variant catalogue and the
// launch rules (grid, block, arguments as rules in T) for every kernel family
// of codegen/kernels/ live here, in one place, so that the IR's kernels[...]
// annotation and the dispatch table come from the same code: select-kernels
// lists a variant's launches by lowering it without addresses.
//
// Variants (ir::KernelVariant::name) by op:
//   embedding           embedding       vb_embed_<type>
//   matmul/multi_matmul matvec_q8.multi vb_mvs_<type> per 3 weights: one token row on 8-bit activations
//                       matvec_q8       vb_mvq8_<type> per weight: 8 token rows a pass, 8-bit activations
//                       matmul.float    vb_matmul{1,8}_<type> per weight: f32 activations
//                       gemm.cublaslt   x -> f16, then per weight and chunk of `chunk_rows` rows:
//                                       vb_dequant_f16_<type>, cublaslt (+ vb_add for a bias)
//                       gemm.mmq {bm}   x -> f16, then vb_mmq_<type>_m<bm> per 3 weights: weights
//                                       decoded into shared memory, mma.sync, bias fused
//   quantize_q8         quantize_q8     vb_quantize_q8
//   rms_norm            rms_norm        vb_rms_norm
//   add / mul / silu    elementwise     vb_add / vb_mul / vb_silu
//   gelu                elementwise     vb_gelu (the registry's expression, as every elementwise op)
//   scale               scale           vb_scale
//   rope                rope            vb_rope
//   kv_store            kv_store        vb_kv_store_<f16|f32>
//   attention           attention.flash_decode {n_split} vb_attn_dec_<k>_<v>_hd<N>, vb_attn_dec_combine (T < 16)
//                       attention.flash_prefill vb_attn_pre_<k>_<v>_hd<N> (T >= 16)
//                       attention.split vb_attn_split_<f16|f32>, vb_attn_combine ({chunk} cache rows a
//                       block; head sizes or caches the tensor-core kernels do not serve, or
//                       flash_attention off, and sliding-window attention)
//   moe_topk            moe_topk        vb_moe_topk (a thread per token)
//   moe_weights         moe_weights     vb_moe_weights
//   matmul_id           matmul_id.float vb_matmul_id_<type>: a warp per (token, slot, row), f32 activations,
//                                       only the chosen experts' rows read
//   moe_sum             moe_sum         vb_moe_sum
//   last_row            last_row        memcpy
//   sample              sample          vb_sample_gather, vb_sample_pick (codegen/kernels/sample.cc)
//   copy                io              (none: the step's input/output transfer) or
//                       copy            memcpy (a copy within the device)
//   reshape             view            (none)
//   fused               fused           vb_fused_<hash> (codegen/kernels/fused.cc)
// Matmuls choose by the rows of their input (T, or a static count after
// last_row): 1 row -> matvec_q8.multi (8-bit) or matmul.float {tokens=1};
// 2 .. gemm_min_rows-1 -> matvec_q8 / matmul.float {tokens=8}; more ->
// gemm.cublaslt when gemm_min_rows > 0, except gemm.mmq up to mmq_max_rows
// rows for the weight types it serves (bm 64, or 128 from the row count
// where the 128-row grid fills the GPU twice; mmq_tile forces one).
#ifndef VIBRANT_CODEGEN_CUDA_TARGET_H_
#define VIBRANT_CODEGEN_CUDA_TARGET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "passes/pass.h"
#include "runtime/dispatch.h"

namespace vibrant::codegen {

struct CudaTargetOptions {
  // Multiprocessors of the GPU the plan is for (launch geometry of the float
  // mat-vec); the compiler takes the local GPU's, else the H100's 132.
  int sm_count = 132;
  // Matmuls of at least this many token rows run as cuBLASLt GEMMs on f16
  // operands (0: never; the plan then needs no libcublasLt).
  int gemm_min_rows = 32;
  // Matmuls of gemm_min_rows .. mmq_max_rows token rows whose weight type
  // has the tensor-core GEMM on quantized weights (kernels/mmq.cc:
  // MmqSupports: q4_0, q8_0, q4_K, q5_K, q6_K; K % 32 == 0) run it (variant
  // gemm.mmq: no dequantized weight copy, no cuBLASLt); more rows, and other
  // types, keep gemm.cublaslt. 0: never.
  int mmq_max_rows = 0;
  // Token rows per gemm.mmq block, 64 or 128; 0: the rule (128 when the
  // 128-row grid has at least two blocks per multiprocessor, else 64).
  int mmq_tile = 0;
  // The f16 weight chunk of a GEMM (bytes of scratch); at least 64 rows.
  int64_t gemm_weight_chunk_bytes = int64_t{48} << 20;
  // Steps of T = 1 are captured once as a CUDA graph and replayed.
  bool cuda_graphs = true;
  // Programmatic dependent launch between kernels (sm_90+).
  bool pdl = true;
  // Attention on tensor cores (attention_mma.h: flash decoding for T < 16,
  // flash attention above; f16 operands, needs sm_80+) where it serves the
  // cache types and head size; false: the scalar split kernels (f32 math).
  bool flash_attention = true;
};

class CudaTarget : public passes::KernelTarget {
 public:
  explicit CudaTarget(CudaTargetOptions opts = {}) : opts_(opts) {}
  ir::Device device() const override { return ir::Device::kCuda; }
  bool MatvecQ8Supports(DType t) const override;
  bool FusesQuantize(const ir::Graph& g, const ir::Op& fused, ir::ValueId body_output) const override;
  absl::StatusOr<std::vector<ir::KernelVariant>> SelectKernels(const ir::Graph& g,
                                                                int index) const override;
  const CudaTargetOptions& options() const { return opts_; }

 private:
  CudaTargetOptions opts_;
};

// The dispatch table for a graph after select-kernels and plan-memory: the
// weights' and KV caches' layout, every value's buffer, the step's I/O, and
// each op's variants as launches (exactly the IR's kernels[...] lists; a
// mismatch is an internal error). Every op must be on the cuda device except
// the step inputs' and logits' transfers.
// With the graph's meta decode_schedule="persistent" (passes/schedule_decode.h)
// the launches of T = 1 become tasks of one persistent kernel
// (codegen/kernels/persistent.h), whose source, to be appended to the
// module's, goes to `persistent_source` when given.
absl::StatusOr<dispatch::Table> LowerDispatch(const ir::Graph& g, const CudaTargetOptions& opts,
                                              std::string* persistent_source = nullptr);

}  // namespace vibrant::codegen

#endif  // VIBRANT_CODEGEN_CUDA_TARGET_H_
