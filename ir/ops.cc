#include "ir/ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/graph.h"

namespace vibrant::ir {
namespace {

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }
absl::string_view TN(DType t) { return A(DTypeName(t)); }
absl::string_view SN(Storage s) { return A(StorageName(s)); }

constexpr int kManyInputs = 1 << 16;

// Indexed by OpKind.
constexpr OpInfo kOps[] = {
    {OpKind::kEmbedding, "embedding", 2, 2, false},
    {OpKind::kMatMul, "matmul", 2, 3, false},
    {OpKind::kRmsNorm, "rms_norm", 1, 1, false},
    {OpKind::kAdd, "add", 2, 2, true},
    {OpKind::kMul, "mul", 2, 2, true},
    {OpKind::kSilu, "silu", 1, 1, true},
    {OpKind::kReshape, "reshape", 1, 1, false},
    {OpKind::kRope, "rope", 2, 3, false},
    {OpKind::kKvStore, "kv_store", 3, 3, false},
    {OpKind::kAttention, "attention", 4, 4, false},
    {OpKind::kLastRow, "last_row", 1, 1, false},
    {OpKind::kCopy, "copy", 1, 1, false},
    {OpKind::kFused, "fused", 1, kManyInputs, false},
};
constexpr int kNumOps = static_cast<int>(std::size(kOps));
static_assert(static_cast<int>(OpKind::kFused) + 1 == kNumOps);

// Builds "<op> <out>: <msg...>" errors.
class OpErrors {
 public:
  OpErrors(OpKind kind, const std::string& out) : prefix_(absl::StrCat(A(OpName(kind)), " ", out, ": ")) {}
  template <typename... Args>
  absl::Status operator()(const Args&... args) const {
    return absl::InvalidArgumentError(absl::StrCat(prefix_, args...));
  }

 private:
  std::string prefix_;
};

std::string Dim(int64_t d) { return d == kTokens ? std::string("T") : absl::StrCat(d); }

bool IsStatic(const Shape& s) {
  for (int64_t d : s) {
    if (d <= 0) return false;
  }
  return true;
}

std::string Desc(const Value& v) {
  return absl::StrCat(v.name, " (", TN(v.dtype), ShapeToString(v.shape), ")");
}

// Reads an integer attribute. `required` false: `dflt` when absent.
absl::StatusOr<int64_t> IntAttrChecked(const OpErrors& err, const Attrs& attrs, const std::string& key,
                                       bool required, int64_t dflt) {
  auto it = attrs.find(key);
  if (it == attrs.end()) {
    if (required) return err("missing integer attribute '", key, "'");
    return dflt;
  }
  if (const int64_t* i = std::get_if<int64_t>(&it->second)) return *i;
  return err("attribute '", key, "' must be an integer");
}

// Reads a float attribute (an integer is accepted and converted).
absl::StatusOr<double> FloatAttrChecked(const OpErrors& err, const Attrs& attrs, const std::string& key,
                                        bool required, double dflt) {
  auto it = attrs.find(key);
  if (it == attrs.end()) {
    if (required) return err("missing float attribute '", key, "'");
    return dflt;
  }
  if (const double* d = std::get_if<double>(&it->second)) {
    if (!std::isfinite(*d)) return err("attribute '", key, "' must be finite, is ", *d);
    return *d;
  }
  if (const int64_t* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  return err("attribute '", key, "' must be a number");
}

absl::Status CheckF32(const OpErrors& err, const char* role, const Value& v) {
  if (v.dtype != DType::kF32) return err(role, " ", v.name, " must be f32, is ", TN(v.dtype));
  return absl::OkStatus();
}

absl::Status CheckRank(const OpErrors& err, const char* role, const Value& v, size_t rank,
                       const char* form) {
  if (v.shape.size() != rank) {
    return err(role, " ", v.name, " must have rank ", rank, " ", form, ", has shape ",
               ShapeToString(v.shape));
  }
  return absl::OkStatus();
}

absl::Status CheckPositions(const OpErrors& err, const Value& pos, int64_t tokens, const char* of) {
  if (pos.dtype != DType::kI32) return err("positions ", pos.name, " must be i32, is ", TN(pos.dtype));
  if (pos.shape.size() != 1) {
    return err("positions ", pos.name, " must have rank 1, has shape ", ShapeToString(pos.shape));
  }
  if (pos.shape[0] != tokens) {
    return err("positions ", pos.name, " has ", Dim(pos.shape[0]), " rows but ", of, " has ", Dim(tokens));
  }
  return absl::OkStatus();
}

absl::Status CheckWholeBlocks(const OpErrors& err, const Value& w, int64_t row) {
  const DTypeInfo& info = GetDTypeInfo(w.dtype);
  if (row % info.block_size != 0) {
    return err(w.name, ": rows of ", row, " elements are not whole ", A(info.name), " blocks of ",
               info.block_size);
  }
  return absl::OkStatus();
}

}  // namespace

const OpInfo& GetOpInfo(OpKind kind) {
  int i = static_cast<int>(kind);
  if (i < 0 || i >= kNumOps) return kOps[kNumOps - 1];  // unreachable for valid enum values
  return kOps[i];
}

absl::StatusOr<OpKind> OpKindFromName(std::string_view name) {
  for (const OpInfo& info : kOps) {
    if (info.name == name) return info.kind;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown op '", std::string(name), "'"));
}

bool IsValidOpKind(int kind) { return kind >= 0 && kind < kNumOps; }

absl::StatusOr<Value> InferOpOutput(const Graph& g, OpKind kind, const std::vector<ValueId>& inputs,
                                    const Attrs& attrs, const std::string& out_name) {
  if (!IsValidOpKind(static_cast<int>(kind))) {
    return absl::InvalidArgumentError(
        absl::StrCat("op ", out_name, ": invalid op kind ", static_cast<int>(kind)));
  }
  const OpErrors err(kind, out_name);
  const OpInfo& info = GetOpInfo(kind);
  if (kind == OpKind::kFused) {
    return err("fused ops are built with AddRawOp (their outputs come from the body)");
  }
  const int n = static_cast<int>(inputs.size());
  if (n < info.min_inputs || n > info.max_inputs) {
    if (info.min_inputs == info.max_inputs) return err("takes ", info.min_inputs, " inputs, got ", n);
    return err("takes ", info.min_inputs, " to ", info.max_inputs, " inputs, got ", n);
  }
  // Only the attributes ops.h defines: a misspelt key would otherwise be
  // silently replaced by its default.
  std::vector<std::string> allowed;
  switch (kind) {
    case OpKind::kRmsNorm: allowed = {"eps"}; break;
    case OpKind::kReshape: allowed = {"shape"}; break;
    case OpKind::kRope: allowed = {"freq_base", "freq_scale", "mode", "n_rot"}; break;
    case OpKind::kAttention: allowed = {"scale"}; break;
    default: break;
  }
  for (const auto& [key, value] : attrs) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      if (allowed.empty()) return err("unknown attribute '", key, "' (", A(info.name), " takes none)");
      return err("unknown attribute '", key, "' (", A(info.name), " takes ", absl::StrJoin(allowed, ", "), ")");
    }
  }
  const int64_t num_values = static_cast<int64_t>(g.values().size());
  std::vector<const Value*> in;
  for (int i = 0; i < n; ++i) {
    if (inputs[i] < 0 || inputs[i] >= num_values) {
      return err("input ", i, " is value id ", inputs[i], ", out of range (", num_values, " values)");
    }
    in.push_back(&g.value(inputs[i]));
  }

  Value out;
  out.name = out_name;
  out.dtype = DType::kF32;
  out.storage = Storage::kActivation;

  switch (kind) {
    case OpKind::kEmbedding: {
      const Value& table = *in[0];
      const Value& ids = *in[1];
      if (auto s = CheckRank(err, "table", table, 2, "[V, D]"); !s.ok()) return s;
      if (!IsStatic(table.shape)) return err("table ", table.name, " must have a static shape, has ",
                                             ShapeToString(table.shape));
      if (auto s = CheckWholeBlocks(err, table, table.shape[1]); !s.ok()) return s;
      if (ids.dtype != DType::kI32) return err("ids ", ids.name, " must be i32, is ", TN(ids.dtype));
      if (ids.shape.size() != 1) {
        return err("ids ", ids.name, " must have rank 1, has shape ", ShapeToString(ids.shape));
      }
      out.shape = {ids.shape[0], table.shape[1]};
      break;
    }
    case OpKind::kMatMul: {
      const Value& x = *in[0];
      const Value& w = *in[1];
      if (auto s = CheckF32(err, "x", x); !s.ok()) return s;
      if (auto s = CheckRank(err, "x", x, 2, "[T, K]"); !s.ok()) return s;
      if (auto s = CheckRank(err, "weight", w, 2, "[N, K]"); !s.ok()) return s;
      if (!IsStatic(w.shape)) {
        return err("weight ", w.name, " must have a static shape, has ", ShapeToString(w.shape));
      }
      if (x.shape[1] != w.shape[1]) {
        return err("x has ", Dim(x.shape[1]), " columns but weight ", w.name, " has ", w.shape[1]);
      }
      if (auto s = CheckWholeBlocks(err, w, w.shape[1]); !s.ok()) return s;
      if (n == 3) {
        const Value& b = *in[2];
        if (auto s = CheckF32(err, "bias", b); !s.ok()) return s;
        if (b.shape != Shape{w.shape[0]}) {
          return err("bias ", b.name, " has shape ", ShapeToString(b.shape), " but weight ", w.name,
                     " has ", w.shape[0], " rows");
        }
      }
      out.shape = {x.shape[0], w.shape[0]};
      break;
    }
    case OpKind::kRmsNorm: {
      const Value& x = *in[0];
      if (auto s = CheckF32(err, "x", x); !s.ok()) return s;
      if (x.shape.empty()) return err("x ", x.name, " must have rank >= 1");
      auto eps = FloatAttrChecked(err, attrs, "eps", true, 0);
      if (!eps.ok()) return eps.status();
      if (*eps < 0) return err("eps must be >= 0, is ", *eps);
      out.shape = x.shape;
      break;
    }
    case OpKind::kAdd:
    case OpKind::kMul: {
      const Value& a = *in[0];
      const Value& b = *in[1];
      if (auto s = CheckF32(err, "a", a); !s.ok()) return s;
      if (auto s = CheckF32(err, "b", b); !s.ok()) return s;
      bool suffix = b.shape.size() <= a.shape.size();
      for (size_t i = 0; suffix && i < b.shape.size(); ++i) {
        suffix = b.shape[b.shape.size() - 1 - i] == a.shape[a.shape.size() - 1 - i];
      }
      if (!suffix) {
        return err("b ", b.name, " has shape ", ShapeToString(b.shape), ", not a suffix of a ", a.name,
                   "'s shape ", ShapeToString(a.shape));
      }
      out.shape = a.shape;
      break;
    }
    case OpKind::kSilu: {
      if (auto s = CheckF32(err, "x", *in[0]); !s.ok()) return s;
      out.shape = in[0]->shape;
      break;
    }
    case OpKind::kReshape: {
      const Value& x = *in[0];
      if (IsQuantized(x.dtype)) return err("cannot reshape ", Desc(x), ": quantized type");
      auto it = attrs.find("shape");
      if (it == attrs.end()) return err("missing integer-list attribute 'shape'");
      const auto* target = std::get_if<std::vector<int64_t>>(&it->second);
      if (target == nullptr) return err("attribute 'shape' must be an integer list");
      const Shape& to = *target;
      const bool x_has_t = !x.shape.empty() && x.shape[0] == kTokens;
      for (size_t i = 0; i < to.size(); ++i) {
        if (to[i] == kTokens && i != 0) return err("target shape ", ShapeToString(to), ": T only as the outermost dim");
        if (to[i] <= 0 && to[i] != kTokens) return err("target shape ", ShapeToString(to), ": dim ", i, " is ", to[i]);
      }
      const bool to_has_t = !to.empty() && to[0] == kTokens;
      if (x_has_t != to_has_t) {
        return err("target shape ", ShapeToString(to), (x_has_t ? " lacks" : " has"),
                   " the outer T dim of x ", Desc(x));
      }
      auto product = [](const Shape& s, int64_t* p) {
        *p = 1;
        for (int64_t d : s) {
          if (d == kTokens) continue;
          if (d <= 0 || __builtin_mul_overflow(*p, d, p)) return false;
        }
        return true;
      };
      int64_t from_n, to_n;
      if (!product(x.shape, &from_n)) return err("x ", Desc(x), " has an invalid shape");
      if (!product(to, &to_n)) return err("target shape ", ShapeToString(to), " overflows");
      if (from_n != to_n) {
        return err("cannot reshape ", Desc(x), " to ", ShapeToString(to), ": element count differs");
      }
      out.dtype = x.dtype;
      out.shape = to;
      break;
    }
    case OpKind::kRope: {
      const Value& x = *in[0];
      if (auto s = CheckF32(err, "x", x); !s.ok()) return s;
      if (auto s = CheckRank(err, "x", x, 3, "[T, H, hd]"); !s.ok()) return s;
      if (auto s = CheckPositions(err, *in[1], x.shape[0], "x"); !s.ok()) return s;
      auto mode = IntAttrChecked(err, attrs, "mode", false, 0);
      if (!mode.ok()) return mode.status();
      if (*mode != 0 && *mode != 2) return err("mode must be 0 (normal) or 2 (neox), is ", *mode);
      auto n_rot = IntAttrChecked(err, attrs, "n_rot", true, 0);
      if (!n_rot.ok()) return n_rot.status();
      if (*n_rot <= 0 || *n_rot % 2 != 0 || *n_rot > x.shape[2]) {
        return err("n_rot must be even and in [2, head_dim ", Dim(x.shape[2]), "], is ", *n_rot);
      }
      auto base = FloatAttrChecked(err, attrs, "freq_base", true, 0);
      if (!base.ok()) return base.status();
      if (*base <= 0) return err("freq_base must be > 0, is ", *base);
      auto scale = FloatAttrChecked(err, attrs, "freq_scale", false, 1.0);
      if (!scale.ok()) return scale.status();
      if (*scale <= 0) return err("freq_scale must be > 0, is ", *scale);
      if (n == 3) {
        const Value& ff = *in[2];
        if (auto s = CheckF32(err, "freq_factors", ff); !s.ok()) return s;
        if (ff.shape != Shape{*n_rot / 2}) {
          return err("freq_factors ", ff.name, " has shape ", ShapeToString(ff.shape), ", expected [",
                     *n_rot / 2, "] (n_rot/2)");
        }
      }
      out.shape = x.shape;
      break;
    }
    case OpKind::kKvStore: {
      const Value& src = *in[0];
      const Value& cache = *in[1];
      if (auto s = CheckF32(err, "src", src); !s.ok()) return s;
      if (auto s = CheckRank(err, "src", src, 3, "[T, KVH, hd]"); !s.ok()) return s;
      if (auto s = CheckRank(err, "cache", cache, 3, "[C, KVH, hd]"); !s.ok()) return s;
      if (cache.storage != Storage::kKvCache) {
        return err("cache ", cache.name, " must be a KV cache, is ", SN(cache.storage));
      }
      if (cache.dtype != DType::kF16 && cache.dtype != DType::kF32 && cache.dtype != DType::kQ8_0) {
        return err("cache ", cache.name, " must be f16, f32 or q8_0, is ", TN(cache.dtype));
      }
      if (cache.dtype == DType::kQ8_0 && cache.shape[2] % 32 != 0) {
        return err("cache ", cache.name, " is q8_0 but its head_dim ", cache.shape[2],
                   " is not a multiple of 32");
      }
      if (!IsStatic(cache.shape)) {
        return err("cache ", cache.name, " must have a static shape, has ", ShapeToString(cache.shape));
      }
      if (src.shape[1] != cache.shape[1] || src.shape[2] != cache.shape[2]) {
        return err("src ", Desc(src), " does not match the rows of cache ", Desc(cache));
      }
      if (auto s = CheckPositions(err, *in[2], src.shape[0], "src"); !s.ok()) return s;
      out.dtype = cache.dtype;
      out.shape = cache.shape;
      out.storage = Storage::kKvCache;
      out.alias_of = (cache.alias_of >= 0 && cache.alias_of < num_values) ? cache.alias_of : inputs[1];
      break;
    }
    case OpKind::kAttention: {
      const Value& q = *in[0];
      const Value& k = *in[1];
      const Value& v = *in[2];
      if (auto s = CheckF32(err, "q", q); !s.ok()) return s;
      if (auto s = CheckRank(err, "q", q, 3, "[T, H, hd]"); !s.ok()) return s;
      if (auto s = CheckRank(err, "k", k, 3, "[C, KVH, hd]"); !s.ok()) return s;
      if (auto s = CheckRank(err, "v", v, 3, "[C, KVH, hd]"); !s.ok()) return s;
      for (const Value* kv : {&k, &v}) {
        if (kv->dtype != DType::kF16 && kv->dtype != DType::kF32 && kv->dtype != DType::kQ8_0) {
          return err(kv == &k ? "k " : "v ", kv->name, " must be f16, f32 or q8_0, is ",
                     TN(kv->dtype));
        }
        if (kv->dtype == DType::kQ8_0 && kv->shape[2] % 32 != 0) {
          return err(kv == &k ? "k " : "v ", kv->name, " is q8_0 but its head_dim ", kv->shape[2],
                     " is not a multiple of 32");
        }
        if (!IsStatic(kv->shape)) {
          return err(kv == &k ? "k " : "v ", kv->name, " must have a static shape, has ",
                     ShapeToString(kv->shape));
        }
      }
      if (k.shape != v.shape) return err("k ", Desc(k), " and v ", Desc(v), " differ in shape");
      if (q.shape[2] != k.shape[2]) {
        return err("q ", Desc(q), " has head_dim ", Dim(q.shape[2]), " but k ", Desc(k), " has ", k.shape[2]);
      }
      if (q.shape[1] <= 0 || q.shape[1] % k.shape[1] != 0) {
        return err("q has ", Dim(q.shape[1]), " heads, not a multiple of k's ", k.shape[1], " KV heads");
      }
      if (auto s = CheckPositions(err, *in[3], q.shape[0], "q"); !s.ok()) return s;
      auto scale = FloatAttrChecked(err, attrs, "scale", true, 0);
      if (!scale.ok()) return scale.status();
      out.shape = q.shape;
      break;
    }
    case OpKind::kLastRow: {
      const Value& x = *in[0];
      if (auto s = CheckF32(err, "x", x); !s.ok()) return s;
      if (auto s = CheckRank(err, "x", x, 2, "[T, D]"); !s.ok()) return s;
      out.shape = {1, x.shape[1]};
      break;
    }
    case OpKind::kCopy: {
      out.dtype = in[0]->dtype;
      out.shape = in[0]->shape;
      break;
    }
    case OpKind::kFused:
      break;  // handled above
  }
  return out;
}

}  // namespace vibrant::ir
