#include "ir/verifier.h"

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "ir/dtype.h"
#include "ir/fused_body.h"
#include "ir/graph.h"
#include "ir/ops.h"

namespace vibrant::ir {
namespace {

constexpr int kMaxBodyDepth = 8;
constexpr int64_t kMaxTokensLimit = int64_t{1} << 31;

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A type this build knows that Vibrant computes with (a plan naming iq2_xxs
// was not made by this compiler: refused before any backend sees it).
bool ValidDType(DType t) { return DTypeFromId(static_cast<uint32_t>(t)).ok() && IsSupported(t); }
bool ValidStorage(Storage s) { return static_cast<uint8_t>(s) <= static_cast<uint8_t>(Storage::kOutput); }
bool ValidDevice(Device d) { return static_cast<uint8_t>(d) <= static_cast<uint8_t>(Device::kCuda); }

class Verifier {
 public:
  Verifier(const Graph& g, int64_t max_tokens, int depth) : g_(g), max_tokens_(max_tokens), depth_(depth) {}

  absl::Status Run() {
    if (max_tokens_ < 1 || max_tokens_ > kMaxTokensLimit) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_tokens is ", max_tokens_, ", must be in [1, ", kMaxTokensLimit, "]"));
    }
    if (g_.values().size() > static_cast<size_t>(INT32_MAX) || g_.ops().size() > static_cast<size_t>(INT32_MAX)) {
      return absl::InvalidArgumentError("graph too large");
    }
    nv_ = static_cast<int64_t>(g_.values().size());
    if (const int64_t tp = TpRanks(g_); tp < 1 || tp > kMaxTpRanks) {
      return absl::InvalidArgumentError(absl::StrCat("meta tp must be an integer in [1, ", kMaxTpRanks, "]"));
    }
    if (auto s = CheckMemory(); !s.ok()) return s;
    if (auto s = CheckValues(); !s.ok()) return s;
    if (auto s = CheckDefinitions(); !s.ok()) return s;
    if (auto s = CheckOps(); !s.ok()) return s;
    return CheckOutputs();
  }

 private:
  std::string ValueLabel(ValueId v) const {
    return absl::StrCat("value ", v, " %", g_.value(v).name);
  }
  std::string OpLabel(OpId o) const {
    const Op& op = g_.ops()[o];
    std::string out = "<no output>";
    if (!op.outputs.empty() && op.outputs[0] >= 0 && op.outputs[0] < nv_) out = g_.value(op.outputs[0]).name;
    const std::string_view name = IsValidOpKind(static_cast<int>(op.kind)) ? OpName(op.kind) : "<invalid op>";
    return absl::StrCat("op ", o, ": ", A(name), " ", out);
  }
  template <typename... Args>
  absl::Status ValueError(ValueId v, const Args&... args) const {
    return absl::InvalidArgumentError(absl::StrCat(ValueLabel(v), ": ", args...));
  }
  template <typename... Args>
  absl::Status OpError(OpId o, const Args&... args) const {
    return absl::InvalidArgumentError(absl::StrCat(OpLabel(o), ": ", args...));
  }

  absl::Status CheckValues() {
    std::map<std::string, ValueId> names;
    for (ValueId i = 0; i < nv_; ++i) {
      const Value& v = g_.value(i);
      if (v.name.empty()) return ValueError(i, "empty name");
      auto [it, inserted] = names.emplace(v.name, i);
      if (!inserted) return ValueError(i, "duplicate name (also value ", it->second, ")");
      if (!ValidDType(v.dtype)) {
        return ValueError(i, "invalid dtype ", static_cast<uint32_t>(v.dtype), " (",
                          A(GgmlTypeName(static_cast<uint32_t>(v.dtype))), ")");
      }
      if (!ValidStorage(v.storage)) return ValueError(i, "invalid storage ", static_cast<int>(v.storage));
      if (!ValidDevice(v.device)) return ValueError(i, "invalid device ", static_cast<int>(v.device));
      const bool persistent = v.storage == Storage::kWeight || v.storage == Storage::kKvCache;
      for (size_t d = 0; d < v.shape.size(); ++d) {
        const int64_t dim = v.shape[d];
        if (dim == kTokens) {
          if (d != 0) return ValueError(i, "shape ", ShapeToString(v.shape), ": T only as the outermost dim");
          if (persistent) {
            return ValueError(i, "shape ", ShapeToString(v.shape), ": a ", A(StorageName(v.storage)),
                              " must have a static shape");
          }
        } else if (dim <= 0) {
          return ValueError(i, "shape ", ShapeToString(v.shape), ": dim ", d, " is ", dim);
        }
      }
      const int64_t n = NumElements(v.shape, max_tokens_);
      if (n < 0 || !DTypeBytes(v.dtype, n).ok()) {
        return ValueError(i, "shape ", ShapeToString(v.shape), " is too large");
      }
      const DTypeInfo& info = GetDTypeInfo(v.dtype);
      if (info.block_size > 1 && (v.shape.empty() || v.shape.back() % info.block_size != 0)) {
        return ValueError(i, "shape ", ShapeToString(v.shape), ": rows are not whole ", A(info.name),
                          " blocks of ", info.block_size);
      }
      if (v.storage == Storage::kWeight && v.source.empty()) return ValueError(i, "weight without a source");
      if (v.storage != Storage::kWeight && !v.source.empty()) {
        return ValueError(i, "source \"", v.source, "\" on a ", A(StorageName(v.storage)));
      }
      if (v.source_offset != 0) {
        if (v.storage != Storage::kWeight) {
          return ValueError(i, "source offset ", v.source_offset, " on a ", A(StorageName(v.storage)));
        }
        const int64_t row = v.source_row_stride != 0 ? v.source_row_stride : v.shape.empty() ? 1 : v.shape.back();
        if (v.source_offset < 0 || row <= 0 || v.source_offset % row != 0 ||
            v.source_offset > (int64_t{1} << 62)) {
          return ValueError(i, "source offset ", v.source_offset, " is not a whole number of rows of ",
                            row);
        }
      }
      if (!v.rank_offsets.empty() || v.source_row_stride != 0) {
        if (v.storage != Storage::kWeight) return ValueError(i, "rank offsets or a row stride on a ", A(StorageName(v.storage)));
        const int64_t row = v.shape.empty() ? 1 : v.shape.back();
        const int64_t block = info.block_size;
        const int64_t stride = v.source_row_stride != 0 ? v.source_row_stride : row;
        if (v.source_row_stride != 0 &&
            (v.source_row_stride < row || v.source_row_stride % block != 0 || v.source_row_stride > (int64_t{1} << 40))) {
          return ValueError(i, "row stride ", v.source_row_stride, " must be at least the row length ", row,
                            " and whole ", A(info.name), " blocks");
        }
        if (v.source_offset % stride != 0) {
          return ValueError(i, "source offset ", v.source_offset, " is not a whole number of source rows of ", stride);
        }
        if (!v.rank_offsets.empty() && static_cast<int64_t>(v.rank_offsets.size()) != TpRanks(g_)) {
          return ValueError(i, v.rank_offsets.size(), " rank offsets in a graph of meta tp=", TpRanks(g_));
        }
        for (int64_t o : v.rank_offsets) {
          if (o < 0 || o > (int64_t{1} << 62) || o % block != 0 ||
              (v.source_row_stride != 0 ? o % stride + row > stride : o % row != 0)) {
            return ValueError(i, "rank offset ", o, v.source_row_stride != 0
                                                        ? absl::StrCat(" is not a block of ", row, " columns inside rows of ", stride)
                                                        : absl::StrCat(" is not a whole number of rows of ", row));
          }
        }
      }
      if (v.producer < -1 || v.producer >= static_cast<int64_t>(g_.ops().size())) {
        return ValueError(i, "producer ", v.producer, " out of range (", g_.ops().size(), " ops)");
      }
      if (v.alias_of < -1 || v.alias_of >= nv_) {
        return ValueError(i, "alias_of ", v.alias_of, " out of range (", nv_, " values)");
      }
      if (auto s = CheckArenaOffset(i, n); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // The memory plan's per-device sizes (Graph::memory).
  absl::Status CheckMemory() const {
    for (const auto& [device, mem] : g_.memory) {
      if (!ValidDevice(device) || mem.arena_bytes < 0 || mem.kv_bytes < 0) {
        return absl::InvalidArgumentError(absl::StrCat("memory plan: invalid entry for device ",
                                                       static_cast<int>(device)));
      }
    }
    return absl::OkStatus();
  }

  // An arena offset lies inside its device's arena (whether values overlap is
  // passes/memory_check.h's question). `elems`: the value's elements at max_tokens.
  absl::Status CheckArenaOffset(ValueId i, int64_t elems) const {
    const Value& v = g_.value(i);
    if (v.arena_offset == -1) return absl::OkStatus();
    if (v.arena_offset < -1) return ValueError(i, "invalid arena offset ", v.arena_offset);
    if (v.storage == Storage::kWeight || v.storage == Storage::kKvCache) {
      return ValueError(i, "a ", A(StorageName(v.storage)), " has an arena offset (", v.arena_offset, ")");
    }
    auto it = g_.memory.find(v.device);
    if (it == g_.memory.end()) {
      return ValueError(i, "arena offset ", v.arena_offset, " but the graph has no ", A(DeviceName(v.device)),
                        " arena");
    }
    const int64_t bytes = *DTypeBytes(v.dtype, elems);  // checked by the caller
    if (v.arena_offset > it->second.arena_bytes || bytes > it->second.arena_bytes - v.arena_offset) {
      return ValueError(i, "bytes [", v.arena_offset, ", +", bytes, ") exceed the ", A(DeviceName(v.device)),
                        " arena of ", it->second.arena_bytes, " bytes");
    }
    return absl::OkStatus();
  }

  absl::Status CheckDefinitions() {
    def_op_.assign(nv_, -1);
    const std::vector<Op>& ops = g_.ops();
    for (OpId o = 0; o < static_cast<OpId>(ops.size()); ++o) {
      if (ops[o].outputs.empty()) return OpError(o, "has no outputs");
      for (size_t k = 0; k < ops[o].outputs.size(); ++k) {
        const ValueId v = ops[o].outputs[k];
        if (v < 0 || v >= nv_) {
          return OpError(o, "output ", k, " is value id ", v, ", out of range (", nv_, " values)");
        }
        if (def_op_[v] != -1) {
          return OpError(o, "output ", k, " ", ValueLabel(v), " is already defined by op ", def_op_[v]);
        }
        def_op_[v] = o;
      }
    }
    for (ValueId i = 0; i < nv_; ++i) {
      const Value& v = g_.value(i);
      const bool declared =
          v.storage == Storage::kInput || v.storage == Storage::kWeight || v.storage == Storage::kKvCache;
      if (def_op_[i] == -1) {
        if (!declared) return ValueError(i, "never defined: no op outputs this ", A(StorageName(v.storage)));
        if (v.producer != -1) return ValueError(i, "records producer op ", v.producer, " but no op outputs it");
        if (v.alias_of != -1) return ValueError(i, "a declaration cannot alias value ", v.alias_of);
        if (v.storage == Storage::kKvCache) {
          if (v.shape.size() != 3) {
            return ValueError(i, "KV cache must have rank 3 [C, KVH, hd], has ", ShapeToString(v.shape));
          }
          if (v.dtype != DType::kF16 && v.dtype != DType::kF32 && v.dtype != DType::kQ8_0) {
            return ValueError(i, "KV cache must be f16, f32 or q8_0, is ", A(DTypeName(v.dtype)));
          }
        }
        continue;
      }
      if (v.storage == Storage::kInput || v.storage == Storage::kWeight) {
        return ValueError(i, "a graph ", A(StorageName(v.storage)), " cannot be defined by op ", def_op_[i]);
      }
      if (v.producer != def_op_[i]) {
        return ValueError(i, "records producer op ", v.producer, " but is defined by op ", def_op_[i],
                          " (stale; call Graph::Reindex)");
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckOps() {
    std::vector<bool> defined(nv_, false);
    for (ValueId i = 0; i < nv_; ++i) defined[i] = def_op_[i] == -1;
    // Cache versions updated in place: value -> the kv_store op that did it.
    std::vector<OpId> overwritten_by(nv_, -1);
    const std::vector<Op>& ops = g_.ops();
    for (OpId o = 0; o < static_cast<OpId>(ops.size()); ++o) {
      const Op& op = ops[o];
      if (!IsValidOpKind(static_cast<int>(op.kind))) {
        return OpError(o, "invalid op kind ", static_cast<int>(op.kind));
      }
      if (!ValidDevice(op.device)) return OpError(o, "invalid device ", static_cast<int>(op.device));
      for (size_t k = 0; k < op.inputs.size(); ++k) {
        const ValueId v = op.inputs[k];
        if (v < 0 || v >= nv_) {
          return OpError(o, "input ", k, " is value id ", v, ", out of range (", nv_, " values)");
        }
        if (!defined[v]) {
          return OpError(o, "input ", k, " ", ValueLabel(v), " is used before its definition by op ",
                         def_op_[v]);
        }
        if (overwritten_by[v] != -1) {
          return OpError(o, "input ", k, " ", ValueLabel(v), " was already updated in place by kv_store op ",
                         overwritten_by[v], "; read that op's output instead");
        }
      }
      if (op.kind == OpKind::kFused) {
        if (auto s = CheckFused(o); !s.ok()) return s;
      } else {
        if (op.body != nullptr) return OpError(o, "only fused ops have a body");
        std::vector<std::string> names;
        for (ValueId v : op.outputs) names.push_back(g_.value(v).name);
        absl::StatusOr<std::vector<Value>> want =
            InferOpOutputs(g_, op.kind, op.inputs, op.attrs, names);
        if (!want.ok()) return absl::InvalidArgumentError(absl::StrCat("op ", o, ": ", want.status().message()));
        for (size_t k = 0; k < op.outputs.size(); ++k) {
          const ValueId out_id = op.outputs[k];
          const Value& out = g_.value(out_id);
          const Value& w = (*want)[k];
          if (out.dtype != w.dtype || out.shape != w.shape) {
            return OpError(o, "output ", op.outputs.size() > 1 ? absl::StrCat(k, " ") : "", "records ",
                           A(DTypeName(out.dtype)), ShapeToString(out.shape), " but the op produces ",
                           A(DTypeName(w.dtype)), ShapeToString(w.shape));
          }
          if (auto s = CheckOutputStorage(o, out_id, w); !s.ok()) return s;
        }
        if (op.kind == OpKind::kKvStore) overwritten_by[op.inputs[1]] = o;
      }
      if (auto s = CheckKernels(o); !s.ok()) return s;
      for (ValueId v : op.outputs) defined[v] = true;
    }
    return absl::OkStatus();
  }

  // Op::kernels (select-kernels): ascending, disjoint token ranges that cover
  // 1..max_tokens, each with a name; launch names non-empty.
  absl::Status CheckKernels(OpId o) const {
    const std::vector<KernelVariant>& ks = g_.ops()[o].kernels;
    if (ks.empty()) return absl::OkStatus();
    int64_t next = 1;
    for (size_t i = 0; i < ks.size(); ++i) {
      const KernelVariant& k = ks[i];
      if (k.t_min != next || k.t_max < k.t_min) {
        return OpError(o, "kernel variant ", i, " covers T=", k.t_min, "..", k.t_max, ", expected T=",
                       next, "..; variants must cover T=1..", max_tokens_, " in order");
      }
      if (k.name.empty()) return OpError(o, "kernel variant ", i, " has no name");
      for (const std::string& l : k.launches) {
        if (l.empty()) return OpError(o, "kernel variant ", i, " has an unnamed launch");
      }
      next = k.t_max + 1;
    }
    if (next != max_tokens_ + 1) {
      return OpError(o, "kernel variants end at T=", next - 1, ", not max_tokens ", max_tokens_);
    }
    return absl::OkStatus();
  }

  absl::Status CheckOutputStorage(OpId o, ValueId out_id, const Value& want) {
    const Value& out = g_.value(out_id);
    if (want.storage == Storage::kKvCache) {
      if (out.storage != Storage::kKvCache) {
        return OpError(o, "output storage is ", A(StorageName(out.storage)), ", expected kv");
      }
      if (out.alias_of != want.alias_of) {
        return OpError(o, "output aliases value ", out.alias_of, ", expected the KV cache ",
                       ValueLabel(want.alias_of));
      }
      const Value& root = g_.value(want.alias_of);
      if (root.storage != Storage::kKvCache || def_op_[want.alias_of] != -1) {
        return OpError(o, "aliased ", ValueLabel(want.alias_of), " is not a KV cache declaration");
      }
      if (root.dtype != out.dtype || root.shape != out.shape) {
        return OpError(o, "output differs in type from the aliased KV cache ", ValueLabel(want.alias_of));
      }
      return absl::OkStatus();
    }
    if (out.storage != Storage::kActivation && out.storage != Storage::kOutput) {
      return OpError(o, "output storage is ", A(StorageName(out.storage)), ", expected activation or output");
    }
    if (out.alias_of != -1) return OpError(o, "output aliases value ", out.alias_of, " but the op updates nothing");
    return absl::OkStatus();
  }

  absl::Status CheckFused(OpId o) {
    const Op& op = g_.ops()[o];
    if (op.body == nullptr) return OpError(o, "fused op without a body");
    if (depth_ >= kMaxBodyDepth) return OpError(o, "fused bodies nested deeper than ", kMaxBodyDepth);
    const Graph& body = *op.body;
    if (&body == &g_) return OpError(o, "body is the graph itself");
    Verifier inner(body, max_tokens_, depth_ + 1);
    if (auto s = inner.Run(); !s.ok()) return OpError(o, "body: ", s.message());
    std::vector<ValueId> body_inputs;
    for (ValueId i = 0; i < static_cast<ValueId>(body.values().size()); ++i) {
      const Value& v = body.value(i);
      if (v.producer != -1) continue;
      if (v.storage != Storage::kInput) {
        return OpError(o, "body: value ", i, " %", v.name, " is a ", A(StorageName(v.storage)),
                       "; a body declares only inputs");
      }
      body_inputs.push_back(i);
    }
    if (body_inputs.size() != op.inputs.size()) {
      return OpError(o, "body has ", body_inputs.size(), " inputs but the op has ", op.inputs.size());
    }
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const Value& outer = g_.value(op.inputs[k]);
      const Value& inner_v = body.value(body_inputs[k]);
      if (outer.dtype != inner_v.dtype || outer.shape != inner_v.shape) {
        return OpError(o, "input ", k, " ", ValueLabel(op.inputs[k]), " is ", A(DTypeName(outer.dtype)),
                       ShapeToString(outer.shape), " but body input %", inner_v.name, " is ",
                       A(DTypeName(inner_v.dtype)), ShapeToString(inner_v.shape));
      }
    }
    if (body.outputs().size() != op.outputs.size()) {
      return OpError(o, "body has ", body.outputs().size(), " outputs but the op has ", op.outputs.size());
    }
    for (size_t k = 0; k < op.outputs.size(); ++k) {
      const Value& outer = g_.value(op.outputs[k]);
      const Value& inner_v = body.value(body.outputs()[k]);
      if (outer.dtype != inner_v.dtype || outer.shape != inner_v.shape) {
        return OpError(o, "output ", k, " ", ValueLabel(op.outputs[k]), " is ", A(DTypeName(outer.dtype)),
                       ShapeToString(outer.shape), " but body output %", inner_v.name, " is ",
                       A(DTypeName(inner_v.dtype)), ShapeToString(inner_v.shape));
      }
      if (outer.storage != Storage::kActivation && outer.storage != Storage::kOutput) {
        return OpError(o, "output ", k, " storage is ", A(StorageName(outer.storage)),
                       ", expected activation or output");
      }
      if (outer.alias_of != -1) return OpError(o, "output ", k, " aliases value ", outer.alias_of);
    }
    absl::StatusOr<FusedBody> fb = AnalyzeFusedBody(op);
    if (!fb.ok()) return OpError(o, fb.status().message());
    return absl::OkStatus();
  }

  absl::Status CheckOutputs() {
    std::set<ValueId> seen;
    for (size_t k = 0; k < g_.outputs().size(); ++k) {
      const ValueId v = g_.outputs()[k];
      if (v < 0 || v >= nv_) {
        return absl::InvalidArgumentError(
            absl::StrCat("output ", k, " is value id ", v, ", out of range (", nv_, " values)"));
      }
      if (!seen.insert(v).second) return ValueError(v, "listed as a graph output twice");
      if (def_op_[v] == -1) return ValueError(v, "a graph output must be defined by an op");
      if (g_.value(v).storage != Storage::kOutput) {
        return ValueError(v, "a graph output must have storage output, has ",
                          A(StorageName(g_.value(v).storage)), " (use Graph::MarkOutput)");
      }
    }
    for (ValueId i = 0; i < nv_; ++i) {
      if (g_.value(i).storage == Storage::kOutput && !seen.count(i)) {
        return ValueError(i, "has storage output but is not in the graph's outputs");
      }
    }
    return absl::OkStatus();
  }

  const Graph& g_;
  const int64_t max_tokens_;
  const int depth_;
  int64_t nv_ = 0;
  std::vector<OpId> def_op_;
};

}  // namespace

absl::Status Verify(const Graph& g) { return Verifier(g, g.max_tokens, 0).Run(); }

}  // namespace vibrant::ir
