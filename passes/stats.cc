#include "passes/stats.h"

#include <vector>

namespace vibrant::passes {

using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Storage;
using ir::Value;

GraphStats ComputeGraphStats(const Graph& g) {
  GraphStats s;
  s.ops = static_cast<int>(g.ops().size());
  std::vector<bool> view(g.values().size(), false);
  for (const Op& op : g.ops()) {
    switch (op.kind) {
      case OpKind::kReshape:
        for (ir::ValueId o : op.outputs) view[o] = true;
        break;
      case OpKind::kCopy:
        ++s.copies;
        break;
      case OpKind::kFused:
        ++s.fused;
        ++s.kernels;
        break;
      default:
        ++s.kernels;
    }
  }
  for (size_t v = 0; v < g.values().size(); ++v) {
    const Value& val = g.values()[v];
    const bool step = val.storage == Storage::kInput || val.storage == Storage::kActivation ||
                      val.storage == Storage::kOutput;
    if (!step || view[v]) continue;
    absl::StatusOr<int64_t> b = DTypeBytes(val.dtype, ir::NumElements(val.shape, g.max_tokens));
    if (b.ok()) s.activation_bytes += *b;
  }
  for (const auto& [device, mem] : g.memory) {
    s.arena_bytes += mem.arena_bytes;
    s.kv_bytes += mem.kv_bytes;
  }
  return s;
}

}  // namespace vibrant::passes
