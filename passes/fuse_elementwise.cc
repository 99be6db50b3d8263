#include "passes/fuse_elementwise.h"

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "ir/verifier.h"

namespace vibrant::passes {
namespace {

using ir::Graph;
using ir::Op;
using ir::OpId;
using ir::OpKind;
using ir::Shape;
using ir::Storage;
using ir::Value;
using ir::ValueId;

enum class Pattern { kRmsScale, kSwiglu, kBiasRope, kResidualNorm, kGeneric };

// A set of ops that becomes one fused op at the position of its last op.
struct Group {
  Pattern pattern;
  std::vector<OpId> ops;         // ascending
  std::vector<ValueId> outputs;  // values of the graph the fused op defines
};

// Use information for the graph as lowered (before any rewrite).
class Uses {
 public:
  explicit Uses(const Graph& g) : g_(g), users_(g.values().size()), is_output_(g.values().size(), false) {
    for (OpId o = 0; o < static_cast<OpId>(g.ops().size()); ++o) {
      for (ValueId v : g.ops()[o].inputs) {
        if (users_[v].empty() || users_[v].back() != o) users_[v].push_back(o);
      }
    }
    for (ValueId v : g.outputs()) is_output_[v] = true;
  }
  // Ops reading v, ascending, each once.
  const std::vector<OpId>& users(ValueId v) const { return users_[v]; }
  bool is_graph_output(ValueId v) const { return is_output_[v]; }
  // The only op reading v, or -1 (none, several, or v is a graph output).
  OpId sole_user(ValueId v) const {
    return users_[v].size() == 1 && !is_output_[v] ? users_[v][0] : -1;
  }
  OpId producer(ValueId v) const { return g_.value(v).producer; }

 private:
  const Graph& g_;
  std::vector<std::vector<OpId>> users_;
  std::vector<bool> is_output_;
};

bool IsElementwise(OpKind k) { return ir::GetOpInfo(k).elementwise; }

// b broadcast over a: a strictly shorter suffix (so a body input, never a row value).
bool IsBroadcast(const Graph& g, const Op& op) {
  return g.value(op.inputs[1]).shape.size() < g.value(op.inputs[0]).shape.size();
}

class Fuser {
 public:
  explicit Fuser(Graph& g) : g_(g), uses_(g), taken_(g.ops().size(), false) {}

  absl::Status Run(FusionStats* stats) {
    const int before = static_cast<int>(g_.ops().size());
    MatchPatterns();
    MatchGenericChains();
    if (absl::Status s = Rewrite(); !s.ok()) return s;
    if (stats != nullptr) {
      for (const Group& grp : groups_) {
        switch (grp.pattern) {
          case Pattern::kRmsScale: ++stats->rms_scale; break;
          case Pattern::kSwiglu: ++stats->swiglu; break;
          case Pattern::kBiasRope: ++stats->bias_rope; break;
          case Pattern::kResidualNorm: ++stats->residual_norm; break;
          case Pattern::kGeneric: ++stats->generic; break;
        }
      }
      stats->ops_before = before;
      stats->ops_after = static_cast<int>(g_.ops().size());
    }
    return absl::OkStatus();
  }

 private:
  const Op& op(OpId o) const { return g_.ops()[o]; }
  bool free(OpId o) const { return o >= 0 && !taken_[o]; }
  bool is(OpId o, OpKind k) const { return o >= 0 && op(o).kind == k; }

  // Accepts `grp` when it is legal: its ops are untaken and on one device;
  // every value it defines but does not output is read only inside the group
  // (and is not a graph output); every output is read outside only after the
  // group's last op (where the fused op goes); the fused op verifies.
  bool TryAccept(Group grp) {
    std::sort(grp.ops.begin(), grp.ops.end());
    const OpId last = grp.ops.back();
    std::set<OpId> in(grp.ops.begin(), grp.ops.end());
    for (OpId o : grp.ops) {
      if (taken_[o] || op(o).device != op(last).device || op(o).outputs.size() != 1) return false;
    }
    for (OpId o : grp.ops) {
      const ValueId v = op(o).outputs[0];
      const bool output = std::count(grp.outputs.begin(), grp.outputs.end(), v) > 0;
      for (OpId u : uses_.users(v)) {
        if (in.count(u)) continue;
        if (!output || u < last) return false;
      }
      if (!output && uses_.is_graph_output(v)) return false;
    }
    absl::StatusOr<Op> fused = BuildFused(grp);
    if (!fused.ok() || !CheckAlone(*fused).ok()) return false;
    for (OpId o : grp.ops) taken_[o] = true;
    fused_at_[last] = std::move(*fused);
    groups_.push_back(std::move(grp));
    return true;
  }

  // The fused op for `grp`: body inputs are the values the group reads but
  // does not define, in order of first use; body values keep their names.
  absl::StatusOr<Op> BuildFused(const Group& grp) const {
    std::set<OpId> in(grp.ops.begin(), grp.ops.end());
    std::vector<ValueId> ext;
    for (OpId o : grp.ops) {
      for (ValueId v : op(o).inputs) {
        const OpId p = uses_.producer(v);
        if ((p >= 0 && in.count(p)) || std::count(ext.begin(), ext.end(), v)) continue;
        ext.push_back(v);
      }
    }
    auto body = std::make_shared<Graph>();
    body->max_tokens = g_.max_tokens;
    std::map<ValueId, ValueId> inner;
    for (ValueId v : ext) inner[v] = body->AddInput(g_.value(v).name, g_.value(v).dtype, g_.value(v).shape);
    for (OpId o : grp.ops) {
      std::vector<ValueId> ins;
      for (ValueId v : op(o).inputs) ins.push_back(inner.at(v));
      const Value& out = g_.value(op(o).outputs[0]);
      absl::StatusOr<ValueId> bv = body->AddOp(op(o).kind, ins, out.name, op(o).attrs);
      if (!bv.ok()) return bv.status();
      inner[op(o).outputs[0]] = *bv;
    }
    for (ValueId v : grp.outputs) body->MarkOutput(inner.at(v));
    Op f;
    f.kind = OpKind::kFused;
    f.inputs = ext;
    f.outputs = grp.outputs;
    f.device = op(grp.ops.back()).device;
    f.body = std::move(body);
    return f;
  }

  // Verifies `f` on its own: a graph declaring its inputs and holding only it.
  absl::Status CheckAlone(const Op& f) const {
    Graph mini;
    mini.max_tokens = g_.max_tokens;
    Op copy = f;
    for (ValueId& v : copy.inputs) {
      const Value& val = g_.value(v);
      v = mini.AddInput(val.name, val.dtype, val.shape);
    }
    for (ValueId& v : copy.outputs) {
      Value val;
      val.name = g_.value(v).name;
      val.dtype = g_.value(v).dtype;
      val.shape = g_.value(v).shape;
      v = mini.AddValue(std::move(val));
    }
    mini.AddRawOp(std::move(copy));
    return ir::Verify(mini);
  }

  // mul(r, w) reading r as its row operand and a broadcast weight w.
  OpId ScaleOf(ValueId r) const {
    const OpId m = uses_.sole_user(r);
    if (!free(m) || !is(m, OpKind::kMul) || op(m).inputs[0] != r || !IsBroadcast(g_, op(m))) return -1;
    return m;
  }

  void MatchPatterns() {
    for (OpId o = 0; o < static_cast<OpId>(g_.ops().size()); ++o) {
      if (taken_[o]) continue;
      switch (op(o).kind) {
        case OpKind::kRmsNorm: {
          // (d) s = add(a, b); mul(rms_norm(s), w), else (a) mul(rms_norm(x), w).
          const OpId m = ScaleOf(op(o).outputs[0]);
          if (m < 0) break;
          const ValueId x = op(o).inputs[0];
          const OpId a = uses_.producer(x);
          if (free(a) && is(a, OpKind::kAdd)) {
            std::vector<ValueId> outs = {op(m).outputs[0]};
            if (uses_.users(x).size() > 1 || uses_.is_graph_output(x)) outs.insert(outs.begin(), x);
            if (TryAccept({Pattern::kResidualNorm, {a, o, m}, outs})) break;
          }
          TryAccept({Pattern::kRmsScale, {o, m}, {op(m).outputs[0]}});
          break;
        }
        case OpKind::kSilu: {
          // (b) mul(silu(g), u), either operand order, u of the same shape.
          const OpId m = uses_.sole_user(op(o).outputs[0]);
          if (!free(m) || !is(m, OpKind::kMul) || IsBroadcast(g_, op(m))) break;
          TryAccept({Pattern::kSwiglu, {o, m}, {op(m).outputs[0]}});
          break;
        }
        case OpKind::kRope: {
          // (c) rope(reshape(add(mm, bias)), positions [, freq_factors]).
          const OpId r = uses_.producer(op(o).inputs[0]);
          if (!free(r) || !is(r, OpKind::kReshape) || uses_.sole_user(op(r).outputs[0]) != o) break;
          const OpId a = uses_.producer(op(r).inputs[0]);
          if (!free(a) || !is(a, OpKind::kAdd) || uses_.sole_user(op(a).outputs[0]) != r) break;
          TryAccept({Pattern::kBiasRope, {a, r, o}, {op(o).outputs[0]}});
          break;
        }
        default:
          break;
      }
    }
  }

  // Chains of add / mul / silu: from the last op of a chain backwards, absorb
  // each producer of the same shape whose result only the chain reads.
  void MatchGenericChains() {
    for (OpId seed = static_cast<OpId>(g_.ops().size()) - 1; seed >= 0; --seed) {
      if (taken_[seed] || !IsElementwise(op(seed).kind)) continue;
      const Shape& shape = g_.value(op(seed).outputs[0]).shape;
      std::vector<OpId> chain = {seed};
      for (size_t i = 0; i < chain.size(); ++i) {
        for (ValueId v : op(chain[i]).inputs) {
          const OpId p = uses_.producer(v);
          if (!free(p) || !IsElementwise(op(p).kind) || g_.value(v).shape != shape ||
              uses_.is_graph_output(v) || std::count(chain.begin(), chain.end(), p)) {
            continue;
          }
          const std::vector<OpId>& us = uses_.users(v);
          if (std::all_of(us.begin(), us.end(),
                          [&](OpId u) { return std::count(chain.begin(), chain.end(), u) > 0; })) {
            chain.push_back(p);
          }
        }
      }
      if (chain.size() >= 2) TryAccept({Pattern::kGeneric, chain, {op(seed).outputs[0]}});
    }
  }

  // Replaces each group by its fused op (at the group's last op), drops the
  // values only the absorbed ops defined, and renumbers the rest.
  absl::Status Rewrite() {
    if (groups_.empty()) return absl::OkStatus();
    std::vector<bool> dead(g_.values().size(), false);
    for (const Group& grp : groups_) {
      for (OpId o : grp.ops) {
        for (ValueId v : g_.ops()[o].outputs) {
          if (!std::count(grp.outputs.begin(), grp.outputs.end(), v)) dead[v] = true;
        }
      }
    }
    std::vector<Op> ops;
    for (OpId o = 0; o < static_cast<OpId>(g_.ops().size()); ++o) {
      if (auto it = fused_at_.find(o); it != fused_at_.end()) {
        ops.push_back(std::move(it->second));
      } else if (!taken_[o]) {
        ops.push_back(std::move(g_.mutable_ops()[o]));
      }
    }
    std::vector<ValueId> remap(g_.values().size(), -1);
    std::vector<Value> values;
    for (ValueId v = 0; v < static_cast<ValueId>(g_.values().size()); ++v) {
      if (dead[v]) continue;
      remap[v] = static_cast<ValueId>(values.size());
      values.push_back(std::move(g_.mutable_values()[v]));
    }
    auto map_id = [&](ValueId& v) -> absl::Status {
      if (v < 0) return absl::OkStatus();
      if (remap[v] < 0) {
        return absl::InternalError(absl::StrCat("fuse-elementwise: value ", v, " was fused away but is still read"));
      }
      v = remap[v];
      return absl::OkStatus();
    };
    for (Op& o : ops) {
      for (ValueId& v : o.inputs) {
        if (absl::Status s = map_id(v); !s.ok()) return s;
      }
      for (ValueId& v : o.outputs) {
        if (absl::Status s = map_id(v); !s.ok()) return s;
      }
    }
    for (Value& v : values) {
      if (absl::Status s = map_id(v.alias_of); !s.ok()) return s;
    }
    for (ValueId& v : g_.mutable_outputs()) {
      if (absl::Status s = map_id(v); !s.ok()) return s;
    }
    g_.mutable_ops() = std::move(ops);
    g_.mutable_values() = std::move(values);
    g_.Reindex();
    return absl::OkStatus();
  }

  Graph& g_;
  const Uses uses_;
  std::vector<bool> taken_;
  std::vector<Group> groups_;
  std::map<OpId, Op> fused_at_;  // last op of a group -> its fused op
};

}  // namespace

absl::Status FuseElementwiseGraph(ir::Graph& graph, FusionStats* stats) {
  if (absl::Status s = ir::Verify(graph); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("fuse-elementwise: input graph: ", s.message()));
  }
  Graph work = graph;
  FusionStats local;
  if (absl::Status s = Fuser(work).Run(&local); !s.ok()) return s;
  if (absl::Status s = ir::Verify(work); !s.ok()) {
    return absl::InternalError(absl::StrCat("fuse-elementwise produced an invalid graph: ", s.message()));
  }
  graph = std::move(work);
  if (stats != nullptr) *stats = local;
  return absl::OkStatus();
}

Pass FuseElementwise() {
  return Pass{"fuse-elementwise", /*optional=*/true,
              [](ir::Graph& g, PassContext&) { return FuseElementwiseGraph(g, nullptr); }};
}

}  // namespace vibrant::passes
