#include "codegen/cuda_target.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "codegen/kernel_source.h"
#include "codegen/kernels/attention_mma.h"
#include "codegen/kernels/families.h"
#include "codegen/kernels/persistent.h"
#include "passes/schedule_decode.h"

namespace vibrant::codegen {
namespace {

using dispatch::Arg;
using dispatch::BufRef;
using dispatch::Launch;
using dispatch::LaunchKind;
using dispatch::Region;
using dispatch::TExpr;
using ir::Graph;
using ir::KernelVariant;
using ir::Op;
using ir::OpKind;
using ir::Shape;
using ir::Value;
using ir::ValueId;

constexpr int64_t kAlign = 256;
int64_t AlignUp(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// A cuBLASLt chunk of weight rows is a whole multiple of this many rows, so
// that every chunk's output columns start 256-byte aligned.
constexpr int64_t kGemmRowQuantum = 64;

std::string OpText(const Graph& g, int i) {
  const Op& op = g.ops()[i];
  std::string out = absl::StrCat("op ", i, " ", std::string(ir::OpName(op.kind)));
  if (!op.outputs.empty()) absl::StrAppend(&out, " -> '", g.value(op.outputs[0]).name, "'");
  return out;
}

double NumberAttr(const Op& op, const std::string& key, double dflt) {
  auto it = op.attrs.find(key);
  if (it == op.attrs.end()) return dflt;
  if (const auto* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  if (const auto* d = std::get_if<double>(&it->second)) return *d;
  return dflt;
}

int64_t IntParam(const KernelVariant& v, const std::string& key, int64_t dflt) {
  auto it = v.params.find(key);
  if (it == v.params.end()) return dflt;
  if (const auto* i = std::get_if<int64_t>(&it->second)) return *i;
  return dflt;
}

// A linear rule through (1, f(1)) and (2, f(2)): exact for quantities
// linear in T (element and byte counts of a value with T in its shape).
TExpr LinearThrough(int64_t f1, int64_t f2) { return TExpr::Linear(f2 - f1, 2 * f1 - f2); }

TExpr ElemsRule(const Graph& g, ValueId v) {
  const Shape& s = g.value(v).shape;
  return LinearThrough(ir::NumElements(s, 1), ir::NumElements(s, 2));
}

TExpr BytesRule(const Graph& g, ValueId v) {
  const Value& val = g.value(v);
  const int64_t b1 = DTypeBytes(val.dtype, ir::NumElements(val.shape, 1)).value_or(0);
  const int64_t b2 = DTypeBytes(val.dtype, ir::NumElements(val.shape, 2)).value_or(0);
  return LinearThrough(b1, b2);
}

// A rule divided exactly by d (the caller knows it divides).
TExpr Div(TExpr e, int64_t d) { return TExpr::Linear(e.a / d, e.b / d); }
TExpr Mul(TExpr e, int64_t m) { return TExpr::Linear(e.a * m, e.b * m); }
// ceil(e / d), clamped to [lo, hi].
TExpr CeilDiv(TExpr e, int64_t d, int64_t lo = 1, int64_t hi = INT32_MAX) {
  return TExpr::CeilDiv(e.a, e.b, d, lo, hi);
}
// GridFor of the old executor: enough blocks for n elements, at most 8192
// (grid-stride kernels loop).
TExpr GridFor(TExpr n, int threads) { return CeilDiv(n, threads, 1, 8192); }

// Lowering state: the graph, the options, and where values live.
struct Env {
  Env(const Graph& graph, const CudaTargetOptions& options) : g(graph), opts(options) {}
  const Graph& g;
  const CudaTargetOptions& opts;
  bool dry = true;                  // names only (select-kernels)
  std::vector<BufRef> value;        // per value (real lowering)
  int64_t scratch_need = 0;
  std::vector<std::string> kernels;
  std::map<std::string, int> kernel_index;

  BufRef Val(ValueId v) const {
    if (dry) return BufRef{Region::kArena, TExpr::Const(0), BytesRule(g, v)};
    return value[v];
  }
  // Bytes [offset + at, ...) of value v's buffer, `extent` long.
  BufRef Sub(ValueId v, TExpr at, TExpr extent) const {
    BufRef b = Val(v);
    b.offset = TExpr::Linear(b.offset.a + at.a, b.offset.b + at.b);
    b.extent = extent;
    return b;
  }
  BufRef Scratch(int64_t offset, TExpr extent) {
    scratch_need = std::max(scratch_need, offset + extent.Eval(g.max_tokens));
    return BufRef{Region::kScratch, TExpr::Const(offset), extent};
  }
  int Kernel(const std::string& name) {
    auto it = kernel_index.find(name);
    if (it != kernel_index.end()) return it->second;
    kernel_index[name] = static_cast<int>(kernels.size());
    kernels.push_back(name);
    return static_cast<int>(kernels.size()) - 1;
  }
};

// Builds the launches of one op's variant.
class Lowering {
 public:
  Lowering(Env& env, int op_index, const KernelVariant& v, std::vector<Launch>* out)
      : env_(env), g_(env.g), i_(op_index), op_(env.g.ops()[op_index]), v_(v), out_(out) {}

  absl::Status Run();

 private:
  Launch& Kernel(const std::string& name, TExpr gx, uint32_t threads, TExpr gy = TExpr::Const(1)) {
    Launch l;
    l.op = i_;
    l.t_min = v_.t_min;
    l.t_max = v_.t_max;
    l.kind = LaunchKind::kKernel;
    l.name = name;
    l.kernel = env_.Kernel(name);
    l.grid[0] = gx;
    l.grid[1] = gy;
    l.block[0] = threads;
    out_->push_back(std::move(l));
    return out_->back();
  }
  void Copy(BufRef dst, BufRef src, TExpr bytes) {
    Launch l;
    l.op = i_;
    l.t_min = v_.t_min;
    l.t_max = v_.t_max;
    l.kind = LaunchKind::kCopy;
    l.name = "memcpy";
    l.dst = dst;
    l.src = src;
    l.bytes = bytes;
    out_->push_back(std::move(l));
  }
  absl::Status Unsupported(const std::string& why) const {
    return absl::UnimplementedError(absl::StrCat("CUDA backend: ", OpText(g_, i_), ": ", why));
  }
  BufRef V(ValueId v) const { return env_.Val(v); }
  static BufRef Null() { return BufRef{}; }

  // Members of a matmul / multi_matmul: weight, bias (or -1), output.
  struct Member {
    ValueId w, bias, out;
  };
  std::vector<Member> Members() const {
    std::vector<Member> ms;
    if (op_.kind == OpKind::kMatMul) {
      ms.push_back({op_.inputs[1], op_.inputs.size() == 3 ? op_.inputs[2] : -1, op_.outputs[0]});
      return ms;
    }
    const auto& flags = std::get<std::vector<int64_t>>(op_.attrs.at("bias"));
    size_t bias_at = 1 + flags.size();
    for (size_t m = 0; m < flags.size(); ++m) {
      ms.push_back({op_.inputs[1 + m], flags[m] ? op_.inputs[bias_at++] : -1, op_.outputs[m]});
    }
    return ms;
  }

  absl::Status MatvecQ8Multi();
  absl::Status MatvecQ8();
  absl::Status MatmulFloat();
  absl::Status Gemm();
  absl::Status Mmq();
  BufRef F16Activations(TExpr rows, int64_t K);
  absl::Status Fused();
  absl::Status Attention();
  absl::Status FlashDecode();
  absl::Status FlashPrefill();
  absl::Status PagedAttention();

  Env& env_;
  const Graph& g_;
  const int i_;
  const Op& op_;
  const KernelVariant& v_;
  std::vector<Launch>* out_;
};

absl::Status Lowering::MatvecQ8Multi() {
  const ValueId x = op_.inputs[0];
  const Value& w0 = g_.value(op_.inputs[1]);
  const int64_t K = w0.shape[1];
  const int64_t row_bytes = DTypeBytes(w0.dtype, K).value_or(0);
  const std::vector<Member> ms = Members();
  const int64_t per_block = kMatvecQ8Threads / 32;
  // One row of x: codes [K] then {d, d * sum} per 32.
  const BufRef qx = env_.Sub(x, TExpr::Const(0), TExpr::Const(K));
  const BufRef ds = env_.Sub(x, TExpr::Const(K), TExpr::Const(K / 4));
  for (size_t first = 0; first < ms.size(); first += 3) {
    int64_t rows = 0;
    for (size_t s = first; s < std::min(ms.size(), first + 3); ++s) rows += g_.value(ms[s].w).shape[0];
    if (rows > INT32_MAX / 2) return Unsupported(absl::StrCat(rows, " rows"));
    Launch& l = Kernel(MatvecQ8MultiKernelName(w0.dtype), TExpr::Const((rows + per_block - 1) / per_block),
                       kMatvecQ8Threads);
    l.args = {Arg::Ptr(qx), Arg::Ptr(ds), Arg::I32(TExpr::Const(K)), Arg::I64(TExpr::Const(row_bytes))};
    for (size_t s = first; s < first + 3; ++s) {
      if (s < ms.size()) {
        l.args.push_back(Arg::Ptr(V(ms[s].w)));
        l.args.push_back(Arg::Ptr(ms[s].bias >= 0 ? V(ms[s].bias) : Null()));
        l.args.push_back(Arg::Ptr(V(ms[s].out)));
        l.args.push_back(Arg::I32(TExpr::Const(g_.value(ms[s].w).shape[0])));
      } else {
        l.args.insert(l.args.end(), {Arg::Ptr(Null()), Arg::Ptr(Null()), Arg::Ptr(Null()),
                                     Arg::I32(TExpr::Const(0))});
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Lowering::MatvecQ8() {
  const ValueId x = op_.inputs[0];
  const int tt = static_cast<int>(IntParam(v_, "tokens", 8));
  const int64_t K = g_.value(op_.inputs[1]).shape[1];
  const TExpr rows = Div(ElemsRule(g_, x), K);
  const BufRef qx = env_.Sub(x, TExpr::Const(0), Mul(rows, K));
  const BufRef ds = env_.Sub(x, Mul(rows, K), Mul(rows, K / 4));
  const int64_t per_block = kMatvecQ8Threads / 32;
  for (const Member& m : Members()) {
    const Value& w = g_.value(m.w);
    const int64_t N = w.shape[0];
    if (N > INT32_MAX / 2) return Unsupported(absl::StrCat(N, " rows"));
    Launch& l = Kernel(MatvecQ8KernelName(w.dtype, tt), TExpr::Const((N + per_block - 1) / per_block),
                       kMatvecQ8Threads, CeilDiv(rows, tt, 1, 65535));
    l.args = {Arg::Ptr(V(m.w)),
              Arg::I64(TExpr::Const(DTypeBytes(w.dtype, K).value_or(0))),
              Arg::Ptr(qx),
              Arg::Ptr(ds),
              Arg::Ptr(m.bias >= 0 ? V(m.bias) : Null()),
              Arg::Ptr(V(m.out)),
              Arg::I32(TExpr::Const(K)),
              Arg::I32(TExpr::Const(N)),
              Arg::I32(rows)};
  }
  return absl::OkStatus();
}

absl::Status Lowering::MatmulFloat() {
  const ValueId x = op_.inputs[0];
  const int tt = static_cast<int>(IntParam(v_, "tokens", 1));
  for (const Member& m : Members()) {
    const Value& w = g_.value(m.w);
    const int64_t N = w.shape[0], K = w.shape[1];
    const TExpr rows = Div(ElemsRule(g_, x), K);
    const int wpr = MatmulWarpsPerRow(N, K, env_.opts.sm_count);
    const int64_t rows_per_block = kMatmulThreads / 32 / wpr;
    Launch& l = Kernel(MatmulKernelName(w.dtype, tt), TExpr::Const((N + rows_per_block - 1) / rows_per_block),
                       kMatmulThreads, CeilDiv(rows, tt, 1, 65535));
    l.args = {Arg::Ptr(V(m.w)),
              Arg::I64(TExpr::Const(DTypeBytes(w.dtype, K).value_or(0))),
              Arg::Ptr(V(x)),
              Arg::Ptr(m.bias >= 0 ? V(m.bias) : Null()),
              Arg::Ptr(V(m.out)),
              Arg::I32(TExpr::Const(K)),
              Arg::I32(TExpr::Const(N)),
              Arg::I32(rows),
              Arg::I32(TExpr::Const(wpr))};
  }
  return absl::OkStatus();
}

// The matmul's input x [rows, K] (f32 or q8a) rounded to f16 into scratch
// [0, rows * K * 2): the GEMMs' activation operand.
BufRef Lowering::F16Activations(TExpr rows, int64_t K) {
  const ValueId x = op_.inputs[0];
  const BufRef x16 = env_.Scratch(0, Mul(rows, K * 2));
  const TExpr n = Mul(rows, K);
  if (g_.value(x).dtype == DType::kQ8A) {
    Launch& c = Kernel("vb_q8a_to_f16", GridFor(n, kDequantThreads), kDequantThreads);
    c.args = {Arg::Ptr(env_.Sub(x, TExpr::Const(0), n)), Arg::Ptr(env_.Sub(x, n, Div(n, 4))), Arg::Ptr(x16),
              Arg::I64(n)};
  } else {
    Launch& c = Kernel("vb_f32_to_f16", GridFor(n, kDequantThreads), kDequantThreads);
    c.args = {Arg::Ptr(V(x)), Arg::Ptr(x16), Arg::I64(n)};
  }
  return x16;
}

// out = x . w^T (+ bias) on tensor cores with the weights decoded from their
// blocks in shared memory (kernels/mmq.cc): x rounded to f16 once into
// scratch, then one vb_mmq launch per three weights (their bias fused).
absl::Status Lowering::Mmq() {
  const ValueId x = op_.inputs[0];
  const Value& w0 = g_.value(op_.inputs[1]);
  const int64_t K = w0.shape[1];
  const int64_t bm = IntParam(v_, "bm", 0);
  if (bm != 64 && bm != 128) return Unsupported(absl::StrCat("mmq tile of ", bm, " rows"));
  if (!MmqSupports(w0.dtype) || K % 32 != 0) {
    return Unsupported(absl::StrCat("no quantized GEMM for ", std::string(DTypeName(w0.dtype)), " rows of ", K));
  }
  const TExpr rows = Div(ElemsRule(g_, x), K);
  const int64_t row_bytes = DTypeBytes(w0.dtype, K).value_or(0);
  const BufRef x16 = F16Activations(rows, K);
  const std::vector<Member> ms = Members();
  for (size_t first = 0; first < ms.size(); first += 3) {
    int64_t tiles = 0;
    for (size_t s = first; s < std::min(ms.size(), first + 3); ++s) {
      const Value& w = g_.value(ms[s].w);
      if (w.dtype != w0.dtype || w.shape[1] != K) return Unsupported("members of different types or rows");
      if (w.shape[0] > INT32_MAX / 2) return Unsupported(absl::StrCat(w.shape[0], " rows"));
      tiles += (w.shape[0] + kMmqBn - 1) / kMmqBn;
    }
    if (tiles > 65535) return Unsupported(absl::StrCat(tiles, " weight tiles exceed a grid's 65535"));
    Launch& l = Kernel(MmqKernelName(w0.dtype, static_cast<int>(bm)), CeilDiv(rows, bm, 1, INT32_MAX),
                       kMmqThreads, TExpr::Const(tiles));
    l.smem = static_cast<uint32_t>(MmqSharedBytes(static_cast<int>(bm)));
    l.args = {Arg::Ptr(x16), Arg::I32(rows), Arg::I32(TExpr::Const(K)), Arg::I64(TExpr::Const(row_bytes))};
    for (size_t s = first; s < first + 3; ++s) {
      if (s < ms.size()) {
        l.args.push_back(Arg::Ptr(V(ms[s].w)));
        l.args.push_back(Arg::Ptr(ms[s].bias >= 0 ? V(ms[s].bias) : Null()));
        l.args.push_back(Arg::Ptr(V(ms[s].out)));
        l.args.push_back(Arg::I32(TExpr::Const(g_.value(ms[s].w).shape[0])));
      } else {
        l.args.insert(l.args.end(), {Arg::Ptr(Null()), Arg::Ptr(Null()), Arg::Ptr(Null()),
                                     Arg::I32(TExpr::Const(0))});
      }
    }
  }
  return absl::OkStatus();
}

// out = x . w^T (+ bias) as cuBLASLt GEMMs: x rounded to f16 once into
// scratch [0, T*K*2), then per weight and chunk of rows: the rows decoded to
// f16 into scratch after x, and one GEMM into the chunk's output columns.
absl::Status Lowering::Gemm() {
  const ValueId x = op_.inputs[0];
  const int64_t K = g_.value(op_.inputs[1]).shape[1];
  const TExpr rows = Div(ElemsRule(g_, x), K);
  const int64_t chunk_rows = IntParam(v_, "chunk_rows", 0);
  if (chunk_rows < kGemmRowQuantum || chunk_rows % kGemmRowQuantum != 0) {
    return Unsupported(absl::StrCat("gemm chunk of ", chunk_rows, " rows"));
  }
  const int64_t x16_bytes = AlignUp(rows.Eval(g_.max_tokens) * K * 2);
  const BufRef x16 = F16Activations(rows, K);
  for (const Member& m : Members()) {
    const Value& w = g_.value(m.w);
    const int64_t N = w.shape[0];
    const int64_t row_bytes = DTypeBytes(w.dtype, K).value_or(0);
    for (int64_t r0 = 0; r0 < N; r0 += chunk_rows) {
      const int64_t rc = std::min(chunk_rows, N - r0);
      const BufRef w16 = env_.Scratch(x16_bytes, TExpr::Const(rc * K * 2));
      Launch& d = Kernel(DequantF16KernelName(w.dtype),
                         GridFor(TExpr::Const(rc * ((K + 7) / 8)), kDequantThreads), kDequantThreads);
      d.args = {Arg::Ptr(V(m.w)), Arg::I64(TExpr::Const(row_bytes)), Arg::Ptr(w16),
                Arg::I32(TExpr::Const(K)), Arg::I32(TExpr::Const(r0)), Arg::I32(TExpr::Const(rc))};
      Launch l;
      l.op = i_;
      l.t_min = v_.t_min;
      l.t_max = v_.t_max;
      l.kind = LaunchKind::kGemm;
      l.name = "cublaslt";
      l.a = x16;
      l.b = w16;
      // Output columns [r0, r0 + rc) of rows of N floats.
      l.out = env_.Sub(m.out, TExpr::Const(r0 * 4), TExpr::Linear(rows.a * N * 4, rows.b * N * 4 - N * 4 + rc * 4));
      l.m = rows;
      l.n = rc;
      l.k = K;
      l.lda = K;
      l.ldb = K;
      l.ldo = N;
      out_->push_back(std::move(l));
    }
    if (m.bias >= 0) {
      const TExpr n_out = Mul(rows, N);
      Launch& a = Kernel("vb_add", GridFor(n_out, kElementwiseThreads), kElementwiseThreads);
      a.args = {Arg::Ptr(V(m.out)), Arg::Ptr(V(m.bias)), Arg::Ptr(V(m.out)), Arg::I64(n_out),
                Arg::I64(TExpr::Const(N))};
    }
  }
  return absl::OkStatus();
}

absl::Status Lowering::Fused() {
  absl::StatusOr<FusedKernel> fk = GenerateFused(g_, op_);
  if (!fk.ok()) return fk.status();
  const TExpr rows = Div(ElemsRule(g_, op_.outputs[0]), fk->row_elems);
  TExpr blocks;
  switch (fk->shape) {
    case FusedKernel::Shape::kElementwise: blocks = GridFor(Mul(rows, fk->row_elems), fk->threads); break;
    case FusedKernel::Shape::kRowReduce: blocks = CeilDiv(rows, 1); break;
    case FusedKernel::Shape::kRope: blocks = CeilDiv(Mul(rows, fk->heads), 1); break;
  }
  Launch& l = Kernel(fk->name, blocks, static_cast<uint32_t>(fk->threads));
  for (ValueId v : op_.inputs) l.args.push_back(Arg::Ptr(V(v)));
  for (ValueId v : op_.outputs) l.args.push_back(Arg::Ptr(V(v)));
  l.args.push_back(Arg::I64(rows));
  return absl::OkStatus();
}

absl::Status Lowering::Attention() {
  const Shape& qs = g_.value(op_.inputs[0]).shape;
  const Value& k = g_.value(op_.inputs[1]);
  const int64_t H = qs[1], hd = qs[2], KVH = k.shape[1], C = k.shape[0];
  const TExpr rows = Div(ElemsRule(g_, op_.inputs[0]), H * hd);
  const int64_t chunk = IntParam(v_, "chunk", kAttnChunk);
  if (chunk < 1 || chunk > kAttnChunk) return Unsupported(absl::StrCat("attention chunk ", chunk));
  const int64_t n_split = (C + chunk - 1) / chunk;
  if (n_split > 65535) return Unsupported(absl::StrCat(n_split, " context splits"));
  // Partials: per (row, head, split) {max, sum, out[hd]} floats.
  const BufRef part = env_.Scratch(0, Mul(rows, H * n_split * (hd + 2) * 4));
  Launch& s = Kernel(k.dtype == DType::kF16 ? "vb_attn_split_f16" : "vb_attn_split_f32",
                     CeilDiv(Mul(rows, H), 1), kAttnThreads, TExpr::Const(n_split));
  s.args = {Arg::Ptr(V(op_.inputs[0])),
            Arg::Ptr(V(op_.inputs[1])),
            Arg::Ptr(V(op_.inputs[2])),
            Arg::Ptr(V(op_.inputs[3])),
            Arg::Ptr(part),
            Arg::I32(TExpr::Const(H)),
            Arg::I32(TExpr::Const(KVH)),
            Arg::I32(TExpr::Const(hd)),
            Arg::I32(TExpr::Const(C)),
            Arg::F32(static_cast<float>(NumberAttr(op_, "scale", 1.0))),
            Arg::I32(TExpr::Const(n_split)),
            Arg::I32(TExpr::Const(chunk)),
            Arg::I32(TExpr::Const(static_cast<int64_t>(NumberAttr(op_, "window", 0))))};
  Launch& c = Kernel("vb_attn_combine", CeilDiv(Mul(rows, H), 1), kAttnThreads);
  c.args = {Arg::Ptr(part), Arg::Ptr(V(op_.outputs[0])), Arg::I32(TExpr::Const(hd)),
            Arg::I32(TExpr::Const(n_split))};
  return absl::OkStatus();
}

// Flash decoding (attention_mma.h): attn over (split, KV head, 16 query rows)
// blocks, then the combine of the used splits; n_split fixed by the variant.
absl::Status Lowering::FlashDecode() {
  const Shape& qs = g_.value(op_.inputs[0]).shape;
  const Value& k = g_.value(op_.inputs[1]);
  const Value& v = g_.value(op_.inputs[2]);
  const int64_t H = qs[1], hd = qs[2], KVH = k.shape[1], C = k.shape[0], G = H / KVH;
  const TExpr rows = Div(ElemsRule(g_, op_.inputs[0]), H * hd);
  const int64_t n_split = IntParam(v_, "n_split", 1);
  if (n_split < 1 || n_split > kAttnDecMaxSplits) return Unsupported(absl::StrCat("n_split ", n_split));
  const AttnConfig cfg{k.dtype, v.dtype, static_cast<int>(hd)};
  const BufRef part = env_.Scratch(0, Mul(rows, H * n_split * (hd + 2) * 4));
  Launch& a = Kernel(AttnDecodeKernelName(cfg), TExpr::Const(n_split), kAttnDecWarps * 32,
                     TExpr::Const(KVH));
  a.grid[2] = CeilDiv(Mul(rows, G), kAttnDecRows, 1, 65535);
  const float scale = static_cast<float>(NumberAttr(op_, "scale", 1.0));
  a.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(V(op_.inputs[1])), Arg::Ptr(V(op_.inputs[2])),
            Arg::Ptr(V(op_.inputs[3])), Arg::Ptr(part), Arg::I32(rows), Arg::I32(TExpr::Const(H)),
            Arg::I32(TExpr::Const(KVH)), Arg::I32(TExpr::Const(C)), Arg::F32(scale),
            Arg::I32(TExpr::Const(n_split))};
  Launch& c = Kernel(kAttnDecodeCombineKernel, CeilDiv(Mul(rows, H), 1), 128, TExpr::Const((hd + 31) / 32));
  c.args = {Arg::Ptr(part), Arg::Ptr(V(op_.inputs[3])), Arg::Ptr(V(op_.outputs[0])), Arg::I32(rows),
            Arg::I32(TExpr::Const(H)), Arg::I32(TExpr::Const(hd)), Arg::I32(TExpr::Const(C)),
            Arg::I32(TExpr::Const(n_split))};
  return absl::OkStatus();
}

// Paged attention (continuous batching; attention_paged.cc): a block per
// (split, KV head, token and group of 16 heads), then the per-row combine.
absl::Status Lowering::PagedAttention() {
  const Shape& qs = g_.value(op_.inputs[0]).shape;
  const Value& k = g_.value(op_.inputs[1]);
  const Value& v = g_.value(op_.inputs[2]);
  const Shape& ts = g_.value(op_.inputs[5]).shape;  // block_table [n_seq, max_blocks]
  const int64_t H = qs[1], hd = qs[2], KVH = k.shape[1], n_rows = k.shape[0], G = H / KVH;
  const int64_t bs = static_cast<int64_t>(NumberAttr(op_, "block_size", 0));
  if (bs < 1 || ts.size() != 2) return Unsupported("paged attention without a block table");
  const int64_t n_seq = ts[0], max_blocks = ts[1];
  const TExpr rows = Div(ElemsRule(g_, op_.inputs[0]), H * hd);
  const int64_t n_split = IntParam(v_, "n_split", 1);
  if (n_split < 1 || n_split > kAttnDecMaxSplits) return Unsupported(absl::StrCat("n_split ", n_split));
  const int64_t rb = (G + kAttnDecRows - 1) / kAttnDecRows;
  const AttnConfig cfg{k.dtype, v.dtype, static_cast<int>(hd)};
  const BufRef part = env_.Scratch(0, Mul(rows, H * n_split * (hd + 2) * 4));
  Launch& a = Kernel(AttnPagedKernelName(cfg), TExpr::Const(n_split), kAttnDecWarps * 32,
                     TExpr::Const(KVH));
  a.grid[2] = CeilDiv(Mul(rows, rb), 1, 1, 65535);
  const float scale = static_cast<float>(NumberAttr(op_, "scale", 1.0));
  a.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(V(op_.inputs[1])), Arg::Ptr(V(op_.inputs[2])),
            Arg::Ptr(V(op_.inputs[3])), Arg::Ptr(V(op_.inputs[4])), Arg::Ptr(V(op_.inputs[5])),
            Arg::Ptr(part), Arg::I32(rows), Arg::I32(TExpr::Const(H)), Arg::I32(TExpr::Const(KVH)),
            Arg::I32(TExpr::Const(n_rows)), Arg::F32(scale), Arg::I32(TExpr::Const(n_split)),
            Arg::I32(TExpr::Const(n_seq)), Arg::I32(TExpr::Const(max_blocks)),
            Arg::I32(TExpr::Const(bs))};
  Launch& c = Kernel(kAttnPagedCombineKernel, CeilDiv(Mul(rows, H), 1), 128,
                     TExpr::Const((hd + 31) / 32));
  c.args = {Arg::Ptr(part), Arg::Ptr(V(op_.inputs[3])), Arg::Ptr(V(op_.outputs[0])), Arg::I32(rows),
            Arg::I32(TExpr::Const(H)), Arg::I32(TExpr::Const(hd)),
            Arg::I32(TExpr::Const(max_blocks * bs)), Arg::I32(TExpr::Const(n_split))};
  return absl::OkStatus();
}

// Flash attention for prompts: blocks of 64 query rows of one KV head.
absl::Status Lowering::FlashPrefill() {
  const Shape& qs = g_.value(op_.inputs[0]).shape;
  const Value& k = g_.value(op_.inputs[1]);
  const Value& v = g_.value(op_.inputs[2]);
  const int64_t H = qs[1], hd = qs[2], KVH = k.shape[1], C = k.shape[0], G = H / KVH;
  const TExpr rows = Div(ElemsRule(g_, op_.inputs[0]), H * hd);
  const AttnConfig cfg{k.dtype, v.dtype, static_cast<int>(hd)};
  Launch& a = Kernel(AttnPrefillKernelName(cfg), CeilDiv(Mul(rows, G), kAttnPreRows, 1, INT32_MAX),
                     kAttnPreWarps * 32, TExpr::Const(KVH));
  a.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(V(op_.inputs[1])), Arg::Ptr(V(op_.inputs[2])),
            Arg::Ptr(V(op_.inputs[3])), Arg::Ptr(V(op_.outputs[0])), Arg::I32(rows),
            Arg::I32(TExpr::Const(H)), Arg::I32(TExpr::Const(KVH)), Arg::I32(TExpr::Const(C)),
            Arg::F32(static_cast<float>(NumberAttr(op_, "scale", 1.0)))};
  return absl::OkStatus();
}

absl::Status Lowering::Run() {
  const std::string& n = v_.name;
  const ValueId o = op_.outputs.empty() ? -1 : op_.outputs[0];
  if (n == "view" || n == "io") return absl::OkStatus();
  if (n == "matvec_q8.multi") return MatvecQ8Multi();
  if (n == "matvec_q8") return MatvecQ8();
  if (n == "matmul.float") return MatmulFloat();
  if (n == "gemm.cublaslt") return Gemm();
  if (n == "gemm.mmq") return Mmq();
  if (n == "fused") return Fused();
  if (n == "attention.split") return Attention();
  if (n == "attention.flash_decode") return FlashDecode();
  if (n == "attention.flash_prefill") return FlashPrefill();
  if (n == "attention.paged") return PagedAttention();
  if (n == "embedding") {
    const Value& table = g_.value(op_.inputs[0]);
    const int64_t n_rows = table.shape[0], dim = table.shape[1];
    Launch& l = Kernel(EmbeddingKernelName(table.dtype), CeilDiv(ElemsRule(g_, op_.inputs[1]), 1),
                       kEmbedThreads);
    l.args = {Arg::Ptr(V(op_.inputs[0])), Arg::I64(TExpr::Const(DTypeBytes(table.dtype, dim).value_or(0))),
              Arg::Ptr(V(op_.inputs[1])), Arg::Ptr(V(o)), Arg::I32(TExpr::Const(dim)),
              Arg::I32(TExpr::Const(n_rows))};
    return absl::OkStatus();
  }
  if (n == "quantize_q8") {
    const TExpr elems = ElemsRule(g_, op_.inputs[0]);
    const TExpr nblocks = Div(elems, 32);
    Launch& l = Kernel("vb_quantize_q8", CeilDiv(nblocks, kQuantizeQ8Threads / 32), kQuantizeQ8Threads);
    l.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(env_.Sub(o, TExpr::Const(0), elems)),
              Arg::Ptr(env_.Sub(o, elems, Div(elems, 4))), Arg::I64(nblocks)};
    return absl::OkStatus();
  }
  if (n == "rms_norm") {
    const int64_t dim = g_.value(op_.inputs[0]).shape.back();
    Launch& l = Kernel("vb_rms_norm", CeilDiv(Div(ElemsRule(g_, op_.inputs[0]), dim), 1), kNormThreads);
    l.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(V(o)), Arg::I32(TExpr::Const(dim)),
              Arg::F32(static_cast<float>(NumberAttr(op_, "eps", 0)))};
    return absl::OkStatus();
  }
  if (n == "elementwise") {
    const TExpr elems = ElemsRule(g_, op_.inputs[0]);
    const std::string kernel = ElementwiseKernelName(op_.kind);
    if (ir::GetOpInfo(op_.kind).scalar.binary == nullptr) {
      Launch& l = Kernel(kernel, GridFor(elems, kElementwiseThreads), kElementwiseThreads);
      l.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(V(o)), Arg::I64(elems)};
    } else {
      Launch& l = Kernel(kernel, GridFor(elems, kElementwiseThreads), kElementwiseThreads);
      l.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(V(op_.inputs[1])), Arg::Ptr(V(o)), Arg::I64(elems),
                Arg::I64(ElemsRule(g_, op_.inputs[1]))};
    }
    return absl::OkStatus();
  }
  if (n == "rope") {
    const Shape& s = g_.value(op_.inputs[0]).shape;
    const int64_t H = s[1], hd = s[2];
    const int mode = static_cast<int>(NumberAttr(op_, "mode", 0));
    const int64_t n_rot = static_cast<int64_t>(NumberAttr(op_, "n_rot", 0));
    // Exactly the CPU reference's expression (runtime/cpu/kernels.cc, Rope).
    const float freq_base = static_cast<float>(NumberAttr(op_, "freq_base", 10000.0));
    const float theta_scale = powf(freq_base, -2.0f / static_cast<float>(n_rot));
    Launch& l = Kernel("vb_rope", CeilDiv(Div(ElemsRule(g_, op_.inputs[0]), hd), 1), kRopeThreads);
    l.args = {Arg::Ptr(V(op_.inputs[0])),
              Arg::Ptr(V(op_.inputs[1])),
              Arg::Ptr(op_.inputs.size() == 3 ? V(op_.inputs[2]) : Null()),
              Arg::Ptr(V(o)),
              Arg::I32(TExpr::Const(H)),
              Arg::I32(TExpr::Const(hd)),
              Arg::I32(TExpr::Const(n_rot)),
              Arg::I32(TExpr::Const(mode)),
              Arg::F32(theta_scale),
              Arg::F32(static_cast<float>(NumberAttr(op_, "freq_scale", 1.0)))};
    return absl::OkStatus();
  }
  if (n == "kv_store" && op_.inputs.size() == 5) {  // paged (continuous batching)
    const Value& c = g_.value(op_.inputs[1]);
    const int64_t row = c.shape[1] * c.shape[2];
    const TExpr elems = ElemsRule(g_, op_.inputs[0]);
    const Shape& ts = g_.value(op_.inputs[4]).shape;
    const int64_t bs = static_cast<int64_t>(NumberAttr(op_, "block_size", 0));
    if (bs < 1 || ts.size() != 2) return Unsupported("paged kv_store without a block table");
    const bool q8 = c.dtype == DType::kQ8_0;
    Launch& l = Kernel(q8 ? "vb_kv_store_paged_q8_0"
                          : c.dtype == DType::kF16 ? "vb_kv_store_paged_f16" : "vb_kv_store_paged_f32",
                       q8 ? CeilDiv(Div(elems, 32), kKvStoreThreads / 32, 1, 8192)
                          : GridFor(elems, kKvStoreThreads),
                       kKvStoreThreads);
    l.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(V(op_.inputs[2])), Arg::Ptr(V(op_.inputs[3])),
              Arg::Ptr(V(op_.inputs[4])), Arg::Ptr(V(op_.inputs[1])), Arg::I64(Div(elems, row)),
              Arg::I32(TExpr::Const(row)), Arg::I32(TExpr::Const(c.shape[0])),
              Arg::I32(TExpr::Const(ts[0])), Arg::I32(TExpr::Const(ts[1])), Arg::I32(TExpr::Const(bs))};
    return absl::OkStatus();
  }
  if (n == "kv_store") {
    const Value& c = g_.value(op_.inputs[1]);
    const int64_t row = c.shape[1] * c.shape[2];
    const TExpr elems = ElemsRule(g_, op_.inputs[0]);
    if (c.dtype == DType::kQ8_0) {  // one warp per block of 32 (kv_store.cc)
      Launch& l = Kernel("vb_kv_store_q8_0", CeilDiv(Div(elems, 32), kKvStoreThreads / 32, 1, 8192),
                         kKvStoreThreads);
      l.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(V(op_.inputs[2])), Arg::Ptr(V(op_.inputs[1])),
                Arg::I64(Div(elems, row)), Arg::I32(TExpr::Const(row)), Arg::I32(TExpr::Const(c.shape[0]))};
      return absl::OkStatus();
    }
    Launch& l = Kernel(c.dtype == DType::kF16 ? "vb_kv_store_f16" : "vb_kv_store_f32",
                       GridFor(elems, kKvStoreThreads), kKvStoreThreads);
    l.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(V(op_.inputs[2])), Arg::Ptr(V(op_.inputs[1])),
              Arg::I64(Div(elems, row)), Arg::I32(TExpr::Const(row)), Arg::I32(TExpr::Const(c.shape[0]))};
    return absl::OkStatus();
  }
  if (n == "scale") {
    const TExpr elems = ElemsRule(g_, op_.inputs[0]);
    Launch& l = Kernel("vb_scale", GridFor(elems, kElementwiseThreads), kElementwiseThreads);
    l.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(V(o)), Arg::I64(elems),
              Arg::F32(static_cast<float>(NumberAttr(op_, "scale", 1.0)))};
    return absl::OkStatus();
  }
  if (n == "moe_topk" || n == "moe_weights") {
    const int64_t E = g_.value(op_.inputs[0]).shape[1];
    const ValueId ids = n == "moe_topk" ? o : op_.inputs[1];
    const int64_t k = g_.value(ids).shape[1];
    const TExpr tokens = Div(ElemsRule(g_, op_.inputs[0]), E);
    Launch& l = Kernel(n == "moe_topk" ? "vb_moe_topk" : "vb_moe_weights",
                       CeilDiv(tokens, kMoeRouterThreads), kMoeRouterThreads);
    if (n == "moe_topk") {
      l.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(V(o)), Arg::I32(TExpr::Const(E)),
                Arg::I32(TExpr::Const(k)), Arg::I32(tokens)};
    } else {
      l.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(V(ids)), Arg::Ptr(V(o)), Arg::I32(TExpr::Const(E)),
                Arg::I32(TExpr::Const(k)), Arg::I32(tokens),
                Arg::I32(TExpr::Const(static_cast<int64_t>(NumberAttr(op_, "norm", 0))))};
    }
    return absl::OkStatus();
  }
  if (n == "moe_sum") {
    const Shape& ys = g_.value(op_.inputs[0]).shape;
    const TExpr elems = ElemsRule(g_, o);
    Launch& l = Kernel("vb_moe_sum", GridFor(elems, kElementwiseThreads), kElementwiseThreads);
    l.args = {Arg::Ptr(V(op_.inputs[0])), Arg::Ptr(V(op_.inputs[1])), Arg::Ptr(V(o)),
              Arg::I32(TExpr::Const(ys[1])), Arg::I32(TExpr::Const(ys[2])), Arg::I64(elems)};
    return absl::OkStatus();
  }
  if (n == "matmul_id.float") {
    const Value& w = g_.value(op_.inputs[1]);
    const int64_t E = w.shape[0], N = w.shape[1], K = w.shape[2];
    const int64_t k = g_.value(op_.inputs[2]).shape[1];
    const int64_t row_bytes = DTypeBytes(w.dtype, K).value_or(0);
    const TExpr slots = ElemsRule(g_, op_.inputs[2]);  // T * k
    const int64_t per_block = kMatmulIdThreads / 32;
    if (N > INT32_MAX / 2) return Unsupported(absl::StrCat(N, " rows"));
    if (slots.Eval(g_.max_tokens) > 65535) {
      return Unsupported(absl::StrCat(slots.Eval(g_.max_tokens), " (token, expert) slots exceed a grid's 65535"));
    }
    Launch& l = Kernel(MatmulIdKernelName(w.dtype), TExpr::Const((N + per_block - 1) / per_block),
                       kMatmulIdThreads, CeilDiv(slots, 1, 1, 65535));
    l.args = {Arg::Ptr(V(op_.inputs[1])),
              Arg::I64(TExpr::Const(row_bytes)),
              Arg::I64(TExpr::Const(row_bytes * N)),
              Arg::Ptr(V(op_.inputs[0])),
              Arg::I32(TExpr::Const(g_.value(op_.inputs[0]).shape.size() == 3 ? 1 : 0)),
              Arg::Ptr(V(op_.inputs[2])),
              Arg::Ptr(V(o)),
              Arg::I32(TExpr::Const(K)),
              Arg::I32(TExpr::Const(N)),
              Arg::I32(TExpr::Const(k)),
              Arg::I32(TExpr::Const(E))};
    return absl::OkStatus();
  }
  if (n == "last_row") {
    const int64_t dim = g_.value(op_.inputs[0]).shape.back();
    const TExpr rows = Div(ElemsRule(g_, op_.inputs[0]), dim);
    // Row rows-1 of the input: bytes [(rows - 1) * dim * 4, + dim * 4).
    Copy(V(o), env_.Sub(op_.inputs[0], TExpr::Linear(rows.a * dim * 4, (rows.b - 1) * dim * 4),
                        TExpr::Const(dim * 4)),
         TExpr::Const(dim * 4));
    return absl::OkStatus();
  }
  if (n == "copy") {
    Copy(V(o), V(op_.inputs[0]), BytesRule(g_, o));
    return absl::OkStatus();
  }
  if (n == "to_host" || n == "from_host") {
    Launch l;
    l.op = i_;
    l.t_min = v_.t_min;
    l.t_max = v_.t_max;
    l.kind = n == "to_host" ? LaunchKind::kToHost : LaunchKind::kFromHost;
    l.name = n;
    (n == "to_host" ? l.src : l.dst) = V(n == "to_host" ? op_.inputs[0] : o);
    l.bytes = BytesRule(g_, o);
    out_->push_back(std::move(l));
    return absl::OkStatus();
  }
  if (n == "all_reduce") {
    // NCCL's all-reduce across GPUs; ranks that share one GPU (a test of a
    // sharded plan on one card) sum in rank order with vb_add and this grid.
    const TExpr elems = ElemsRule(g_, o);
    Launch& l = Kernel("vb_add", GridFor(elems, kElementwiseThreads), kElementwiseThreads);
    l.kind = LaunchKind::kAllReduce;
    l.name = "all_reduce";
    l.src = V(op_.inputs[0]);
    l.dst = V(o);
    l.bytes = BytesRule(g_, o);
    return absl::OkStatus();
  }
  if (n == "all_gather") {
    const Value& x = g_.value(op_.inputs[0]);
    const int64_t cols = x.shape.back();
    const int64_t ranks = ir::TpRanks(g_);
    Launch l;
    l.op = i_;
    l.t_min = v_.t_min;
    l.t_max = v_.t_max;
    l.kind = LaunchKind::kAllGather;
    l.name = "all_gather";
    l.src = V(op_.inputs[0]);
    l.dst = V(o);
    l.m = Div(ElemsRule(g_, op_.inputs[0]), cols);
    l.n = cols;
    // NCCL gathers rank after rank; the rows are interleaved from here.
    l.a = env_.Scratch(0, Mul(ElemsRule(g_, op_.inputs[0]), 4 * ranks));
    out_->push_back(std::move(l));
    return absl::OkStatus();
  }
  if (n == "sample") {
    // The last row of the logits [rows, nv]: bytes [(rows - 1) * nv * 4, + nv * 4).
    const int64_t nv = g_.value(op_.inputs[0]).shape[1];
    const TExpr rows = Div(ElemsRule(g_, op_.inputs[0]), nv);
    const BufRef row =
        env_.Sub(op_.inputs[0], TExpr::Linear(rows.a * nv * 4, (rows.b - 1) * nv * 4), TExpr::Const(nv * 4));
    const int64_t blocks = SampleGatherBlocks(nv);
    const int64_t chunk = (nv + blocks - 1) / blocks;
    const BufRef part = env_.Scratch(0, TExpr::Const(SampleScratchBytes(nv)));
    Launch& gather = Kernel("vb_sample_gather", TExpr::Const(blocks), kSampleGatherThreads);
    gather.args = {Arg::Ptr(row), Arg::Ptr(V(op_.inputs[1])), Arg::Ptr(part), Arg::I32(TExpr::Const(nv)),
                   Arg::I32(TExpr::Const(chunk))};
    Launch& pick = Kernel("vb_sample_pick", TExpr::Const(1), kSamplePickThreads);
    pick.args = {Arg::Ptr(row), Arg::Ptr(V(op_.inputs[1])), Arg::Ptr(part), Arg::Ptr(V(o)),
                 Arg::I32(TExpr::Const(nv)), Arg::I32(TExpr::Const(blocks))};
    return absl::OkStatus();
  }
  return Unsupported(absl::StrCat("no kernel variant '", n, "'"));
}

// Whether a matmul-like op can run gemm.mmq (its weight type, row length).
bool MmqServes(const Graph& g, const Op& op) {
  const Value& w = g.value(op.inputs[1]);
  return w.shape.size() == 2 && MmqSupports(w.dtype) && w.shape[1] % 32 == 0;
}

// Weight tiles of one gemm.mmq launch (the op's members in launches of 3, on
// average).
int64_t MmqTilesPerLaunch(const Graph& g, const Op& op) {
  int64_t tiles = 0, members = 0;
  for (size_t i = 1; i < op.inputs.size(); ++i) {
    const Value& w = g.value(op.inputs[i]);
    if (w.shape.size() == 2 && w.storage == ir::Storage::kWeight) {
      tiles += (w.shape[0] + kMmqBn - 1) / kMmqBn;
      ++members;
    }
  }
  const int64_t launches = std::max<int64_t>(1, (members + 2) / 3);
  return std::max<int64_t>(1, tiles / launches);
}

// The first row count from which the rule gives gemm.mmq 128-row blocks: the
// 128-row grid has at least 2 blocks per multiprocessor (ceil(T / 128) *
// tiles >= 2 * sm_count); below, 64-row blocks (two resident per
// multiprocessor) fill the GPU better.
int64_t MmqTile128From(const Graph& g, const Op& op, const CudaTargetOptions& o) {
  const int64_t tiles = MmqTilesPerLaunch(g, op);
  const int64_t m_blocks = (2 * static_cast<int64_t>(std::max(o.sm_count, 1)) + tiles - 1) / tiles;
  return 128 * (m_blocks - 1) + 1;
}

// The variant of a matmul-like op for `rows` token rows.
KernelVariant MatmulVariant(const Graph& g, const Op& op, const CudaTargetOptions& o, int64_t rows) {
  const bool q8 = g.value(op.inputs[0]).dtype == DType::kQ8A;
  KernelVariant v;
  if (rows == 1) {
    v.name = q8 ? "matvec_q8.multi" : "matmul.float";
    if (!q8) v.params["tokens"] = int64_t{1};
    return v;
  }
  if (o.gemm_min_rows > 0 && rows >= std::max(o.gemm_min_rows, 2) && rows <= o.mmq_max_rows &&
      MmqServes(g, op)) {
    v.name = "gemm.mmq";
    v.params["bm"] = int64_t{o.mmq_tile == 64 || o.mmq_tile == 128 ? o.mmq_tile
                             : rows >= MmqTile128From(g, op, o)   ? 128
                                                                   : 64};
    return v;
  }
  if (o.gemm_min_rows > 0 && rows >= std::max(o.gemm_min_rows, 2)) {
    const int64_t K = g.value(op.inputs[1]).shape[1];
    int64_t n_max = 0;
    for (size_t i = 1; i < op.inputs.size(); ++i) {
      if (g.value(op.inputs[i]).shape.size() == 2) n_max = std::max(n_max, g.value(op.inputs[i]).shape[0]);
    }
    int64_t chunk = o.gemm_weight_chunk_bytes / (K * 2) / kGemmRowQuantum * kGemmRowQuantum;
    chunk = std::max(chunk, kGemmRowQuantum);
    chunk = std::min(chunk, (n_max + kGemmRowQuantum - 1) / kGemmRowQuantum * kGemmRowQuantum);
    v.name = "gemm.cublaslt";
    v.params["chunk_rows"] = chunk;
    return v;
  }
  v.name = q8 ? "matvec_q8" : "matmul.float";
  v.params["tokens"] = int64_t{8};
  return v;
}

absl::StatusOr<std::vector<KernelVariant>> Variants(const Graph& g, int index, const CudaTargetOptions& o) {
  const Op& op = g.ops()[index];
  const int64_t max_t = g.max_tokens;
  auto one = [&](std::string name, ir::Attrs params = {}) {
    KernelVariant v;
    v.t_min = 1;
    v.t_max = max_t;
    v.name = std::move(name);
    v.params = std::move(params);
    return std::vector<KernelVariant>{v};
  };
  if (absl::Status s = CheckCudaSupportsOp(g, op); !s.ok()) return s;
  if (ir::GetOpInfo(op.kind).elementwise) return one("elementwise");
  switch (op.kind) {
    case OpKind::kEmbedding: return one("embedding");
    case OpKind::kMatMul:
    case OpKind::kMultiMatMul: {
      const int64_t K = g.value(op.inputs[1]).shape[1];
      const TExpr rows = Div(ElemsRule(g, op.inputs[0]), K);
      if (rows.a == 0) {
        KernelVariant v = MatmulVariant(g, op, o, rows.b);
        v.t_min = 1;
        v.t_max = max_t;
        return std::vector<KernelVariant>{v};
      }
      // rows = T: the kernels change at 2 rows and at gemm_min_rows; gemm.mmq
      // changes its tile at MmqTile128From and ends after mmq_max_rows.
      std::vector<int64_t> starts = {1, 2};
      if (o.gemm_min_rows > 2) starts.push_back(o.gemm_min_rows);
      const int64_t gemm_from = std::max(o.gemm_min_rows, 2);
      if (o.gemm_min_rows > 0 && o.mmq_max_rows >= gemm_from && MmqServes(g, op)) {
        const int64_t t128 = MmqTile128From(g, op, o);
        if (o.mmq_tile == 0 && t128 > gemm_from && t128 <= o.mmq_max_rows) starts.push_back(t128);
        starts.push_back(int64_t{o.mmq_max_rows} + 1);
      }
      std::sort(starts.begin(), starts.end());
      starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
      std::vector<KernelVariant> out;
      for (size_t k = 0; k < starts.size() && starts[k] <= max_t; ++k) {
        KernelVariant v = MatmulVariant(g, op, o, starts[k]);
        v.t_min = starts[k];
        v.t_max = k + 1 < starts.size() ? std::min(max_t, starts[k + 1] - 1) : max_t;
        out.push_back(std::move(v));
      }
      return out;
    }
    case OpKind::kQuantizeQ8: return one("quantize_q8");
    case OpKind::kRmsNorm: return one("rms_norm");
    case OpKind::kAdd:
    case OpKind::kMul:
    case OpKind::kSilu:
    case OpKind::kGelu: return one("elementwise");
    case OpKind::kScale: return one("scale");
    case OpKind::kReshape: return one("view");
    case OpKind::kRope: {
      const int mode = static_cast<int>(NumberAttr(op, "mode", 0));
      const int64_t n_rot = static_cast<int64_t>(NumberAttr(op, "n_rot", 0));
      const int64_t hd = g.value(op.inputs[0]).shape[2];
      if ((mode != 0 && mode != 2) || n_rot <= 0 || n_rot % 2 != 0 || n_rot > hd) {
        return absl::InvalidArgumentError(
            absl::StrCat("CUDA backend: ", OpText(g, index), ": unsupported rope mode ", mode, " / n_rot ", n_rot));
      }
      return one("rope");
    }
    case OpKind::kKvStore: return one("kv_store");
    case OpKind::kAttention: {
      const Value& k = g.value(op.inputs[1]);
      const Value& v = g.value(op.inputs[2]);
      const Shape& qs = g.value(op.inputs[0]).shape;
      if (op.inputs.size() == 6) {
        // Paged (continuous batching): the paged tensor-core kernel at every
        // T, its split count by token range (about two blocks per
        // multiprocessor at the range's smallest T; scratch stays small at
        // the largest).
        if (NumberAttr(op, "window", 0) > 0) {
          return absl::UnimplementedError(absl::StrCat(
              "CUDA backend: ", OpText(g, index), ": paged sliding-window attention has no GPU kernel yet"));
        }
        const Shape& ts = g.value(op.inputs[5]).shape;
        const int64_t bs = static_cast<int64_t>(NumberAttr(op, "block_size", 0));
        AttnShape shape;
        shape.n_head = qs[1];
        shape.n_head_kv = k.shape[1];
        shape.head_dim = qs[2];
        shape.n_ctx = k.shape[0];
        shape.k_type = k.dtype;
        shape.v_type = v.dtype;
        std::vector<KernelVariant> out;
        const int64_t starts[] = {1, 8, 64};
        for (size_t r = 0; r < std::size(starts) && starts[r] <= max_t; ++r) {
          shape.T = starts[r];
          absl::StatusOr<AttnPagedPlan> plan =
              PlanAttentionPaged(shape, ts.size() == 2 ? ts[1] * bs : 0, o.sm_count);
          if (!plan.ok()) return plan.status();
          KernelVariant kv;
          kv.t_min = starts[r];
          kv.t_max = r + 1 < std::size(starts) ? std::min(max_t, starts[r + 1] - 1) : max_t;
          kv.name = "attention.paged";
          kv.params["n_split"] = int64_t{plan->n_split};
          out.push_back(kv);
        }
        return out;
      }
      const bool scalar_reads = (k.dtype == DType::kF16 || k.dtype == DType::kF32) && v.dtype == k.dtype;
      // Sliding-window attention (gemma3's local layers) has only the scalar
      // kernels' window so far.
      const bool window = NumberAttr(op, "window", 0) > 0;
      if (window && !scalar_reads) {
        return absl::UnimplementedError(absl::StrCat(
            "CUDA backend: ", OpText(g, index),
            ": sliding-window attention needs f16 or f32 caches of one type (the scalar kernels)"));
      }
      if (!window && AttnMmaSupports(k.dtype, v.dtype, qs[2]).ok() && (o.flash_attention || !scalar_reads)) {
        // Tensor-core flash decoding below kAttnPrefillMinTokens token rows
        // (its splits sized for this GPU at T = 1, never for the capacity),
        // flash attention for prompts.
        AttnShape shape;
        shape.T = 1;
        shape.n_head = qs[1];
        shape.n_head_kv = k.shape[1];
        shape.head_dim = qs[2];
        shape.n_ctx = k.shape[0];
        shape.k_type = k.dtype;
        shape.v_type = v.dtype;
        absl::StatusOr<AttnDecodePlan> plan = PlanAttentionDecode(shape, o.sm_count);
        if (!plan.ok()) return plan.status();
        std::vector<KernelVariant> out;
        KernelVariant d;
        d.t_min = 1;
        d.t_max = std::min<int64_t>(max_t, kAttnPrefillMinTokens - 1);
        d.name = "attention.flash_decode";
        d.params["n_split"] = int64_t{plan->n_split};
        out.push_back(d);
        if (max_t >= kAttnPrefillMinTokens) {
          KernelVariant p;
          p.t_min = kAttnPrefillMinTokens;
          p.t_max = max_t;
          p.name = "attention.flash_prefill";
          out.push_back(p);
        }
        return out;
      }
      // The scalar kernels: one-token steps split the context finer, so
      // that a short context still spreads over many blocks.
      std::vector<KernelVariant> out;
      KernelVariant d;
      d.t_min = d.t_max = 1;
      d.name = "attention.split";
      d.params["chunk"] = int64_t{kAttnDecodeChunk};
      out.push_back(d);
      if (max_t > 1) {
        KernelVariant p;
        p.t_min = 2;
        p.t_max = max_t;
        p.name = "attention.split";
        p.params["chunk"] = int64_t{kAttnChunk};
        out.push_back(p);
      }
      return out;
    }
    case OpKind::kLastRow: return one("last_row");
    case OpKind::kMoeTopK: return one("moe_topk");
    case OpKind::kMoeWeights: return one("moe_weights");
    case OpKind::kMoeSum: return one("moe_sum");
    case OpKind::kMatMulId: return one("matmul_id.float");
    case OpKind::kSample: return one("sample");
    case OpKind::kAllReduce: return one("all_reduce");
    case OpKind::kAllGather: return one("all_gather");
    case OpKind::kCopy: {
      // The step's inputs arrive and its outputs leave by the runtime's own
      // transfers ("io": no launch); a split plan's (-ngl) activations cross
      // between the host's ops and the GPU's by transfer launches.
      const ir::Value& src = g.value(op.inputs[0]);
      const ir::Value& dst = g.value(op.outputs[0]);
      if (src.device == ir::Device::kCuda && dst.device == ir::Device::kCuda) return one("copy");
      if ((src.storage == ir::Storage::kInput && src.producer < 0) || dst.storage == ir::Storage::kOutput) {
        return one("io");
      }
      return one(src.device == ir::Device::kCuda ? "to_host" : "from_host");
    }
    case OpKind::kFused: {
      absl::StatusOr<FusedKernel> fk = GenerateFused(g, op);
      if (!fk.ok()) return fk.status();
      return one("fused");
    }
  }
  return absl::UnimplementedError(absl::StrCat("CUDA backend: ", OpText(g, index), ": no kernels"));
}

}  // namespace

bool CudaTarget::MatvecQ8Supports(DType t) const { return codegen::MatvecQ8Supports(t); }

bool CudaTarget::FusesQuantize(const Graph& g, const Op& fused, ValueId body_output) const {
  if (fused.kind != OpKind::kFused || fused.body == nullptr) return false;
  // The body with the quantize appended, through the generator.
  auto body = std::make_shared<Graph>(*fused.body);
  Value q = body->value(body_output);
  q.name = "__q8_probe";
  q.dtype = DType::kQ8A;
  q.storage = ir::Storage::kActivation;
  q.producer = -1;
  const ValueId qid = body->AddValue(std::move(q));
  Op quant;
  quant.kind = OpKind::kQuantizeQ8;
  quant.inputs = {body_output};
  quant.outputs = {qid};
  body->AddRawOp(std::move(quant));
  body->MarkOutput(qid);
  Op probe = fused;
  probe.body = std::move(body);
  probe.outputs.push_back(fused.outputs[0]);  // shape checks only read output 0
  return GenerateFused(g, probe).ok();
}

absl::StatusOr<std::vector<KernelVariant>> CudaTarget::SelectKernels(const Graph& g, int index) const {
  absl::StatusOr<std::vector<KernelVariant>> vs = Variants(g, index, opts_);
  if (!vs.ok()) return vs.status();
  Env env(g, opts_);
  for (KernelVariant& v : *vs) {
    std::vector<Launch> ls;
    if (absl::Status s = Lowering(env, index, v, &ls).Run(); !s.ok()) return s;
    for (const Launch& l : ls) v.launches.push_back(l.name);
  }
  return vs;
}

namespace {

// The launches of T = 1 as one persistent kernel (see LowerDispatch).
absl::Status SchedulePersistent(const Graph& g, const CudaTargetOptions& opts, dispatch::Table& t,
                                std::string* persistent_source) {
  auto bps = g.meta.find(passes::kDecodeBlocksPerSmKey);
  const int64_t blocks_per_sm =
      bps != g.meta.end() && std::holds_alternative<int64_t>(bps->second) ? std::get<int64_t>(bps->second) : 0;
  // The sample op's launches stay launches of their own, after the kernel:
  // vb_sample_pick runs 1,024 threads and both keep candidates in up to
  // 32 KB of shared memory, which as tasks would set the persistent kernel's
  // block size and shared memory for every other task.
  auto outside = [&](const Launch& l) {
    return l.op >= 0 && l.op < static_cast<int>(g.ops().size()) && g.ops()[l.op].kind == OpKind::kSample;
  };
  std::vector<int> step;
  bool after_outside = false;
  for (int i = 0; i < static_cast<int>(t.launches.size()); ++i) {
    if (!(t.launches[i].t_min <= 1 && 1 <= t.launches[i].t_max)) continue;
    if (outside(t.launches[i])) {
      after_outside = true;
      continue;
    }
    if (after_outside) {
      return absl::InternalError(absl::StrCat("persistent decode: launch ", t.launches[i].name,
                                              " follows the sample op's launches"));
    }
    step.push_back(i);
  }
  // The kernels the step's tasks come from. The quantized GEMM (kernels/
  // mmq.cc) runs only from gemm_min_rows >= 2 rows, never at T = 1, and its
  // dynamic shared memory is what tasks cannot use: it stays out.
  KernelSet tasks = KernelSetForGraph(g);
  tasks.mmq_types.clear();
  const std::string module = ModuleSource(tasks);
  absl::StatusOr<PersistentSchedule> p =
      BuildPersistentSchedule(t, step, module, opts.sm_count, static_cast<int>(blocks_per_sm));
  if (!p.ok()) return p.status();
  if (persistent_source != nullptr) {
    absl::StatusOr<std::string> src = PersistentSource(module, *p);
    if (!src.ok()) return src.status();
    *persistent_source = *std::move(src);
  }
  // The op-by-op launches of T = 1 stay for --verify and profiling.
  std::vector<Launch> out;
  std::vector<Launch> after;  // the sample op's, which run after the kernel
  for (Launch& l : t.launches) {
    if (outside(l)) {
      after.push_back(std::move(l));
      continue;
    }
    if (l.t_min <= 1 && 1 <= l.t_max) {
      if (l.t_max > 1) {
        Launch rest = l;
        rest.t_min = 2;
        l.t_max = 1;
        l.runs_in = dispatch::RunsIn::kPerOpOnly;
        out.push_back(std::move(l));
        out.push_back(std::move(rest));
        continue;
      }
      l.runs_in = dispatch::RunsIn::kPerOpOnly;
    }
    out.push_back(std::move(l));
  }
  Launch k;
  k.op = 0;  // the last op of the step (errors name it)
  for (const Launch& l : out) {
    if (l.runs_in == dispatch::RunsIn::kPerOpOnly) k.op = l.op;
  }
  k.t_min = k.t_max = 1;
  k.runs_in = dispatch::RunsIn::kScheduledOnly;
  k.kind = LaunchKind::kKernel;
  k.name = kPersistentKernelName;
  k.kernel = static_cast<int>(t.kernels.size());
  t.kernels.push_back(k.name);
  k.grid[0] = TExpr::Const(p->blocks);
  k.block[0] = static_cast<uint32_t>(p->threads);
  t.region_bytes[static_cast<int>(Region::kState)] = PersistentStateBytes(*p);
  for (Region r : {Region::kArena, Region::kWeights, Region::kKv, Region::kScratch, Region::kState}) {
    const int64_t bytes = t.region_bytes[static_cast<int>(r)];
    k.args.push_back(Arg::Ptr(bytes > 0 ? BufRef{r, TExpr::Const(0), TExpr::Const(bytes)} : BufRef{}));
  }
  out.push_back(std::move(k));
  for (Launch& l : after) out.push_back(std::move(l));
  t.launches = std::move(out);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<dispatch::Table> LowerDispatch(const Graph& g, const CudaTargetOptions& opts,
                                              std::string* persistent_source) {
  dispatch::Table t;
  t.max_tokens = g.max_tokens;
  t.graph_max_tokens = opts.cuda_graphs ? 1 : 0;
  t.pdl = opts.pdl;
  Env env(g, opts);
  env.dry = false;
  const ValueId nv = static_cast<ValueId>(g.values().size());
  auto it = g.memory.find(ir::Device::kCuda);
  if (it == g.memory.end()) {
    return absl::FailedPreconditionError("LowerDispatch: the graph has no memory plan for the cuda device");
  }
  t.region_bytes[static_cast<int>(Region::kArena)] = it->second.arena_bytes;
  // Weights (one slot per GGUF tensor) and KV caches, in value order. A
  // weight that views part of its tensor (Value::source_offset: phi3's fused
  // attn_qkv / ffn_up) points into its tensor's slot, which spans every byte
  // the tensor's views read.
  std::map<std::string, int64_t> weight_at, weight_end;
  auto skip_bytes = [&](const Value& val) {
    return DTypeBytes(val.dtype, val.source_offset).value_or(0);
  };
  t.tp_ranks = ir::TpRanks(g);
  for (ValueId v = 0; v < nv; ++v) {
    const Value& val = g.value(v);
    if (val.producer < 0 && val.storage == ir::Storage::kWeight && val.device == ir::Device::kCuda &&
        val.rank_offsets.empty()) {
      int64_t& end = weight_end[val.source];
      end = std::max(end, skip_bytes(val) + BytesRule(g, v).b);
    }
  }
  int64_t weights = 0, kv = 0;
  env.value.assign(nv, BufRef{});
  for (ValueId v = 0; v < nv; ++v) {
    const Value& val = g.value(v);
    if (val.producer >= 0) continue;
    if (val.storage == ir::Storage::kWeight && val.device == ir::Device::kCuda && !val.rank_offsets.empty()) {
      // A rank's shard (shard-tensor-parallel): a slot of its own, each rank
      // uploading its rows (ir::Value::rank_offsets, source_row_stride).
      const int64_t bytes = BytesRule(g, v).b;
      const int64_t row = val.shape.empty() ? 1 : val.shape.back();
      dispatch::WeightSlot s;
      s.source = val.source;
      s.offset = weights;
      s.bytes = bytes;
      s.row_bytes = DTypeBytes(val.dtype, row).value_or(0);
      s.row_stride =
          val.source_row_stride != 0 ? DTypeBytes(val.dtype, val.source_row_stride).value_or(0) : 0;
      for (int64_t o : val.rank_offsets) {
        s.rank_offsets.push_back(DTypeBytes(val.dtype, val.source_offset + o).value_or(0));
      }
      t.weights.push_back(std::move(s));
      env.value[v] = BufRef{Region::kWeights, TExpr::Const(weights), TExpr::Const(bytes)};
      weights += AlignUp(std::max<int64_t>(bytes, 1));
    } else if (val.storage == ir::Storage::kWeight && val.device == ir::Device::kCuda) {
      auto [wi, fresh] = weight_at.emplace(val.source, weights);
      const int64_t bytes = BytesRule(g, v).b;
      if (fresh) {
        const int64_t slot = weight_end.at(val.source);
        dispatch::WeightSlot ws;
        ws.source = val.source;
        ws.offset = weights;
        ws.bytes = slot;
        t.weights.push_back(std::move(ws));
        weights += AlignUp(std::max<int64_t>(slot, 1));
      }
      env.value[v] =
          BufRef{Region::kWeights, TExpr::Const(wi->second + skip_bytes(val)), TExpr::Const(bytes)};
    } else if (val.storage == ir::Storage::kKvCache && val.device == ir::Device::kCuda) {
      const int64_t bytes = BytesRule(g, v).b;
      env.value[v] = BufRef{Region::kKv, TExpr::Const(kv), TExpr::Const(bytes)};
      kv += AlignUp(std::max<int64_t>(bytes, 1));
      t.n_ctx = t.n_ctx == 0 ? val.shape[0] : std::min(t.n_ctx, val.shape[0]);
    }
  }
  t.region_bytes[static_cast<int>(Region::kWeights)] = weights;
  t.region_bytes[static_cast<int>(Region::kKv)] = kv;
  // Arena values (views carry their root's offset) and KV versions.
  for (ValueId v = 0; v < nv; ++v) {
    const Value& val = g.value(v);
    if (val.alias_of >= 0 && val.storage == ir::Storage::kKvCache) {
      env.value[v] = env.value[val.alias_of];
    } else if (val.arena_offset >= 0 && val.device == ir::Device::kCuda) {
      env.value[v] = BufRef{Region::kArena, TExpr::Const(val.arena_offset), BytesRule(g, v)};
    }
  }
  // Every op on the GPU, except the transfers of the step's I/O; an op
  // placed on the cpu (-ngl) is one host launch.
  for (int i = 0; i < static_cast<int>(g.ops().size()); ++i) {
    const Op& op = g.ops()[i];
    if (op.device == ir::Device::kCpu) {
      if (ir::TpRanks(g) > 1) {
        return absl::UnimplementedError(absl::StrCat(
            "CUDA backend: ", OpText(g, i), " is placed on the cpu; a tensor-parallel plan runs every op on its GPUs"));
      }
      Launch l;
      l.op = i;
      l.t_min = 1;
      l.t_max = g.max_tokens;
      l.kind = LaunchKind::kHost;
      l.name = "host";
      t.launches.push_back(std::move(l));
      continue;
    }
    if (op.device != ir::Device::kCuda) {
      return absl::UnimplementedError(absl::StrCat(
          "CUDA backend: ", OpText(g, i), " is placed on the ", std::string(ir::DeviceName(op.device)),
          "; a cuda plan runs its ops on the GPU or the host"));
    }
    if (op.kernels.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("LowerDispatch: ", OpText(g, i), " has no kernel variants (run select-kernels)"));
    }
    for (const KernelVariant& v : op.kernels) {
      std::vector<Launch> ls;
      if (absl::Status s = Lowering(env, i, v, &ls).Run(); !s.ok()) return s;
      std::vector<std::string> names;
      for (const Launch& l : ls) names.push_back(l.name);
      if (names != v.launches) {
        return absl::InternalError(absl::StrCat("LowerDispatch: ", OpText(g, i), " variant ", v.name,
                                                " lowers to other launches than its kernels[...] list "
                                                "(the IR was edited after select-kernels?)"));
      }
      t.launches.insert(t.launches.end(), ls.begin(), ls.end());
    }
  }
  // The host's work between launches cannot be part of a CUDA graph.
  if (t.has_host_ops()) t.graph_max_tokens = 0;
  t.region_bytes[static_cast<int>(Region::kScratch)] = AlignUp(env.scratch_need);
  t.kernels = env.kernels;
  auto sched = g.meta.find(passes::kDecodeScheduleKey);
  if (sched != g.meta.end() && sched->second == ir::AttrValue(std::string("persistent"))) {
    if (absl::Status s = SchedulePersistent(g, opts, t, persistent_source); !s.ok()) return s;
  }
  t.values = env.value;
  // The step's I/O: the device buffers the host inputs are copied into, and
  // the one the logits are copied from.
  auto device_side = [&](const char* name) -> absl::StatusOr<BufRef> {
    const ValueId v = g.FindValue(name);
    if (v < 0 || g.value(v).storage != ir::Storage::kInput) {
      if (std::string(name) == "tokens") return absl::InvalidArgumentError("the graph has no input 'tokens'");
      return BufRef{};  // a graph that reads no positions
    }
    if (g.value(v).device == ir::Device::kCuda) return env.value[v];
    for (const Op& op : g.ops()) {
      if (op.kind == OpKind::kCopy && op.inputs[0] == v) return env.value[op.outputs[0]];
    }
    return BufRef{};
  };
  absl::StatusOr<BufRef> tokens = device_side("tokens");
  if (!tokens.ok()) return tokens.status();
  absl::StatusOr<BufRef> positions = device_side("positions");
  if (!positions.ok()) return positions.status();
  t.tokens = *tokens;
  t.positions = *positions;
  // Paged graphs: the sequence slots and the block table come in as the
  // tokens do (a split plan whose paged ops all run on the host: the GPU's
  // side of the step is not paged).
  if (g.FindValue("block_table") >= 0) {
    absl::StatusOr<BufRef> seq = device_side("seq_ids");
    absl::StatusOr<BufRef> table = device_side("block_table");
    if (!seq.ok()) return seq.status();
    if (!table.ok()) return table.status();
    const ir::Value& tv = g.value(g.FindValue("block_table"));
    auto meta = [&](const char* key) {
      auto it = g.meta.find(key);
      const int64_t* v = it == g.meta.end() ? nullptr : std::get_if<int64_t>(&it->second);
      return v == nullptr ? int64_t{0} : *v;
    };
    const bool host_only = seq->region == Region::kNone && table->region == Region::kNone && t.has_host_ops();
    if (!host_only) {
      if (seq->region == Region::kNone || table->region == Region::kNone || tv.shape.size() != 2) {
        return absl::InvalidArgumentError("LowerDispatch: a paged graph's seq_ids/block_table never reach the GPU");
      }
      t.seq_ids = *seq;
      t.block_table = *table;
      t.n_seq = tv.shape[0];
      t.max_blocks = tv.shape[1];
      t.block_size = meta("block_size");
    }
  }
  absl::StatusOr<ValueId> logits = ir::FindLogitsOutput(g);
  if (!logits.ok()) return logits.status();
  ValueId src = *logits;
  if (g.value(src).producer >= 0 && g.ops()[g.value(src).producer].kind == OpKind::kCopy &&
      g.value(src).device != ir::Device::kCuda) {
    src = g.ops()[g.value(src).producer].inputs[0];
  }
  t.logits = env.value[src];
  t.logits_elems = ElemsRule(g, src);
  // A step that samples: its parameters in, the token out (each made on the
  // device, like the logits).
  const ValueId token = g.FindValue("token");
  if (token >= 0 && g.value(token).storage == ir::Storage::kOutput) {
    ValueId tsrc = token;
    if (g.value(tsrc).producer >= 0 && g.ops()[g.value(tsrc).producer].kind == OpKind::kCopy &&
        g.value(tsrc).device != ir::Device::kCuda) {
      tsrc = g.ops()[g.value(tsrc).producer].inputs[0];
    }
    absl::StatusOr<BufRef> sampling = device_side("sampling");
    if (!sampling.ok()) return sampling.status();
    t.token = env.value[tsrc];
    t.sampling = *sampling;
  }
  // The vocabulary: rows of the tables that the tokens index.
  for (const Op& op : g.ops()) {
    if (op.kind != OpKind::kEmbedding) continue;
    const int64_t rows = g.value(op.inputs[0]).shape[0];
    t.n_vocab = t.n_vocab == 0 ? rows : std::min(t.n_vocab, rows);
  }
  if (t.n_vocab == 0) t.n_vocab = INT32_MAX;
  if (absl::Status s = dispatch::Validate(t, "LowerDispatch"); !s.ok()) {
    return absl::InternalError(absl::StrCat("the lowered dispatch table is invalid: ", s.message()));
  }
  return t;
}

}  // namespace vibrant::codegen
