// Which CPU kernels run an op: the exact reference kernels (kernels.h, what
// conformance and `vibrant-run --verify` compare against) or the fast ones
// (fast_matmul.h, fast_attention.h: 8-bit activations, SIMD, results within
// measured tolerances of the exact ones).
//
// The choice is the compiler's, carried in the plan:
// graph.meta["cpu_kernels"] = "fast" | "exact" for the whole graph (set by
// `vibrantc compile` and `vibrant-bench`: fast unless --exact); a graph
// without it (hand-built graphs, plans from before the choice existed) runs
// the exact kernels, the IR's reference semantics. KernelsForOp is the one
// place the executor asks, once per op at creation: a per-op choice (a
// select-kernels pass recording variants in the plan) replaces its body.
#ifndef VIBRANT_RUNTIME_CPU_KERNEL_SELECT_H_
#define VIBRANT_RUNTIME_CPU_KERNEL_SELECT_H_

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace vibrant::cpu {

enum class CpuKernels { kExact, kFast };

inline constexpr char kCpuKernelsMetaKey[] = "cpu_kernels";

const char* CpuKernelsName(CpuKernels k);

// The graph-level choice; an unknown value or type is an InvalidArgument error
// naming it.
absl::StatusOr<CpuKernels> GraphCpuKernels(const ir::Graph& g);

// Records the graph-level choice in g.meta.
void SetGraphCpuKernels(ir::Graph& g, CpuKernels k);

// Whether ops of this kind have a fast CPU kernel.
bool HasFastKernel(ir::OpKind k);

// The kernels op `op` of `g` runs with: the graph's choice; ops with no fast
// kernel run the exact one whatever is asked.
CpuKernels KernelsForOp(const ir::Graph& g, const ir::Op& op, CpuKernels graph_choice);

}  // namespace vibrant::cpu

#endif  // VIBRANT_RUNTIME_CPU_KERNEL_SELECT_H_
