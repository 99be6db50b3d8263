// Dead-code elimination.
#ifndef VIBRANT_PASSES_DCE_H_
#define VIBRANT_PASSES_DCE_H_

#include "absl/status/status.h"
#include "ir/graph.h"
#include "passes/pass.h"

namespace vibrant::passes {

// The pass "dce" (optional). Removes every op none of whose outputs is
// needed, where needed means: a graph output, or read by a kept op. Ops with
// side effects are always kept: kv_store (it updates a KV cache that later
// steps read). Then removes the values left without a definition or a use:
// activations whose op was removed, weights and KV caches no kept op reads.
// Step inputs (tokens, positions) are kept even when unused: the runtime
// feeds them. Value ids are renumbered (passes/graph_edit.h).
Pass DeadCodeElimination();

struct DceStats {
  int ops_removed = 0;
  int values_removed = 0;
};
absl::Status EliminateDeadCode(ir::Graph& g, DceStats* stats = nullptr);

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_DCE_H_
