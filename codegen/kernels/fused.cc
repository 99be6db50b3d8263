// One generated kernel per fused body (ir/ops.h, OpKind::kFused).
//
// A body is N rows of R elements. Every row value is evaluated per element
// in registers, with the unfused kernels' exact float operations
// (__fadd_rn / __fmul_rn, silu as v / (1 + expf(-v))), so a fused kernel
// gives the values the per-op kernels give, bit for bit:
// - elementwise bodies: a grid-stride loop over the N * R elements;
// - a body with rms_norm: one block of kNormThreads threads per row. Pass 1
//   computes the norm's input (kept in a register array when the row is at
//   most 32 elements per thread, else recomputed in pass 2) and sums its
//   squares in double in the thread order of vb_rms_norm; after the block
//   sum, pass 2 evaluates and writes every output;
// - a body with rope: one block of kRopeThreads threads per (row, head);
//   thread i evaluates the rope input at both elements of pair i, rotates
//   them with vb_rope's angle sequence, then evaluates and writes every
//   output at both; the dims past n_rot pass through in a second loop.
// Every element is read and written by one thread, reads first, so outputs
// may share memory with inputs (the memory plan's in-place reuse).
//
// Shapes and attributes are compile-time constants of the kernel; value
// names are not in the text, so the bodies of different layers give the same
// text and therefore the same name, vb_fused_<FNV-1a 64 of the text>.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernel_source.h"
#include "codegen/kernels/families.h"
#include "ir/fused_body.h"

namespace vibrant::codegen {
namespace {

using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Shape;
using ir::ValueId;

constexpr char kNamePlaceholder[] = "@KERNEL@";
// Rows of at most this many elements per thread keep the norm input in
// registers between the two passes.
constexpr int64_t kMaxCachedPerThread = 32;

enum class InClass { kUnused, kRow, kConst, kPerRow };

std::string FloatLit(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return absl::StrFormat("__uint_as_float(0x%08xu) /* %.9g */", bits, f);
}

class FusedGen {
 public:
  FusedGen(const Graph& outer, const Op& op) : outer_(outer), op_(op) {}

  absl::StatusOr<FusedKernel> Run() {
    if (absl::Status s = Analyze(); !s.ok()) return s;
    std::string text = Source();
    FusedKernel k;
    k.name = absl::StrFormat("vb_fused_%016x", HashText(text));
    k.source = absl::StrReplaceAll(text, {{kNamePlaceholder, k.name}});
    k.shape = shape_;
    k.row_elems = R_;
    k.heads = shape_ == FusedKernel::Shape::kRope ? H_ : 1;
    k.threads = threads_;
    return k;
  }

 private:
  absl::Status Unsupported(const std::string& why) const {
    std::string what = "fused op";
    if (!op_.outputs.empty() && op_.outputs[0] >= 0 &&
        op_.outputs[0] < static_cast<ValueId>(outer_.values().size())) {
      absl::StrAppend(&what, " -> '", outer_.value(op_.outputs[0]).name, "'");
    }
    return absl::UnimplementedError(
        absl::StrCat("codegen: ", what, ": no generated kernel (", why, ")"));
  }

  const ir::Value& val(ValueId v) const { return body_->value(v); }

  // Whether v is a row value: f32, outer dim N, R elements per row.
  bool IsRowShape(ValueId v) const {
    const Shape& s = val(v).shape;
    if (val(v).dtype != DType::kF32 || s.empty() || s[0] != N_) return false;
    int64_t r = 1;
    for (size_t i = 1; i < s.size(); ++i) {
      if (s[i] <= 0) return false;
      r *= s[i];
    }
    return r == R_;
  }

  // The body's structure comes from ir::AnalyzeFusedBody (the one reading of
  // the row rules, shared with the verifier and the CPU); what is checked
  // here is what this generator needs besides: f32 rows, constants that tile
  // the row, the coupling op's attributes, quantized rows of whole blocks.
  absl::Status Analyze() {
    if (op_.kind != OpKind::kFused || op_.body == nullptr) {
      return absl::InvalidArgumentError("codegen: not a fused op with a body");
    }
    absl::StatusOr<ir::FusedBody> fb = ir::AnalyzeFusedBody(op_);
    if (!fb.ok()) return Unsupported(std::string(fb.status().message()));
    body_ = fb->body;
    const Graph& b = *body_;
    producer_ = fb->producer;
    inputs_ = fb->inputs;
    input_of_.assign(b.values().size(), -1);
    for (size_t i = 0; i < inputs_.size(); ++i) input_of_[inputs_[i]] = static_cast<int>(i);
    if (inputs_.size() != op_.inputs.size() || b.outputs().size() != op_.outputs.size() || b.ops().empty()) {
      return Unsupported("the body's inputs/outputs do not match the op's");
    }
    cls_.clear();
    for (ir::FusedBody::Input r : fb->input_roles) {
      cls_.push_back(r == ir::FusedBody::Input::kRow        ? InClass::kRow
                     : r == ir::FusedBody::Input::kConstant ? InClass::kConst
                     : r == ir::FusedBody::Input::kPerRow   ? InClass::kPerRow
                                                            : InClass::kUnused);
    }
    const_elems_.assign(inputs_.size(), 0);
    N_ = fb->rows;
    R_ = fb->row_elems;
    coupling_ = fb->coupling_op;
    if (R_ <= 0 || R_ > (int64_t{1} << 30)) return Unsupported("row length out of range");
    // A constant input's element count (it repeats along the row).
    auto constant = [&](ValueId v) -> absl::Status {
      int64_t n = 1;
      for (int64_t d : val(v).shape) {
        if (d <= 0) return Unsupported("a constant operand with a dynamic dim");
        n *= d;
      }
      if (val(v).dtype != DType::kF32) return Unsupported("a constant operand that is not f32");
      const_elems_[input_of_[v]] = n;
      return absl::OkStatus();
    };
    for (const Op& bop : b.ops()) {
      const ValueId out = bop.outputs[0];
      if (bop.kind == OpKind::kQuantizeQ8) {  // rounded as the row is written
        quant_src_[out] = bop.inputs[0];
        continue;
      }
      if (!IsRowShape(out)) return Unsupported("a body value that is not an f32 row value");
      const ir::OpInfo& info = ir::GetOpInfo(bop.kind);
      if (info.elementwise && info.scalar.binary != nullptr) {
        const ValueId bb = bop.inputs[1];
        if (val(bb).shape != val(bop.inputs[0]).shape) {  // broadcast: a constant that tiles the row
          if (absl::Status s = constant(bb); !s.ok()) return s;
          if (R_ % const_elems_[input_of_[bb]] != 0) return Unsupported("a broadcast operand that does not tile the row");
        }
      } else if (bop.kind == OpKind::kRmsNorm) {
        eps_ = static_cast<float>(bop.FloatAttr("eps", 0));
      } else if (bop.kind == OpKind::kRope) {
        const Shape& xs = val(bop.inputs[0]).shape;
        if (xs.size() != 3) return Unsupported("rope input is not [N, H, hd]");
        H_ = xs[1];
        hd_ = xs[2];
        mode_ = static_cast<int>(bop.IntAttr("mode", 0));
        n_rot_ = bop.IntAttr("n_rot", 0);
        if ((mode_ != 0 && mode_ != 2) || n_rot_ <= 0 || n_rot_ % 2 != 0 || n_rot_ > hd_) {
          return Unsupported("rope mode / n_rot");
        }
        const float freq_base = static_cast<float>(bop.FloatAttr("freq_base", 10000.0));
        theta_scale_ = powf(freq_base, -2.0f / static_cast<float>(n_rot_));  // as the executor
        freq_scale_ = static_cast<float>(bop.FloatAttr("freq_scale", 1.0));
        const ValueId pos = bop.inputs[1];
        if (val(pos).dtype != DType::kI32 || val(pos).shape != Shape{N_}) {
          return Unsupported("rope positions are not an i32[N] body input");
        }
        if (bop.inputs.size() == 3) {
          const ValueId ff = bop.inputs[2];
          if (absl::Status s = constant(ff); !s.ok()) return s;
          if (const_elems_[input_of_[ff]] < n_rot_ / 2) return Unsupported("too few rope frequency factors");
          ff_input_ = input_of_[ff];
        }
      }
    }
    for (size_t i = 0; i < inputs_.size(); ++i) {
      const DType want = cls_[i] == InClass::kPerRow ? DType::kI32 : DType::kF32;
      if (cls_[i] != InClass::kUnused && val(inputs_[i]).dtype != want) {
        return Unsupported("an input of an unexpected dtype");
      }
    }
    if (!quant_src_.empty() && coupling_ >= 0 && b.ops()[coupling_].kind == OpKind::kRope) {
      return Unsupported("a quantized output of a rope body");
    }
    if (coupling_ < 0) {
      shape_ = FusedKernel::Shape::kElementwise;
      threads_ = kElementwiseThreads;
    } else if (b.ops()[coupling_].kind == OpKind::kRmsNorm) {
      shape_ = FusedKernel::Shape::kRowReduce;
      threads_ = kNormThreads;
    } else {
      shape_ = FusedKernel::Shape::kRope;
      threads_ = kRopeThreads;
      if (H_ * hd_ != R_) return Unsupported("rope heads do not make up the row");
    }
    return absl::OkStatus();
  }

  std::string Var(ValueId v, const std::string& sfx) const { return absl::StrCat("v", v, sfx); }

  // Statements defining the values `targets` need at one element, in body
  // order. `at`: the element's index into row arrays; `e`: its index within
  // the row (`e_in_row`: already in [0, R); else reduced modulo each
  // constant's length). `given`: values already known, as expressions (they
  // stop the recursion). `defined` (optional) receives every value defined.
  std::string Eval(const std::set<ValueId>& targets, const std::map<ValueId, std::string>& given,
                   const std::string& sfx, const std::string& at, const std::string& e,
                   bool e_in_row, std::set<ValueId>* defined = nullptr) const {
    std::set<ValueId> need;
    std::vector<ValueId> stack(targets.begin(), targets.end());
    while (!stack.empty()) {
      const ValueId v = stack.back();
      stack.pop_back();
      if (!need.insert(v).second || given.count(v) || producer_[v] < 0) continue;
      for (ValueId in : body_->ops()[producer_[v]].inputs) stack.push_back(in);
    }
    std::string out;
    const std::string ind = "      ";
    for (ValueId v : inputs_) {  // loads first: every read precedes every write
      if (!need.count(v)) continue;
      const int i = input_of_[v];
      const std::string name = Var(v, sfx);
      if (given.count(v)) {
        absl::StrAppend(&out, ind, "const float ", name, " = ", given.at(v), ";\n");
      } else if (cls_[i] == InClass::kRow) {
        absl::StrAppend(&out, ind, "const float ", name, " = in", i, "[", at, "];\n");
      } else if (cls_[i] == InClass::kConst) {
        const int64_t n = const_elems_[i];
        std::string idx = n == 1 ? "0" : (e_in_row && n == R_) ? e : absl::StrCat("(", e, ") % ", n);
        absl::StrAppend(&out, ind, "const float ", name, " = in", i, "[", idx, "];\n");
      } else {
        continue;  // positions: read by the rope code itself
      }
      if (defined != nullptr) defined->insert(v);
    }
    for (const Op& bop : body_->ops()) {
      const ValueId v = bop.outputs[0];
      if (!need.count(v)) continue;
      const std::string name = Var(v, sfx);
      auto arg = [&](int k) { return Var(bop.inputs[k], sfx); };
      std::string expr;
      if (given.count(v)) {
        expr = given.at(v);
      } else {
        const ir::ScalarFn& fn = ir::GetOpInfo(bop.kind).scalar;
        if (bop.kind == OpKind::kReshape) {
          expr = arg(0);
        } else if (!fn.cuda.empty()) {  // an elementwise op: the registry's expression
          const std::string text(fn.cuda.data(), fn.cuda.size());
          expr = fn.binary != nullptr ? absl::StrReplaceAll(text, {{"$a", arg(0)}, {"$b", arg(1)}})
                                      : absl::StrReplaceAll(text, {{"$x", arg(0)}});
        } else {
          expr = "VB_FUSED_INTERNAL_ERROR";  // never: couplings are given
        }
      }
      absl::StrAppend(&out, ind, "const float ", name, " = ", expr, ";\n");
      if (defined != nullptr) defined->insert(v);
    }
    return out;
  }

  // The values the writes need (a quantized output needs its source row).
  std::set<ValueId> Outputs() const {
    std::set<ValueId> out;
    for (ValueId v : body_->outputs()) {
      auto q = quant_src_.find(v);
      out.insert(q == quant_src_.end() ? v : q->second);
    }
    return out;
  }

  std::string Writes(const std::string& sfx, const std::string& at) const {
    std::string out;
    for (size_t j = 0; j < body_->outputs().size(); ++j) {
      const ValueId v = body_->outputs()[j];
      auto q = quant_src_.find(v);
      if (q != quant_src_.end()) {
        // q8a: the codes, then {d, d*sum} per block after all rows' codes.
        absl::StrAppend(&out, "      vb_q8a_store(", Var(q->second, sfx), ", out", j, ", (float2*)(out", j,
                        " + rows * (i64)", R_, "), ", at, ");\n");
      } else {
        absl::StrAppend(&out, "      out", j, "[", at, "] = ", Var(v, sfx), ";\n");
      }
    }
    return out;
  }

  std::string Describe() const {
    std::string d = absl::StrCat("// ", kNamePlaceholder, ": rows of ", R_, " elements;");
    for (size_t i = 0; i < inputs_.size(); ++i) {
      const char* c = cls_[i] == InClass::kRow ? "row" : cls_[i] == InClass::kConst ? "const"
                      : cls_[i] == InClass::kPerRow ? "per-row" : "unused";
      absl::StrAppend(&d, " in", i, "=v", inputs_[i], " (", c, ")");
    }
    absl::StrAppend(&d, "\n//");
    for (const Op& bop : body_->ops()) {
      absl::StrAppend(&d, " v", bop.outputs[0], " = ", std::string(ir::OpName(bop.kind)), "(");
      for (size_t k = 0; k < bop.inputs.size(); ++k) {
        absl::StrAppend(&d, k ? ", " : "", "v", bop.inputs[k]);
      }
      absl::StrAppend(&d, ");");
    }
    absl::StrAppend(&d, " ->");
    for (size_t j = 0; j < body_->outputs().size(); ++j) {
      absl::StrAppend(&d, " out", j, "=v", body_->outputs()[j]);
    }
    return d + "\n";
  }

  std::string Signature() const {
    std::string s = absl::StrCat("extern \"C\" __global__ void ", kNamePlaceholder, "(");
    for (size_t i = 0; i < inputs_.size(); ++i) {
      // Row inputs may share memory with outputs (in place): no __restrict__.
      const char* t = cls_[i] == InClass::kPerRow ? "const int* __restrict__"
                      : cls_[i] == InClass::kConst ? "const float* __restrict__" : "const float*";
      absl::StrAppend(&s, t, " in", i, ", ");
    }
    for (size_t j = 0; j < body_->outputs().size(); ++j) {
      absl::StrAppend(&s, quant_src_.count(body_->outputs()[j]) ? "i8* out" : "float* out", j, ", ");
    }
    absl::StrAppend(&s, "i64 rows)");
    return s;
  }

  std::string Source() const {
    std::string src = Describe();
    absl::StrAppend(&src, Signature(), " {\n");
    const Graph& b = *body_;
    switch (shape_) {
      case FusedKernel::Shape::kElementwise:
        absl::StrAppend(&src, "  const i64 n = rows * (i64)", R_, ";\n",
                        "  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n;"
                        " i += (i64)gridDim.x * blockDim.x) {\n",
                        Eval(Outputs(), {}, "", "i", "i", false), Writes("", "i"), "  }\n");
        break;
      case FusedKernel::Shape::kRowReduce: {
        const Op& norm = b.ops()[coupling_];
        const ValueId x = norm.inputs[0], y = norm.outputs[0];
        const int64_t per_thread = (R_ + threads_ - 1) / threads_;
        const bool cached = per_thread <= kMaxCachedPerThread;
        const bool guard = R_ % threads_ != 0;
        const std::string loop = absl::StrCat(
            "  for (int k = 0; k < ", per_thread, "; ++k) {\n    const int e = threadIdx.x + k * ",
            threads_, ";\n", guard ? absl::StrCat("    if (e < ", R_, ") {\n") : "    {\n");
        absl::StrAppend(&src, "  __shared__ double scratch[32];\n",
                        "  const i64 rb = (i64)blockIdx.x * ", R_, ";\n", "  double s = 0.0;\n");
        if (cached) absl::StrAppend(&src, "  float xc[", per_thread, "];\n");
        // Pass 1: the norm's input and the sum of its squares (as vb_rms_norm).
        absl::StrAppend(&src, "#pragma unroll\n", loop, Eval({x}, {}, "", "rb + e", "e", true));
        if (cached) absl::StrAppend(&src, "      xc[k] = ", Var(x, ""), ";\n");
        absl::StrAppend(&src, "      s += (double)__fmul_rn(", Var(x, ""), ", ", Var(x, ""), ");\n",
                        "    }\n  }\n");
        absl::StrAppend(&src, "  s = vb_block_sum_d(s, scratch);\n",
                        "  const float mean = (float)(s / (double)", R_, ");\n",
                        "  const float scale = 1.0f / sqrtf(__fadd_rn(mean, ", FloatLit(eps_),
                        "));\n");
        // Pass 2: every output.
        std::map<ValueId, std::string> given = {
            {y, absl::StrCat("__fmul_rn(", Var(x, ""), ", scale)")}};
        if (cached) given[x] = "xc[k]";
        std::set<ValueId> targets = Outputs();
        targets.insert(x);
        absl::StrAppend(&src, "#pragma unroll\n", loop, Eval(targets, given, "", "rb + e", "e", true),
                        Writes("", "rb + e"), "    }\n  }\n");
        break;
      }
      case FusedKernel::Shape::kRope: {
        const Op& rope = b.ops()[coupling_];
        const ValueId x = rope.inputs[0], y = rope.outputs[0];
        const int pos_in = input_of_[rope.inputs[1]];
        const int64_t half = n_rot_ / 2;
        absl::StrAppend(&src, "  const int r = blockIdx.x / ", H_, ";\n",
                        "  const int h = blockIdx.x - r * ", H_, ";\n",
                        "  const i64 rb = (i64)r * ", R_, ";\n",
                        "  const float p = (float)in", pos_in, "[r];\n");
        // The rotated pairs (vb_rope's angle and rotation).
        absl::StrAppend(&src, "  for (int i = threadIdx.x; i < ", half, "; i += blockDim.x) {\n",
                        "    float th = p;\n",
                        "    for (int k = 0; k < i; ++k) th = __fmul_rn(th, ", FloatLit(theta_scale_),
                        ");\n",
                        "    const float ff = ",
                        ff_input_ >= 0 ? absl::StrCat("in", ff_input_, "[i]") : std::string("1.0f"),
                        ";\n",
                        "    const float angle = __fmul_rn(", FloatLit(freq_scale_),
                        ", __fdiv_rn(th, ff));\n",
                        "    const float c = cosf(angle), sn = sinf(angle);\n",
                        "    const int e0 = h * ", hd_, " + ", mode_ == 0 ? "2 * i" : "i", ";\n",
                        "    const int e1 = h * ", hd_, " + ",
                        mode_ == 0 ? std::string("2 * i + 1") : absl::StrCat("i + ", half), ";\n",
                        "    {\n");
        std::set<ValueId> d0, d1;
        absl::StrAppend(&src, Eval({x}, {}, "_a0", "rb + e0", "e0", true, &d0),
                        Eval({x}, {}, "_a1", "rb + e1", "e1", true, &d1));
        std::map<ValueId, std::string> g0, g1;
        for (ValueId v : d0) g0[v] = Var(v, "_a0");
        for (ValueId v : d1) g1[v] = Var(v, "_a1");
        const std::string x0 = Var(x, "_a0"), x1 = Var(x, "_a1");
        g0[y] = absl::StrCat("__fsub_rn(__fmul_rn(", x0, ", c), __fmul_rn(", x1, ", sn))");
        g1[y] = absl::StrCat("__fadd_rn(__fmul_rn(", x0, ", sn), __fmul_rn(", x1, ", c))");
        absl::StrAppend(&src, Eval(Outputs(), g0, "_0", "rb + e0", "e0", true),
                        Eval(Outputs(), g1, "_1", "rb + e1", "e1", true), Writes("_0", "rb + e0"),
                        Writes("_1", "rb + e1"), "    }\n  }\n");
        // Dims past n_rot pass through the rotation.
        if (n_rot_ < hd_) {
          std::set<ValueId> targets = Outputs();
          targets.insert(x);
          absl::StrAppend(&src, "  for (int d = ", n_rot_, " + threadIdx.x; d < ", hd_,
                          "; d += blockDim.x) {\n", "    const int e = h * ", hd_, " + d;\n",
                          "    {\n",
                          Eval(targets, {{y, Var(x, "")}}, "", "rb + e", "e", true),
                          Writes("", "rb + e"), "    }\n  }\n");
        }
        break;
      }
    }
    absl::StrAppend(&src, "}\n");
    return src;
  }

  const Graph& outer_;
  const Op& op_;
  const Graph* body_ = nullptr;
  std::vector<int> producer_;  // body value -> body op index, -1 for inputs
  std::vector<int> input_of_;  // body value -> input index, -1 for op outputs
  std::vector<ValueId> inputs_;
  std::vector<InClass> cls_;
  std::vector<int64_t> const_elems_;
  int64_t N_ = 0, R_ = 0;
  int coupling_ = -1;
  float eps_ = 0;
  int64_t H_ = 1, hd_ = 0, n_rot_ = 0;
  int mode_ = 0;
  float theta_scale_ = 1, freq_scale_ = 1;
  int ff_input_ = -1;
  std::map<ValueId, ValueId> quant_src_;  // quantize_q8 output -> the row it rounds
  FusedKernel::Shape shape_ = FusedKernel::Shape::kElementwise;
  int threads_ = kElementwiseThreads;
};

}  // namespace

absl::StatusOr<FusedKernel> GenerateFused(const ir::Graph& graph, const ir::Op& op) {
  return FusedGen(graph, op).Run();
}

}  // namespace vibrant::codegen
