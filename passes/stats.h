// Counts for reports (vibrantc compile, docs): ops, kernels, memory.
#ifndef VIBRANT_PASSES_STATS_H_
#define VIBRANT_PASSES_STATS_H_

#include <cstdint>

#include "ir/graph.h"

namespace vibrant::passes {

struct GraphStats {
  int ops = 0;
  // Ops that launch work each step: every op except reshape (a view, no
  // work) and copy (a transfer, counted apart). A fused op is one kernel.
  int kernels = 0;
  int copies = 0;
  int fused = 0;
  // Bytes of the values a step arena holds (step inputs, activations,
  // outputs; views excluded) at T = max_tokens, each counted once: what they
  // would take without a memory plan.
  int64_t activation_bytes = 0;
  // From the memory plan (0 when there is none), summed over devices.
  int64_t arena_bytes = 0;
  int64_t kv_bytes = 0;
};

GraphStats ComputeGraphStats(const ir::Graph& g);

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_STATS_H_
