// quantize-activations: where a matmul's kernels multiply 8-bit codes (the
// target's MatvecQ8Supports: q4_0 ... q6_K weights on the GPU), its f32 input
// x is rounded once by an explicit quantize_q8 op (ir/ops.h) and the matmul
// reads the q8a result: a numeric choice (llama.cpp's CUDA backend makes the
// same one), visible in the IR and defined on the CPU. One quantize_q8 per
// input value, placed just before its first reader, shared by every matmul
// that reads it (q, k and v, also when v's weights have another type). When
// the input is an output of a fused op whose kernel can round it too
// (KernelTarget::FusesQuantize: the norms, swiglu), the quantize_q8 joins that
// body instead and the fused op gains the q8a output: no launch of its own.
// Optional: --disable-pass=quantize-activations keeps f32 activations (the
// float kernels, which match the CPU reference to rounding).
#ifndef VIBRANT_PASSES_QUANTIZE_ACTIVATIONS_H_
#define VIBRANT_PASSES_QUANTIZE_ACTIVATIONS_H_

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "passes/pass.h"

namespace vibrant::passes {

Pass QuantizeActivations();

// The rewrite on `target`'s device; returns how many quantize_q8 ops it added.
absl::StatusOr<int> QuantizeActivationsFor(ir::Graph& g, const KernelTarget& target);

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_QUANTIZE_ACTIVATIONS_H_
