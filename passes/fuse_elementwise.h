// Elementwise fusion: replaces chains of row-local ops with `fused` ops whose
// bodies (ir/ops.h, OpKind::kFused) codegen turns into one kernel each and
// the CPU backend interprets.
//
// Patterns (in lowered llama / qwen2 graphs, see frontends/lower/lower.cc):
//   (a) rms-scale:     mul(rms_norm(x), w)                        -> 1 output
//   (b) swiglu:        mul(silu(gate), up)                        -> 1 output
//   (c) bias-rope:     rope(reshape(add(mm, bias)), pos [, ff])   -> 1 output
//   (d) residual-norm: s = add(a, b); mul(rms_norm(s), w)         -> 2 outputs
//                      (s, still read by the next residual add, and the
//                      normalized row)
// then a generic greedy fusion of the remaining chains of add / mul / silu
// whose intermediates have a single use.
//
// Invariants: an absorbed intermediate value is used only inside its group
// and is not a graph output (a value read elsewhere is never fused across:
// it ends the chain or, in pattern (d), becomes an output of the fused op);
// each fused output keeps the name of the value it replaces; absorbed ops and
// their now unused intermediate values are removed from the graph (no DCE
// needed). The result verifies (ir/verifier.h) and, on the CPU backend,
// computes bit-identical values (the interpreter evaluates each body op with
// the same kernel, in the same order).
#ifndef VIBRANT_PASSES_FUSE_ELEMENTWISE_H_
#define VIBRANT_PASSES_FUSE_ELEMENTWISE_H_

#include "absl/status/status.h"
#include "ir/graph.h"
#include "passes/pass.h"

namespace vibrant::passes {

// The pass "fuse-elementwise" (optional: --disable-pass=fuse-elementwise).
Pass FuseElementwise();

// What one run fused, by pattern (for tests and reports).
struct FusionStats {
  int rms_scale = 0;      // (a)
  int swiglu = 0;         // (b)
  int bias_rope = 0;      // (c)
  int residual_norm = 0;  // (d)
  int generic = 0;        // greedy chains
  int ops_before = 0;
  int ops_after = 0;
};

// The pass's function, usable directly. Fails only on a graph it cannot
// rewrite consistently (never leaves a half-rewritten graph behind).
absl::Status FuseElementwiseGraph(ir::Graph& graph, FusionStats* stats = nullptr);

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_FUSE_ELEMENTWISE_H_
