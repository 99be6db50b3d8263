#include "runtime/cpu/eval_op.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <variant>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu/quantize.h"

namespace vibrant::cpu {
namespace {

using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Shape;
using ir::Value;
using ir::ValueId;

double NumberAttr(const Op& op, const std::string& key, double dflt) {
  auto it = op.attrs.find(key);
  if (it == op.attrs.end()) return dflt;
  if (const auto* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  if (const auto* d = std::get_if<double>(&it->second)) return *d;
  return dflt;
}

std::vector<int> Producers(const Graph& g) {
  std::vector<int> producer(g.values().size(), -1);
  for (size_t i = 0; i < g.ops().size(); ++i) {
    for (ValueId o : g.ops()[i].outputs) {
      if (o >= 0 && o < static_cast<ValueId>(producer.size())) producer[o] = static_cast<int>(i);
    }
  }
  return producer;
}

int64_t Elems(const Graph& g, ValueId v, int64_t T) { return ir::NumElements(g.value(v).shape, T); }

int64_t Bytes(const Graph& g, ValueId v, int64_t T) {
  return DTypeBytes(g.value(v).dtype, Elems(g, v, T)).value_or(0);
}

}  // namespace

absl::Status EvalOp(const Graph& g, const Op& op, const std::vector<const uint8_t*>& in,
                    std::vector<std::vector<uint8_t>>& outs, int64_t T, ThreadPool* pool) {
  auto F = [&](size_t i) { return reinterpret_cast<const float*>(in[i]); };
  auto I = [&](size_t i) { return reinterpret_cast<const int32_t*>(in[i]); };
  auto E = [&](ValueId v) { return Elems(g, v, T); };
  float* out = outs.empty() ? nullptr : reinterpret_cast<float*>(outs[0].data());
  if (const ir::OpInfo& info = ir::GetOpInfo(op.kind);
      info.elementwise && op.kind != OpKind::kAdd && op.kind != OpKind::kMul && op.kind != OpKind::kSilu) {
    if (info.scalar.unary != nullptr) {
      Unary(info.scalar.unary, F(0), E(op.inputs[0]), out);
    } else {
      Binary(info.scalar.binary, F(0), E(op.inputs[0]), F(1), E(op.inputs[1]), out);
    }
    return absl::OkStatus();
  }
  switch (op.kind) {
    case OpKind::kEmbedding: {
      const Value& t = g.value(op.inputs[0]);
      return Embedding(t.dtype, in[0], t.shape[0], t.shape[1], I(1), E(op.inputs[1]), out);
    }
    case OpKind::kMatMul:
    case OpKind::kMultiMatMul: {
      const ValueId x = op.inputs[0];
      const float* xf = F(0);
      std::vector<float> xq;
      if (g.value(x).dtype == DType::kQ8A) {  // read as its values
        xq.resize(E(x));
        if (absl::Status s = DequantizeQ8A(in[0], E(x), xq.data()); !s.ok()) return s;
        xf = xq.data();
      }
      const size_t n = op.kind == OpKind::kMatMul ? 1 : op.outputs.size();
      const std::vector<int64_t> flags =
          op.kind == OpKind::kMatMul ? std::vector<int64_t>{op.inputs.size() == 3 ? 1 : 0}
                                     : std::get<std::vector<int64_t>>(op.attrs.at("bias"));
      size_t bias_at = 1 + n;
      for (size_t m = 0; m < n; ++m) {
        const Value& w = g.value(op.inputs[1 + m]);
        const int64_t K = w.shape[1];
        const float* bias = flags[m] != 0 ? F(bias_at++) : nullptr;
        if (absl::Status s = MatMul(pool, xf, E(x) / K, K, w.dtype, in[1 + m], w.shape[0], bias,
                                    reinterpret_cast<float*>(outs[m].data()));
            !s.ok()) {
          return s;
        }
      }
      return absl::OkStatus();
    }
    case OpKind::kQuantizeQ8:
      return QuantizeQ8A(F(0), E(op.inputs[0]), outs[0].data());
    case OpKind::kRmsNorm: {
      const int64_t dim = g.value(op.inputs[0]).shape.back();
      RmsNorm(F(0), E(op.inputs[0]) / dim, dim,
                   static_cast<float>(NumberAttr(op, "eps", 0)), out);
      return absl::OkStatus();
    }
    case OpKind::kAdd:
      Add(F(0), E(op.inputs[0]), F(1), E(op.inputs[1]), out);
      return absl::OkStatus();
    case OpKind::kMul:
      Mul(F(0), E(op.inputs[0]), F(1), E(op.inputs[1]), out);
      return absl::OkStatus();
    case OpKind::kSilu:
      Silu(F(0), E(op.inputs[0]), out);
      return absl::OkStatus();
    case OpKind::kScale:
      Scale(F(0), E(op.inputs[0]), static_cast<float>(NumberAttr(op, "scale", 1.0)), out);
      return absl::OkStatus();
    case OpKind::kMoeTopK: {
      const int64_t n_exp = g.value(op.inputs[0]).shape[1];
      const int64_t k = g.value(op.outputs[0]).shape[1];
      return MoeTopK(F(0), E(op.inputs[0]) / n_exp, n_exp, k,
                     reinterpret_cast<int32_t*>(outs[0].data()));
    }
    case OpKind::kMoeWeights: {
      const int64_t n_exp = g.value(op.inputs[0]).shape[1];
      const int64_t k = g.value(op.inputs[1]).shape[1];
      return MoeWeights(F(0), E(op.inputs[0]) / n_exp, n_exp, I(1), k, NumberAttr(op, "norm", 0) != 0,
                        out);
    }
    case OpKind::kMatMulId: {
      const Value& w = g.value(op.inputs[1]);
      const int64_t k = g.value(op.inputs[2]).shape[1];
      return MatMulId(pool, F(0), g.value(op.inputs[0]).shape.size() == 3, E(op.inputs[2]) / k, k,
                      w.shape[2], w.dtype, in[1], w.shape[0], w.shape[1], I(2), out);
    }
    case OpKind::kMoeSum: {
      const Shape& ys = g.value(op.inputs[0]).shape;
      MoeSum(F(0), F(1), E(op.inputs[1]) / ys[1], ys[1], ys[2], out);
      return absl::OkStatus();
    }
    case OpKind::kReshape:
    case OpKind::kCopy:
      std::memcpy(outs[0].data(), in[0], outs[0].size());
      return absl::OkStatus();
    case OpKind::kRope: {
      const Shape& s = g.value(op.inputs[0]).shape;
      RopeParams p;
      p.mode = static_cast<int>(NumberAttr(op, "mode", 0));
      p.n_rot = static_cast<int64_t>(NumberAttr(op, "n_rot", 0));
      p.freq_base = static_cast<float>(NumberAttr(op, "freq_base", 10000.0));
      p.freq_scale = static_cast<float>(NumberAttr(op, "freq_scale", 1.0));
      p.freq_factors = op.inputs.size() == 3 ? F(2) : nullptr;
      return Rope(F(0), E(op.inputs[0]) / (s[1] * s[2]), s[1], s[2], I(1), p, out);
    }
    case OpKind::kKvStore: {
      const Value& c = g.value(op.inputs[1]);
      const int64_t row = c.shape[1] * c.shape[2];
      if (op.inputs.size() == 5) {
        return PagedKvStore(F(0), E(op.inputs[0]) / row, row, I(2), PagedInputs(g, op, I(3), I(4)),
                            c.dtype, outs[0].data(), c.shape[0]);
      }
      return KvStore(F(0), E(op.inputs[0]) / row, row, I(2), c.dtype, outs[0].data(),
                          c.shape[0]);
    }
    case OpKind::kAttention: {
      const Value& k = g.value(op.inputs[1]);
      const Shape& qs = g.value(op.inputs[0]).shape;
      AttentionShape shape;
      shape.n_head = qs[1];
      shape.head_dim = qs[2];
      shape.T = E(op.inputs[0]) / (qs[1] * qs[2]);
      shape.n_head_kv = k.shape[1];
      shape.n_ctx = k.shape[0];
      shape.window = static_cast<int64_t>(NumberAttr(op, "window", 0));
      if (op.inputs.size() == 6) {
        return PagedAttention(pool, F(0), in[1], in[2], k.dtype, g.value(op.inputs[2]).dtype, I(3),
                              PagedInputs(g, op, I(4), I(5)), shape,
                              static_cast<float>(NumberAttr(op, "scale", 1.0)), out);
      }
      return Attention(pool, F(0), in[1], in[2], k.dtype, g.value(op.inputs[2]).dtype, I(3),
                       shape, static_cast<float>(NumberAttr(op, "scale", 1.0)), out);
    }
    case OpKind::kLastRow: {
      const int64_t dim = g.value(op.inputs[0]).shape.back();
      LastRow(F(0), E(op.inputs[0]) / dim, dim, out);
      return absl::OkStatus();
    }
    case OpKind::kAllReduce:
    case OpKind::kAllGather:
      // Needs the other ranks' values (runtime/cpu/tp_executor.h).
      return absl::UnimplementedError(absl::StrCat(std::string(ir::OpName(op.kind)), " needs the ranks of a tensor-parallel run"));
    case OpKind::kSample: {
      const int64_t V = g.value(op.inputs[0]).shape.back();
      return Sample(F(0), E(op.inputs[0]) / V, V, I(1), reinterpret_cast<int32_t*>(outs[0].data()));
    }
    case OpKind::kFused: {
      const Graph& body = *op.body;
      std::vector<int> producer = Producers(body);
      std::vector<std::vector<uint8_t>> vals(body.values().size());
      std::vector<const uint8_t*> ptr(body.values().size(), nullptr);
      size_t in_i = 0;
      for (ValueId v = 0; v < static_cast<ValueId>(body.values().size()); ++v) {
        if (producer[v] < 0) ptr[v] = in[in_i++];
      }
      for (const Op& bop : body.ops()) {
        std::vector<const uint8_t*> bin;
        for (ValueId v : bop.inputs) bin.push_back(ptr[v]);
        std::vector<std::vector<uint8_t>> bout;
        for (ValueId v : bop.outputs) bout.emplace_back(Bytes(body, v, T));
        if (absl::Status s = EvalOp(body, bop, bin, bout, T, pool); !s.ok()) return s;
        for (size_t j = 0; j < bop.outputs.size(); ++j) {
          vals[bop.outputs[j]] = std::move(bout[j]);
          ptr[bop.outputs[j]] = vals[bop.outputs[j]].data();
        }
      }
      for (size_t j = 0; j < outs.size(); ++j) {
        const ValueId bo = body.outputs()[j];
        std::memcpy(outs[j].data(), ptr[bo], std::min(outs[j].size(), vals[bo].size()));
      }
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unknown op kind");
}



PagedKv PagedInputs(const ir::Graph& g, const ir::Op& op, const int32_t* seq_ids,
                    const int32_t* block_table) {
  const size_t table_at = op.kind == ir::OpKind::kKvStore ? 4 : 5;
  const ir::Shape& ts = g.value(op.inputs[table_at]).shape;
  PagedKv p;
  p.seq_ids = seq_ids;
  p.block_table = block_table;
  p.n_seq = ts[0];
  p.max_blocks = ts[1];
  p.block_size = static_cast<int64_t>(NumberAttr(op, "block_size", 0));
  return p;
}

std::vector<double> AsDoubles(DType dtype, const std::vector<uint8_t>& bytes) {
  std::vector<double> out;
  if (dtype == DType::kF32) {
    out.resize(bytes.size() / 4);
    for (size_t i = 0; i < out.size(); ++i) {
      float f;
      std::memcpy(&f, bytes.data() + 4 * i, 4);
      out[i] = f;
    }
  } else if (dtype == DType::kF16 || dtype == DType::kBF16) {
    out.resize(bytes.size() / 2);
    for (size_t i = 0; i < out.size(); ++i) {
      uint16_t h;
      std::memcpy(&h, bytes.data() + 2 * i, 2);
      out[i] = dtype == DType::kF16 ? HalfToFloat(h) : BF16ToFloat(h);
    }
  } else if (dtype == DType::kI32) {
    out.resize(bytes.size() / 4);
    for (size_t i = 0; i < out.size(); ++i) {
      int32_t v;
      std::memcpy(&v, bytes.data() + 4 * i, 4);
      out[i] = v;
    }
  } else if (dtype == DType::kQ8A) {
    const int64_t n = static_cast<int64_t>(bytes.size()) * 4 / 5;
    std::vector<float> f(n);
    if (DequantizeQ8A(bytes.data(), n, f.data()).ok()) out.assign(f.begin(), f.end());
  }
  return out;
}

}  // namespace vibrant::cpu
