#include "passes/shard_tensor_parallel.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "ir/dtype.h"
#include "passes/dce.h"

namespace vibrant::passes {
namespace {

using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Storage;
using ir::Value;
using ir::ValueId;

// How a value of a rank's program relates to the whole (unsharded) value.
struct Shard {
  bool local = false;  // false: replicated, every rank holds the whole value
  int64_t parts = 1;   // local: axis 1 (the first after T) split into `parts` blocks
  int64_t div = 1;     // rank r holds block r / div (div > 1: replicated KV heads)
  bool operator==(const Shard&) const = default;
};

// What a matmul's weight is in a transformer block, from its GGUF name.
enum class Role { kOther, kQ, kK, kV, kFfnIn, kRow, kVocab };

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

class Sharder {
 public:
  Sharder(const Graph& in, int64_t n, PassContext& ctx) : in_(in), n_(n), ctx_(ctx) {}

  absl::StatusOr<Graph> Run() {
    if (absl::Status s = Check(); !s.ok()) return s;
    out_.meta = in_.meta;
    out_.meta["tp"] = n_;
    out_.max_tokens = in_.max_tokens;
    map_.assign(in_.values().size(), -1);

    n_head_ = MetaInt("n_head");
    n_kv_ = MetaInt("n_head_kv");
    attn_sharded_ = n_head_ > 0 && n_kv_ > 0 && n_head_ % n_ == 0 && (n_kv_ % n_ == 0 || n_ % n_kv_ == 0);
    if (!attn_sharded_) {
      Note(absl::StrCat("attention stays replicated: ", n_head_, " heads and ", n_kv_,
                        " KV heads do not split across ", n_, " ranks"));
    }
    for (const Op& op : in_.ops()) {
      if (absl::Status s = Rewrite(op); !s.ok()) return s;
    }
    for (ValueId o : in_.outputs()) {
      absl::StatusOr<ValueId> v = Mapped(o);
      if (!v.ok()) return v.status();
      if (Local(*v)) {
        return absl::InternalError(absl::StrCat("shard-tensor-parallel: output %", in_.value(o).name,
                                                " is still sharded"));
      }
      out_.MarkOutput(*v);
    }
    return std::move(out_);
  }

 private:
  absl::Status Check() const {
    if (n_ < 2 || n_ > ir::kMaxTpRanks) {
      return absl::InvalidArgumentError(absl::StrCat("--tp ", n_, ": tensor parallelism takes 2 to ",
                                                     ir::kMaxTpRanks, " ranks"));
    }
    if (ir::TpRanks(in_) != 1) return absl::InvalidArgumentError("the graph is already sharded (meta tp)");
    if (in_.meta.count("paged") != 0) {
      return absl::UnimplementedError(
          "--tp: a paged graph (continuous batching, vibrant-server) cannot be sharded yet");
    }
    if (!in_.memory.empty()) return absl::FailedPreconditionError("shard-tensor-parallel runs before plan-memory");
    for (const Op& op : in_.ops()) {
      if (op.kind == OpKind::kFused || op.kind == OpKind::kMultiMatMul || op.kind == OpKind::kQuantizeQ8 ||
          !op.kernels.empty() || op.device != ir::Device::kUnassigned) {
        return absl::FailedPreconditionError(absl::StrCat(
            "shard-tensor-parallel runs on the lowered graph, before devices, fusion and kernels (found ",
            A(ir::OpName(op.kind)), ")"));
      }
    }
    return absl::OkStatus();
  }

  int64_t MetaInt(const std::string& key) const {
    auto it = in_.meta.find(key);
    const int64_t* v = it == in_.meta.end() ? nullptr : std::get_if<int64_t>(&it->second);
    return v == nullptr ? 0 : *v;
  }

  void Note(std::string line) { ctx_.notes.push_back(absl::StrCat("shard-tensor-parallel: ", line)); }

  bool Local(ValueId v) const {
    auto it = shard_.find(v);
    return it != shard_.end() && it->second.local;
  }
  Shard ShardOf(ValueId v) const {
    auto it = shard_.find(v);
    return it == shard_.end() ? Shard{} : it->second;
  }

  // The new id of an old value; inputs, weights and KV caches are declared
  // on first use (KV caches by kv_store, which knows their rank's shape).
  absl::StatusOr<ValueId> Mapped(ValueId old) {
    if (map_[old] >= 0) return map_[old];
    const Value& v = in_.value(old);
    switch (v.storage) {
      case Storage::kInput: map_[old] = out_.AddInput(v.name, v.dtype, v.shape); break;
      case Storage::kWeight:
        map_[old] = out_.AddWeight(v.name, v.dtype, v.shape, v.source, v.source_offset);
        break;
      case Storage::kKvCache: map_[old] = out_.AddKvCache(v.name, v.dtype, v.shape); break;
      default:
        return absl::InternalError(absl::StrCat("shard-tensor-parallel: %", v.name, " used before its op"));
    }
    return map_[old];
  }

  absl::StatusOr<ValueId> AddOp(OpKind kind, std::vector<ValueId> inputs, const std::string& name,
                                ir::Attrs attrs, Shard s) {
    absl::StatusOr<ValueId> v = out_.AddOp(kind, std::move(inputs), name, std::move(attrs));
    if (!v.ok()) {
      return absl::Status(v.status().code(),
                          absl::StrCat("shard-tensor-parallel (--tp ", n_, "): ", v.status().message()));
    }
    if (s.local) shard_[*v] = s;
    return *v;
  }

  // The whole value of a local one: all_gather along axis 1 (through a flat
  // [T, C] view when the value has more axes: [T, H, hd]).
  absl::StatusOr<ValueId> Gather(ValueId v) {
    if (!Local(v)) return v;
    if (auto it = gathered_.find(v); it != gathered_.end()) return it->second;
    const Shard s = ShardOf(v);
    const Value& val = out_.value(v);
    if (s.parts != n_ || s.div != 1) {
      return absl::InternalError(absl::StrCat("shard-tensor-parallel: %", val.name,
                                              " holds replicated KV heads and cannot be gathered"));
    }
    const ir::Attrs ranks = {{"ranks", n_}};
    ValueId whole;
    if (val.shape.size() == 2) {
      absl::StatusOr<ValueId> g = AddOp(OpKind::kAllGather, {v}, val.name + ".all", ranks, {});
      if (!g.ok()) return g.status();
      whole = *g;
    } else {
      int64_t row = 1;
      std::vector<int64_t> full = {-1};
      for (size_t i = 1; i < val.shape.size(); ++i) {
        row *= val.shape[i];
        full.push_back(i == 1 ? val.shape[i] * n_ : val.shape[i]);
      }
      const std::string name = val.name;
      absl::StatusOr<ValueId> flat =
          AddOp(OpKind::kReshape, {v}, name + ".flat", {{"shape", std::vector<int64_t>{-1, row}}}, s);
      if (!flat.ok()) return flat.status();
      absl::StatusOr<ValueId> g = AddOp(OpKind::kAllGather, {*flat}, name + ".flat.all", ranks, {});
      if (!g.ok()) return g.status();
      absl::StatusOr<ValueId> back = AddOp(OpKind::kReshape, {*g}, name + ".all", {{"shape", full}}, {});
      if (!back.ok()) return back.status();
      whole = *back;
    }
    gathered_[v] = whole;
    return whole;
  }

  // A weight (or bias) split into `s.parts` blocks of its first axis; rank r
  // reads block r / s.div.
  absl::StatusOr<ValueId> RowBlocks(ValueId old, Shard s) {
    const auto key = std::make_tuple(old, s.parts, s.div);
    if (auto it = row_blocks_.find(key); it != row_blocks_.end()) return it->second;
    const Value& w = in_.value(old);
    if (w.storage != Storage::kWeight || w.shape.empty() || w.shape[0] % s.parts != 0) {
      return absl::InternalError(absl::StrCat("shard-tensor-parallel: cannot split %", w.name, " in ", s.parts));
    }
    int64_t per_row = 1;
    for (size_t i = 1; i < w.shape.size(); ++i) per_row *= w.shape[i];
    ir::Shape shape = w.shape;
    shape[0] /= s.parts;
    const ValueId v = out_.AddWeight(w.name + ".tp", w.dtype, shape, w.source, w.source_offset);
    Value& nv = out_.mutable_value(v);
    for (int64_t r = 0; r < n_; ++r) nv.rank_offsets.push_back((r / s.div) * shape[0] * per_row);
    row_blocks_[key] = v;
    return v;
  }

  // A weight [N, K] split into n blocks of columns (row-parallel); none when
  // the columns per rank are not whole quantization blocks.
  std::optional<ValueId> ColumnBlocks(ValueId old) {
    const Value& w = in_.value(old);
    if (w.shape.size() != 2 || w.source_row_stride != 0) return std::nullopt;
    const int64_t k = w.shape[1];
    const int64_t block = GetDTypeInfo(w.dtype).block_size;
    if (k % n_ != 0 || (k / n_) % block != 0) return std::nullopt;
    const ValueId v = out_.AddWeight(w.name + ".tp", w.dtype, {w.shape[0], k / n_}, w.source, w.source_offset);
    Value& nv = out_.mutable_value(v);
    nv.source_row_stride = k;
    for (int64_t r = 0; r < n_; ++r) nv.rank_offsets.push_back(r * (k / n_));
    return v;
  }

  Role Classify(const Value& w) const {
    std::string s = w.source;
    if (s == "output.weight" || s == "token_embd.weight") return Role::kVocab;
    if (s.rfind("blk.", 0) != 0) return Role::kOther;
    const size_t dot = s.find('.', 4);
    if (dot == std::string::npos) return Role::kOther;
    s = s.substr(dot + 1);
    auto is = [&](const std::string& base) { return s == base + ".weight" || s == base + ".bias"; };
    if (is("attn_q")) return Role::kQ;
    if (is("attn_k")) return Role::kK;
    if (is("attn_v")) return Role::kV;
    if (is("attn_output") || is("ffn_down")) return Role::kRow;
    if (is("ffn_gate") || is("ffn_up")) return Role::kFfnIn;
    if (is("attn_qkv") && w.shape.size() == 2) {
      // phi3's fused q/k/v, seen as three row views (frontends/lower).
      const int64_t row = w.shape[1] > 0 ? w.source_offset / w.shape[1] : -1;
      const int64_t hd = MetaInt("head_dim");
      if (hd <= 0) return Role::kOther;
      if (row == 0) return Role::kQ;
      if (row == n_head_ * hd) return Role::kK;
      if (row == (n_head_ + n_kv_) * hd) return Role::kV;
    }
    return Role::kOther;
  }

  // The shard a column-parallel projection's output gets (replicated when it
  // cannot split).
  Shard ColumnShard(Role role, const Value& w) const {
    Shard s;
    switch (role) {
      case Role::kQ:
        if (!attn_sharded_) return s;
        s = {true, n_, 1};
        break;
      case Role::kK:
      case Role::kV:
        if (!attn_sharded_) return s;
        s = n_kv_ % n_ == 0 ? Shard{true, n_, 1} : Shard{true, n_kv_, n_ / n_kv_};
        break;
      case Role::kFfnIn:
      case Role::kVocab:
        s = {true, n_, 1};
        break;
      default:
        return s;
    }
    if (w.shape.empty() || w.shape[0] % s.parts != 0) return Shard{};
    return s;
  }

  absl::Status Rewrite(const Op& op) {
    std::vector<ValueId> in;
    for (size_t i = 0; i < op.inputs.size(); ++i) {
      const ValueId v = op.inputs[i];
      if (v < 0 || v >= static_cast<ValueId>(map_.size())) return absl::InternalError("bad input");
      if (op.kind == OpKind::kKvStore && i == 1 && map_[v] < 0 && in_.value(v).storage == Storage::kKvCache) {
        in.push_back(-1);  // declared by KvStore, with the rank's shape
        continue;
      }
      absl::StatusOr<ValueId> m = Mapped(v);
      if (!m.ok()) return m.status();
      in.push_back(*m);
    }
    const std::string name = in_.value(op.outputs[0]).name;
    absl::StatusOr<ValueId> out = absl::InternalError("unset");
    switch (op.kind) {
      case OpKind::kMatMul: out = MatMul(op, in, name); break;
      case OpKind::kAdd:
      case OpKind::kMul: out = Binary(op, in, name); break;
      case OpKind::kSilu:
      case OpKind::kGelu:
      case OpKind::kScale:
      case OpKind::kRope:
      case OpKind::kLastRow:
        // Row-local (rope: per head): the rank's part stays the rank's part.
        out = AddOp(op.kind, in, name, op.attrs, ShardOf(in[0]));
        break;
      case OpKind::kRmsNorm:
        // Over the last axis: a rank's heads ([T, H/N, hd]) normalize alone;
        // a row split across ranks needs the whole row.
        if (Local(in[0]) && out_.value(in[0]).shape.size() >= 3) {
          out = AddOp(op.kind, in, name, op.attrs, ShardOf(in[0]));
        } else {
          out = Replicated(op, in, name);
        }
        break;
      case OpKind::kReshape: out = Reshape(op, in, name); break;
      case OpKind::kKvStore: out = KvStore(op, in, name); break;
      case OpKind::kAttention: out = Attention(op, in, name); break;
      default: out = Replicated(op, in, name); break;
    }
    if (!out.ok()) return out.status();
    map_[op.outputs[0]] = *out;
    return absl::OkStatus();
  }

  // The op on whole values: local inputs gathered first.
  absl::StatusOr<ValueId> Replicated(const Op& op, std::vector<ValueId> in, const std::string& name) {
    if (op.outputs.size() != 1) {
      return absl::UnimplementedError(absl::StrCat("shard-tensor-parallel: ", A(ir::OpName(op.kind)),
                                                   " with several outputs"));
    }
    for (ValueId& v : in) {
      absl::StatusOr<ValueId> g = Gather(v);
      if (!g.ok()) return g.status();
      v = *g;
    }
    return AddOp(op.kind, std::move(in), name, op.attrs, {});
  }

  absl::StatusOr<ValueId> MatMul(const Op& op, std::vector<ValueId> in, const std::string& name) {
    const Value& w = in_.value(op.inputs[1]);
    const bool has_bias = op.inputs.size() == 3;
    const Role role = Classify(w);
    const ir::Attrs ranks = {{"ranks", n_}};
    if (role == Role::kRow && Local(in[0]) && ShardOf(in[0]) == Shard{true, n_, 1}) {
      std::optional<ValueId> cols = ColumnBlocks(op.inputs[1]);
      if (cols.has_value() && out_.value(in[0]).shape.back() == out_.value(*cols).shape[1]) {
        absl::StatusOr<ValueId> partial =
            AddOp(OpKind::kMatMul, {in[0], *cols}, name + ".partial", op.attrs, {});
        if (!partial.ok()) return partial.status();
        absl::StatusOr<ValueId> sum = AddOp(OpKind::kAllReduce, {*partial}, has_bias ? name + ".sum" : name, ranks, {});
        if (!sum.ok() || !has_bias) return sum;
        return AddOp(OpKind::kAdd, {*sum, in[2]}, name, {}, {});
      }
      Note(absl::StrCat(w.name, ": ", w.shape.size() == 2 ? w.shape[1] : 0, " columns of ", A(DTypeName(w.dtype)),
                        " (blocks of ", GetDTypeInfo(w.dtype).block_size, ") do not split into ", n_,
                        " whole-block parts: its input is gathered and it runs replicated"));
      return Replicated(op, std::move(in), name);
    }
    const Shard s = ColumnShard(role, w);
    if (!s.local) {  // not a column-parallel role, or rows that do not split
      if (role == Role::kVocab) {
        Note(absl::StrCat(w.name, ": ", w.shape.empty() ? 0 : w.shape[0], " rows do not split into ", n_,
                          ": the output projection runs replicated"));
      }
      return Replicated(op, std::move(in), name);
    }
    absl::StatusOr<ValueId> x = Gather(in[0]);
    if (!x.ok()) return x.status();
    absl::StatusOr<ValueId> rows = RowBlocks(op.inputs[1], s);
    if (!rows.ok()) return rows.status();
    std::vector<ValueId> args = {*x, *rows};
    if (has_bias) {
      absl::StatusOr<ValueId> b = RowBlocks(op.inputs[2], s);
      if (!b.ok()) return b.status();
      args.push_back(*b);
    }
    if (role != Role::kVocab) return AddOp(OpKind::kMatMul, std::move(args), name, op.attrs, s);
    // Vocab-parallel: each rank its block of the vocabulary, then the whole row.
    absl::StatusOr<ValueId> part = AddOp(OpKind::kMatMul, std::move(args), name + ".shard", op.attrs, s);
    if (!part.ok()) return part.status();
    return AddOp(OpKind::kAllGather, {*part}, name, ranks, {});
  }

  absl::StatusOr<ValueId> Binary(const Op& op, std::vector<ValueId> in, const std::string& name) {
    const bool a_local = Local(in[0]), b_local = Local(in[1]);
    if (!a_local && !b_local) return AddOp(op.kind, in, name, op.attrs, {});
    if (a_local && b_local) {
      if (ShardOf(in[0]) == ShardOf(in[1])) return AddOp(op.kind, in, name, op.attrs, ShardOf(in[0]));
      return Replicated(op, std::move(in), name);
    }
    if (a_local) {
      const Shard s = ShardOf(in[0]);
      const size_t a_rank = out_.value(in[0]).shape.size();
      const Value& b_old = in_.value(op.inputs[1]);
      const size_t b_rank = b_old.shape.size();
      if (b_rank + 1 < a_rank) {
        // b broadcasts inside the rank's part ([hd] over [T, H/N, hd]).
        return AddOp(op.kind, in, name, op.attrs, s);
      }
      if (b_rank + 1 == a_rank && b_old.storage == Storage::kWeight) {
        // A bias or scale along the split axis: the rank's block of it.
        absl::StatusOr<ValueId> b = RowBlocks(op.inputs[1], s);
        if (!b.ok()) return b.status();
        return AddOp(op.kind, {in[0], *b}, name, op.attrs, s);
      }
    }
    return Replicated(op, std::move(in), name);
  }

  absl::StatusOr<ValueId> Reshape(const Op& op, std::vector<ValueId> in, const std::string& name) {
    if (!Local(in[0])) return AddOp(op.kind, in, name, op.attrs, {});
    const Value& old_in = in_.value(op.inputs[0]);
    const Value& new_in = out_.value(in[0]);
    const auto* shape = std::get_if<std::vector<int64_t>>(&op.attrs.at("shape"));
    int64_t old_row = 1, new_row = 1;
    for (size_t i = 1; i < old_in.shape.size(); ++i) old_row *= old_in.shape[i];
    for (size_t i = 1; i < new_in.shape.size(); ++i) new_row *= new_in.shape[i];
    if (shape != nullptr && shape->size() >= 2 && (*shape)[0] == -1 && old_in.shape[0] == ir::kTokens &&
        new_row > 0 && old_row % new_row == 0 && (*shape)[1] % (old_row / new_row) == 0) {
      std::vector<int64_t> local = *shape;
      local[1] /= old_row / new_row;
      ir::Attrs attrs = op.attrs;
      attrs["shape"] = local;
      return AddOp(op.kind, in, name, attrs, ShardOf(in[0]));
    }
    return Replicated(op, std::move(in), name);
  }

  absl::StatusOr<ValueId> KvStore(const Op& op, std::vector<ValueId> in, const std::string& name) {
    if (in[1] < 0) {
      // The cache's first writer: a local source holds the rank's KV heads,
      // and the rank's cache has their shape.
      const ValueId old_cache = op.inputs[1];
      const Value& cache = in_.value(old_cache);
      const Value& src = out_.value(in[0]);
      if (Local(in[0]) && cache.shape.size() == 3 && src.shape.size() == 3) {
        map_[old_cache] = out_.AddKvCache(cache.name, cache.dtype, {cache.shape[0], src.shape[1], src.shape[2]});
      } else {
        absl::StatusOr<ValueId> m = Mapped(old_cache);
        if (!m.ok()) return m.status();
      }
      in[1] = map_[old_cache];
    }
    if (!Local(in[0])) return AddOp(op.kind, in, name, op.attrs, {});
    return AddOp(op.kind, in, name, op.attrs, ShardOf(in[0]));
  }

  absl::StatusOr<ValueId> Attention(const Op& op, std::vector<ValueId> in, const std::string& name) {
    const bool q = Local(in[0]), k = Local(in[1]), v = Local(in[2]);
    if (!q && !k && !v) return AddOp(op.kind, in, name, op.attrs, {});
    if (q && k && v) return AddOp(op.kind, in, name, op.attrs, ShardOf(in[0]));
    return absl::InternalError(absl::StrCat("shard-tensor-parallel: attention ", name,
                                            " mixes sharded and replicated q/k/v"));
  }

  const Graph& in_;
  const int64_t n_;
  PassContext& ctx_;
  Graph out_;
  std::vector<ValueId> map_;
  std::map<ValueId, Shard> shard_;
  std::map<ValueId, ValueId> gathered_;
  std::map<std::tuple<ValueId, int64_t, int64_t>, ValueId> row_blocks_;
  int64_t n_head_ = 0, n_kv_ = 0;
  bool attn_sharded_ = false;
};

}  // namespace

absl::Status ShardTensorParallelGraph(ir::Graph& g, int64_t ranks, PassContext& ctx) {
  absl::StatusOr<Graph> out = Sharder(g, ranks, ctx).Run();
  if (!out.ok()) return out.status();
  g = *std::move(out);
  // The whole weights the shards replaced (declared while the ops were read).
  return EliminateDeadCode(g);
}

Pass ShardTensorParallel(int64_t ranks) {
  Pass p;
  p.name = "shard-tensor-parallel";
  p.run = [ranks](ir::Graph& g, PassContext& ctx) { return ShardTensorParallelGraph(g, ranks, ctx); };
  return p;
}

}  // namespace vibrant::passes
