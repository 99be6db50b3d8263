// Small editing helpers for passes that remove or insert ops and values.
#ifndef VIBRANT_PASSES_GRAPH_EDIT_H_
#define VIBRANT_PASSES_GRAPH_EDIT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ir/graph.h"

namespace vibrant::passes {

// Keeps op o iff keep_op[o] and value v iff keep_value[v]; everything else is
// removed. Surviving values are renumbered densely in their old order, and op
// inputs/outputs, graph outputs and alias_of follow; op order is kept; then
// Graph::Reindex. Fails, leaving `g` untouched, when a kept op, graph output
// or alias refers to a removed value, or when the masks have the wrong size.
absl::Status RemoveOpsAndValues(ir::Graph& g, const std::vector<bool>& keep_op,
                                const std::vector<bool>& keep_value);

// `base` when no value of `g` has that name, else base.1, base.2, ...
std::string UniqueValueName(const ir::Graph& g, const std::string& base);

// The storage root of a value: itself, except that a reshape output is a
// view of its input's root and a kv_store output is the KV cache declaration
// it updates (Value::alias_of). Requires producers to be up to date.
ir::ValueId StorageRoot(const ir::Graph& g, ir::ValueId v);

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_GRAPH_EDIT_H_
