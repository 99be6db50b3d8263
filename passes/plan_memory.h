// Memory planning: where every value of a step lives.
#ifndef VIBRANT_PASSES_PLAN_MEMORY_H_
#define VIBRANT_PASSES_PLAN_MEMORY_H_

#include <cstdint>
#include <map>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "passes/memory_check.h"
#include "passes/pass.h"

namespace vibrant::passes {

// The pass "plan-memory" (required; the last pass: a later edit of the
// graph must plan again). Places every value a step needs, sized for
// T = max_tokens, in ONE arena per device:
// - What the arena holds: step inputs, activations and outputs. Views share
//   their root's bytes: a reshape output carries its input root's offset; a
//   kv_store output is its KV cache. Weights (mapped from the GGUF) and KV
//   caches (persistent across steps; their bytes are recorded per device in
//   DeviceMemory::kv_bytes) are not in the arena.
// - Lifetimes (op indices): from the op that writes a value (step inputs:
//   before the first op) to the last op that reads it or any view of it
//   (graph outputs: after the last op, so the host reads them after the step).
// - In place: walking the ops in order, an op's one output takes the slot of
//   an input root that dies at that op, has the same size and is on the same
//   device, when the op allows it (OpAllowsInPlace, memory_check.h). Chains
//   (silu then mul then add...) keep reusing one slot.
// - Offsets: greedy by size (largest first, ties by earlier start), each slot
//   at the lowest-waste gap between slots whose lifetimes intersect it (best
//   fit), else above them; offsets and slot sizes are multiples of
//   kArenaAlignment (256 bytes).
// The result is recorded in the IR: Value::arena_offset and Graph::memory
// (arena and KV bytes per device). CheckMemoryPlan (memory_check.h) proves it.
Pass PlanMemory();

struct MemoryPlanStats {
  // Per device: the arena, and what the same values would take with a slot
  // each (sum of their sizes, aligned), and the KV caches.
  std::map<ir::Device, int64_t> arena_bytes;
  std::map<ir::Device, int64_t> value_bytes;
  std::map<ir::Device, int64_t> kv_bytes;
  int values = 0;    // arena values planned (views not counted)
  int in_place = 0;  // outputs that took an input's slot
};
absl::StatusOr<MemoryPlanStats> PlanGraphMemory(ir::Graph& g);

// Forgets a plan: every arena_offset = -1, Graph::memory empty.
void ClearMemoryPlan(ir::Graph& g);

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_PLAN_MEMORY_H_
