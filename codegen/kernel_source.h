// The CUDA C++ module for a graph: the kernel families (codegen/kernels/)
// instantiated for the weight types the graph reads, as one NVRTC
// translation unit.
#ifndef VIBRANT_CODEGEN_KERNEL_SOURCE_H_
#define VIBRANT_CODEGEN_KERNEL_SOURCE_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "codegen/kernels/attention_mma.h"
#include "ir/dtype.h"
#include "ir/graph.h"

namespace vibrant::codegen {

// What a module must contain beyond the always-present families (rms_norm,
// add/mul/silu/gelu/scale, rope, kv_store, attention, the MoE router and sum).
struct KernelSet {
  std::set<DType> matmul_types;  // weight dtypes of matmul ops
  std::set<DType> embed_types;   // table dtypes of embedding ops
  std::set<DType> moe_types;     // expert weight dtypes of matmul_id ops
  // Weight dtypes of matmuls that select-kernels gave the tensor-core GEMM
  // on quantized weights (variant gemm.mmq; kernels/mmq.cc).
  std::set<DType> mmq_types;
  // Tensor-core attention kernels (codegen/kernels/attention_mma.h), one
  // decode and one prefill entry point per (K type, V type, head_dim) of the
  // graph's attention ops that they support.
  std::set<AttnConfig> attention;
  // Generated kernels of fused ops (GenerateFused), name -> source; equal
  // bodies share one entry.
  std::map<std::string, std::string> fused;
  // The sampler (a sample op in the graph).
  bool sample = false;
};

// The kernels `graph` needs (fused bodies included; one generated kernel per
// distinct fused body that GenerateFused supports).
KernelSet KernelSetForGraph(const ir::Graph& graph);
// Every supported weight type, for both families (the CI compile test).
KernelSet AllKernels();

// The module's source text. Deterministic: equal sets give equal text.
std::string ModuleSource(const KernelSet& set);
// Inserts VB_GRID_DEPENDENCY() (prelude) as the first statement of every
// `extern "C" __global__` kernel of `src`: with programmatic dependent launch
// (sm_90+), a kernel waits for the grid before it to complete before it reads
// or writes anything, then lets the next grid start launching, which hides
// the launch latency between the many small kernels of a decode step.
// ModuleSource applies it.
std::string WithGridDependency(const std::string& src);
// The name errors and the kernel cache use for generated modules.
inline constexpr char kModuleName[] = "vibrant_kernels.cu";

// Whether the CUDA backend implements `op` of `graph` (for the device pass:
// an unsupported weight type or head size keeps the op on the CPU). Fused ops
// are supported when every op of their body is.
bool CudaSupportsOp(const ir::Graph& graph, const ir::Op& op);
// The same, as an error that names the op and the reason.
absl::Status CheckCudaSupportsOp(const ir::Graph& graph, const ir::Op& op);

// One generated kernel for a fused op (codegen/kernels/fused.cc): the body
// evaluated per element in registers, with the unfused kernels' exact float
// operations (results equal the op-by-op kernels' bit for bit).
struct FusedKernel {
  enum class Shape {
    kElementwise,  // grid-stride over rows * row_elems elements
    kRowReduce,    // a body with rms_norm: grid = rows
    kRope,         // a body with rope: grid = rows * heads
  };
  std::string name;    // "vb_fused_<16 hex digits>": a hash of the kernel text,
                       // so equal bodies (every layer's) share one kernel
  std::string source;  // the kernel's CUDA C++ (needs PreludeSource before it)
  Shape shape = Shape::kElementwise;
  int64_t row_elems = 1;  // R: elements per row (output 0's non-outer dims)
  int64_t heads = 1;      // kRope: blocks per row
  int threads = 256;      // block size
};
// Arguments, in order: one pointer per op input (const float*, or const int*
// for rope positions), one float* per op output, then `i64 rows` (output 0's
// elements / row_elems). kElementwise grids may be smaller than needed (the
// kernel loops). Unimplemented for a body outside what the generator handles
// (the executor then runs the body op by op); InvalidArgument for an op that
// is not fused.
absl::StatusOr<FusedKernel> GenerateFused(const ir::Graph& graph, const ir::Op& op);
// The same, the source only.
absl::Status GenerateFusedKernel(const ir::Graph& graph, const ir::Op& op, std::string* source);

// FNV-1a 64 of text (kernel cache keys, plan bundle checks).
uint64_t HashText(const std::string& text, uint64_t h = 0xcbf29ce484222325ull);

}  // namespace vibrant::codegen

#endif  // VIBRANT_CODEGEN_KERNEL_SOURCE_H_
