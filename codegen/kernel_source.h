// The CUDA C++ module for a graph: the kernel families (codegen/kernels/)
// instantiated for the weight types the graph reads, as one NVRTC
// translation unit.
#ifndef VIBRANT_CODEGEN_KERNEL_SOURCE_H_
#define VIBRANT_CODEGEN_KERNEL_SOURCE_H_

#include <cstdint>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "ir/dtype.h"
#include "ir/graph.h"

namespace vibrant::codegen {

// What a module must contain beyond the always-present families (rms_norm,
// add/mul/silu, rope, kv_store, attention).
struct KernelSet {
  std::set<DType> matmul_types;  // weight dtypes of matmul ops
  std::set<DType> embed_types;   // table dtypes of embedding ops
};

// The kernels `graph` needs (fused bodies included).
KernelSet KernelSetForGraph(const ir::Graph& graph);
// Every supported weight type, for both families (the CI compile test).
KernelSet AllKernels();

// The module's source text. Deterministic: equal sets give equal text.
std::string ModuleSource(const KernelSet& set);
// The name errors and the kernel cache use for generated modules.
inline constexpr char kModuleName[] = "vibrant_kernels.cu";

// Whether the CUDA backend implements `op` of `graph` (for the device pass:
// an unsupported weight type or head size keeps the op on the CPU). Fused ops
// are supported when every op of their body is.
bool CudaSupportsOp(const ir::Graph& graph, const ir::Op& op);
// The same, as an error that names the op and the reason.
absl::Status CheckCudaSupportsOp(const ir::Graph& graph, const ir::Op& op);

// Fused ops: the hook for one generated kernel per fused body. Not generated
// yet: the CUDA executor runs a fused op by running its body's ops with the
// per-op kernels (same results, more launches). Returns Unimplemented.
absl::Status GenerateFusedKernel(const ir::Graph& graph, const ir::Op& op, std::string* source);

// FNV-1a 64 of text (kernel cache keys, plan bundle checks).
uint64_t HashText(const std::string& text, uint64_t h = 0xcbf29ce484222325ull);

}  // namespace vibrant::codegen

#endif  // VIBRANT_CODEGEN_KERNEL_SOURCE_H_
