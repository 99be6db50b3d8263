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

constexpr AttrSpec kRmsNormAttrs[] = {{"eps", AttrType::kFloat, true}};
constexpr AttrSpec kReshapeAttrs[] = {{"shape", AttrType::kIntList, true}};
constexpr AttrSpec kRopeAttrs[] = {{"freq_base", AttrType::kFloat, true},
                                   {"freq_scale", AttrType::kFloat, false},
                                   {"mode", AttrType::kInt, false},
                                   {"n_rot", AttrType::kInt, true}};
constexpr AttrSpec kKvStoreAttrs[] = {{"block_size", AttrType::kInt, false}};
constexpr AttrSpec kAttentionAttrs[] = {{"block_size", AttrType::kInt, false},
                                        {"scale", AttrType::kFloat, true},
                                        {"window", AttrType::kInt, false}};
constexpr AttrSpec kScaleAttrs[] = {{"scale", AttrType::kFloat, true}};
constexpr AttrSpec kMoeTopKAttrs[] = {{"k", AttrType::kInt, true}};
constexpr AttrSpec kMoeWeightsAttrs[] = {{"norm", AttrType::kInt, true}};
constexpr AttrSpec kMultiMatMulAttrs[] = {{"bias", AttrType::kIntList, true}};
constexpr AttrSpec kCollectiveAttrs[] = {{"ranks", AttrType::kInt, true}};

// Scalar semantics of the elementwise ops (OpInfo::scalar). silu is ggml's
// x / (1 + e^-x).
float AddFn(float a, float b) { return a + b; }
float MulFn(float a, float b) { return a * b; }
float SiluFn(float x) { return x / (1.0f + expf(-x)); }
// gelu, tanh approximation, in ggml_gelu_f32's float operations (left to
// right): 0.5f*x*(1.0f + tanhf(SQRT_2_OVER_PI*x*(1.0f + GELU_COEF_A*x*x))).
float GeluFn(float x) {
  return 0.5f * x * (1.0f + tanhf(0.79788456080286535587989211986876f * x * (1.0f + 0.044715f * x * x)));
}

#define VB_ATTRS(a) a, static_cast<int>(std::size(a))
#define VB_NO_ATTRS nullptr, 0

// The registry, indexed by OpKind: name, inputs, outputs, attributes, fusion
// role, in-place rule, side effects, elementwise.
constexpr OpInfo kOps[] = {
    {OpKind::kEmbedding, "embedding", 2, 2, 1, VB_NO_ATTRS, FusionRole::kNone, InPlaceRule::kNone,
     false, false},
    {OpKind::kMatMul, "matmul", 2, 3, 1, VB_NO_ATTRS, FusionRole::kNone, InPlaceRule::kNone, false,
     false},
    {OpKind::kRmsNorm, "rms_norm", 1, 1, 1, VB_ATTRS(kRmsNormAttrs), FusionRole::kRowReduce,
     InPlaceRule::kNone, false, false},
    {OpKind::kAdd, "add", 2, 2, 1, VB_NO_ATTRS, FusionRole::kElementwise,
     InPlaceRule::kReuseDyingInput, false, true, {nullptr, AddFn, "__fadd_rn($a, $b)"}},
    {OpKind::kMul, "mul", 2, 2, 1, VB_NO_ATTRS, FusionRole::kElementwise,
     InPlaceRule::kReuseDyingInput, false, true, {nullptr, MulFn, "__fmul_rn($a, $b)"}},
    {OpKind::kSilu, "silu", 1, 1, 1, VB_NO_ATTRS, FusionRole::kElementwise,
     InPlaceRule::kReuseDyingInput, false, true, {SiluFn, nullptr, "$x / __fadd_rn(1.0f, expf(-$x))"}},
    {OpKind::kReshape, "reshape", 1, 1, 1, VB_ATTRS(kReshapeAttrs), FusionRole::kView,
     InPlaceRule::kViewOfInput0, false, false},
    {OpKind::kRope, "rope", 2, 3, 1, VB_ATTRS(kRopeAttrs), FusionRole::kPairRotate,
     InPlaceRule::kNone, false, false},
    {OpKind::kKvStore, "kv_store", 3, 5, 1, VB_ATTRS(kKvStoreAttrs), FusionRole::kNone,
     InPlaceRule::kUpdatesInput1, true, false},
    {OpKind::kAttention, "attention", 4, 6, 1, VB_ATTRS(kAttentionAttrs), FusionRole::kNone,
     InPlaceRule::kNone, false, false},
    {OpKind::kLastRow, "last_row", 1, 1, 1, VB_NO_ATTRS, FusionRole::kNone, InPlaceRule::kNone, false,
     false},
    {OpKind::kCopy, "copy", 1, 1, 1, VB_NO_ATTRS, FusionRole::kNone, InPlaceRule::kNone, false, false},
    {OpKind::kFused, "fused", 1, kManyInputs, -1, VB_NO_ATTRS, FusionRole::kNone,
     InPlaceRule::kReuseDyingInput, false, false},
    {OpKind::kQuantizeQ8, "quantize_q8", 1, 1, 1, VB_NO_ATTRS, FusionRole::kBlockQuantize,
     InPlaceRule::kNone, false, false},
    {OpKind::kMultiMatMul, "multi_matmul", 3, kManyInputs, -1, VB_ATTRS(kMultiMatMulAttrs),
     FusionRole::kNone, InPlaceRule::kNone, false, false},
    // scale has an attribute, which a ScalarFn cannot carry: not elementwise
    // in the registry's sense (its own kernels; never in a fused body).
    {OpKind::kScale, "scale", 1, 1, 1, VB_ATTRS(kScaleAttrs), FusionRole::kNone,
     InPlaceRule::kReuseDyingInput, false, false},
    {OpKind::kGelu, "gelu", 1, 1, 1, VB_NO_ATTRS, FusionRole::kElementwise,
     InPlaceRule::kReuseDyingInput, false, true,
     {GeluFn, nullptr,
      "__fmul_rn(__fmul_rn(0.5f, $x), __fadd_rn(1.0f, tanhf(__fmul_rn(__fmul_rn("
      "0.79788456080286535587989211986876f, $x), __fadd_rn(1.0f, __fmul_rn(__fmul_rn(0.044715f, $x), "
      "$x))))))"}},
    {OpKind::kMoeTopK, "moe_topk", 1, 1, 1, VB_ATTRS(kMoeTopKAttrs), FusionRole::kNone,
     InPlaceRule::kNone, false, false},
    {OpKind::kMoeWeights, "moe_weights", 2, 2, 1, VB_ATTRS(kMoeWeightsAttrs), FusionRole::kNone,
     InPlaceRule::kNone, false, false},
    {OpKind::kMatMulId, "matmul_id", 3, 3, 1, VB_NO_ATTRS, FusionRole::kNone, InPlaceRule::kNone,
     false, false},
    {OpKind::kMoeSum, "moe_sum", 2, 2, 1, VB_NO_ATTRS, FusionRole::kNone, InPlaceRule::kNone,
     false, false},
    {OpKind::kSample, "sample", 2, 2, 1, VB_NO_ATTRS, FusionRole::kNone, InPlaceRule::kNone, false,
     false},
    {OpKind::kAllReduce, "all_reduce", 1, 1, 1, VB_ATTRS(kCollectiveAttrs), FusionRole::kNone,
     InPlaceRule::kNone, false, false},
    {OpKind::kAllGather, "all_gather", 1, 1, 1, VB_ATTRS(kCollectiveAttrs), FusionRole::kNone,
     InPlaceRule::kNone, false, false},
};
#undef VB_ATTRS
#undef VB_NO_ATTRS
constexpr int kNumOps = static_cast<int>(std::size(kOps));
static_assert(static_cast<int>(OpKind::kAllGather) + 1 == kNumOps);
constexpr bool RegistryInOrder() {
  for (int i = 0; i < kNumOps; ++i) {
    if (static_cast<int>(kOps[i].kind) != i) return false;
  }
  return true;
}
static_assert(RegistryInOrder(), "kOps must be indexed by OpKind");

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

// The paged inputs of kv_store / attention (ir/ops.h): seq_ids i32[T] and a
// static block_table i32[S, MB] at in[first], in[first + 1]; block_size > 0
// dividing the cache's rows.
absl::Status CheckPagedInputs(const OpErrors& err, const std::vector<const Value*>& in, int first,
                              int64_t tokens, const Value& cache, const Attrs& attrs) {
  if (static_cast<int>(in.size()) != first + 2) {
    return err("a paged op takes both seq_ids and block_table (", in.size(), " inputs given)");
  }
  const Value& seq = *in[first];
  const Value& table = *in[first + 1];
  if (seq.dtype != DType::kI32 || seq.shape.size() != 1 || seq.shape[0] != tokens) {
    return err("seq_ids ", Desc(seq), " must be i32[", Dim(tokens), "]");
  }
  if (table.dtype != DType::kI32 || table.shape.size() != 2 || !IsStatic(table.shape)) {
    return err("block_table ", Desc(table), " must be a static i32[S, MB]");
  }
  auto bs = IntAttrChecked(err, attrs, "block_size", true, 0);
  if (!bs.ok()) return bs.status();
  if (*bs <= 0 || cache.shape.empty() || cache.shape[0] % *bs != 0) {
    return err("block_size ", *bs, " must be > 0 and divide the cache's ", Dim(cache.shape.empty() ? 0 : cache.shape[0]),
               " rows");
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

bool IsPagedKv(OpKind kind, size_t num_inputs) {
  return (kind == OpKind::kKvStore && num_inputs == 5) ||
         (kind == OpKind::kAttention && num_inputs == 6);
}

const AttrSpec* FindAttrSpec(OpKind kind, std::string_view key) {
  const OpInfo& info = GetOpInfo(kind);
  for (int i = 0; i < info.num_attrs; ++i) {
    if (info.attrs[i].key == key) return &info.attrs[i];
  }
  return nullptr;
}

namespace {

std::string AttrKeys(const OpInfo& info) {
  std::string out;
  for (int i = 0; i < info.num_attrs; ++i) absl::StrAppend(&out, i ? ", " : "", A(info.attrs[i].key));
  return out;
}

// The attributes against the op's schema: no unknown key (a misspelt one
// would otherwise be replaced by its default), the right type, the required
// ones present.
absl::Status CheckAttrs(const OpErrors& err, const OpInfo& info, const Attrs& attrs) {
  for (const auto& [key, value] : attrs) {
    const AttrSpec* spec = FindAttrSpec(info.kind, key);
    if (spec == nullptr) {
      if (info.num_attrs == 0) return err("unknown attribute '", key, "' (", A(info.name), " takes none)");
      return err("unknown attribute '", key, "' (", A(info.name), " takes ", AttrKeys(info), ")");
    }
    bool ok = false;
    switch (spec->type) {
      case AttrType::kInt: ok = std::holds_alternative<int64_t>(value); break;
      case AttrType::kFloat:
        ok = std::holds_alternative<double>(value) || std::holds_alternative<int64_t>(value);
        break;
      case AttrType::kString: ok = std::holds_alternative<std::string>(value); break;
      case AttrType::kIntList: ok = std::holds_alternative<std::vector<int64_t>>(value); break;
    }
    if (!ok) {
      static constexpr const char* kTypeNames[] = {"an integer", "a number", "a string",
                                                   "an integer list"};
      return err("attribute '", key, "' must be ", kTypeNames[static_cast<int>(spec->type)]);
    }
  }
  for (int i = 0; i < info.num_attrs; ++i) {
    if (info.attrs[i].required && attrs.count(std::string(info.attrs[i].key)) == 0) {
      static constexpr const char* kTypeNames[] = {"integer", "float", "string", "integer-list"};
      return err("missing ", kTypeNames[static_cast<int>(info.attrs[i].type)], " attribute '",
                 A(info.attrs[i].key), "'");
    }
  }
  return absl::OkStatus();
}

}  // namespace

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
  if (info.outputs != 1) {
    return err(A(info.name), " has several outputs (InferOpOutputs)");
  }
  const int n = static_cast<int>(inputs.size());
  if (n < info.min_inputs || n > info.max_inputs) {
    if (info.min_inputs == info.max_inputs) return err("takes ", info.min_inputs, " inputs, got ", n);
    return err("takes ", info.min_inputs, " to ", info.max_inputs, " inputs, got ", n);
  }
  if (absl::Status st = CheckAttrs(err, info, attrs); !st.ok()) return st;
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
      if (x.dtype != DType::kQ8A) {
        if (auto s = CheckF32(err, "x", x); !s.ok()) return s;
      }
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
      if (n > 3) {
        if (auto s = CheckPagedInputs(err, in, 3, src.shape[0], cache, attrs); !s.ok()) return s;
      } else if (attrs.count("block_size") != 0) {
        return err("block_size is an attribute of the paged variant (with seq_ids and block_table)");
      }
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
      if (n > 4) {
        if (auto s = CheckPagedInputs(err, in, 4, q.shape[0], k, attrs); !s.ok()) return s;
      } else if (attrs.count("block_size") != 0) {
        return err("block_size is an attribute of the paged variant (with seq_ids and block_table)");
      }
      auto scale = FloatAttrChecked(err, attrs, "scale", true, 0);
      if (!scale.ok()) return scale.status();
      auto window = IntAttrChecked(err, attrs, "window", false, 0);
      if (!window.ok()) return window.status();
      if (*window < 0) return err("window must be >= 0 (0: none), is ", *window);
      out.shape = q.shape;
      break;
    }
    case OpKind::kScale:
    case OpKind::kGelu: {
      if (auto s = CheckF32(err, "x", *in[0]); !s.ok()) return s;
      if (kind == OpKind::kScale) {
        auto scale = FloatAttrChecked(err, attrs, "scale", true, 0);
        if (!scale.ok()) return scale.status();
      }
      out.shape = in[0]->shape;
      break;
    }
    case OpKind::kMoeTopK: {
      const Value& logits = *in[0];
      if (auto s = CheckF32(err, "logits", logits); !s.ok()) return s;
      if (auto s = CheckRank(err, "logits", logits, 2, "[T, E]"); !s.ok()) return s;
      if (logits.shape[1] <= 0) return err("logits ", Desc(logits), " must have a static expert count");
      auto k = IntAttrChecked(err, attrs, "k", true, 0);
      if (!k.ok()) return k.status();
      if (*k < 1 || *k > logits.shape[1]) {
        return err("k must be in [1, ", logits.shape[1], "] (the experts), is ", *k);
      }
      out.dtype = DType::kI32;
      out.shape = {logits.shape[0], *k};
      break;
    }
    case OpKind::kMoeWeights: {
      const Value& logits = *in[0];
      const Value& ids = *in[1];
      if (auto s = CheckF32(err, "logits", logits); !s.ok()) return s;
      if (auto s = CheckRank(err, "logits", logits, 2, "[T, E]"); !s.ok()) return s;
      if (ids.dtype != DType::kI32) return err("ids ", ids.name, " must be i32, is ", TN(ids.dtype));
      if (auto s = CheckRank(err, "ids", ids, 2, "[T, k]"); !s.ok()) return s;
      if (ids.shape[0] != logits.shape[0] || ids.shape[1] <= 0 || ids.shape[1] > logits.shape[1]) {
        return err("ids ", Desc(ids), " must be [rows of logits, k <= E] for logits ", Desc(logits));
      }
      auto norm = IntAttrChecked(err, attrs, "norm", true, 0);
      if (!norm.ok()) return norm.status();
      if (*norm != 0 && *norm != 1) return err("norm must be 0 or 1, is ", *norm);
      out.shape = ids.shape;
      break;
    }
    case OpKind::kMatMulId: {
      const Value& x = *in[0];
      const Value& w = *in[1];
      const Value& ids = *in[2];
      if (auto s = CheckF32(err, "x", x); !s.ok()) return s;
      if (auto s = CheckRank(err, "weight", w, 3, "[E, N, K]"); !s.ok()) return s;
      if (!IsStatic(w.shape)) {
        return err("weight ", w.name, " must have a static shape, has ", ShapeToString(w.shape));
      }
      if (auto s = CheckWholeBlocks(err, w, w.shape[2]); !s.ok()) return s;
      if (ids.dtype != DType::kI32) return err("ids ", ids.name, " must be i32, is ", TN(ids.dtype));
      if (auto s = CheckRank(err, "ids", ids, 2, "[T, k]"); !s.ok()) return s;
      if (ids.shape[1] <= 0) return err("ids ", Desc(ids), " must have a static k");
      if (x.shape.size() == 2) {
        if (x.shape[0] != ids.shape[0] || x.shape[1] != w.shape[2]) {
          return err("x ", Desc(x), " must be [rows of ids, K] for ids ", Desc(ids), " and weight ",
                     Desc(w));
        }
      } else if (x.shape.size() == 3) {
        if (x.shape[0] != ids.shape[0] || x.shape[1] != ids.shape[1] || x.shape[2] != w.shape[2]) {
          return err("x ", Desc(x), " must be [rows of ids, k, K] for ids ", Desc(ids), " and weight ",
                     Desc(w));
        }
      } else {
        return err("x ", Desc(x), " must have rank 2 [T, K] or 3 [T, k, K]");
      }
      out.shape = {ids.shape[0], ids.shape[1], w.shape[1]};
      break;
    }
    case OpKind::kMoeSum: {
      const Value& y = *in[0];
      const Value& w = *in[1];
      if (auto s = CheckF32(err, "y", y); !s.ok()) return s;
      if (auto s = CheckF32(err, "w", w); !s.ok()) return s;
      if (auto s = CheckRank(err, "y", y, 3, "[T, k, D]"); !s.ok()) return s;
      if (auto s = CheckRank(err, "w", w, 2, "[T, k]"); !s.ok()) return s;
      if (w.shape[0] != y.shape[0] || w.shape[1] != y.shape[1] || y.shape[2] <= 0) {
        return err("w ", Desc(w), " must be [T, k] of y ", Desc(y));
      }
      out.shape = {y.shape[0], y.shape[2]};
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
    case OpKind::kQuantizeQ8: {
      const Value& x = *in[0];
      if (auto s = CheckF32(err, "x", x); !s.ok()) return s;
      if (x.shape.empty() || x.shape.back() <= 0 || x.shape.back() % 32 != 0) {
        return err("x ", Desc(x), ": rows must be whole blocks of 32");
      }
      out.dtype = DType::kQ8A;
      out.shape = x.shape;
      break;
    }
    case OpKind::kSample: {
      const Value& logits = *in[0];
      const Value& params = *in[1];
      if (auto s = CheckF32(err, "logits", logits); !s.ok()) return s;
      if (auto s = CheckRank(err, "logits", logits, 2, "[R, V]"); !s.ok()) return s;
      if (logits.shape[1] <= 0) return err("logits ", Desc(logits), " must have a static row length");
      if (params.dtype != DType::kI32 || params.shape != Shape{8}) {
        return err("params ", Desc(params), " must be i32[8]");
      }
      out.dtype = DType::kI32;
      out.shape = {1};
      break;
    }
    case OpKind::kAllReduce:
    case OpKind::kAllGather: {
      const Value& x = *in[0];
      if (auto s = CheckF32(err, "x", x); !s.ok()) return s;
      if (x.shape.empty() || x.shape.back() <= 0) return err("x ", Desc(x), " must have a static last dimension");
      auto ranks = IntAttrChecked(err, attrs, "ranks", true, 0);
      if (!ranks.ok()) return ranks.status();
      if (*ranks < 2 || *ranks > kMaxTpRanks || *ranks != TpRanks(g)) {
        return err("ranks is ", *ranks, ": it must be the graph's meta tp (", TpRanks(g), "), in [2, ",
                   kMaxTpRanks, "]");
      }
      out.shape = x.shape;
      if (kind == OpKind::kAllGather) out.shape.back() *= *ranks;
      break;
    }
    case OpKind::kFused:
    case OpKind::kMultiMatMul:
      break;  // handled above
  }
  return out;
}

absl::StatusOr<std::vector<Value>> InferOpOutputs(const Graph& g, OpKind kind,
                                                  const std::vector<ValueId>& inputs,
                                                  const Attrs& attrs,
                                                  const std::vector<std::string>& out_names) {
  if (!IsValidOpKind(static_cast<int>(kind))) {
    return absl::InvalidArgumentError(absl::StrCat("invalid op kind ", static_cast<int>(kind)));
  }
  const std::string first = out_names.empty() ? std::string("<no output>") : out_names[0];
  const OpErrors err(kind, first);
  const OpInfo& info = GetOpInfo(kind);
  if (info.outputs == 1) {
    if (out_names.size() != 1) return err("has 1 output, got ", out_names.size(), " names");
    absl::StatusOr<Value> v = InferOpOutput(g, kind, inputs, attrs, out_names[0]);
    if (!v.ok()) return v.status();
    return std::vector<Value>{*std::move(v)};
  }
  if (kind != OpKind::kMultiMatMul) {
    return err(A(info.name), " outputs come from its body (AddRawOp)");
  }
  if (absl::Status st = CheckAttrs(err, info, attrs); !st.ok()) return st;
  const auto& flags = std::get<std::vector<int64_t>>(attrs.at("bias"));
  const int64_t n = static_cast<int64_t>(flags.size());
  if (n < 1) return err("bias must list one flag per weight, is empty");
  int64_t n_bias = 0;
  for (int64_t f : flags) {
    if (f != 0 && f != 1) return err("bias flags must be 0 or 1");
    n_bias += f;
  }
  if (static_cast<int64_t>(inputs.size()) != 1 + n + n_bias) {
    return err("takes x, ", n, " weights and ", n_bias, " biases (", 1 + n + n_bias,
               " inputs), got ", inputs.size());
  }
  if (static_cast<int64_t>(out_names.size()) != n) {
    return err("has ", n, " outputs (one per weight), got ", out_names.size(), " names");
  }
  const int64_t num_values = static_cast<int64_t>(g.values().size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i] < 0 || inputs[i] >= num_values) {
      return err("input ", i, " is value id ", inputs[i], ", out of range (", num_values, " values)");
    }
  }
  std::vector<Value> outs;
  int64_t bias_at = 1 + n;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<ValueId> mm = {inputs[0], inputs[1 + i]};
    if (flags[i] != 0) mm.push_back(inputs[bias_at++]);
    if (g.value(inputs[1 + i]).dtype != g.value(inputs[1]).dtype) {
      return err("weight ", g.value(inputs[1 + i]).name, " is ", TN(g.value(inputs[1 + i]).dtype),
                 ", weight ", g.value(inputs[1]).name, " is ", TN(g.value(inputs[1]).dtype),
                 ": one dtype for all");
    }
    absl::StatusOr<Value> v = InferOpOutput(g, OpKind::kMatMul, mm, {}, out_names[i]);
    if (!v.ok()) {
      return err("member ", i, ": ", v.status().message());
    }
    outs.push_back(*std::move(v));
  }
  return outs;
}

}  // namespace vibrant::ir
