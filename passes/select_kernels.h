// select-kernels: records on every op of a kernel target's device which
// kernels run it, by token count (ir::Op::kernels, printed as kernels[...]):
// the variant (mat-vec on 8-bit activations, float mat-vec, cuBLASLt GEMM,
// attention split size, generated fused kernel, ...) and the launches it
// makes. The target (codegen/cuda_target.h) offers the variants; a fused op
// whose body it cannot generate is inlined back into its ops here, visibly,
// instead of falling back at run time. After this pass the IR names every
// launch of a step, and codegen lowers exactly these into the plan's
// dispatch table. The CPU target (codegen/cpu_target.h) records the CPU
// backend's variant per cpu op (fast or exact kernels), which its executor
// runs. A no-op without a kernel target.
#ifndef VIBRANT_PASSES_SELECT_KERNELS_H_
#define VIBRANT_PASSES_SELECT_KERNELS_H_

#include "absl/status/status.h"
#include "ir/graph.h"
#include "passes/pass.h"

namespace vibrant::passes {

Pass SelectKernels();

absl::Status SelectKernelsFor(ir::Graph& g, const KernelTarget& target,
                              std::vector<std::string>* notes = nullptr);

// Replaces fused op `index` by its body's ops (inputs and outputs become the
// op's; intermediates become values named "<first output>.<body name>").
absl::Status InlineFusedBody(ir::Graph& g, int index);

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_SELECT_KERNELS_H_
