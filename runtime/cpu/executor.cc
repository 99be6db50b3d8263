#include "runtime/cpu/executor.h"

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "ir/verifier.h"
#include "runtime/cpu/cpu_features.h"
#include "runtime/cpu/eval_op.h"
#include "runtime/cpu/fast_attention.h"
#include "runtime/cpu/fast_elementwise.h"
#include "runtime/cpu/fast_matmul.h"
#include "runtime/cpu/kernel_select.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu/quantize.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/plan_validate.h"

namespace vibrant {
namespace {

using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Shape;
using ir::Storage;
using ir::Value;
using ir::ValueId;

constexpr int64_t kAlignment = 64;

int64_t AlignUp(int64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

// A zero-initialized, page-aligned byte buffer, zeroed lazily: the pages are
// anonymous memory that the kernel fills with zeros when first touched, so a
// large arena or KV cache costs no time or resident memory until the graph
// uses it, and Zero() hands the pages back (MADV_DONTNEED) instead of writing
// zeros over gigabytes.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(int64_t bytes) : size_(bytes) {
    if (bytes > 0) {
      void* p = ::mmap(nullptr, static_cast<size_t>(bytes), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p != MAP_FAILED) data_ = static_cast<uint8_t*>(p);
    }
  }
  Buffer(Buffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(o.size_) {}
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  ~Buffer() {
    if (data_ != nullptr) ::munmap(data_, static_cast<size_t>(size_));
  }
  uint8_t* data() const { return data_; }
  int64_t size() const { return size_; }
  bool ok() const { return size_ == 0 || data_ != nullptr; }
  void Zero() {
    if (data_ == nullptr) return;
    if (::madvise(data_, static_cast<size_t>(size_), MADV_DONTNEED) != 0) {
      std::memset(data_, 0, static_cast<size_t>(size_));
    }
  }

 private:
  uint8_t* data_ = nullptr;
  int64_t size_ = 0;
};

// The alignment the kernels load a weight of type `t` with: its element or
// block size's largest power-of-two divisor, at most 4 (f32 4, f16 2, q4_0
// 2, q4_K 4, q8_K 4). Every block of a tensor is then aligned when its first
// byte is.
int64_t WeightAlignment(DType t) {
  const DTypeInfo& info = GetDTypeInfo(t);
  const int64_t b = std::max<int64_t>(info.block_bytes, 1);
  return std::min<int64_t>(b & -b, 4);
}

// ---- memory plan -----------------------------------------------------------

// Where the arena-resident values live: offsets[v] is value v's byte offset in
// one arena, or -1 for a value that is not in the arena (weights, KV caches,
// views). The executor only consumes this; a liveness-based planner that lets
// values share bytes can replace PlanOwnSlots without touching anything else.
struct ArenaPlan {
  std::vector<int64_t> offsets;
  int64_t arena_bytes = 0;
};

// The trivial plan: every value of size bytes[v] >= 0 gets its own slot.
ArenaPlan PlanOwnSlots(const std::vector<int64_t>& bytes) {
  ArenaPlan plan;
  plan.offsets.assign(bytes.size(), -1);
  for (size_t v = 0; v < bytes.size(); ++v) {
    if (bytes[v] < 0) continue;
    plan.offsets[v] = plan.arena_bytes;
    plan.arena_bytes += AlignUp(std::max<int64_t>(bytes[v], 1));
  }
  return plan;
}

// The plan the graph carries (ir::Graph::memory, set by passes/plan_memory):
// one arena per device, laid end to end in one allocation (this backend runs
// every op on the host, whatever its device). Offsets are checked against
// the arenas, so a bad plan is an error, never an out-of-bounds access;
// whether live values overlap is the compiler's business (CheckMemoryPlan).
absl::StatusOr<ArenaPlan> GraphArenaPlan(const Graph& g, const std::vector<int64_t>& bytes, bool cpu_only) {
  ArenaPlan plan;
  std::map<ir::Device, int64_t> base;
  for (const auto& [device, mem] : g.memory) {
    if (cpu_only && device != ir::Device::kCpu) continue;
    base[device] = plan.arena_bytes;
    plan.arena_bytes += AlignUp(mem.arena_bytes);
  }
  plan.offsets.assign(bytes.size(), -1);
  for (size_t v = 0; v < bytes.size(); ++v) {
    if (bytes[v] < 0) continue;
    const Value& val = g.values()[v];
    auto mem = g.memory.find(val.device);
    if (val.arena_offset < 0 || mem == g.memory.end() || base.count(val.device) == 0 || val.arena_offset > mem->second.arena_bytes ||
        bytes[v] > mem->second.arena_bytes - val.arena_offset) {
      return absl::InvalidArgumentError(absl::StrCat("CPU backend: the memory plan puts '", val.name, "'",
                                                     " at ", val.arena_offset, ", outside its ",
                                                     std::string(ir::DeviceName(val.device)), " arena"));
    }
    plan.offsets[v] = base[val.device] + val.arena_offset;
  }
  return plan;
}

// ---- graph checks ----------------------------------------------------------

std::string ValueDesc(const Graph& g, ValueId v) {
  const Value& val = g.value(v);
  return absl::StrCat("'", val.name, "' ", std::string(DTypeName(val.dtype)),
                      ir::ShapeToString(val.shape));
}

// Rank `rank`'s shard of a sharded weight (ir::Value::rank_offsets,
// source_row_stride) copied out of its tensor's bytes `data`: rows of the
// value's length at the stride, from source_offset + rank_offsets[rank].
// Every row is checked to lie inside `data`.
absl::StatusOr<Buffer> ShardCopy(const Graph& g, ValueId v, absl::Span<const uint8_t> data, int rank) {
  const Value& val = g.value(v);
  const int64_t row = val.shape.empty() ? 1 : val.shape.back();
  const int64_t rows = row > 0 ? ir::NumElements(val.shape, 1) / row : 0;
  const int64_t stride = val.source_row_stride != 0 ? val.source_row_stride : row;
  const int64_t base =
      val.source_offset + (val.rank_offsets.empty() ? 0 : val.rank_offsets[static_cast<size_t>(rank)]);
  absl::StatusOr<int64_t> row_bytes = DTypeBytes(val.dtype, row);
  absl::StatusOr<int64_t> first = DTypeBytes(val.dtype, base);
  absl::StatusOr<int64_t> step = DTypeBytes(val.dtype, stride);
  const auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "CPU backend: weight ", ValueDesc(g, v), " (source '", val.source, "'): rank ", rank, "'s shard (element ",
        base, ", ", rows, " rows of ", row, " every ", stride, ") is not inside its tensor of ", data.size(),
        " bytes"));
  };
  if (!row_bytes.ok() || !first.ok() || !step.ok() || rows < 0 || base < 0) return bad();
  if (rows > 0 && (*first > static_cast<int64_t>(data.size()) ||
                   (rows - 1) > (static_cast<int64_t>(data.size()) - *first - *row_bytes) / std::max<int64_t>(*step, 1))) {
    return bad();
  }
  Buffer out(rows * *row_bytes);
  if (!out.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat("CPU backend: cannot allocate rank ", rank, "'s shard of '",
                                                     val.name, "'"));
  }
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out.data() + r * *row_bytes, data.data() + *first + r * *step, static_cast<size_t>(*row_bytes));
  }
  return out;
}

// Number of elements with T = tokens; shapes hold T at most once (checked).
int64_t Elems(const Graph& g, ValueId v, int64_t tokens) {
  return ir::NumElements(g.value(v).shape, tokens);
}

absl::StatusOr<double> NumberAttr(const Op& op, const std::string& key, bool required,
                                  double dflt) {
  auto it = op.attrs.find(key);
  if (it == op.attrs.end()) {
    if (required) {
      return absl::InvalidArgumentError(
          absl::StrCat("op ", std::string(ir::OpName(op.kind)), ": missing attribute '", key,
                       "'"));
    }
    return dflt;
  }
  if (const auto* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  if (const auto* d = std::get_if<double>(&it->second)) return *d;
  return absl::InvalidArgumentError(absl::StrCat(
      "op ", std::string(ir::OpName(op.kind)), ": attribute '", key, "' is not a number"));
}

bool IsTokens(int64_t d) { return d == ir::kTokens; }

// Static (T-free) extent of dimension i of v, or -1.
int64_t StaticDim(const Graph& g, ValueId v, int i) {
  const Shape& s = g.value(v).shape;
  if (i < 0) i += static_cast<int>(s.size());
  if (i < 0 || i >= static_cast<int>(s.size()) || IsTokens(s[i])) return -1;
  return s[i];
}

// Checks one op of `g` for everything the kernels rely on to stay in bounds.
// `in_body`: the op is inside a fused body (no state, no weights of its own).
absl::Status CheckOp(const Graph& g, const Op& op, bool in_body) {
  const std::string name(ir::OpName(op.kind));
  auto err = [&](const std::string& what) {
    std::string outs;
    for (ValueId o : op.outputs) absl::StrAppend(&outs, outs.empty() ? "" : ", ", ValueDesc(g, o));
    return absl::InvalidArgumentError(absl::StrCat("CPU backend: op ", name, " -> ", outs,
                                                   ": ", what));
  };
  auto n_in = [&](size_t lo, size_t hi) -> absl::Status {
    if (op.inputs.size() < lo || op.inputs.size() > hi) {
      return err(absl::StrCat("takes ", lo, "..", hi, " inputs, has ", op.inputs.size()));
    }
    if (op.kind != OpKind::kFused && op.outputs.size() != 1) {
      return err(absl::StrCat("must have one output, has ", op.outputs.size()));
    }
    return absl::OkStatus();
  };
  auto is = [&](ValueId v, DType t) { return g.value(v).dtype == t; };
  // Element-count relation out(T) == f * in(T) holds for every T when it
  // holds at T = 1 and T = 2 (counts are linear in T).
  auto same_count = [&](ValueId a, ValueId b, int64_t num, int64_t den) {
    for (int64_t t : {1, 2}) {
      if (Elems(g, a, t) * den != Elems(g, b, t) * num) return false;
    }
    return true;
  };
  auto f32_out = [&]() -> absl::Status {
    if (!is(op.outputs[0], DType::kF32)) return err("output must be f32");
    return absl::OkStatus();
  };
  auto f32_in = [&](ValueId v) -> absl::Status {
    if (!is(v, DType::kF32)) return err(absl::StrCat("input ", ValueDesc(g, v), " must be f32"));
    return absl::OkStatus();
  };
  // The paged variant's seq_ids (i32, one per row of `rows_of`) and
  // block_table (static i32[S, MB]) at inputs first, first + 1, and its
  // block_size dividing the cache's rows.
  auto check_paged = [&](size_t first, ValueId rows_of) -> absl::Status {
    if (op.inputs.size() == first) return absl::OkStatus();
    if (op.inputs.size() != first + 2) return err("a paged op takes seq_ids and block_table");
    const ValueId seq = op.inputs[first], table = op.inputs[first + 1];
    const Value& rv = g.value(rows_of);
    const int64_t per_row = rv.shape.size() == 3 && !IsTokens(rv.shape[1]) && !IsTokens(rv.shape[2])
                                ? rv.shape[1] * rv.shape[2] : -1;
    if (per_row <= 0 || !is(seq, DType::kI32) || !same_count(rows_of, seq, per_row, 1)) {
      return err("seq_ids must be i32 with one entry per token");
    }
    const Shape& ts = g.value(table).shape;
    if (!is(table, DType::kI32) || ts.size() != 2 || ts[0] <= 0 || ts[1] <= 0) {
      return err("block_table must be a static i32[S, MB]");
    }
    absl::StatusOr<double> bs = NumberAttr(op, "block_size", true, 0);
    if (!bs.ok()) return bs.status();
    const int64_t cache_rows = StaticDim(g, op.inputs[1], 0);
    if (*bs < 1 || cache_rows <= 0 || cache_rows % static_cast<int64_t>(*bs) != 0) {
      return err("block_size must divide the cache's rows");
    }
    return absl::OkStatus();
  };
#define VIBRANT_RETURN_IF_ERROR(expr)     \
  do {                                    \
    absl::Status _s = (expr);             \
    if (!_s.ok()) return _s;              \
  } while (0)

  const ir::ScalarFn& scalar = ir::GetOpInfo(op.kind).scalar;
  if (ir::GetOpInfo(op.kind).elementwise && scalar.unary != nullptr) {  // unary elementwise
    VIBRANT_RETURN_IF_ERROR(n_in(1, 1));
    VIBRANT_RETURN_IF_ERROR(f32_in(op.inputs[0]));
    VIBRANT_RETURN_IF_ERROR(f32_out());
    if (!same_count(op.outputs[0], op.inputs[0], 1, 1)) return err("output size != input size");
    return absl::OkStatus();
  }
  switch (ir::GetOpInfo(op.kind).elementwise && scalar.binary != nullptr ? OpKind::kAdd : op.kind) {
    case OpKind::kEmbedding: {
      VIBRANT_RETURN_IF_ERROR(n_in(2, 2));
      if (in_body) return err("not allowed in a fused body");
      ValueId table = op.inputs[0], ids = op.inputs[1];
      const Shape& ts = g.value(table).shape;
      if (ts.size() != 2 || IsTokens(ts[0]) || IsTokens(ts[1])) {
        return err("table must be a static [V, D] matrix");
      }
      if (!DTypeBytes(g.value(table).dtype, ts[1]).ok()) {
        return err("table rows are not a whole number of blocks");
      }
      if (!is(ids, DType::kI32)) return err("ids must be i32");
      VIBRANT_RETURN_IF_ERROR(f32_out());
      if (!same_count(op.outputs[0], ids, ts[1], 1)) return err("output must be [ids..., D]");
      return absl::OkStatus();
    }
    case OpKind::kMatMul: {
      VIBRANT_RETURN_IF_ERROR(n_in(2, 3));
      if (in_body) return err("not allowed in a fused body");
      ValueId x = op.inputs[0], w = op.inputs[1];
      if (!is(x, DType::kQ8A)) VIBRANT_RETURN_IF_ERROR(f32_in(x));
      VIBRANT_RETURN_IF_ERROR(f32_out());
      const Shape& ws = g.value(w).shape;
      const int64_t K = StaticDim(g, x, -1);
      if (ws.size() != 2 || IsTokens(ws[0]) || ws[1] != K || K <= 0) {
        return err(absl::StrCat("weight ", ValueDesc(g, w), " must be [N, K] with K = x's last dim"));
      }
      if (!DTypeBytes(g.value(w).dtype, K).ok()) {
        return err("weight rows are not a whole number of blocks");
      }
      const int64_t N = ws[0];
      if (op.inputs.size() == 3) {
        ValueId b = op.inputs[2];
        VIBRANT_RETURN_IF_ERROR(f32_in(b));
        if (g.value(b).shape != Shape{N}) return err("bias must be [N]");
      }
      if (StaticDim(g, op.outputs[0], -1) != N || !same_count(op.outputs[0], x, N, K)) {
        return err("output must be [rows of x, N]");
      }
      return absl::OkStatus();
    }
    case OpKind::kRmsNorm:
    case OpKind::kSilu:
    case OpKind::kScale: {
      VIBRANT_RETURN_IF_ERROR(n_in(1, 1));
      VIBRANT_RETURN_IF_ERROR(f32_in(op.inputs[0]));
      VIBRANT_RETURN_IF_ERROR(f32_out());
      if (!same_count(op.outputs[0], op.inputs[0], 1, 1)) return err("output size != input size");
      if (op.kind == OpKind::kRmsNorm) {
        if (StaticDim(g, op.inputs[0], -1) <= 0) return err("last dim must be static");
        absl::StatusOr<double> eps = NumberAttr(op, "eps", true, 0);
        if (!eps.ok()) return eps.status();
      }
      if (op.kind == OpKind::kScale) {
        absl::StatusOr<double> sc = NumberAttr(op, "scale", true, 0);
        if (!sc.ok()) return sc.status();
      }
      return absl::OkStatus();
    }
    case OpKind::kMoeTopK:
    case OpKind::kMoeWeights: {
      const bool topk = op.kind == OpKind::kMoeTopK;
      VIBRANT_RETURN_IF_ERROR(topk ? n_in(1, 1) : n_in(2, 2));
      if (in_body) return err("not allowed in a fused body");
      const ValueId logits = op.inputs[0];
      VIBRANT_RETURN_IF_ERROR(f32_in(logits));
      const int64_t E = StaticDim(g, logits, 1);
      if (g.value(logits).shape.size() != 2 || E <= 0) return err("logits must be [T, E]");
      const ValueId ids = topk ? op.outputs[0] : op.inputs[1];
      if (!is(ids, DType::kI32)) return err("ids must be i32");
      const int64_t k = StaticDim(g, ids, 1);
      if (g.value(ids).shape.size() != 2 || k <= 0 || k > E) return err("ids must be [T, k], k <= E");
      if (!same_count(ids, logits, k, E)) return err("ids must have the rows of logits");
      if (topk) {
        absl::StatusOr<double> ka = NumberAttr(op, "k", true, 0);
        if (!ka.ok()) return ka.status();
        if (static_cast<int64_t>(*ka) != k) return err("attribute k differs from the output's k");
      } else {
        VIBRANT_RETURN_IF_ERROR(f32_out());
        if (!same_count(op.outputs[0], ids, 1, 1)) return err("output must be [T, k]");
        absl::StatusOr<double> norm = NumberAttr(op, "norm", true, 0);
        if (!norm.ok()) return norm.status();
      }
      return absl::OkStatus();
    }
    case OpKind::kMatMulId: {
      VIBRANT_RETURN_IF_ERROR(n_in(3, 3));
      if (in_body) return err("not allowed in a fused body");
      const ValueId x = op.inputs[0], w = op.inputs[1], ids = op.inputs[2];
      VIBRANT_RETURN_IF_ERROR(f32_in(x));
      VIBRANT_RETURN_IF_ERROR(f32_out());
      const Shape& ws = g.value(w).shape;
      if (ws.size() != 3 || IsTokens(ws[0]) || IsTokens(ws[1]) || IsTokens(ws[2]) || ws[0] <= 0 ||
          ws[1] <= 0 || ws[2] <= 0) {
        return err("weight must be a static [E, N, K]");
      }
      if (!DTypeBytes(g.value(w).dtype, ws[2]).ok()) return err("weight rows are not whole blocks");
      if (!is(ids, DType::kI32) || g.value(ids).shape.size() != 2) return err("ids must be i32 [T, k]");
      const int64_t k = StaticDim(g, ids, 1), K = StaticDim(g, x, -1);
      if (k <= 0 || K != ws[2]) return err("x's rows must be K long and ids [T, k]");
      const size_t xr = g.value(x).shape.size();
      if ((xr != 2 && xr != 3) || !same_count(x, ids, (xr == 2 ? 1 : k) * K, k)) {
        return err("x must be [T, K] or [T, k, K] with the rows of ids");
      }
      if (!same_count(op.outputs[0], ids, ws[1], 1) || StaticDim(g, op.outputs[0], -1) != ws[1]) {
        return err("output must be [T, k, N]");
      }
      return absl::OkStatus();
    }
    case OpKind::kMoeSum: {
      VIBRANT_RETURN_IF_ERROR(n_in(2, 2));
      if (in_body) return err("not allowed in a fused body");
      const ValueId y = op.inputs[0], w = op.inputs[1];
      VIBRANT_RETURN_IF_ERROR(f32_in(y));
      VIBRANT_RETURN_IF_ERROR(f32_in(w));
      VIBRANT_RETURN_IF_ERROR(f32_out());
      const int64_t k = StaticDim(g, y, 1), D = StaticDim(g, y, 2);
      if (g.value(y).shape.size() != 3 || k <= 0 || D <= 0) return err("y must be [T, k, D]");
      if (g.value(w).shape.size() != 2 || StaticDim(g, w, 1) != k || !same_count(y, w, D, 1)) {
        return err("w must be [T, k] of y");
      }
      if (!same_count(op.outputs[0], y, 1, k) || StaticDim(g, op.outputs[0], -1) != D) {
        return err("output must be [T, D]");
      }
      return absl::OkStatus();
    }
    case OpKind::kAdd:
    case OpKind::kMul: {
      VIBRANT_RETURN_IF_ERROR(n_in(2, 2));
      ValueId a = op.inputs[0], b = op.inputs[1];
      VIBRANT_RETURN_IF_ERROR(f32_in(a));
      VIBRANT_RETURN_IF_ERROR(f32_in(b));
      VIBRANT_RETURN_IF_ERROR(f32_out());
      const Shape& as = g.value(a).shape;
      const Shape& bs = g.value(b).shape;
      if (bs.size() > as.size() || !std::equal(bs.begin(), bs.end(), as.end() - bs.size())) {
        return err(absl::StrCat(ValueDesc(g, b), " is not a suffix of ", ValueDesc(g, a)));
      }
      if (Elems(g, b, 1) <= 0) return err("empty broadcast operand");
      if (!same_count(op.outputs[0], a, 1, 1)) return err("output size != input size");
      return absl::OkStatus();
    }
    case OpKind::kReshape:
    case OpKind::kCopy: {
      VIBRANT_RETURN_IF_ERROR(n_in(1, 1));
      if (g.value(op.inputs[0]).dtype != g.value(op.outputs[0]).dtype) {
        return err("input and output dtypes differ");
      }
      if (!same_count(op.outputs[0], op.inputs[0], 1, 1)) return err("output size != input size");
      if (!DTypeBytes(g.value(op.inputs[0]).dtype, Elems(g, op.inputs[0], 1)).ok()) {
        return err("not a whole number of blocks");
      }
      return absl::OkStatus();
    }
    case OpKind::kRope: {
      VIBRANT_RETURN_IF_ERROR(n_in(2, 3));
      ValueId x = op.inputs[0], pos = op.inputs[1];
      VIBRANT_RETURN_IF_ERROR(f32_in(x));
      VIBRANT_RETURN_IF_ERROR(f32_out());
      if (!is(pos, DType::kI32)) return err("positions must be i32");
      const int64_t H = StaticDim(g, x, 1), hd = StaticDim(g, x, 2);
      if (g.value(x).shape.size() != 3 || H <= 0 || hd <= 0) return err("x must be [T, H, hd]");
      if (!same_count(x, pos, H * hd, 1)) return err("positions must have one entry per row of x");
      if (!same_count(op.outputs[0], x, 1, 1)) return err("output size != input size");
      for (const char* k : {"n_rot", "freq_base"}) {
        absl::StatusOr<double> a = NumberAttr(op, k, true, 0);
        if (!a.ok()) return a.status();
      }
      absl::StatusOr<double> mode_attr = NumberAttr(op, "mode", false, 0);
      if (!mode_attr.ok()) return mode_attr.status();
      const int64_t mode = static_cast<int64_t>(*mode_attr);
      const int64_t n_rot = static_cast<int64_t>(*NumberAttr(op, "n_rot", true, 0));
      if (mode != 0 && mode != 2) return err(absl::StrCat("unsupported rope mode ", mode));
      if (n_rot <= 0 || n_rot % 2 != 0 || n_rot > hd) {
        return err(absl::StrCat("n_rot ", n_rot, " must be even and in (0, ", hd, "]"));
      }
      absl::StatusOr<double> fs = NumberAttr(op, "freq_scale", false, 1.0);
      if (!fs.ok()) return fs.status();
      if (op.inputs.size() == 3) {
        VIBRANT_RETURN_IF_ERROR(f32_in(op.inputs[2]));
        if (g.value(op.inputs[2]).shape != Shape{n_rot / 2}) return err("freq_factors must be [n_rot/2]");
      }
      return absl::OkStatus();
    }
    case OpKind::kKvStore: {
      VIBRANT_RETURN_IF_ERROR(n_in(3, 5));
      if (in_body) return err("not allowed in a fused body");
      VIBRANT_RETURN_IF_ERROR(check_paged(3, op.inputs[0]));
      ValueId src = op.inputs[0], cache = op.inputs[1], pos = op.inputs[2];
      VIBRANT_RETURN_IF_ERROR(f32_in(src));
      if (!is(pos, DType::kI32)) return err("positions must be i32");
      const Value& c = g.value(cache);
      if (c.dtype != DType::kF16 && c.dtype != DType::kF32 && c.dtype != DType::kQ8_0) {
        return err("cache must be f16, f32 or q8_0");
      }
      if (c.shape.size() != 3 || StaticDim(g, cache, 0) <= 0 || StaticDim(g, cache, 1) <= 0 ||
          StaticDim(g, cache, 2) <= 0) {
        return err("cache must be a static [C, KVH, hd]");
      }
      const int64_t row = c.shape[1] * c.shape[2];
      if (g.value(src).shape.size() != 3 || StaticDim(g, src, 1) != c.shape[1] ||
          StaticDim(g, src, 2) != c.shape[2] || !same_count(src, pos, row, 1)) {
        return err("src must be [T, KVH, hd] matching the cache and positions");
      }
      const Value& out = g.value(op.outputs[0]);
      if (out.dtype != c.dtype || out.shape != c.shape) return err("output must be the cache's type");
      return absl::OkStatus();
    }
    case OpKind::kAttention: {
      VIBRANT_RETURN_IF_ERROR(n_in(4, 6));
      if (in_body) return err("not allowed in a fused body");
      VIBRANT_RETURN_IF_ERROR(check_paged(4, op.inputs[0]));
      ValueId q = op.inputs[0], k = op.inputs[1], v = op.inputs[2], pos = op.inputs[3];
      VIBRANT_RETURN_IF_ERROR(f32_in(q));
      VIBRANT_RETURN_IF_ERROR(f32_out());
      if (!is(pos, DType::kI32)) return err("positions must be i32");
      const Value& kv = g.value(k);
      for (ValueId c : {k, v}) {
        const DType t = g.value(c).dtype;
        if (t != DType::kF16 && t != DType::kF32 && t != DType::kQ8_0) {
          return err(c == k ? "K must be f16, f32 or q8_0" : "V must be f16, f32 or q8_0");
        }
      }
      if (g.value(v).shape != kv.shape) return err("K and V must have the same shape");
      const int64_t C = StaticDim(g, k, 0), KVH = StaticDim(g, k, 1), hd = StaticDim(g, k, 2);
      const int64_t H = StaticDim(g, q, 1);
      if (kv.shape.size() != 3 || C <= 0 || KVH <= 0 || hd <= 0) return err("K must be [C, KVH, hd]");
      if (g.value(q).shape.size() != 3 || H <= 0 || StaticDim(g, q, 2) != hd) {
        return err("q must be [T, H, hd]");
      }
      if (H % KVH != 0) return err(absl::StrCat(H, " heads are not a multiple of ", KVH));
      if (!same_count(q, pos, H * hd, 1)) return err("positions must have one entry per row of q");
      if (!same_count(op.outputs[0], q, 1, 1)) return err("output size != q size");
      absl::StatusOr<double> sc = NumberAttr(op, "scale", true, 0);
      if (!sc.ok()) return sc.status();
      absl::StatusOr<double> window = NumberAttr(op, "window", false, 0);
      if (!window.ok()) return window.status();
      if (*window < 0) return err("window must be >= 0");
      return absl::OkStatus();
    }
    case OpKind::kLastRow: {
      VIBRANT_RETURN_IF_ERROR(n_in(1, 1));
      VIBRANT_RETURN_IF_ERROR(f32_in(op.inputs[0]));
      VIBRANT_RETURN_IF_ERROR(f32_out());
      const int64_t D = StaticDim(g, op.inputs[0], -1);
      if (D <= 0) return err("last dim must be static");
      for (int64_t t : {1, 2}) {
        if (Elems(g, op.outputs[0], t) != D) return err("output must be [1, D]");
      }
      return absl::OkStatus();
    }
    case OpKind::kAllReduce:
    case OpKind::kAllGather: {
      VIBRANT_RETURN_IF_ERROR(n_in(1, 1));
      if (in_body) return err("not allowed in a fused body");
      VIBRANT_RETURN_IF_ERROR(f32_in(op.inputs[0]));
      VIBRANT_RETURN_IF_ERROR(f32_out());
      const int64_t C = StaticDim(g, op.inputs[0], -1);
      const int64_t n = std::max<int64_t>(ir::TpRanks(g), 1);
      if (C <= 0) return err("last dim must be static");
      const int64_t factor = op.kind == OpKind::kAllGather ? n : 1;
      for (int64_t t : {1, 2}) {
        if (Elems(g, op.outputs[0], t) != factor * Elems(g, op.inputs[0], t)) {
          return err(absl::StrCat("output must have ", factor, "x the input's elements"));
        }
      }
      return absl::OkStatus();
    }
    case OpKind::kSample: {
      VIBRANT_RETURN_IF_ERROR(n_in(2, 2));
      if (in_body) return err("not allowed in a fused body");
      VIBRANT_RETURN_IF_ERROR(f32_in(op.inputs[0]));
      const int64_t V = StaticDim(g, op.inputs[0], -1);
      if (V <= 0 || g.value(op.inputs[0]).shape.size() != 2) return err("logits must be [R, V]");
      if (!is(op.inputs[1], DType::kI32) || g.value(op.inputs[1]).shape != Shape{8}) {
        return err("params must be i32[8]");
      }
      if (!is(op.outputs[0], DType::kI32) || g.value(op.outputs[0]).shape != Shape{1}) {
        return err("output must be i32[1]");
      }
      return absl::OkStatus();
    }
    case OpKind::kFused: {
      if (op.body == nullptr) return err("has no body");
      if (op.outputs.empty()) return err("has no outputs");
      return absl::OkStatus();  // the body is checked by the caller
    }
    case OpKind::kQuantizeQ8: {
      VIBRANT_RETURN_IF_ERROR(n_in(1, 1));
      if (in_body) return err("not allowed in a fused body");
      VIBRANT_RETURN_IF_ERROR(f32_in(op.inputs[0]));
      if (!is(op.outputs[0], DType::kQ8A)) return err("output must be q8a");
      if (StaticDim(g, op.inputs[0], -1) <= 0 || StaticDim(g, op.inputs[0], -1) % 32 != 0) {
        return err("rows must be whole blocks of 32");
      }
      if (!same_count(op.outputs[0], op.inputs[0], 1, 1)) return err("output size != input size");
      return absl::OkStatus();
    }
    case OpKind::kMultiMatMul: {
      if (in_body) return err("not allowed in a fused body");
      // Each member is checked as the matmul it is (ir::InferOpOutputs has
      // already checked the op's structure when the graph verified).
      absl::StatusOr<std::vector<ir::Value>> outs = [&] {
        std::vector<std::string> names;
        for (ValueId v : op.outputs) names.push_back(g.value(v).name);
        return ir::InferOpOutputs(g, op.kind, op.inputs, op.attrs, names);
      }();
      if (!outs.ok()) return err(std::string(outs.status().message()));
      return absl::OkStatus();
    }
  }
  return err("op kind not supported by the CPU backend");
#undef VIBRANT_RETURN_IF_ERROR
}

// ---- a graph bound to buffers ----------------------------------------------

// A graph (the model step, or a fused op's body) with a pointer for each of its
// values. Fused ops refer to their bound body by index.
struct BoundGraph {
  const Graph* graph = nullptr;
  std::vector<uint8_t*> ptr;
  std::vector<int> body_index;  // per op: index into Impl::bodies, or -1

  // Fused bodies only (ir/ops.h, kFused): the body runs over `rows` rows (T
  // when ir::kTokens) of `row_len` elements, in chunks of kRowsPerChunk rows.
  // For chunk rows [r0, r0 + n) value v lives at ptr[v] + r0 * stride[v] (row
  // values: bytes per row; positions: 4; broadcast constants: 0), or, for an
  // intermediate the body does not output, at scratch_off[v] in the chunk's
  // scratch (reshape views share their input's).
  int64_t rows = 0;
  int64_t row_len = 0;
  std::vector<int64_t> stride;
  std::vector<int64_t> scratch_off;  // -1: not in scratch
  std::vector<ValueId> view_of;      // reshape views: the viewed value, else -1
};

// BoundGraph::body_index of a fused op whose body runs whole (cpu::EvalOp).
constexpr int kWholeBody = -2;

// Rows of a fused body evaluated together (bounds the scratch per thread).
constexpr int64_t kRowsPerChunk = 8;
// Fused bodies with fewer elements than this run on the calling thread.
constexpr int64_t kParallelFusedElems = int64_t{1} << 14;

// The values of `g` that no op produces, in id order, and the producer of each value.
std::vector<int> Producers(const Graph& g) {
  std::vector<int> producer(g.values().size(), -1);
  for (size_t i = 0; i < g.ops().size(); ++i) {
    for (ValueId o : g.ops()[i].outputs) {
      if (o >= 0 && o < static_cast<ValueId>(producer.size())) producer[o] = static_cast<int>(i);
    }
  }
  return producer;
}

// Checks structure common to the step graph and bodies: ids in range, SSA
// (each value defined once, before use), at most one T per shape.
absl::Status CheckStructure(const Graph& g, const char* what) {
  const int64_t nv = static_cast<int64_t>(g.values().size());
  for (const Value& v : g.values()) {
    if (std::count(v.shape.begin(), v.shape.end(), ir::kTokens) > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": value '", v.name, "' has T more than once in its shape"));
    }
    for (int64_t d : v.shape) {
      if (d < 0 && d != ir::kTokens) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": value '", v.name, "' has a negative dimension"));
      }
    }
  }
  std::vector<bool> defined(nv, false);
  std::vector<int> producer = Producers(g);
  for (ValueId v = 0; v < nv; ++v) defined[v] = producer[v] < 0;
  for (size_t i = 0; i < g.ops().size(); ++i) {
    const Op& op = g.ops()[i];
    for (ValueId in : op.inputs) {
      if (in < 0 || in >= nv) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": op #", i, " has an input id ", in, " out of range"));
      }
      if (!defined[in]) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": op #", i, " (",
                                                       std::string(ir::OpName(op.kind)),
                                                       ") reads '", g.value(in).name,
                                                       "' before it is computed"));
      }
    }
    for (ValueId out : op.outputs) {
      if (out < 0 || out >= nv) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": op #", i, " has an output id ", out, " out of range"));
      }
      if (producer[out] != static_cast<int>(i) || defined[out]) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": value '", g.value(out).name, "' is defined more than once"));
      }
      defined[out] = true;
    }
  }
  for (ValueId o : g.outputs()) {
    if (o < 0 || o >= nv) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": output id ", o, " out of range"));
    }
  }
  return absl::OkStatus();
}

// Runs body op `op` of a fused body on `n` rows of `row_len` elements, its
// values at p[] (chunk-relative). Row values hold n * row_len elements;
// broadcast operands are whole; positions hold n entries. Every kernel here
// computes each row from the same rows of its inputs, so a chunk gives the
// bits the whole-tensor kernel gives for those rows.
absl::Status RunBodyOp(const Graph& g, const Op& op, const std::vector<uint8_t*>& p, bool fast, int64_t n,
                       int64_t row_len) {
  auto F = [&](ValueId v) { return reinterpret_cast<float*>(p[v]); };
  auto num = [&](const char* key, double dflt) { return NumberAttr(op, key, false, dflt).value_or(dflt); };
  const ValueId out = op.outputs[0];
  const int64_t elems = n * row_len;
  if (const ir::OpInfo& info = ir::GetOpInfo(op.kind);
      info.elementwise && op.kind != OpKind::kAdd && op.kind != OpKind::kMul && op.kind != OpKind::kSilu) {
    // Other elementwise ops: the registry's scalar function.
    if (info.scalar.unary != nullptr) {
      cpu::Unary(info.scalar.unary, F(op.inputs[0]), elems, F(out));
    } else {
      const ValueId a = op.inputs[0], b = op.inputs[1];
      const int64_t n_b = g.value(b).shape == g.value(a).shape ? elems : Elems(g, b, 1);
      cpu::Binary(info.scalar.binary, F(a), elems, F(b), n_b, F(out));
    }
    return absl::OkStatus();
  }
  switch (op.kind) {
    case OpKind::kAdd:
    case OpKind::kMul: {
      const ValueId a = op.inputs[0], b = op.inputs[1];
      const int64_t n_b = g.value(b).shape == g.value(a).shape ? elems : Elems(g, b, 1);
      (op.kind == OpKind::kAdd ? cpu::Add : cpu::Mul)(F(a), elems, F(b), n_b, F(out));
      return absl::OkStatus();
    }
    case OpKind::kSilu:
      (fast ? cpu::SiluFast : cpu::Silu)(F(op.inputs[0]), elems, F(out));
      return absl::OkStatus();
    case OpKind::kRmsNorm: {
      const int64_t D = g.value(op.inputs[0]).shape.back();
      cpu::RmsNorm(F(op.inputs[0]), elems / D, D, static_cast<float>(num("eps", 0)), F(out));
      return absl::OkStatus();
    }
    case OpKind::kReshape:
      if (p[out] != p[op.inputs[0]]) {
        std::memmove(p[out], p[op.inputs[0]], DTypeBytes(g.value(out).dtype, elems).value_or(0));
      }
      return absl::OkStatus();
    case OpKind::kRope: {
      const Shape& s = g.value(op.inputs[0]).shape;
      cpu::RopeParams rp;
      rp.mode = static_cast<int>(num("mode", 0));
      rp.n_rot = static_cast<int64_t>(num("n_rot", 0));
      rp.freq_base = static_cast<float>(num("freq_base", 10000.0));
      rp.freq_scale = static_cast<float>(num("freq_scale", 1.0));
      rp.freq_factors = op.inputs.size() == 3 ? F(op.inputs[2]) : nullptr;
      return cpu::Rope(F(op.inputs[0]), n, s[1], s[2], reinterpret_cast<const int32_t*>(p[op.inputs[1]]), rp,
                       F(out));
    }
    default:
      return absl::InternalError("unsupported op in a fused body");
  }
}

}  // namespace

struct CpuExecutor::Impl {
  Graph graph;
  int64_t max_tokens = 1;
  std::unique_ptr<cpu::ThreadPool> pool;
  Buffer arena;
  std::vector<Buffer> kv_caches;
  // Copies of weights whose mapped bytes are not aligned for the kernels
  // (a GGUF with general.alignment = 1, say).
  std::vector<Buffer> weight_copies;
  // One scratch region per thread, shared by all fused bodies (they run one
  // at a time): scratch_slot_bytes each, allocated once the pool exists.
  Buffer fused_scratch;
  int64_t scratch_slot_bytes = 0;
  BoundGraph main;
  std::deque<BoundGraph> bodies;  // a deque: binding nested bodies keeps references valid
  ValueId tokens = -1, positions = -1, logits = -1;
  ValueId seq_ids = -1, block_table = -1;  // paged graphs
  ValueId sampling = -1, token = -1;  // a graph with a sample op (ir/ops.h)
  int64_t n_vocab = -1;  // -1: unchecked (no embedding reads the tokens)
  int64_t n_ctx = -1;    // -1: no KV cache
  // CpuExecutorOptions::host_ops_only; the step BeginStep began (T, 0: none).
  bool host_only = false;
  int64_t step_T = 0;
  // Per op of the step graph: exact or fast kernels (kernel_select.h).
  std::vector<cpu::CpuKernels> op_kernels;
  // The fast matmul's rounded activations (grown on first use).
  std::vector<uint8_t> act_scratch;
  // Tensor parallelism (CpuExecutorOptions::rank / collectives).
  int rank = 0;
  Collectives* collectives = nullptr;

  absl::Status Init(WeightResolver& weights, const CpuExecutorOptions& opts);
  absl::Status Begin(absl::Span<const int32_t> tokens, int32_t pos0, const SampleDraw& draw);
  absl::Status BeginBatch(const BatchInputs& in);
  bool RunsHere(const Op& op) const { return !host_only || op.device == ir::Device::kCpu; }
  absl::Status BindBody(BoundGraph& outer, int op_index, int depth);
  absl::Status Run(BoundGraph& b, int64_t T);
  absl::Status RunOp(BoundGraph& b, int op_index, int64_t T);
  absl::Status RunBody(BoundGraph& b, int64_t T, bool fast);
};

absl::Status CpuExecutor::Impl::BindBody(BoundGraph& outer, int op_index, int depth) {
  const Graph& g = *outer.graph;
  const Op& op = g.ops()[op_index];
  const Graph& body = *op.body;
  constexpr int kMaxDepth = 8;
  if (depth > kMaxDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("CPU backend: fused bodies nested deeper than ", kMaxDepth));
  }
  if (absl::Status s = CheckStructure(body, "fused body"); !s.ok()) return s;
  std::vector<int> producer = Producers(body);
  std::vector<ValueId> body_inputs;
  for (ValueId v = 0; v < static_cast<ValueId>(body.values().size()); ++v) {
    if (producer[v] < 0) body_inputs.push_back(v);
  }
  auto err = [&](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat("CPU backend: fused op #", op_index, ": ", what));
  };
  if (body_inputs.size() != op.inputs.size()) {
    return err(absl::StrCat("body has ", body_inputs.size(), " inputs, op has ", op.inputs.size()));
  }
  if (body.outputs().size() != op.outputs.size()) {
    return err(absl::StrCat("body has ", body.outputs().size(), " outputs, op has ",
                            op.outputs.size()));
  }
  auto same_type = [&](ValueId outer_v, ValueId body_v) {
    return g.value(outer_v).dtype == body.value(body_v).dtype &&
           g.value(outer_v).shape == body.value(body_v).shape;
  };
  BoundGraph bound;
  bound.graph = &body;
  const int64_t nv = static_cast<int64_t>(body.values().size());
  bound.ptr.assign(nv, nullptr);
  bound.body_index.assign(body.ops().size(), -1);
  for (size_t i = 0; i < body_inputs.size(); ++i) {
    if (!same_type(op.inputs[i], body_inputs[i])) {
      return err(absl::StrCat("input ", i, " ", ValueDesc(g, op.inputs[i]), " does not match body ",
                              ValueDesc(body, body_inputs[i])));
    }
    bound.ptr[body_inputs[i]] = outer.ptr[op.inputs[i]];
  }
  for (size_t i = 0; i < op.outputs.size(); ++i) {
    ValueId bo = body.outputs()[i];
    if (!same_type(op.outputs[i], bo)) {
      return err(absl::StrCat("output ", i, " ", ValueDesc(g, op.outputs[i]),
                              " does not match body ", ValueDesc(body, bo)));
    }
    if (producer[bo] < 0) return err("a body output is a body input");
    for (size_t j = 0; j < i; ++j) {
      if (body.outputs()[j] == bo) return err("a body value is output twice");
    }
    bound.ptr[bo] = outer.ptr[op.outputs[i]];
  }
  // The row space (ir/ops.h, kFused), re-derived here rather than trusted, so
  // that every pointer a chunk forms stays inside its value's buffer.
  const Shape& s0 = body.value(body.outputs()[0]).shape;
  if (s0.empty()) return err("output 0 is a scalar; fused outputs are rows");
  bound.rows = s0[0];
  bound.row_len = 1;
  for (size_t d = 1; d < s0.size(); ++d) bound.row_len *= s0[d];
  enum Role : uint8_t { kUnused, kRow, kPositions, kConstant };
  std::vector<Role> role(nv, kUnused);
  auto assign = [&](ValueId v, Role r) -> absl::Status {
    if (role[v] != kUnused && role[v] != r) {
      return err(absl::StrCat(ValueDesc(body, v), " is used both as a row value and as a ",
                              "broadcast or positions operand"));
    }
    role[v] = r;
    return absl::OkStatus();
  };
  auto input_only = [&](ValueId v, Role r) -> absl::Status {
    if (producer[v] >= 0) {
      return err(absl::StrCat(ValueDesc(body, v), " is a broadcast or positions operand but not a body input"));
    }
    return assign(v, r);
  };
  for (size_t i = 0; i < body.ops().size(); ++i) {
    const Op& bop = body.ops()[i];
    if (absl::Status s = CheckOp(body, bop, /*in_body=*/true); !s.ok()) return s;
    absl::Status s;
    // Every registry elementwise op reads its operands as add/mul (binary) or
    // silu (unary) do.
    const ir::OpInfo& info = ir::GetOpInfo(bop.kind);
    const OpKind role_of =
        !info.elementwise ? bop.kind : info.scalar.binary != nullptr ? OpKind::kAdd : OpKind::kSilu;
    switch (role_of) {
      case OpKind::kAdd:
      case OpKind::kMul:
        s = assign(bop.inputs[0], kRow);
        if (s.ok()) {
          const bool full = body.value(bop.inputs[1]).shape == body.value(bop.inputs[0]).shape;
          s = full ? assign(bop.inputs[1], kRow) : input_only(bop.inputs[1], kConstant);
        }
        break;
      case OpKind::kSilu:
      case OpKind::kReshape:
      case OpKind::kRmsNorm:
        s = assign(bop.inputs[0], kRow);
        break;
      case OpKind::kRope:
        s = assign(bop.inputs[0], kRow);
        if (s.ok()) s = input_only(bop.inputs[1], kPositions);
        if (s.ok() && bop.inputs.size() == 3) s = input_only(bop.inputs[2], kConstant);
        break;
      default:
        return err(absl::StrCat("body op #", i, " (", std::string(ir::OpName(bop.kind)),
                                ") is not supported in a fused body"));
    }
    if (s.ok()) s = assign(bop.outputs[0], kRow);
    if (!s.ok()) return s;
  }
  for (ValueId bo : body.outputs()) {
    if (absl::Status s = assign(bo, kRow); !s.ok()) return s;
  }
  bound.stride.assign(nv, 0);
  bound.scratch_off.assign(nv, -1);
  bound.view_of.assign(nv, -1);
  int64_t scratch_bytes = 0;
  for (ValueId v = 0; v < static_cast<ValueId>(nv); ++v) {
    const Value& val = body.value(v);
    const Shape& s = val.shape;
    switch (role[v]) {
      case kUnused:
        break;
      case kRow: {
        int64_t n = 1;
        for (size_t d = 1; d < s.size(); ++d) n *= s[d];
        if (s.empty() || s[0] != bound.rows || n != bound.row_len) {
          return err(absl::StrCat(ValueDesc(body, v), " is not a row value of ",
                                  ValueDesc(body, body.outputs()[0])));
        }
        absl::StatusOr<int64_t> row_bytes = DTypeBytes(val.dtype, bound.row_len);
        if (!row_bytes.ok()) return err(std::string(row_bytes.status().message()));
        bound.stride[v] = *row_bytes;
        break;
      }
      case kPositions:
        if (val.dtype != DType::kI32 || s != Shape{bound.rows}) {
          return err(absl::StrCat("positions ", ValueDesc(body, v), " must be i32 with one entry per row"));
        }
        bound.stride[v] = sizeof(int32_t);
        break;
      case kConstant:
        if (std::count(s.begin(), s.end(), ir::kTokens) != 0) {
          return err(absl::StrCat("broadcast operand ", ValueDesc(body, v), " must have a static shape"));
        }
        break;
    }
  }
  // Intermediates: reshapes not output are views, the rest get chunk scratch.
  for (const Op& bop : body.ops()) {
    const ValueId out = bop.outputs[0];
    if (bound.ptr[out] != nullptr) continue;
    if (bop.kind == OpKind::kReshape) {
      bound.view_of[out] = bop.inputs[0];
      continue;
    }
    bound.scratch_off[out] = scratch_bytes;
    scratch_bytes += AlignUp(kRowsPerChunk * bound.stride[out]);
  }
  scratch_slot_bytes = std::max(scratch_slot_bytes, scratch_bytes);
  outer.body_index[op_index] = static_cast<int>(bodies.size());
  bodies.push_back(std::move(bound));
  return absl::OkStatus();
}

absl::Status CpuExecutor::Impl::RunBody(BoundGraph& b, int64_t T, bool fast) {
  const Graph& g = *b.graph;
  const int64_t rows = b.rows == ir::kTokens ? T : b.rows;
  const int64_t n_chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  const int64_t n_slots = std::max<int64_t>(
      1, std::min<int64_t>(pool->num_threads(), rows * b.row_len >= kParallelFusedElems ? n_chunks : 1));
  std::vector<absl::Status> status(n_slots);
  // Slot k evaluates chunks [k * n_chunks / n_slots, (k + 1) * n_chunks / n_slots).
  auto slot_work = [&](int64_t k) -> absl::Status {
    uint8_t* scratch = fused_scratch.data() + k * scratch_slot_bytes;
    std::vector<uint8_t*> p(g.values().size(), nullptr);
    for (int64_t c = k * n_chunks / n_slots; c < (k + 1) * n_chunks / n_slots; ++c) {
      const int64_t r0 = c * kRowsPerChunk, n = std::min(kRowsPerChunk, rows - r0);
      for (size_t v = 0; v < p.size(); ++v) {
        if (b.scratch_off[v] >= 0) {
          p[v] = scratch + b.scratch_off[v];
        } else if (b.ptr[v] != nullptr) {
          p[v] = b.ptr[v] + r0 * b.stride[v];
        }
      }
      for (const Op& op : g.ops()) {
        if (b.view_of[op.outputs[0]] >= 0) p[op.outputs[0]] = p[b.view_of[op.outputs[0]]];
        if (absl::Status s = RunBodyOp(g, op, p, fast, n, b.row_len); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  };
  if (n_slots == 1) return slot_work(0);
  pool->ParallelFor(n_slots, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) status[k] = slot_work(k);
  });
  for (const absl::Status& s : status) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CpuExecutor::Impl::Init(WeightResolver& weights, const CpuExecutorOptions& opts) {
  const Graph& g = graph;
  max_tokens = g.max_tokens;
  if (max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("CPU backend: max_tokens ", max_tokens, " < 1"));
  }
  if (absl::Status s = ir::Verify(g); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CPU backend: invalid graph: ", std::string(s.message())));
  }
  // Everything a plan could get wrong about memory (runtime/plan_validate.h),
  // and the user's bound on what it may allocate, before allocating.
  absl::StatusOr<GraphMemoryNeeds> needs = ValidateExecutableGraph(g);
  if (!needs.ok()) {
    return absl::Status(needs.status().code(),
                        absl::StrCat("CPU backend: ", needs.status().message()));
  }
  {
    absl::StatusOr<MemoryLimit> limit =
        opts.memory_limit.has_value() ? absl::StatusOr<MemoryLimit>(*opts.memory_limit) : HostMemoryLimit();
    if (!limit.ok()) return limit.status();
    // This backend runs every device's ops on the host: all arenas and
    // caches; as the host's part of a split plan, the cpu's.
    int64_t need = needs->total();
    if (opts.host_ops_only) {
      auto it = needs->devices.find(ir::Device::kCpu);
      need = it == needs->devices.end() ? 0 : it->second.arena_bytes + it->second.kv_bytes;
    }
    if (absl::Status s = CheckMemoryLimit(need, "its arenas and KV caches", *limit);
        !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("CPU backend: ", s.message()));
    }
  }
  // The checks below repeat what the kernels rely on, so that a bug in the
  // verifier cannot turn into an out-of-bounds access here.
  if (absl::Status s = CheckStructure(g, "CPU backend"); !s.ok()) return s;
  if (const int64_t tp = ir::TpRanks(g); tp > 1) {
    if (opts.collectives == nullptr || opts.collectives->ranks() != tp || opts.rank < 0 || opts.rank >= tp) {
      return absl::FailedPreconditionError(absl::StrCat(
          "CPU backend: the graph is one rank's program of tensor parallelism over ", tp,
          " ranks (meta tp): it runs as ", tp, " ranks with collectives (runtime/cpu/tp_executor.h), not alone"));
    }
    rank = opts.rank;
    collectives = opts.collectives;
  }
  const size_t nv = g.values().size();
  std::vector<int> producer = Producers(g);
  host_only = opts.host_ops_only;

  // Graph inputs, output, KV caches, weights.
  for (ValueId v = 0; v < static_cast<ValueId>(nv); ++v) {
    const Value& val = g.value(v);
    const bool produced = producer[v] >= 0;
    switch (val.storage) {
      case Storage::kInput:
        if (produced) {
          return absl::InvalidArgumentError(
              absl::StrCat("CPU backend: input '", val.name, "' is produced by an op"));
        }
        if (val.name == "block_table") {
          if (val.dtype != DType::kI32 || val.shape.size() != 2 || val.shape[0] <= 0 ||
              val.shape[1] <= 0) {
            return absl::InvalidArgumentError(absl::StrCat(
                "CPU backend: input ", ValueDesc(g, v), " must be a static i32[S, MB]"));
          }
          block_table = v;
          break;
        }
        if (val.name == "sampling") {  // the sample op's parameters
          if (val.dtype != DType::kI32 || val.shape != Shape{kSampleParamWords}) {
            return absl::InvalidArgumentError(absl::StrCat("CPU backend: input ", ValueDesc(g, v),
                                                           " must be i32[", kSampleParamWords, "]"));
          }
          sampling = v;
          break;
        }
        if (val.name != "tokens" && val.name != "positions" && val.name != "seq_ids") {
          return absl::InvalidArgumentError(
              absl::StrCat("CPU backend: unknown graph input '", val.name,
                           "' (expected tokens, positions, seq_ids, block_table, sampling)"));
        }
        if (val.dtype != DType::kI32 || val.shape != Shape{ir::kTokens}) {
          return absl::InvalidArgumentError(absl::StrCat("CPU backend: input ", ValueDesc(g, v),
                                                         " must be i32[T]"));
        }
        (val.name == "tokens" ? tokens : val.name == "positions" ? positions : seq_ids) = v;
        break;
      case Storage::kKvCache:
        // A kv_store result is the updated cache (a view of its declaration).
        if (produced && g.ops()[producer[v]].kind == OpKind::kKvStore) break;
        [[fallthrough]];
      case Storage::kWeight:
        if (produced) {
          return absl::InvalidArgumentError(
              absl::StrCat("CPU backend: '", val.name, "' is produced by an op"));
        }
        if (std::count(val.shape.begin(), val.shape.end(), ir::kTokens) != 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("CPU backend: ", ValueDesc(g, v), " must have a static shape"));
        }
        break;
      case Storage::kActivation:
      case Storage::kOutput:
        if (!produced) {
          return absl::InvalidArgumentError(
              absl::StrCat("CPU backend: activation '", val.name, "' is never computed"));
        }
        break;
    }
  }
  absl::StatusOr<ValueId> found_logits = ir::FindLogitsOutput(g);
  if (!found_logits.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CPU backend: ", found_logits.status().message()));
  }
  logits = *found_logits;
  if (tokens < 0) return absl::InvalidArgumentError("CPU backend: graph has no input 'tokens'");
  if ((seq_ids < 0) != (block_table < 0)) {
    return absl::InvalidArgumentError(
        "CPU backend: a paged graph has both inputs seq_ids and block_table");
  }
  // Paged ops read exactly the graph's seq_ids and block_table (the host's
  // part of a split plan: its own; the GPU's ops read their copies).
  for (const Op& op : g.ops()) {
    if (!RunsHere(op)) continue;
    const size_t first = op.kind == OpKind::kKvStore ? 3 : op.kind == OpKind::kAttention ? 4 : 0;
    if (first == 0 || op.inputs.size() == first) continue;
    if (op.inputs.size() != first + 2 || op.inputs[first] != seq_ids ||
        op.inputs[first + 1] != block_table) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CPU backend: paged ", std::string(ir::OpName(op.kind)), " -> ", ValueDesc(g, op.outputs[0]),
          " must read the graph inputs seq_ids and block_table"));
    }
  }
  // A graph that samples: the sample op's output "token" (i32[1]).
  token = g.FindValue("token");
  if (token >= 0 && (g.value(token).storage != Storage::kOutput || g.value(token).dtype != DType::kI32 ||
                     g.value(token).shape != Shape{1})) {
    return absl::InvalidArgumentError(
        absl::StrCat("CPU backend: ", ValueDesc(g, token), " must be an i32[1] graph output"));
  }
  if ((token >= 0) != (sampling >= 0)) {
    return absl::InvalidArgumentError(
        "CPU backend: a graph that samples has both the input 'sampling' and the output 'token'");
  }

  // Every op supported and well-formed.
  for (const Op& op : g.ops()) {
    if (absl::Status s = CheckOp(g, op, /*in_body=*/false); !s.ok()) return s;
  }
  // The host's part of a split plan holds only the cpu's values: its ops
  // must read and write nothing else (the copies between the devices are
  // the accelerator's).
  if (host_only) {
    for (size_t i = 0; i < g.ops().size(); ++i) {
      const Op& op = g.ops()[i];
      if (!RunsHere(op)) continue;
      for (const std::vector<ValueId>* vs : {&op.inputs, &op.outputs}) {
        for (ValueId v : *vs) {
          if (g.value(v).device == ir::Device::kCpu) continue;
          return absl::InvalidArgumentError(absl::StrCat(
              "CPU backend: op #", i, " (", std::string(ir::OpName(op.kind)), ") runs on the host but touches ",
              ValueDesc(g, v), ", which lives on the ", std::string(ir::DeviceName(g.value(v).device))));
        }
      }
    }
  }
  // The kernels each op runs with, as the compiler chose them (Op::kernels,
  // select-kernels with the CPU target).
  for (const Op& op : g.ops()) {
    if (!RunsHere(op)) {  // the accelerator's
      op_kernels.push_back(cpu::CpuKernels::kExact);
      continue;
    }
    absl::StatusOr<cpu::CpuKernels> k = cpu::KernelsForOp(g, op);
    if (!k.ok()) return k.status();
    op_kernels.push_back(*k);
  }

  // Byte size of every value that needs storage of its own; views (reshape
  // outputs, kv_store outputs) share their input's.
  main.graph = &g;
  main.ptr.assign(nv, nullptr);
  main.body_index.assign(g.ops().size(), -1);
  std::vector<int64_t> arena_bytes(nv, -1);
  for (ValueId v = 0; v < static_cast<ValueId>(nv); ++v) {
    const Value& val = g.value(v);
    if (producer[v] >= 0) {
      OpKind k = g.ops()[producer[v]].kind;
      if (k == OpKind::kReshape || k == OpKind::kKvStore) continue;
    }
    if (host_only && val.device != ir::Device::kCpu) continue;  // the accelerator holds it
    absl::StatusOr<int64_t> nb = DTypeBytes(val.dtype, ir::NumElements(val.shape, max_tokens));
    if (!nb.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("CPU backend: ", ValueDesc(g, v), ": ", std::string(nb.status().message())));
    }
    switch (val.storage) {
      case Storage::kWeight: {
        absl::StatusOr<absl::Span<const uint8_t>> data = weights(val.source);
        if (!data.ok()) {
          return absl::Status(data.status().code(),
                              absl::StrCat("CPU backend: weight '", val.name, "' (source '",
                                           val.source, "'): ", std::string(data.status().message())));
        }
        if (val.source_row_stride != 0) {
          // This rank's shard of columns (tensor parallelism): rows at a stride, gathered once.
          absl::StatusOr<Buffer> shard = ShardCopy(g, v, *data, rank);
          if (!shard.ok()) return shard.status();
          main.ptr[v] = shard->data();
          weight_copies.push_back(*std::move(shard));
          break;
        }
        // A view of part of the tensor (Value::source_offset, and a rank's block
        // of rows: Value::rank_offsets) or all of it.
        const int64_t first =
            val.source_offset + (val.rank_offsets.empty() ? 0 : val.rank_offsets[static_cast<size_t>(rank)]);
        absl::StatusOr<int64_t> skip = DTypeBytes(val.dtype, first);
        if (!skip.ok() || *skip < 0 ||
            static_cast<int64_t>(data->size()) - *skip < *nb) {
          return absl::InvalidArgumentError(absl::StrCat(
              "CPU backend: weight ", ValueDesc(g, v), " (source '", val.source, "'",
              first != 0 ? absl::StrCat(" from element ", first) : "",
              val.rank_offsets.empty() ? "" : absl::StrCat(", rank ", rank),
              ") needs ", *nb, " bytes, the resolver gave ", data->size()));
        }
        *data = data->subspan(static_cast<size_t>(skip.value_or(0)), static_cast<size_t>(*nb));
        if (*nb > 0 && data->data() == nullptr) {
          return absl::InvalidArgumentError(
              absl::StrCat("CPU backend: weight '", val.name, "' resolved to null"));
        }
        if (reinterpret_cast<uintptr_t>(data->data()) % WeightAlignment(val.dtype) != 0) {
          // The kernels load whole elements: copy a misaligned tensor once.
          Buffer copy(*nb);
          if (!copy.ok()) {
            return absl::ResourceExhaustedError(absl::StrCat(
                "CPU backend: cannot allocate ", *nb, " bytes to align weight '", val.name, "'"));
          }
          std::memcpy(copy.data(), data->data(), static_cast<size_t>(*nb));
          main.ptr[v] = copy.data();
          weight_copies.push_back(std::move(copy));
          break;
        }
        // Weights are only ever read; the pointer is non-const to share the table.
        main.ptr[v] = const_cast<uint8_t*>(data->data());
        break;
      }
      case Storage::kKvCache: {
        Buffer b(*nb);
        if (!b.ok()) return absl::ResourceExhaustedError("CPU backend: KV cache allocation failed");
        main.ptr[v] = b.data();
        kv_caches.push_back(std::move(b));
        const int64_t rows = val.shape.empty() ? 0 : val.shape[0];
        n_ctx = n_ctx < 0 ? rows : std::min(n_ctx, rows);
        break;
      }
      default:
        arena_bytes[v] = *nb;
        break;
    }
  }
  // The graph's memory plan when it has one, else a slot per value.
  absl::StatusOr<ArenaPlan> planned =
      g.memory.empty() ? PlanOwnSlots(arena_bytes) : GraphArenaPlan(g, arena_bytes, host_only);
  if (!planned.ok()) return planned.status();
  const ArenaPlan& plan = *planned;
  arena = Buffer(plan.arena_bytes);
  if (!arena.ok()) return absl::ResourceExhaustedError("CPU backend: arena allocation failed");
  for (ValueId v = 0; v < static_cast<ValueId>(nv); ++v) {
    if (plan.offsets[v] >= 0) main.ptr[v] = arena.data() + plan.offsets[v];
  }
  // kv_store writes through its cache operand: it must be a KV cache or an
  // earlier kv_store's result (never a weight or an activation).
  for (const Op& op : g.ops()) {
    if (op.kind != OpKind::kKvStore) continue;
    ValueId c = op.inputs[1];
    const bool ok = g.value(c).storage == Storage::kKvCache ||
                    (producer[c] >= 0 && g.ops()[producer[c]].kind == OpKind::kKvStore);
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CPU backend: kv_store into ", ValueDesc(g, c), ", which is not a KV cache"));
    }
  }
  // Views, in op order so that chains of views resolve.
  for (const Op& op : g.ops()) {
    if (op.kind == OpKind::kReshape) main.ptr[op.outputs[0]] = main.ptr[op.inputs[0]];
    if (op.kind == OpKind::kKvStore) main.ptr[op.outputs[0]] = main.ptr[op.inputs[1]];
  }
  // Fused bodies.
  for (size_t i = 0; i < g.ops().size(); ++i) {
    const Op& op = g.ops()[i];
    if (op.kind != OpKind::kFused || !RunsHere(op)) continue;
    // A body that rounds a row to 8 bits (quantize_q8, cuda plans) runs
    // whole, op by op (cpu::EvalOp): its q8a layout is not per row.
    bool whole = false;
    for (const Op& bop : op.body->ops()) whole |= bop.kind == OpKind::kQuantizeQ8;
    if (whole) {
      main.body_index[i] = kWholeBody;
      continue;
    }
    if (absl::Status s = BindBody(main, static_cast<int>(i), 1); !s.ok()) return s;
  }
  // The vocabulary bound for token ids: rows of the tables the tokens index.
  for (const Op& op : g.ops()) {
    if (op.kind == OpKind::kEmbedding && op.inputs[1] == tokens) {
      const int64_t rows = g.value(op.inputs[0]).shape[0];
      n_vocab = n_vocab < 0 ? rows : std::min(n_vocab, rows);
    }
  }
  return absl::OkStatus();
}

absl::Status CpuExecutor::Impl::RunOp(BoundGraph& b, int op_index, int64_t T) {
  const Graph& g = *b.graph;
  const Op& op = g.ops()[op_index];
  auto F = [&](ValueId v) { return reinterpret_cast<float*>(b.ptr[v]); };
  auto I = [&](ValueId v) { return reinterpret_cast<const int32_t*>(b.ptr[v]); };
  auto E = [&](ValueId v) { return ir::NumElements(g.value(v).shape, T); };
  auto num = [&](const char* key, double dflt) { return NumberAttr(op, key, false, dflt).value_or(dflt); };
  const ValueId out = op.outputs.empty() ? -1 : op.outputs[0];
  if (const ir::OpInfo& info = ir::GetOpInfo(op.kind);
      info.elementwise && op.kind != OpKind::kAdd && op.kind != OpKind::kMul && op.kind != OpKind::kSilu) {
    // Other elementwise ops: the registry's scalar function.
    if (info.scalar.unary != nullptr) {
      cpu::Unary(info.scalar.unary, F(op.inputs[0]), E(op.inputs[0]), F(out));
    } else {
      cpu::Binary(info.scalar.binary, F(op.inputs[0]), E(op.inputs[0]), F(op.inputs[1]), E(op.inputs[1]), F(out));
    }
    return absl::OkStatus();
  }
  switch (op.kind) {
    case OpKind::kEmbedding: {
      const Value& table = g.value(op.inputs[0]);
      return cpu::Embedding(table.dtype, b.ptr[op.inputs[0]], table.shape[0], table.shape[1],
                            I(op.inputs[1]), E(op.inputs[1]), F(out));
    }
    case OpKind::kMatMul:
    case OpKind::kMultiMatMul: {
      const ValueId x = op.inputs[0];
      const size_t n_members = op.kind == OpKind::kMatMul ? 1 : op.outputs.size();
      const std::vector<int64_t> flags =
          op.kind == OpKind::kMatMul
              ? std::vector<int64_t>{op.inputs.size() == 3 ? 1 : 0}
              : std::get<std::vector<int64_t>>(op.attrs.at("bias"));
      // x as floats: a q8a x (quantize_q8's output) is read as its values.
      const float* xf = F(x);
      std::vector<float> xq;
      if (g.value(x).dtype == DType::kQ8A) {
        xq.resize(E(x));
        if (absl::Status s = DequantizeQ8A(b.ptr[x], E(x), xq.data()); !s.ok()) return s;
        xf = xq.data();
      }
      const int64_t K = g.value(op.inputs[1]).shape[1];
      const int64_t T = E(x) / K;
      if (&b == &main && op_kernels[op_index] == cpu::CpuKernels::kFast) {
        // The fast kernels: x rounded once per activation format, shared by
        // the members (cpu::RoundedActivations).
        std::vector<cpu::MatMulMember> members;
        size_t bias_at = 1 + n_members;
        for (size_t m = 0; m < n_members; ++m) {
          const Value& w = g.value(op.inputs[1 + m]);
          members.push_back({w.dtype, b.ptr[op.inputs[1 + m]], w.shape[0],
                             flags[m] != 0 ? F(op.inputs[bias_at++]) : nullptr,
                             F(op.outputs[m])});
        }
        return cpu::MultiMatMulFast(pool.get(), xf, T, K, members, &act_scratch);
      }
      size_t bias_at = 1 + n_members;
      for (size_t m = 0; m < n_members; ++m) {
        const Value& w = g.value(op.inputs[1 + m]);
        const int64_t N = w.shape[0];
        const float* bias = flags[m] != 0 ? F(op.inputs[bias_at++]) : nullptr;
        if (absl::Status s = cpu::MatMul(pool.get(), xf, T, K, w.dtype, b.ptr[op.inputs[1 + m]],
                                         N, bias, F(op.outputs[m]));
            !s.ok()) {
          return s;
        }
      }
      return absl::OkStatus();
    }
    case OpKind::kQuantizeQ8:
      return QuantizeQ8A(F(op.inputs[0]), E(op.inputs[0]), b.ptr[out]);
    case OpKind::kRmsNorm: {
      const int64_t D = g.value(op.inputs[0]).shape.back();
      cpu::RmsNorm(F(op.inputs[0]), E(op.inputs[0]) / D, D, static_cast<float>(num("eps", 0)),
                   F(out));
      return absl::OkStatus();
    }
    case OpKind::kAdd:
      cpu::Add(F(op.inputs[0]), E(op.inputs[0]), F(op.inputs[1]), E(op.inputs[1]), F(out));
      return absl::OkStatus();
    case OpKind::kMul:
      cpu::Mul(F(op.inputs[0]), E(op.inputs[0]), F(op.inputs[1]), E(op.inputs[1]), F(out));
      return absl::OkStatus();
    case OpKind::kSilu:
      (&b == &main && op_kernels[op_index] == cpu::CpuKernels::kFast ? cpu::SiluFast : cpu::Silu)(
          F(op.inputs[0]), E(op.inputs[0]), F(out));
      return absl::OkStatus();
    case OpKind::kScale:
      cpu::Scale(F(op.inputs[0]), E(op.inputs[0]), static_cast<float>(num("scale", 1.0)), F(out));
      return absl::OkStatus();
    case OpKind::kMoeTopK: {
      const int64_t E_ = g.value(op.inputs[0]).shape[1];
      const int64_t k = g.value(out).shape[1];
      return cpu::MoeTopK(F(op.inputs[0]), E(op.inputs[0]) / E_, E_, k,
                          reinterpret_cast<int32_t*>(b.ptr[out]));
    }
    case OpKind::kMoeWeights: {
      const int64_t E_ = g.value(op.inputs[0]).shape[1];
      const int64_t k = g.value(op.inputs[1]).shape[1];
      return cpu::MoeWeights(F(op.inputs[0]), E(op.inputs[0]) / E_, E_, I(op.inputs[1]), k,
                             num("norm", 0) != 0, F(out));
    }
    case OpKind::kMatMulId: {
      const Value& w = g.value(op.inputs[1]);
      const int64_t k = g.value(op.inputs[2]).shape[1];
      if (&b == &main && op_kernels[op_index] == cpu::CpuKernels::kFast) {
        absl::StatusOr<int64_t> row_bytes = DTypeBytes(w.dtype, w.shape[2]);
        if (!row_bytes.ok()) return row_bytes.status();
        const uint8_t* wb = b.ptr[op.inputs[1]];
        const int64_t K = w.shape[2], N = w.shape[1];
        return cpu::MatMulIdGrouped(
            F(op.inputs[0]), g.value(op.inputs[0]).shape.size() == 3, E(op.inputs[2]) / k, k, K, w.shape[0], N,
            I(op.inputs[2]), F(out), [&](int64_t e, const float* xs, int64_t n, float* ys) {
              return cpu::MatMulFast(pool.get(), xs, n, K, w.dtype, wb + e * N * *row_bytes, N, nullptr, ys,
                                     &act_scratch);
            });
      }
      return cpu::MatMulId(pool.get(), F(op.inputs[0]), g.value(op.inputs[0]).shape.size() == 3,
                           E(op.inputs[2]) / k, k, w.shape[2], w.dtype, b.ptr[op.inputs[1]],
                           w.shape[0], w.shape[1], I(op.inputs[2]), F(out));
    }
    case OpKind::kMoeSum: {
      const Shape& ys = g.value(op.inputs[0]).shape;
      cpu::MoeSum(F(op.inputs[0]), F(op.inputs[1]), E(op.inputs[1]) / ys[1], ys[1], ys[2], F(out));
      return absl::OkStatus();
    }
    case OpKind::kReshape:
      // A view; inside a fused body a reshape that is a body output is copied.
      if (b.ptr[out] != b.ptr[op.inputs[0]]) {
        std::memmove(b.ptr[out], b.ptr[op.inputs[0]],
                     DTypeBytes(g.value(out).dtype, E(out)).value_or(0));
      }
      return absl::OkStatus();
    case OpKind::kCopy:
      std::memcpy(b.ptr[out], b.ptr[op.inputs[0]],
                  DTypeBytes(g.value(out).dtype, E(out)).value_or(0));
      return absl::OkStatus();
    case OpKind::kRope: {
      const Shape& s = g.value(op.inputs[0]).shape;
      cpu::RopeParams p;
      p.mode = static_cast<int>(num("mode", 0));
      p.n_rot = static_cast<int64_t>(num("n_rot", 0));
      p.freq_base = static_cast<float>(num("freq_base", 10000.0));
      p.freq_scale = static_cast<float>(num("freq_scale", 1.0));
      p.freq_factors = op.inputs.size() == 3 ? F(op.inputs[2]) : nullptr;
      return cpu::Rope(F(op.inputs[0]), E(op.inputs[0]) / (s[1] * s[2]), s[1], s[2],
                       I(op.inputs[1]), p, F(out));
    }
    case OpKind::kKvStore: {
      const Value& c = g.value(op.inputs[1]);
      const int64_t row = c.shape[1] * c.shape[2];
      if (op.inputs.size() == 5) {
        return cpu::PagedKvStore(F(op.inputs[0]), E(op.inputs[0]) / row, row, I(op.inputs[2]),
                                 cpu::PagedInputs(g, op, I(op.inputs[3]), I(op.inputs[4])), c.dtype,
                                 b.ptr[op.inputs[1]], c.shape[0]);
      }
      return cpu::KvStore(F(op.inputs[0]), E(op.inputs[0]) / row, row, I(op.inputs[2]), c.dtype,
                          b.ptr[op.inputs[1]], c.shape[0]);
    }
    case OpKind::kAttention: {
      const Value& k = g.value(op.inputs[1]);
      const Shape& qs = g.value(op.inputs[0]).shape;
      cpu::AttentionShape shape;
      shape.n_head = qs[1];
      shape.head_dim = qs[2];
      shape.T = E(op.inputs[0]) / (qs[1] * qs[2]);
      shape.n_head_kv = k.shape[1];
      shape.n_ctx = k.shape[0];
      shape.window = static_cast<int64_t>(num("window", 0));
      if (op.inputs.size() == 6) {
        return cpu::PagedAttention(pool.get(), F(op.inputs[0]), b.ptr[op.inputs[1]],
                                   b.ptr[op.inputs[2]], k.dtype, g.value(op.inputs[2]).dtype,
                                   I(op.inputs[3]), cpu::PagedInputs(g, op, I(op.inputs[4]), I(op.inputs[5])),
                                   shape, static_cast<float>(num("scale", 1.0)), F(out));
      }
      const float scale = static_cast<float>(num("scale", 1.0));
      const DType v_dtype = g.value(op.inputs[2]).dtype;
      if (&b == &main && op_kernels[op_index] == cpu::CpuKernels::kFast) {
        return cpu::AttentionFast(pool.get(), F(op.inputs[0]), b.ptr[op.inputs[1]], b.ptr[op.inputs[2]],
                                  k.dtype, v_dtype, I(op.inputs[3]), shape, scale, F(out));
      }
      return cpu::Attention(pool.get(), F(op.inputs[0]), b.ptr[op.inputs[1]], b.ptr[op.inputs[2]],
                            k.dtype, v_dtype, I(op.inputs[3]), shape, scale, F(out));
    }
    case OpKind::kLastRow: {
      const int64_t D = g.value(op.inputs[0]).shape.back();
      cpu::LastRow(F(op.inputs[0]), E(op.inputs[0]) / D, D, F(out));
      return absl::OkStatus();
    }
    case OpKind::kAllReduce:
      return collectives->AllReduceSum(rank, F(op.inputs[0]), F(out), E(out));
    case OpKind::kAllGather: {
      const int64_t C = g.value(op.inputs[0]).shape.back();
      return collectives->AllGather(rank, F(op.inputs[0]), E(op.inputs[0]) / C, C, F(out));
    }
    case OpKind::kSample: {
      const int64_t V = g.value(op.inputs[0]).shape.back();
      return cpu::Sample(F(op.inputs[0]), E(op.inputs[0]) / V, V, I(op.inputs[1]),
                         reinterpret_cast<int32_t*>(b.ptr[out]));
    }
    case OpKind::kFused: {
      const bool fast = &b == &main && op_kernels[op_index] == cpu::CpuKernels::kFast;
      if (b.body_index[op_index] != kWholeBody) return RunBody(bodies[b.body_index[op_index]], T, fast);
      std::vector<const uint8_t*> in;
      for (ValueId v : op.inputs) in.push_back(b.ptr[v]);
      std::vector<std::vector<uint8_t>> outs;
      for (ValueId v : op.outputs) outs.emplace_back(DTypeBytes(g.value(v).dtype, E(v)).value_or(0));
      if (absl::Status s = cpu::EvalOp(g, op, in, outs, T, pool.get()); !s.ok()) return s;
      for (size_t j = 0; j < outs.size(); ++j) std::memcpy(b.ptr[op.outputs[j]], outs[j].data(), outs[j].size());
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unreachable op kind");
}

absl::Status CpuExecutor::Impl::Run(BoundGraph& b, int64_t T) {
  for (size_t i = 0; i < b.graph->ops().size(); ++i) {
    absl::Status s = RunOp(b, static_cast<int>(i), T);
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("op #", i, " (",
                                                 std::string(ir::OpName(b.graph->ops()[i].kind)),
                                                 "): ", std::string(s.message())));
    }
  }
  return absl::OkStatus();
}

CpuExecutor::CpuExecutor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CpuExecutor::~CpuExecutor() = default;

absl::StatusOr<std::unique_ptr<CpuExecutor>> CpuExecutor::Create(const ir::Graph& graph,
                                                                 WeightResolver weights,
                                                                 CpuExecutorOptions opts) {
  auto impl = std::make_unique<Impl>();
  impl->graph = graph;
  if (absl::Status s = impl->Init(weights, opts); !s.ok()) return s;
  int threads = opts.threads;
  if (threads <= 0) threads = cpu::DefaultThreadCount();
  auto warn = [&](const std::string& msg) {
    if (opts.warn) {
      opts.warn(msg);
    } else {
      std::fprintf(stderr, "vibrant: %s\n", msg.c_str());
    }
  };
  if (threads > cpu::kMaxThreads) {
    warn(absl::StrCat("CPU backend: ", threads, " threads requested; using at most ",
                      cpu::kMaxThreads));
    threads = cpu::kMaxThreads;
  }
  impl->pool = std::make_unique<cpu::ThreadPool>(threads);
  if (impl->pool->num_threads() < threads) {
    warn(absl::StrCat("CPU backend: ", threads, " threads requested, but only ",
                      impl->pool->num_threads(), " could be created (",
                      impl->pool->creation_error(), "); using ", impl->pool->num_threads()));
  }
  impl->fused_scratch = Buffer(impl->pool->num_threads() * impl->scratch_slot_bytes);
  if (!impl->fused_scratch.ok()) {
    return absl::ResourceExhaustedError("CPU backend: fused body scratch allocation failed");
  }
  return std::unique_ptr<CpuExecutor>(new CpuExecutor(std::move(impl)));
}

absl::StatusOr<absl::Span<const float>> CpuExecutor::Step(absl::Span<const int32_t> tokens,
                                                         int32_t pos0) {
  // A graph that samples draws greedily when only the logits are asked for.
  return StepWith(tokens, pos0, SampleDraw{});
}

bool CpuExecutor::samples() const { return impl_->token >= 0; }

absl::StatusOr<int32_t> CpuExecutor::StepSample(absl::Span<const int32_t> tokens, int32_t pos0,
                                                const SampleDraw& draw) {
  Impl& m = *impl_;
  if (m.token < 0) {
    return absl::FailedPreconditionError(
        "StepSample: this plan has no sample op (compile it with --gpu-sampling)");
  }
  if (absl::Status s = CheckSampleDraw(draw); !s.ok()) return s;
  absl::StatusOr<absl::Span<const float>> out = StepWith(tokens, pos0, draw);
  if (!out.ok()) return out.status();
  const int32_t id = *reinterpret_cast<const int32_t*>(m.main.ptr[m.token]);
  if (id < 0) {
    return absl::InvalidArgumentError("sampler: no finite logit (the model produced NaN or inf)");
  }
  return id;
}

absl::Status CpuExecutor::Impl::Begin(absl::Span<const int32_t> toks, int32_t pos0, const SampleDraw& draw) {
  step_T = 0;
  if (block_table >= 0) {
    return absl::FailedPreconditionError(
        "Step: the graph is paged (continuous batching); run it with StepBatch");
  }
  if (sampling >= 0 && main.ptr[sampling] != nullptr) {
    const std::array<int32_t, kSampleParamWords> w = PackSampleParams(draw);
    std::memcpy(main.ptr[sampling], w.data(), sizeof(w));
  }
  const int64_t T = static_cast<int64_t>(toks.size());
  if (T < 1 || T > max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("Step: ", T, " tokens; a step takes 1..", max_tokens, " (max_tokens)"));
  }
  if (pos0 < 0) return absl::InvalidArgumentError(absl::StrCat("Step: negative position ", pos0));
  if (pos0 + T - 1 > INT32_MAX) {
    return absl::OutOfRangeError(absl::StrCat("Step: position ", pos0 + T - 1, " overflows int32"));
  }
  if (n_ctx >= 0 && pos0 + T > n_ctx) {
    return absl::OutOfRangeError(absl::StrCat("Step: positions ", pos0, "..", pos0 + T - 1,
                                              " exceed the KV cache of ", n_ctx, " tokens"));
  }
  for (int64_t t = 0; t < T; ++t) {
    if (toks[t] < 0 || (n_vocab >= 0 && toks[t] >= n_vocab)) {
      return absl::InvalidArgumentError(absl::StrCat("Step: token id ", toks[t], " at index ",
                                                     t, " is outside the vocabulary [0, ",
                                                     n_vocab, ")"));
    }
  }
  std::memcpy(main.ptr[tokens], toks.data(), T * sizeof(int32_t));
  if (positions >= 0) {
    int32_t* pos = reinterpret_cast<int32_t*>(main.ptr[positions]);
    for (int64_t t = 0; t < T; ++t) pos[t] = pos0 + static_cast<int32_t>(t);
  }
  step_T = T;
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<const float>> CpuExecutor::StepWith(absl::Span<const int32_t> tokens,
                                                             int32_t pos0, const SampleDraw& draw) {
  Impl& m = *impl_;
  if (m.host_only) {
    return absl::FailedPreconditionError(
        "Step: this executor runs only the host's ops of a split plan; the GPU's executor drives the step");
  }
  if (absl::Status s = m.Begin(tokens, pos0, draw); !s.ok()) return s;
  if (absl::Status s = m.Run(m.main, m.step_T); !s.ok()) return s;
  return absl::Span<const float>(reinterpret_cast<const float*>(m.main.ptr[m.logits]),
                                 ir::NumElements(m.graph.value(m.logits).shape, m.step_T));
}

absl::Status CpuExecutor::BeginStep(absl::Span<const int32_t> tokens, int32_t pos0, const SampleDraw& draw) {
  if (impl_->sampling >= 0) {
    if (absl::Status s = CheckSampleDraw(draw); !s.ok()) return s;
  }
  return impl_->Begin(tokens, pos0, draw);
}

absl::Status CpuExecutor::RunOp(int op) {
  Impl& m = *impl_;
  const int n = static_cast<int>(m.graph.ops().size());
  if (op < 0 || op >= n) return absl::InvalidArgumentError(absl::StrCat("RunOp: op ", op, " of ", n));
  const Op& o = m.graph.ops()[op];
  if (!m.RunsHere(o)) {
    return absl::InvalidArgumentError(absl::StrCat("RunOp: op #", op, " (", std::string(ir::OpName(o.kind)),
                                                   ") is placed on the ", std::string(ir::DeviceName(o.device)),
                                                   ", not on the cpu this executor runs"));
  }
  if (m.step_T < 1) return absl::FailedPreconditionError("RunOp: no step begun (BeginStep)");
  absl::Status s = m.RunOp(m.main, op, m.step_T);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("op #", op, " (", std::string(ir::OpName(o.kind)), "): ", s.message()));
  }
  return absl::OkStatus();
}

uint8_t* CpuExecutor::ValueData(ir::ValueId v) const {
  if (v < 0 || v >= static_cast<ir::ValueId>(impl_->main.ptr.size())) return nullptr;
  return impl_->main.ptr[v];
}

absl::StatusOr<absl::Span<const float>> CpuExecutor::StepLogits() const {
  const Impl& m = *impl_;
  const ir::ValueId p = m.graph.value(m.logits).producer;
  if (m.step_T < 1 || m.main.ptr[m.logits] == nullptr || (p >= 0 && !m.RunsHere(m.graph.ops()[p]))) {
    return absl::FailedPreconditionError("StepLogits: no step ran here, or the logits are made elsewhere");
  }
  return absl::Span<const float>(reinterpret_cast<const float*>(m.main.ptr[m.logits]),
                                 ir::NumElements(m.graph.value(m.logits).shape, m.step_T));
}

absl::StatusOr<int32_t> CpuExecutor::StepToken() const {
  const Impl& m = *impl_;
  if (m.token < 0) return absl::FailedPreconditionError("StepToken: the graph has no sample op");
  const ir::ValueId p = m.graph.value(m.token).producer;
  if (m.step_T < 1 || m.main.ptr[m.token] == nullptr || (p >= 0 && !m.RunsHere(m.graph.ops()[p]))) {
    return absl::FailedPreconditionError("StepToken: no step ran here, or the token is drawn elsewhere");
  }
  const int32_t id = *reinterpret_cast<const int32_t*>(m.main.ptr[m.token]);
  if (id < 0) return absl::InvalidArgumentError("sampler: no finite logit (the model produced NaN or inf)");
  return id;
}

int64_t CpuExecutor::ops_run_here() const {
  int64_t n = 0;
  for (const Op& op : impl_->graph.ops()) n += impl_->RunsHere(op);
  return n;
}

bool CpuExecutor::paged() const { return impl_->block_table >= 0; }

absl::Status CpuExecutor::Impl::BeginBatch(const BatchInputs& in) {
  step_T = 0;
  if (block_table < 0 || seq_ids < 0) {
    return absl::FailedPreconditionError(
        "StepBatch: the graph is not paged (compile it with a sequence count, n_seq > 0)");
  }
  const int64_t T = static_cast<int64_t>(in.tokens.size());
  if (T < 1 || T > max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("StepBatch: ", T, " tokens; a step takes 1..", max_tokens, " (max_tokens)"));
  }
  if (in.positions.size() != in.tokens.size() || in.seq_ids.size() != in.tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "StepBatch: ", T, " tokens but ", in.positions.size(), " positions and ",
        in.seq_ids.size(), " sequence ids"));
  }
  const int64_t table_elems = ir::NumElements(graph.value(block_table).shape, 1);
  if (static_cast<int64_t>(in.block_table.size()) != table_elems) {
    return absl::InvalidArgumentError(absl::StrCat("StepBatch: the block table has ",
                                                   in.block_table.size(), " entries, the graph's ",
                                                   table_elems));
  }
  for (int64_t t = 0; t < T; ++t) {
    if (in.tokens[t] < 0 || (n_vocab >= 0 && in.tokens[t] >= n_vocab)) {
      return absl::InvalidArgumentError(absl::StrCat("StepBatch: token id ", in.tokens[t],
                                                     " at index ", t,
                                                     " is outside the vocabulary [0, ", n_vocab,
                                                     ")"));
    }
    if (in.positions[t] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("StepBatch: negative position ", in.positions[t], " at index ", t));
    }
  }
  std::memcpy(main.ptr[tokens], in.tokens.data(), T * sizeof(int32_t));
  if (positions >= 0) std::memcpy(main.ptr[positions], in.positions.data(), T * sizeof(int32_t));
  std::memcpy(main.ptr[seq_ids], in.seq_ids.data(), T * sizeof(int32_t));
  std::memcpy(main.ptr[block_table], in.block_table.data(), table_elems * sizeof(int32_t));
  step_T = T;
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<const float>> CpuExecutor::StepBatch(const BatchInputs& in) {
  Impl& m = *impl_;
  if (m.host_only) {
    return absl::FailedPreconditionError("StepBatch: this executor runs only the host's ops of a split plan");
  }
  if (absl::Status s = m.BeginBatch(in); !s.ok()) return s;
  if (absl::Status s = m.Run(m.main, m.step_T); !s.ok()) return s;
  return absl::Span<const float>(reinterpret_cast<const float*>(m.main.ptr[m.logits]),
                                 ir::NumElements(m.graph.value(m.logits).shape, m.step_T));
}

absl::Status CpuExecutor::BeginBatch(const BatchInputs& in) { return impl_->BeginBatch(in); }

int CpuExecutor::num_threads() const { return impl_->pool->num_threads(); }

std::string CpuExecutor::KernelSummary() const {
  bool fast = false, exact = false;
  for (size_t i = 0; i < impl_->op_kernels.size(); ++i) {
    const Op& op = impl_->graph.ops()[i];
    if (!cpu::HasFastKernel(op.kind) || !impl_->RunsHere(op)) continue;
    (impl_->op_kernels[i] == cpu::CpuKernels::kFast ? fast : exact) = true;
  }
  if (!fast) return "exact kernels";
  return absl::StrCat(exact ? "fast and exact" : "fast", " kernels (",
                      cpu::IsaName(cpu::ActiveIsa()), ")");
}

void CpuExecutor::Reset() {
  for (Buffer& b : impl_->kv_caches) b.Zero();
}

}  // namespace vibrant
