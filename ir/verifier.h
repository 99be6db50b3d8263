// Structural and semantic checks of an IR graph.
#ifndef VIBRANT_IR_VERIFIER_H_
#define VIBRANT_IR_VERIFIER_H_

#include "absl/status/status.h"
#include "ir/graph.h"

namespace vibrant::ir {

// Checks that `g` is a well-formed graph:
// - max_tokens >= 1; every value has a non-empty, unique name, a supported
//   dtype, a valid storage/device, and a shape of positive dims where T may
//   appear only as the outermost dim, and never in weights or KV caches;
//   quantized values hold whole blocks per row; weights name their source;
//   KV cache declarations are f16/f32 of rank 3.
// - every value is defined exactly once: inputs, weights and KV caches by
//   their declaration (no producer), every other value by exactly one op,
//   whose index its `producer` records.
// - ops are in execution order: operands are in range and defined earlier
//   (use-before-def is an error); each op's recorded output dtype/shape/
//   storage equals what InferOpOutput infers again from its inputs.
// - kv_store outputs alias the KV cache declaration they update and no other
//   value aliases anything; a cache version that a kv_store updated in place
//   is neither read nor updated again by a later op.
// - fused ops carry a body whose inputs (its kInput values, in id order) and
//   outputs match the op's inputs and outputs in dtype and shape, whose ops
//   follow the row rules of ir/ops.h (kFused: only row-local ops, at most one
//   rms_norm or rope, no nested fused), and which itself verifies.
// - outputs() lists defined values with storage kOutput, without repeats, and
//   every kOutput value is listed.
// - a memory plan, when present, places each arena offset inside its
//   device's arena (overlap is passes/memory_check.h's CheckMemoryPlan).
// Errors name the op ("op 12: matmul blk.0.attn_q: ...") or value
// ("value 7 %cache_k.0: ...") and the problem; inside fused bodies they are
// prefixed by the fused op ("op 30: fused x: body: op 1: mul y: ...").
absl::Status Verify(const Graph& g);

}  // namespace vibrant::ir

#endif  // VIBRANT_IR_VERIFIER_H_
