// combine-matmuls: matmuls of one input become one multi_matmul (ir/ops.h),
// so that a kernel reads the input once for all of them: q/k/v and gate/up in
// llama-style layers. Members must be on the device of a kernel target
// (PassContext::cuda_kernels, cpu_kernels) and share the weight dtype; the
// multi_matmul takes the first member's place (every member's inputs exist
// there: x and declarations), outputs keep their values. On the CPU the fast
// matmul then rounds x once for all members and runs their rows as one
// parallel job. Optional (--disable-pass=combine-matmuls).
#ifndef VIBRANT_PASSES_COMBINE_MATMULS_H_
#define VIBRANT_PASSES_COMBINE_MATMULS_H_

#include "absl/status/status.h"
#include "ir/graph.h"
#include "passes/pass.h"

namespace vibrant::passes {

Pass CombineMatmuls();

// The rewrite itself on ops of `device`; returns how many multi_matmuls it made.
absl::StatusOr<int> CombineMatmulsOn(ir::Graph& g, ir::Device device);

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_COMBINE_MATMULS_H_
