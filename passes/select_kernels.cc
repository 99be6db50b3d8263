#include "passes/select_kernels.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/fused_body.h"
#include "passes/graph_edit.h"

namespace vibrant::passes {

using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Value;
using ir::ValueId;

absl::Status InlineFusedBody(Graph& g, int index) {
  const Op fused = g.ops()[index];
  absl::StatusOr<ir::FusedBody> fb = ir::AnalyzeFusedBody(fused);
  if (!fb.ok()) return fb.status();
  const Graph& body = *fused.body;
  std::vector<ValueId> map(body.values().size(), -1);
  for (size_t k = 0; k < fb->inputs.size(); ++k) map[fb->inputs[k]] = fused.inputs[k];
  for (size_t k = 0; k < body.outputs().size(); ++k) map[body.outputs()[k]] = fused.outputs[k];
  const std::string prefix = g.value(fused.outputs[0]).name;
  for (ValueId v = 0; v < static_cast<ValueId>(body.values().size()); ++v) {
    if (map[v] >= 0) continue;
    Value nv = body.value(v);
    nv.name = UniqueValueName(g, absl::StrCat(prefix, ".", nv.name));
    nv.device = fused.device;
    nv.storage = ir::Storage::kActivation;
    nv.arena_offset = -1;
    map[v] = g.AddValue(std::move(nv));
  }
  std::vector<Op> inlined;
  for (const Op& bop : body.ops()) {
    Op op = bop;
    op.device = fused.device;
    for (ValueId& v : op.inputs) v = map[v];
    for (ValueId& v : op.outputs) v = map[v];
    inlined.push_back(std::move(op));
  }
  std::vector<Op>& ops = g.mutable_ops();
  ops.erase(ops.begin() + index);
  ops.insert(ops.begin() + index, inlined.begin(), inlined.end());
  g.Reindex();
  return absl::OkStatus();
}

absl::Status SelectKernelsFor(Graph& g, const KernelTarget& target, std::vector<std::string>* notes) {
  for (int i = 0; i < static_cast<int>(g.ops().size()); ++i) {
    if (g.ops()[i].device != target.device()) continue;
    absl::StatusOr<std::vector<ir::KernelVariant>> ks = target.SelectKernels(g, i);
    if (!ks.ok() && absl::IsUnimplemented(ks.status()) && g.ops()[i].kind == OpKind::kFused) {
      if (notes != nullptr) {
        notes->push_back(absl::StrCat("select-kernels: fused op -> '", g.value(g.ops()[i].outputs[0]).name,
                                      "' runs op by op: ", ks.status().message()));
      }
      if (absl::Status s = InlineFusedBody(g, i); !s.ok()) return s;
      --i;  // select the inlined ops
      continue;
    }
    if (!ks.ok()) {
      return absl::Status(ks.status().code(),
                          absl::StrCat("op ", i, " (", std::string(ir::OpName(g.ops()[i].kind)), " -> '",
                                       g.value(g.ops()[i].outputs[0]).name, "'): ", ks.status().message()));
    }
    g.mutable_ops()[i].kernels = *std::move(ks);
  }
  return absl::OkStatus();
}

Pass SelectKernels() {
  Pass p;
  p.name = "select-kernels";
  p.optional = false;
  p.run = [](Graph& g, PassContext& ctx) -> absl::Status {
    for (const KernelTarget* t : ctx.kernel_targets()) {
      if (absl::Status s = SelectKernelsFor(g, *t, &ctx.notes); !s.ok()) return s;
    }
    return absl::OkStatus();
  };
  return p;
}

}  // namespace vibrant::passes
