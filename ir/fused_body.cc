#include "ir/fused_body.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vibrant::ir {
namespace {

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

absl::StatusOr<FusedBody> AnalyzeFusedBody(const Op& op) {
  if (op.kind != OpKind::kFused || op.body == nullptr) {
    return absl::InvalidArgumentError("not a fused op with a body");
  }
  FusedBody fb;
  fb.body = op.body.get();
  const Graph& body = *op.body;
  const ValueId nv = static_cast<ValueId>(body.values().size());
  fb.producer.assign(nv, -1);
  for (size_t b = 0; b < body.ops().size(); ++b) {
    for (ValueId v : body.ops()[b].outputs) {
      if (v >= 0 && v < nv) fb.producer[v] = static_cast<int>(b);
    }
  }
  std::vector<int> input_index(nv, -1);
  for (ValueId v = 0; v < nv; ++v) {
    if (fb.producer[v] >= 0) continue;
    input_index[v] = static_cast<int>(fb.inputs.size());
    fb.inputs.push_back(v);
  }
  fb.input_roles.assign(fb.inputs.size(), FusedBody::Input::kUnused);
  if (body.outputs().empty()) return absl::InvalidArgumentError("body has no outputs");
  const Shape& s0 = body.value(body.outputs()[0]).shape;
  if (s0.empty()) return absl::InvalidArgumentError("output 0 is a scalar; fused outputs are rows [N, ...]");
  fb.rows = s0[0];
  fb.row_elems = 1;
  for (size_t d = 1; d < s0.size(); ++d) fb.row_elems *= s0[d];
  const std::string space = absl::StrCat("[", fb.rows == kTokens ? std::string("T") : absl::StrCat(fb.rows),
                                         " rows of ", fb.row_elems, "]");
  auto is_row = [&](ValueId v) {
    const Shape& s = body.value(v).shape;
    if (s.empty() || s[0] != fb.rows) return false;
    int64_t n = 1;
    for (size_t d = 1; d < s.size(); ++d) n *= s[d];
    return n == fb.row_elems;
  };
  auto is_input = [&](ValueId v) { return fb.producer[v] == -1; };
  auto bad = [&](size_t b, ValueId v, const char* what) {
    return absl::InvalidArgumentError(absl::StrCat("body op ", b, " ", A(OpName(body.ops()[b].kind)), ": %",
                                                   body.value(v).name, " ", ShapeToString(body.value(v).shape),
                                                   " ", what, " (fused op is ", space, ")"));
  };
  // Records how input value v is read; an input read two ways is an error.
  auto role = [&](size_t b, ValueId v, FusedBody::Input r) -> absl::Status {
    const int i = input_index[v];
    if (i < 0) return absl::OkStatus();
    if (fb.input_roles[i] != FusedBody::Input::kUnused && fb.input_roles[i] != r) {
      return bad(b, v, "is read both per element and otherwise");
    }
    fb.input_roles[i] = r;
    return absl::OkStatus();
  };
  auto row = [&](size_t b, ValueId v) -> absl::Status {
    if (!is_row(v)) return bad(b, v, "is not a row value");
    return role(b, v, FusedBody::Input::kRow);
  };
  for (size_t b = 0; b < body.ops().size(); ++b) {
    const Op& bop = body.ops()[b];
    const FusionRole r = GetOpInfo(bop.kind).fusion;
    if (r == FusionRole::kNone || bop.outputs.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "body op ", b, " is ", A(OpName(bop.kind)),
          "; a fused body holds only elementwise ops, reshape, rms_norm, rope and quantize_q8"));
    }
    const ValueId out = bop.outputs[0];
    switch (r) {
      case FusionRole::kElementwise: {
        if (absl::Status s = row(b, bop.inputs[0]); !s.ok()) return s;
        if (bop.inputs.size() == 2) {
          const ValueId bv = bop.inputs[1];
          if (body.value(bv).shape == body.value(bop.inputs[0]).shape) {
            if (absl::Status s = row(b, bv); !s.ok()) return s;
          } else if (!is_input(bv)) {
            return bad(b, bv, "is broadcast but not a body input");
          } else if (absl::Status s = role(b, bv, FusedBody::Input::kConstant); !s.ok()) {
            return s;
          }
        }
        break;
      }
      case FusionRole::kView:
        if (absl::Status s = row(b, bop.inputs[0]); !s.ok()) return s;
        if (!is_row(out)) return bad(b, out, "is not a row value");
        break;
      case FusionRole::kRowReduce: {
        const Shape& s = body.value(bop.inputs[0]).shape;
        if (s.size() != 2 || !is_row(bop.inputs[0])) {
          return bad(b, bop.inputs[0], "must be [N, R]: rms_norm reduces over the whole row");
        }
        if (absl::Status st = role(b, bop.inputs[0], FusedBody::Input::kRow); !st.ok()) return st;
        break;
      }
      case FusionRole::kPairRotate: {
        if (absl::Status s = row(b, bop.inputs[0]); !s.ok()) return s;
        if (!is_input(bop.inputs[1])) return bad(b, bop.inputs[1], "(positions) must be a body input");
        if (absl::Status s = role(b, bop.inputs[1], FusedBody::Input::kPerRow); !s.ok()) return s;
        if (bop.inputs.size() == 3) {
          if (!is_input(bop.inputs[2])) return bad(b, bop.inputs[2], "(freq_factors) must be a body input");
          if (absl::Status s = role(b, bop.inputs[2], FusedBody::Input::kConstant); !s.ok()) return s;
        }
        break;
      }
      case FusionRole::kBlockQuantize: {
        if (absl::Status s = row(b, bop.inputs[0]); !s.ok()) return s;
        if (fb.row_elems % 32 != 0) return bad(b, bop.inputs[0], "rows are not whole blocks of 32");
        if (!is_row(out)) return bad(b, out, "is not a row value");
        bool is_output = false;
        for (ValueId o : body.outputs()) is_output |= o == out;
        for (const Op& other : body.ops()) {
          for (ValueId in : other.inputs) {
            if (in == out) return bad(b, out, "is read inside the body (a quantized row leaves it)");
          }
        }
        if (!is_output) return bad(b, out, "is not a body output");
        break;
      }
      case FusionRole::kNone:
        break;
    }
    if (r == FusionRole::kRowReduce || r == FusionRole::kPairRotate) {
      if (fb.coupling_op >= 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "body op ", b, " is ", A(OpName(bop.kind)), " but body op ", fb.coupling_op, " is ",
            A(OpName(body.ops()[fb.coupling_op].kind)),
            "; a body holds at most one row-coupling op (rms_norm or rope)"));
      }
      fb.coupling_op = static_cast<int>(b);
      fb.coupling = r;
    }
  }
  for (size_t k = 0; k < body.outputs().size(); ++k) {
    const ValueId v = body.outputs()[k];
    if (!is_row(v)) {
      return absl::InvalidArgumentError(absl::StrCat("body output ", k, " %", body.value(v).name, " ",
                                                     ShapeToString(body.value(v).shape),
                                                     " is not a row value (fused op is ", space, ")"));
    }
  }
  return fb;
}

}  // namespace vibrant::ir
