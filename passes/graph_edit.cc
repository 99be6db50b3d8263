#include "passes/graph_edit.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace vibrant::passes {

using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Value;
using ir::ValueId;

absl::Status RemoveOpsAndValues(Graph& g, const std::vector<bool>& keep_op,
                                const std::vector<bool>& keep_value) {
  const size_t nv = g.values().size();
  if (keep_op.size() != g.ops().size() || keep_value.size() != nv) {
    return absl::InvalidArgumentError(absl::StrCat("RemoveOpsAndValues: masks for ", keep_op.size(),
                                                   " ops and ", keep_value.size(), " values; graph has ",
                                                   g.ops().size(), " and ", nv));
  }
  std::vector<ValueId> remap(nv, -1);
  ValueId next = 0;
  for (size_t v = 0; v < nv; ++v) {
    if (keep_value[v]) remap[v] = next++;
  }
  auto map_id = [&](ValueId v, const std::string& where) -> absl::StatusOr<ValueId> {
    if (v < 0 || v >= static_cast<ValueId>(nv) || remap[v] < 0) {
      const std::string name = v >= 0 && v < static_cast<ValueId>(nv) ? g.value(v).name : "?";
      return absl::InternalError(absl::StrCat("RemoveOpsAndValues: ", where, " refers to removed value ", v,
                                              " %", name));
    }
    return remap[v];
  };
  // Build everything first so that a failure leaves the graph as it was.
  std::vector<Op> ops;
  for (size_t o = 0; o < g.ops().size(); ++o) {
    if (!keep_op[o]) continue;
    Op op = g.ops()[o];
    for (auto* list : {&op.inputs, &op.outputs}) {
      for (ValueId& v : *list) {
        absl::StatusOr<ValueId> m = map_id(v, absl::StrCat("op ", o));
        if (!m.ok()) return m.status();
        v = *m;
      }
    }
    ops.push_back(std::move(op));
  }
  std::vector<Value> values;
  for (size_t v = 0; v < nv; ++v) {
    if (!keep_value[v]) continue;
    Value val = g.value(static_cast<ValueId>(v));
    if (val.alias_of >= 0) {
      absl::StatusOr<ValueId> m = map_id(val.alias_of, absl::StrCat("alias of %", val.name));
      if (!m.ok()) return m.status();
      val.alias_of = *m;
    }
    values.push_back(std::move(val));
  }
  std::vector<ValueId> outputs;
  for (ValueId v : g.outputs()) {
    absl::StatusOr<ValueId> m = map_id(v, "a graph output");
    if (!m.ok()) return m.status();
    outputs.push_back(*m);
  }
  g.mutable_ops() = std::move(ops);
  g.mutable_values() = std::move(values);
  g.mutable_outputs() = std::move(outputs);
  g.Reindex();
  return absl::OkStatus();
}

std::string UniqueValueName(const Graph& g, const std::string& base) {
  if (g.FindValue(base) < 0) return base;
  for (int i = 1;; ++i) {
    std::string name = absl::StrCat(base, ".", i);
    if (g.FindValue(name) < 0) return name;
  }
}

ValueId StorageRoot(const Graph& g, ValueId v) {
  // Bounded walk: each step moves to an earlier value (a reshape's input is
  // defined before it), so a verified graph ends; the bound guards others.
  for (size_t steps = 0; steps <= g.values().size(); ++steps) {
    const Value& val = g.value(v);
    if (val.alias_of >= 0) return val.alias_of;
    if (val.producer < 0) return v;
    const Op& op = g.ops()[val.producer];
    if (op.kind != OpKind::kReshape || op.inputs.empty()) return v;
    v = op.inputs[0];
  }
  return v;
}

}  // namespace vibrant::passes
