// The contract between the memory planner and the backends, and a checker
// that proves a graph's memory plan respects it.
#ifndef VIBRANT_PASSES_MEMORY_CHECK_H_
#define VIBRANT_PASSES_MEMORY_CHECK_H_

#include <cstddef>

#include "absl/status/status.h"
#include "ir/graph.h"

namespace vibrant::passes {

// Arena offsets are multiples of this (and so are the slots' sizes).
inline constexpr int64_t kArenaAlignment = 256;

// Whether op `op` of `g` may write its output into the storage of its input
// `input_index` (in place), provided that input is not read after the op.
// Every backend must compute such an op correctly when the two coincide.
// Allowed when the op has one output of exactly the input's dtype and shape,
// and either
// - the op is add, mul or silu (elementwise: out[i] depends on the input at
//   i only; a broadcast operand never qualifies, its shape differs), or
// - the op is fused, every body op is add, mul or silu, the body's one
//   output is computed by its last op, and the body reads this input only
//   at full shape (never broadcast). Then any evaluation order that finishes
//   reading element i before writing it (per element, or op by op with the
//   output written last) is correct. Bodies with rms_norm or rope never
//   qualify: their row coupling would need a whole-row read before any write.
bool OpAllowsInPlace(const ir::Graph& g, const ir::Op& op, size_t input_index);

// Checks the memory plan of `g` (Graph::memory, Value::arena_offset), from
// the graph alone, without trusting the planner:
// - the values the arena must hold (step inputs, activations and outputs
//   that are not views) have an offset, a multiple of kArenaAlignment, with
//   their bytes at T = max_tokens inside their device's arena; views
//   (reshape outputs) carry their root's offset; weights, KV caches and
//   kv_store versions carry none; every device's kv_bytes is the sum of its
//   KV caches;
// - no two values of one device whose lifetimes intersect share a byte. A
//   value lives from the op that writes it (step inputs: from before the
//   first op) to the last op that reads it or a view of it (graph outputs:
//   to after the last op); an op reads its inputs and writes its outputs at
//   the same time, so a value dying at op i and one born at op i conflict,
//   except the in-place case: the one output of op i at exactly the offset
//   of an input root that dies at op i, when OpAllowsInPlace holds for
//   every input position of op i that reads that root.
// Errors name both values and the op range where they are live together.
absl::Status CheckMemoryPlan(const ir::Graph& g);

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_MEMORY_CHECK_H_
