#include "passes/fold_bias.h"

#include <vector>

#include "passes/graph_edit.h"

namespace vibrant::passes {

using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::ValueId;

absl::StatusOr<int> FoldBiasOn(Graph& g, ir::Device device) {
  const int n_ops = static_cast<int>(g.ops().size());
  std::vector<int> uses(g.values().size(), 0);
  for (const Op& op : g.ops()) {
    for (ValueId v : op.inputs) ++uses[v];
  }
  for (ValueId v : g.outputs()) ++uses[v];
  std::vector<bool> keep_op(n_ops, true);
  std::vector<bool> keep_value(g.values().size(), true);
  int folded = 0;
  for (int i = 0; i < n_ops; ++i) {
    const Op& add = g.ops()[i];
    if (add.kind != OpKind::kAdd || add.device != device) continue;
    const ValueId mm_out = add.inputs[0], bias = add.inputs[1];
    const ir::Value& b = g.value(bias);
    const int producer = g.value(mm_out).producer;
    if (producer < 0 || uses[mm_out] != 1 || b.storage != ir::Storage::kWeight || b.shape.size() != 1) continue;
    Op& mm = g.mutable_ops()[producer];
    if (mm.kind != OpKind::kMatMul || mm.device != device || mm.inputs.size() != 2) continue;
    if (g.value(mm.inputs[1]).shape[0] != b.shape[0]) continue;
    // matmul(x, w, b) defines the add's output in place of the matmul's.
    mm.inputs.push_back(bias);
    keep_value[mm_out] = false;
    mm.outputs[0] = add.outputs[0];
    keep_op[i] = false;
    ++folded;
  }
  if (folded == 0) return 0;
  g.Reindex();
  if (absl::Status s = RemoveOpsAndValues(g, keep_op, keep_value); !s.ok()) return s;
  return folded;
}

Pass FoldBias() {
  Pass p;
  p.name = "fold-bias";
  p.optional = true;
  p.run = [](Graph& g, PassContext& ctx) -> absl::Status {
    if (ctx.cuda_kernels == nullptr) return absl::OkStatus();
    return FoldBiasOn(g, ctx.cuda_kernels->device()).status();
  };
  return p;
}

}  // namespace vibrant::passes
