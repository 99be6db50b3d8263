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
        // Into the producer's fused body, when its kernel can round the row.
        const int producer = g.value(x).producer;
        if (producer >= 0 && g.ops()[producer].kind == OpKind::kFused &&
            g.ops()[producer].device == target.device()) {
          // The producer is already in `ops` (it precedes its readers).
          Op* fused = nullptr;
          for (Op& o : ops) {
            for (ValueId out : o.outputs) {
              if (out == x && o.kind == OpKind::kFused) fused = &o;
            }
          }
          if (fused != nullptr) {
            size_t k = 0;
            while (fused->outputs[k] != x) ++k;
            const ir::ValueId body_out = fused->body->outputs()[k];
            if (target.FusesQuantize(g, *fused, body_out)) {
              auto body = std::make_shared<Graph>(*fused->body);
              Value bq;
              bq.name = UniqueValueName(*body, body->value(body_out).name + ".q8");
              bq.dtype = DType::kQ8A;
              bq.shape = body->value(body_out).shape;
              bq.device = body->value(body_out).device;
              const ValueId bqid = body->AddValue(std::move(bq));
              Op bquant;
              bquant.kind = OpKind::kQuantizeQ8;
              bquant.device = fused->device;
              bquant.inputs = {body_out};
              bquant.outputs = {bqid};
              body->AddRawOp(std::move(bquant));
              body->MarkOutput(bqid);
              Value q;
              q.name = UniqueValueName(g, g.value(x).name + ".q8");
              q.dtype = DType::kQ8A;
              q.shape = g.value(x).shape;
              q.device = target.device();
              const ValueId qid = g.AddValue(std::move(q));
              fused->outputs.push_back(qid);
              fused->body = std::move(body);
              it = quantized.emplace(x, qid).first;
              ++made;
            }
          }
        }
      }
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
    for (const KernelTarget* t : ctx.kernel_targets()) {
      if (absl::Status s = QuantizeActivationsFor(g, *t).status(); !s.ok()) return s;
    }
    return absl::OkStatus();
  };
  return p;
}

}  // namespace vibrant::passes
