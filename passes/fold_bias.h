// fold-bias: `add(matmul(x, w), b)` with b a weight [N] and the matmul's
// output read only by that add becomes `matmul(x, w, b)`: the mat-vec
// kernels add the bias in their epilogue (the same float add, so the values
// are unchanged bit for bit) and the separate add launch disappears (qwen2's
// v bias). Runs before fuse-elementwise, on the kernel target's device only
// (the CPU gains nothing). Optional: --disable-pass=fold-bias.
#ifndef VIBRANT_PASSES_FOLD_BIAS_H_
#define VIBRANT_PASSES_FOLD_BIAS_H_

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "passes/pass.h"

namespace vibrant::passes {

Pass FoldBias();

// The rewrite on ops of `device`; returns how many adds it folded.
absl::StatusOr<int> FoldBiasOn(ir::Graph& g, ir::Device device);

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_FOLD_BIAS_H_
