#include "passes/dce.h"

#include <vector>

#include "passes/graph_edit.h"

namespace vibrant::passes {

using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Storage;
using ir::ValueId;

namespace {

bool HasSideEffects(const Op& op) { return ir::GetOpInfo(op.kind).side_effects; }

}  // namespace

absl::Status EliminateDeadCode(Graph& g, DceStats* stats) {
  const size_t nv = g.values().size();
  const size_t nops = g.ops().size();
  std::vector<bool> needed(nv, false);
  for (ValueId v : g.outputs()) {
    if (v >= 0 && v < static_cast<ValueId>(nv)) needed[v] = true;
  }
  // Ops are in execution order, so one backward sweep sees every use of an
  // op's outputs before the op itself.
  std::vector<bool> keep_op(nops, false);
  for (size_t i = nops; i-- > 0;) {
    const Op& op = g.ops()[i];
    bool live = HasSideEffects(op);
    for (ValueId v : op.outputs) live = live || (v >= 0 && v < static_cast<ValueId>(nv) && needed[v]);
    if (!live) continue;
    keep_op[i] = true;
    for (ValueId v : op.inputs) {
      if (v >= 0 && v < static_cast<ValueId>(nv)) needed[v] = true;
    }
  }
  std::vector<bool> keep_value(nv, false);
  for (size_t i = 0; i < nops; ++i) {
    if (!keep_op[i]) continue;
    // Every output of a kept op stays, even an unused one: it is defined.
    for (ValueId v : g.ops()[i].outputs) keep_value[v] = true;
  }
  for (size_t v = 0; v < nv; ++v) {
    const Storage s = g.values()[v].storage;
    if (s == Storage::kInput || needed[v]) keep_value[v] = true;
    // Activations and outputs live only through their (kept) producer.
    if ((s == Storage::kActivation || s == Storage::kOutput) && g.values()[v].producer >= 0 &&
        !keep_op[g.values()[v].producer]) {
      keep_value[v] = false;
    }
  }
  int ops_removed = 0, values_removed = 0;
  for (bool k : keep_op) ops_removed += k ? 0 : 1;
  for (bool k : keep_value) values_removed += k ? 0 : 1;
  if (ops_removed > 0 || values_removed > 0) {
    if (absl::Status s = RemoveOpsAndValues(g, keep_op, keep_value); !s.ok()) return s;
  }
  if (stats != nullptr) {
    stats->ops_removed = ops_removed;
    stats->values_removed = values_removed;
  }
  return absl::OkStatus();
}

Pass DeadCodeElimination() {
  Pass p;
  p.name = "dce";
  p.optional = true;
  p.run = [](Graph& g, PassContext&) { return EliminateDeadCode(g); };
  return p;
}

}  // namespace vibrant::passes
