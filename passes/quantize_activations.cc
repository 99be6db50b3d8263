#include "passes/quantize_activations.h"

#include <map>
#include <utility>
#include <vector>

#include "passes/graph_edit.h"

namespace vibrant::passes {

using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Value;
using ir::ValueId;

absl::StatusOr<int> QuantizeActivationsFor(Graph& g, const KernelTarget& target) {
  auto wants_q8 = [&](const Op& op) {
    if ((op.kind != OpKind::kMatMul && op.kind != OpKind::kMultiMatMul) || op.device != target.device()) {
      return false;
    }
    const Value& x = g.value(op.inputs[0]);
    const Value& w = g.value(op.inputs[1]);
    return x.dtype == DType::kF32 && x.shape.size() == 2 && x.shape[1] % 32 == 0 &&
           target.MatvecQ8Supports(w.dtype);
  };
  std::map<ValueId, ValueId> quantized;  // f32 x -> its q8a value
  std::vector<Op> ops;
  int made = 0;
  const size_t n_ops = g.ops().size();
  for (size_t i = 0; i < n_ops; ++i) {
    Op op = g.ops()[i];
    if (wants_q8(op)) {
      const ValueId x = op.inputs[0];
      auto it = quantized.find(x);
      if (it == quantized.end()) {
        Value q;
        q.name = UniqueValueName(g, g.value(x).name + ".q8");
        q.dtype = DType::kQ8A;
        q.shape = g.value(x).shape;
        q.device = target.device();
        const ValueId qid = g.AddValue(std::move(q));
        Op quant;
        quant.kind = OpKind::kQuantizeQ8;
        quant.device = target.device();
        quant.inputs = {x};
        quant.outputs = {qid};
        ops.push_back(std::move(quant));
        it = quantized.emplace(x, qid).first;
        ++made;
      }
      op.inputs[0] = it->second;
    }
    ops.push_back(std::move(op));
  }
  g.mutable_ops() = std::move(ops);
  g.Reindex();
  return made;
}

Pass QuantizeActivations() {
  Pass p;
  p.name = "quantize-activations";
  p.optional = true;
  p.run = [](Graph& g, PassContext& ctx) -> absl::Status {
    if (ctx.cuda_kernels == nullptr) return absl::OkStatus();
    return QuantizeActivationsFor(g, *ctx.cuda_kernels).status();
  };
  return p;
}

}  // namespace vibrant::passes
