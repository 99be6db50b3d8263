// The compiler as a library: GGUF (or shapes, or a hand-built graph) -> IR ->
// passes -> kernels -> a plan's contents. The one compile driver: vibrantc,
// vibrant-bench, vibrant-run (-m model.gguf), the benchmarks and the tests all
// call Compile*, so the pipeline is set up in one place.
#ifndef VIBRANT_COMPILER_COMPILER_H_
#define VIBRANT_COMPILER_COMPILER_H_

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "ir/graph.h"
#include "passes/pass.h"
#include "passes/stats.h"
#include "runtime/dispatch.h"
#include "runtime/kernel_bundle.h"
#include "runtime/plan.h"
#include "runtime/program.h"

namespace vibrant::compiler {

struct CompileOptions {
  // The device the plan targets: "cpu" or "cuda" ("auto" means cpu).
  std::string device = "cpu";
  // cuda: the GPU architecture of the plan's kernels ("sm_90"); empty: the
  // local GPU's, else codegen::kDefaultCudaArch.
  std::string arch;
  // Lowering (GGUF and shapes only): context, tokens per step, KV type, logits.
  LowerOptions lower;
  // The pass pipeline's switches (--print-ir-after-all, --disable-pass=, ...).
  passes::PipelineOptions pipeline;
  bool explain_devices = false;
  // Where IR dumps and pass timings go; null: discarded.
  std::ostream* log = nullptr;
  // CPU ops run the exact reference kernels (f32 activations) instead of the
  // fast ones (8-bit activations, SIMD): the CPU target's choice in
  // select-kernels, recorded per op (runtime/cpu/kernel_select.h).
  bool cpu_exact = false;
  // cuda kernel choice (codegen/cuda_target.h): matmuls of at least this many
  // token rows run as cuBLASLt GEMMs (0: never); the GPU's multiprocessor
  // count for launch geometry (0: the local GPU's, else 132); decode steps as
  // CUDA graphs; programmatic dependent launch.
  int gemm_min_rows = 32;
  // Matmuls of gemm_min_rows .. mmq_max_rows rows on the tensor-core GEMM on
  // quantized weights where it serves the type (codegen/cuda_target.h; 0:
  // never), with mmq_tile token rows per block (64, 128; 0: the rule).
  int mmq_max_rows = 0;
  int mmq_tile = 0;
  int64_t gemm_weight_chunk_bytes = int64_t{48} << 20;  // f16 weight rows per GEMM chunk
  int sm_count = 0;
  bool cuda_graphs = true;
  bool pdl = true;
  // Attention on tensor cores (f16 operands) where the kernels serve the
  // cache; false: the scalar split kernels (f32 math; not for q8_0 caches).
  bool flash_attention = true;
  // A step of one token as one persistent kernel with this many blocks per
  // multiprocessor (passes/schedule_decode.h); 0: one launch per op (the
  // default while the persistent kernel measures slower: BENCHMARKS.md).
  int decode_blocks_per_sm = 0;
  // cuda: compile the kernels with NVRTC (false: the IR and the dispatch
  // table only, for checks that need no binaries).
  bool compile_kernels = true;
  // The step draws its next token itself (passes/append_sample: the sample
  // op; vibrantc compile --gpu-sampling / --no-gpu-sampling). Unset: on for
  // cuda plans of a model step (meta n_vocab, logits [rows, n_vocab]; any
  // other graph is left as it is), off for cpu plans; true: any graph with
  // [rows, V] logits, and an error for one without.
  std::optional<bool> sample;
  // Tensor parallelism over this many ranks (passes/shard_tensor_parallel.h;
  // vibrantc compile --tp N): the plan is each rank's program. 1: none.
  int tp = 1;
  // cuda: llama.cpp's -ngl (passes/pass.h: PassContext::gpu_layers): only
  // the last N repeating layers on the GPU, the rest of the model on the
  // CPU, in one plan whose dispatch table hands the CPU's ops to the host
  // (runtime/dispatch.h: LaunchKind::kHost). -1, or more than the model's
  // layers: the whole model on the GPU.
  int64_t gpu_layers = -1;
};

// What a compile produces: everything a plan file holds except the weights.
struct Compiled {
  ir::Graph graph;          // after the passes, verified
  std::string device;       // "cpu" or "cuda"
  PlanOptions options;      // the OPTIONS section
  // cuda: the KERNELS section (runtime/kernel_bundle.h) and the DISPATCH
  // section (runtime/dispatch.h), parsed and serialized.
  std::optional<KernelBundle> kernel_bundle;
  std::optional<dispatch::Table> dispatch_table;
  std::optional<std::string> kernels;
  std::optional<std::string> dispatch;
  std::string arch;         // cuda: the architecture compiled for
  bool kernels_from_cache = false;
  std::string kernel_source;  // cuda: the module's CUDA C++ (vibrantc compile --emit-cuda)
  int64_t cubin_bytes = 0, ptx_bytes = 0;
  passes::GraphStats before, after;  // around the passes
  std::vector<std::string> notes;    // pass notes (--explain-devices), in order
};

// Lowers `file` (LowerGguf) and compiles the graph.
absl::StatusOr<Compiled> CompileGguf(const GgufFile& file, const CompileOptions& opts);
// Lowers a model known by its shapes alone (LowerShapes) and compiles it.
absl::StatusOr<Compiled> CompileShapes(const ModelShapes& shapes, const CompileOptions& opts);
// Compiles a graph built by hand (tests, micro-benchmarks): the passes, the
// final verification and, for cuda, the kernels.
absl::StatusOr<Compiled> CompileGraph(ir::Graph graph, const CompileOptions& opts);

// What a backend runs (runtime/program.h), without a round trip through a file.
Program ToProgram(const Compiled& compiled);

// Writes `compiled` as a plan to `path` (atomically), referencing `weights`
// by path and fingerprint, or embedding the whole file with `embed_weights`.
absl::Status WritePlanFile(const std::string& path, const Compiled& compiled,
                           const GgufFile& weights, bool embed_weights);

}  // namespace vibrant::compiler

#endif  // VIBRANT_COMPILER_COMPILER_H_
