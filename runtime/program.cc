#include "runtime/program.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace vibrant {

absl::StatusOr<Program> LoadProgram(const PlanFile& plan) {
  Program p;
  absl::StatusOr<ir::Graph> g = plan.LoadGraph();
  if (!g.ok()) return g.status();
  p.graph = *std::move(g);
  p.device = plan.Option("device", "cpu");
  if (p.device != "cpu" && p.device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat(plan.name(), ": section OPTIONS: unknown device '", p.device, "'"));
  }
  if (p.device != "cuda") return p;
  if (plan.dispatch().empty() || plan.kernels().empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        plan.name(), ": a cuda plan without ", plan.dispatch().empty() ? "a DISPATCH" : "a KERNELS",
        " section (recompile it with this vibrantc)"));
  }
  absl::StatusOr<dispatch::Table> t =
      dispatch::Parse(plan.dispatch(), absl::StrCat(plan.name(), ": section DISPATCH"));
  if (!t.ok()) return t.status();
  absl::StatusOr<KernelBundle> k = ParseKernelBundle(plan.kernels(), absl::StrCat(plan.name(), ": section KERNELS"));
  if (!k.ok()) return k.status();
  if (t->values.size() != p.graph.values().size()) {
    return absl::InvalidArgumentError(absl::StrCat(plan.name(), ": section DISPATCH describes ", t->values.size(),
                                                   " values, the graph has ", p.graph.values().size()));
  }
  if (t->tp_ranks != ir::TpRanks(p.graph)) {
    return absl::InvalidArgumentError(absl::StrCat(plan.name(), ": section DISPATCH is for ", t->tp_ranks,
                                                   " tensor-parallel ranks, the graph for ", ir::TpRanks(p.graph)));
  }
  for (const dispatch::Launch& l : t->launches) {
    if (l.op < 0 || l.op >= static_cast<int32_t>(p.graph.ops().size())) {
      return absl::InvalidArgumentError(absl::StrCat(plan.name(), ": section DISPATCH: launch ", l.name,
                                                     " names op ", l.op, " of ", p.graph.ops().size()));
    }
  }
  p.dispatch = *std::move(t);
  p.kernels = *std::move(k);
  return p;
}

}  // namespace vibrant
