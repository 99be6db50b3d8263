#include "runtime/dispatch.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vibrant::dispatch {
namespace {

constexpr char kMagic[4] = {'V', 'B', 'D', 'T'};
constexpr uint32_t kMaxGrid[3] = {0x7fffffffu, 65535u, 65535u};
// As ir::kMaxTpRanks (this library does not depend on ir/).
constexpr int64_t kMaxTpRanks = 64;

// floor(x / c), c > 0, exact for negative x.
__int128 FloorDiv(__int128 x, __int128 c) {
  __int128 q = x / c;
  if ((x % c != 0) && (x < 0)) --q;
  return q;
}

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) U8(static_cast<uint8_t>(v >> (8 * i)));
  }
  void I32(int32_t v) { U32(static_cast<uint32_t>(v)); }
  void I64(int64_t v) {
    const uint64_t u = static_cast<uint64_t>(v);
    for (int i = 0; i < 8; ++i) U8(static_cast<uint8_t>(u >> (8 * i)));
  }
  void F32(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    U32(u);
  }
  void Str(const std::string& s) {
    U32(static_cast<uint32_t>(s.size()));
    out_ += s;
  }
  void Expr(const TExpr& e) {
    I64(e.a);
    I64(e.b);
    I64(e.c);
    I64(e.lo);
    I64(e.hi);
  }
  void Buf(const BufRef& b) {
    U8(static_cast<uint8_t>(b.region));
    Expr(b.offset);
    Expr(b.extent);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  Reader(absl::Span<const uint8_t> b, const std::string& where) : p_(b), where_(where) {}
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(where_, ": at offset ", pos_, ": ", what));
  }
  bool Has(size_t n) const { return n <= p_.size() - pos_; }
  absl::StatusOr<uint8_t> U8() {
    if (!Has(1)) return Error("truncated");
    return p_[pos_++];
  }
  absl::StatusOr<uint32_t> U32() {
    if (!Has(4)) return Error("truncated");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p_[pos_ + i]) << (8 * i);
    pos_ += 4;
    return v;
  }
  absl::StatusOr<int64_t> I64() {
    if (!Has(8)) return Error("truncated");
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p_[pos_ + i]) << (8 * i);
    pos_ += 8;
    return static_cast<int64_t>(v);
  }
  absl::StatusOr<float> F32() {
    absl::StatusOr<uint32_t> u = U32();
    if (!u.ok()) return u.status();
    float f;
    std::memcpy(&f, &*u, 4);
    return f;
  }
  absl::StatusOr<std::string> Str() {
    absl::StatusOr<uint32_t> n = U32();
    if (!n.ok()) return n.status();
    if (!Has(*n)) return Error(absl::StrCat("string of ", *n, " bytes is truncated"));
    std::string s(reinterpret_cast<const char*>(p_.data() + pos_), *n);
    pos_ += *n;
    return s;
  }
  // A count of items of at least `min_bytes` each (bounded by the bytes left).
  absl::StatusOr<uint32_t> Count(size_t min_bytes) {
    absl::StatusOr<uint32_t> n = U32();
    if (!n.ok()) return n.status();
    if (static_cast<uint64_t>(*n) * min_bytes > p_.size() - pos_) {
      return Error(absl::StrCat("count ", *n, " exceeds the bytes left"));
    }
    return *n;
  }
  absl::StatusOr<TExpr> Expr() {
    TExpr e;
    for (int64_t* f : {&e.a, &e.b, &e.c, &e.lo, &e.hi}) {
      absl::StatusOr<int64_t> v = I64();
      if (!v.ok()) return v.status();
      *f = *v;
    }
    return e;
  }
  absl::StatusOr<BufRef> Buf() {
    BufRef b;
    absl::StatusOr<uint8_t> r = U8();
    if (!r.ok()) return r.status();
    if (*r >= kNumRegions) return Error(absl::StrCat("invalid region ", static_cast<int>(*r)));
    b.region = static_cast<Region>(*r);
    absl::StatusOr<TExpr> o = Expr();
    if (!o.ok()) return o.status();
    absl::StatusOr<TExpr> e = Expr();
    if (!e.ok()) return e.status();
    b.offset = *o;
    b.extent = *e;
    return b;
  }
  bool AtEnd() const { return pos_ == p_.size(); }

 private:
  absl::Span<const uint8_t> p_;
  size_t pos_ = 0;
  std::string where_;
};

#define VB_ASSIGN(lhs, expr)              \
  do {                                    \
    auto _v = (expr);                     \
    if (!_v.ok()) return _v.status();     \
    lhs = *std::move(_v);                 \
  } while (0)

std::string ExprText(const TExpr& e) {
  if (e.a == 0 && e.c == 1) return absl::StrCat(std::clamp(e.b, e.lo, e.hi));
  std::string s;
  if (e.a != 0) s = e.a == 1 ? "T" : absl::StrCat(e.a, "*T");
  if (e.b != 0) absl::StrAppend(&s, e.b > 0 && e.a != 0 ? "+" : "", e.b);
  if (e.c != 1) s = absl::StrCat("ceil((", s, ")/", e.c, ")");
  const bool lo = e.lo != std::numeric_limits<int64_t>::min();
  const bool hi = e.hi != std::numeric_limits<int64_t>::max();
  if (lo && hi) return absl::StrCat("clamp(", s, ", ", e.lo, ", ", e.hi, ")");
  if (lo) return absl::StrCat("max(", s, ", ", e.lo, ")");
  if (hi) return absl::StrCat("min(", s, ", ", e.hi, ")");
  return s;
}

std::string BufText(const BufRef& b) {
  if (b.region == Region::kNone) return "null";
  return absl::StrCat(RegionName(b.region), "+", ExprText(b.offset), "[", ExprText(b.extent), "]");
}

}  // namespace

int64_t TExpr::Eval(int64_t T) const {
  const __int128 x = static_cast<__int128>(a) * T + b;
  const __int128 c128 = c > 0 ? c : 1;
  __int128 q = -FloorDiv(-x, c128);  // ceil
  if (q < lo) q = lo;
  if (q > hi) q = hi;
  if (q > std::numeric_limits<int64_t>::max()) return std::numeric_limits<int64_t>::max();
  if (q < std::numeric_limits<int64_t>::min()) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(q);
}

const char* RegionName(Region r) {
  switch (r) {
    case Region::kNone: return "null";
    case Region::kArena: return "arena";
    case Region::kWeights: return "weights";
    case Region::kKv: return "kv";
    case Region::kScratch: return "scratch";
    case Region::kState: return "state";
  }
  return "?";
}

std::vector<const Launch*> LaunchesFor(const Table& t, int64_t T, bool per_op) {
  std::vector<const Launch*> out;
  const RunsIn skip = per_op ? RunsIn::kScheduledOnly : RunsIn::kPerOpOnly;
  for (const Launch& l : t.launches) {
    if (l.t_min <= T && T <= l.t_max && l.runs_in != skip) out.push_back(&l);
  }
  return out;
}

bool Table::has_host_ops() const {
  for (const Launch& l : launches) {
    if (l.kind == LaunchKind::kHost) return true;
  }
  return false;
}

std::string Serialize(const Table& t) {
  Writer w;
  for (char c : kMagic) w.U8(static_cast<uint8_t>(c));
  w.U32(kDispatchFormatVersion);
  w.U32(static_cast<uint32_t>(t.kernels.size()));
  for (const std::string& k : t.kernels) w.Str(k);
  for (int r = 0; r < kNumRegions; ++r) w.I64(t.region_bytes[r]);
  w.U32(static_cast<uint32_t>(t.weights.size()));
  for (const WeightSlot& s : t.weights) {
    w.Str(s.source);
    w.I64(s.offset);
    w.I64(s.bytes);
    w.U32(static_cast<uint32_t>(s.rank_offsets.size()));
    for (int64_t o : s.rank_offsets) w.I64(o);
    w.I64(s.row_bytes);
    w.I64(s.row_stride);
  }
  w.I64(t.tp_ranks);
  w.Buf(t.tokens);
  w.Buf(t.positions);
  w.Buf(t.logits);
  w.Expr(t.logits_elems);
  w.Buf(t.sampling);
  w.Buf(t.token);
  w.I64(t.max_tokens);
  w.I64(t.n_ctx);
  w.I64(t.n_vocab);
  w.I64(t.graph_max_tokens);
  w.U8(t.pdl ? 1 : 0);
  w.Buf(t.seq_ids);
  w.Buf(t.block_table);
  w.I64(t.n_seq);
  w.I64(t.max_blocks);
  w.I64(t.block_size);
  w.U32(static_cast<uint32_t>(t.values.size()));
  for (const BufRef& b : t.values) w.Buf(b);
  w.U32(static_cast<uint32_t>(t.launches.size()));
  for (const Launch& l : t.launches) {
    w.I32(l.op);
    w.I64(l.t_min);
    w.I64(l.t_max);
    w.U8(static_cast<uint8_t>(l.runs_in));
    w.U8(static_cast<uint8_t>(l.kind));
    w.Str(l.name);
    w.I32(l.kernel);
    for (const TExpr& g : l.grid) w.Expr(g);
    for (uint32_t b : l.block) w.U32(b);
    w.U32(l.smem);
    w.U32(static_cast<uint32_t>(l.args.size()));
    for (const Arg& a : l.args) {
      w.U8(static_cast<uint8_t>(a.kind));
      w.Buf(a.buf);
      w.Expr(a.value);
      w.F32(a.f);
    }
    w.Buf(l.a);
    w.Buf(l.b);
    w.Buf(l.out);
    w.Expr(l.m);
    w.I64(l.n);
    w.I64(l.k);
    w.I64(l.lda);
    w.I64(l.ldb);
    w.I64(l.ldo);
    w.Buf(l.dst);
    w.Buf(l.src);
    w.Expr(l.bytes);
  }
  return w.Take();
}

absl::StatusOr<Table> Parse(absl::Span<const uint8_t> bytes, const std::string& where) {
  Reader r(bytes, where);
  Table t;
  for (char c : kMagic) {
    uint8_t b;
    VB_ASSIGN(b, r.U8());
    if (b != static_cast<uint8_t>(c)) return r.Error("bad magic (expected \"VBDT\")");
  }
  uint32_t version;
  VB_ASSIGN(version, r.U32());
  if (version != kDispatchFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        where, ": dispatch table format ", version, ", this runtime reads ", kDispatchFormatVersion,
        ": recompile the plan with this Vibrant's vibrantc"));
  }
  uint32_t n;
  VB_ASSIGN(n, r.Count(4));
  for (uint32_t i = 0; i < n; ++i) {
    std::string k;
    VB_ASSIGN(k, r.Str());
    t.kernels.push_back(std::move(k));
  }
  for (int i = 0; i < kNumRegions; ++i) VB_ASSIGN(t.region_bytes[i], r.I64());
  VB_ASSIGN(n, r.Count(20));
  for (uint32_t i = 0; i < n; ++i) {
    WeightSlot s;
    VB_ASSIGN(s.source, r.Str());
    VB_ASSIGN(s.offset, r.I64());
    VB_ASSIGN(s.bytes, r.I64());
    uint32_t nr;
    VB_ASSIGN(nr, r.Count(8));
    s.rank_offsets.resize(nr);
    for (uint32_t k = 0; k < nr; ++k) VB_ASSIGN(s.rank_offsets[k], r.I64());
    VB_ASSIGN(s.row_bytes, r.I64());
    VB_ASSIGN(s.row_stride, r.I64());
    t.weights.push_back(std::move(s));
  }
  VB_ASSIGN(t.tp_ranks, r.I64());
  VB_ASSIGN(t.tokens, r.Buf());
  VB_ASSIGN(t.positions, r.Buf());
  VB_ASSIGN(t.logits, r.Buf());
  VB_ASSIGN(t.logits_elems, r.Expr());
  VB_ASSIGN(t.sampling, r.Buf());
  VB_ASSIGN(t.token, r.Buf());
  VB_ASSIGN(t.max_tokens, r.I64());
  VB_ASSIGN(t.n_ctx, r.I64());
  VB_ASSIGN(t.n_vocab, r.I64());
  VB_ASSIGN(t.graph_max_tokens, r.I64());
  uint8_t pdl;
  VB_ASSIGN(pdl, r.U8());
  if (pdl > 1) return r.Error("invalid pdl flag");
  VB_ASSIGN(t.seq_ids, r.Buf());
  VB_ASSIGN(t.block_table, r.Buf());
  VB_ASSIGN(t.n_seq, r.I64());
  VB_ASSIGN(t.max_blocks, r.I64());
  VB_ASSIGN(t.block_size, r.I64());
  t.pdl = pdl == 1;
  VB_ASSIGN(n, r.Count(81));
  t.values.resize(n);
  for (uint32_t i = 0; i < n; ++i) VB_ASSIGN(t.values[i], r.Buf());
  VB_ASSIGN(n, r.Count(64));
  for (uint32_t i = 0; i < n; ++i) {
    Launch l;
    int64_t op;
    uint32_t u;
    VB_ASSIGN(u, r.U32());
    op = static_cast<int32_t>(u);
    l.op = static_cast<int32_t>(op);
    VB_ASSIGN(l.t_min, r.I64());
    VB_ASSIGN(l.t_max, r.I64());
    uint8_t runs_in;
    VB_ASSIGN(runs_in, r.U8());
    if (runs_in > static_cast<uint8_t>(RunsIn::kPerOpOnly)) {
      return r.Error(absl::StrCat("launch ", i, ": invalid runs_in ", static_cast<int>(runs_in)));
    }
    l.runs_in = static_cast<RunsIn>(runs_in);
    uint8_t kind;
    VB_ASSIGN(kind, r.U8());
    if (kind > static_cast<uint8_t>(LaunchKind::kFromHost)) {
      return r.Error(absl::StrCat("launch ", i, ": invalid kind ", static_cast<int>(kind)));
    }
    l.kind = static_cast<LaunchKind>(kind);
    VB_ASSIGN(l.name, r.Str());
    VB_ASSIGN(u, r.U32());
    l.kernel = static_cast<int32_t>(u);
    for (TExpr& g : l.grid) VB_ASSIGN(g, r.Expr());
    for (uint32_t& b : l.block) VB_ASSIGN(b, r.U32());
    VB_ASSIGN(l.smem, r.U32());
    uint32_t na;
    VB_ASSIGN(na, r.Count(126));
    for (uint32_t k = 0; k < na; ++k) {
      Arg a;
      uint8_t ak;
      VB_ASSIGN(ak, r.U8());
      if (ak > static_cast<uint8_t>(Arg::Kind::kF32)) {
        return r.Error(absl::StrCat("launch ", i, " arg ", k, ": invalid kind ", static_cast<int>(ak)));
      }
      a.kind = static_cast<Arg::Kind>(ak);
      VB_ASSIGN(a.buf, r.Buf());
      VB_ASSIGN(a.value, r.Expr());
      VB_ASSIGN(a.f, r.F32());
      l.args.push_back(a);
    }
    VB_ASSIGN(l.a, r.Buf());
    VB_ASSIGN(l.b, r.Buf());
    VB_ASSIGN(l.out, r.Buf());
    VB_ASSIGN(l.m, r.Expr());
    VB_ASSIGN(l.n, r.I64());
    VB_ASSIGN(l.k, r.I64());
    VB_ASSIGN(l.lda, r.I64());
    VB_ASSIGN(l.ldb, r.I64());
    VB_ASSIGN(l.ldo, r.I64());
    VB_ASSIGN(l.dst, r.Buf());
    VB_ASSIGN(l.src, r.Buf());
    VB_ASSIGN(l.bytes, r.Expr());
    t.launches.push_back(std::move(l));
  }
  if (!r.AtEnd()) return r.Error("trailing bytes");
  if (absl::Status s = Validate(t, where); !s.ok()) return s;
  return t;
}

absl::Status Validate(const Table& t, const std::string& where) {
  auto err = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
  };
  constexpr int64_t kMaxRegion = int64_t{1} << 46;  // 64 TiB: a sanity bound
  if (t.region_bytes[0] != 0) return err("the null region has a size");
  for (int r = 1; r < kNumRegions; ++r) {
    if (t.region_bytes[r] < 0 || t.region_bytes[r] > kMaxRegion) {
      return err(absl::StrCat(RegionName(static_cast<Region>(r)), " region of ", t.region_bytes[r],
                              " bytes"));
    }
  }
  if (t.tp_ranks < 1 || t.tp_ranks > kMaxTpRanks) return err(absl::StrCat("tp_ranks ", t.tp_ranks));
  if (t.max_tokens < 1 || t.max_tokens > (int64_t{1} << 31)) {
    return err(absl::StrCat("max_tokens ", t.max_tokens));
  }
  if (t.n_ctx < 0 || t.n_vocab < 1 || t.n_vocab > INT32_MAX || t.n_ctx > INT32_MAX) {
    return err(absl::StrCat("n_ctx ", t.n_ctx, " / n_vocab ", t.n_vocab));
  }
  if (t.graph_max_tokens < 0 || t.graph_max_tokens > t.max_tokens) {
    return err(absl::StrCat("graph_max_tokens ", t.graph_max_tokens));
  }
  std::set<std::string> names;
  for (const std::string& k : t.kernels) {
    if (k.empty() || !names.insert(k).second) return err(absl::StrCat("kernel name '", k, "' empty or repeated"));
  }
  // Rules must not decrease with T (so that checking the ends of a range
  // checks all of it) and must divide by a positive number.
  auto expr_ok = [](const TExpr& e) { return e.a >= 0 && e.c > 0 && e.lo <= e.hi; };
  auto check_buf = [&](const BufRef& b, int64_t t_min, int64_t t_max,
                       const std::string& what) -> absl::Status {
    if (b.region == Region::kNone) return absl::OkStatus();
    if (!expr_ok(b.offset) || !expr_ok(b.extent)) return err(absl::StrCat(what, ": invalid rule"));
    const int64_t size = t.region_bytes[static_cast<int>(b.region)];
    for (int64_t T : {t_min, t_max}) {
      const int64_t off = b.offset.Eval(T), ext = b.extent.Eval(T);
      if (off < 0 || ext < 0 || off > size || ext > size - off) {
        return err(absl::StrCat(what, ": ", RegionName(b.region), " bytes [", off, ", +", ext,
                                ") at T=", T, " exceed the region of ", size, " bytes"));
      }
    }
    return absl::OkStatus();
  };
  for (size_t i = 0; i < t.weights.size(); ++i) {
    const WeightSlot& s = t.weights[i];
    const int64_t size = t.region_bytes[static_cast<int>(Region::kWeights)];
    if (s.source.empty() || s.offset < 0 || s.bytes < 0 || s.offset > size || s.bytes > size - s.offset ||
        s.offset % 256 != 0) {
      return err(absl::StrCat("weight ", i, " '", s.source, "' at [", s.offset, ", +", s.bytes,
                              ") outside the weights region of ", size, " bytes or misaligned"));
    }
    // A shard: one offset per rank, whole rows, rows at a stride of at
    // least a row (the tensor's bounds are the loader's to check).
    if (!s.rank_offsets.empty() || s.row_bytes != 0 || s.row_stride != 0) {
      bool ok = static_cast<int64_t>(s.rank_offsets.size()) == t.tp_ranks && t.tp_ranks > 1 &&
                s.row_bytes > 0 && s.bytes % s.row_bytes == 0 &&
                (s.row_stride == 0 || s.row_stride >= s.row_bytes) && s.row_stride <= (int64_t{1} << 46);
      for (int64_t o : s.rank_offsets) ok = ok && o >= 0 && o <= (int64_t{1} << 46);
      if (!ok) {
        return err(absl::StrCat("weight ", i, " '", s.source, "': a shard needs ", t.tp_ranks,
                                " rank offsets, whole rows of row_bytes ", s.row_bytes, " and a row stride ",
                                s.row_stride, " of at least a row"));
      }
    }
  }
  const bool host_ops = t.has_host_ops();
  for (const auto& [b, name] : {std::pair{&t.tokens, "tokens"}, std::pair{&t.positions, "positions"},
                                std::pair{&t.logits, "logits"}}) {
    // A graph may read no positions (then the runtime copies none); in a
    // split plan the host may read the inputs and make the logits.
    if ((b == &t.positions || host_ops) && b->region == Region::kNone) continue;
    if (b->region != Region::kArena) return err(absl::StrCat(name, " must be an arena buffer"));
    if (absl::Status s = check_buf(*b, 1, t.max_tokens, name); !s.ok()) return s;
  }
  // Paged I/O: both buffers or neither, with the table's shape.
  const bool paged = t.seq_ids.region != Region::kNone || t.block_table.region != Region::kNone ||
                     t.n_seq != 0 || t.max_blocks != 0 || t.block_size != 0;
  if (paged) {
    if (t.seq_ids.region != Region::kArena || t.block_table.region != Region::kArena) {
      return err("seq_ids and block_table must both be arena buffers");
    }
    if (t.n_seq < 1 || t.n_seq > 65536 || t.max_blocks < 1 || t.max_blocks > (int64_t{1} << 24) ||
        t.block_size < 1 || t.block_size > 65536 || t.n_ctx < t.block_size ||
        t.n_seq * t.max_blocks > (int64_t{1} << 28)) {
      return err(absl::StrCat("paged shape n_seq ", t.n_seq, ", max_blocks ", t.max_blocks,
                              ", block_size ", t.block_size, ", n_ctx ", t.n_ctx));
    }
    if (absl::Status s = check_buf(t.seq_ids, 1, t.max_tokens, "seq_ids"); !s.ok()) return s;
    if (absl::Status s = check_buf(t.block_table, 1, t.max_tokens, "block_table"); !s.ok()) return s;
    for (int64_t T : {int64_t{1}, t.max_tokens}) {
      if (t.seq_ids.extent.Eval(T) < 4 * T || t.block_table.extent.Eval(T) < 4 * t.n_seq * t.max_blocks) {
        return err(absl::StrCat("seq_ids/block_table buffers too small at T=", T));
      }
    }
  }
  // The sample op's I/O: both or neither; 32 bytes of parameters in, one i32
  // out, each fixed (no T in it).
  if ((t.sampling.region == Region::kNone) != (t.token.region == Region::kNone)) {
    return err("sampling and token: a plan that samples has both buffers");
  }
  for (const auto& [b, name, bytes] : {std::tuple{&t.sampling, "sampling", int64_t{32}},
                                       std::tuple{&t.token, "token", int64_t{4}}}) {
    if (b->region == Region::kNone) continue;
    if (b->region != Region::kArena) return err(absl::StrCat(name, " must be an arena buffer"));
    if (b->offset.a != 0 || b->extent.a != 0 || b->extent.Eval(1) < bytes) {
      return err(absl::StrCat(name, ": a fixed buffer of at least ", bytes, " bytes"));
    }
    if (absl::Status s = check_buf(*b, 1, t.max_tokens, name); !s.ok()) return s;
  }
  if (!expr_ok(t.logits_elems)) return err("logits: invalid rule");
  for (int64_t T : {int64_t{1}, t.max_tokens}) {
    // elems * 4 could overflow for a crafted rule: compare with extent / 4.
    if (t.logits_elems.Eval(T) < 0 ||
        (t.logits.region != Region::kNone && t.logits_elems.Eval(T) > t.logits.extent.Eval(T) / 4)) {
      return err(absl::StrCat("logits: ", t.logits_elems.Eval(T), " floats at T=", T,
                              " exceed the logits buffer"));
    }
    if ((t.tokens.region != Region::kNone && t.tokens.extent.Eval(T) < 4 * T) ||
        (t.positions.region != Region::kNone && t.positions.extent.Eval(T) < 4 * T)) {
      return err(absl::StrCat("tokens/positions buffers hold fewer than T=", T, " entries"));
    }
  }
  for (size_t v = 0; v < t.values.size(); ++v) {
    if (absl::Status s = check_buf(t.values[v], 1, t.max_tokens, absl::StrCat("value ", v)); !s.ok()) {
      return s;
    }
  }
  for (size_t i = 0; i < t.launches.size(); ++i) {
    const Launch& l = t.launches[i];
    const std::string at = absl::StrCat("launch ", i, " (", l.name, ", op ", l.op, ")");
    if (l.t_min < 1 || l.t_max < l.t_min || l.t_max > t.max_tokens) {
      return err(absl::StrCat(at, ": T range ", l.t_min, "..", l.t_max));
    }
    switch (l.kind) {
      case LaunchKind::kKernel: {
        if (l.kernel < 0 || l.kernel >= static_cast<int32_t>(t.kernels.size()) ||
            t.kernels[l.kernel] != l.name) {
          return err(absl::StrCat(at, ": kernel index ", l.kernel, " does not name it"));
        }
        uint64_t threads = 1;
        for (int d = 0; d < 3; ++d) {
          if (!expr_ok(l.grid[d])) return err(absl::StrCat(at, ": invalid grid rule"));
          for (int64_t T : {l.t_min, l.t_max}) {
            const int64_t g = l.grid[d].Eval(T);
            if (g < 1 || g > kMaxGrid[d]) return err(absl::StrCat(at, ": grid ", g, " at T=", T));
          }
          if (l.block[d] < 1 || l.block[d] > 1024) return err(absl::StrCat(at, ": block ", l.block[d]));
          threads *= l.block[d];
        }
        if (threads > 1024) return err(absl::StrCat(at, ": ", threads, " threads per block"));
        if (l.smem > 227 * 1024) return err(absl::StrCat(at, ": ", l.smem, " bytes of shared memory"));
        for (size_t k = 0; k < l.args.size(); ++k) {
          const Arg& a = l.args[k];
          const std::string aw = absl::StrCat(at, " arg ", k);
          if (a.kind == Arg::Kind::kPtr) {
            if (absl::Status s = check_buf(a.buf, l.t_min, l.t_max, aw); !s.ok()) return s;
          } else if (a.kind == Arg::Kind::kI32 || a.kind == Arg::Kind::kI64) {
            if (a.value.c <= 0 || a.value.lo > a.value.hi) return err(absl::StrCat(aw, ": invalid rule"));
            if (a.kind == Arg::Kind::kI32) {
              for (int64_t T : {l.t_min, l.t_max}) {
                const int64_t v = a.value.Eval(T);
                if (v < INT32_MIN || v > INT32_MAX) return err(absl::StrCat(aw, ": ", v, " overflows i32"));
              }
            }
          }
        }
        break;
      }
      case LaunchKind::kGemm: {
        // Leading dimensions bounded too: the extents below multiply them.
        if (l.n < 1 || l.k < 1 || l.lda < l.k || l.ldb < l.k || l.ldo < l.n || l.n > INT32_MAX ||
            l.k > INT32_MAX || l.lda > INT32_MAX || l.ldb > INT32_MAX || l.ldo > INT32_MAX || !expr_ok(l.m)) {
          return err(absl::StrCat(at, ": GEMM shape"));
        }
        for (int64_t T : {l.t_min, l.t_max}) {
          const int64_t m = l.m.Eval(T);
          if (m < 1 || m > INT32_MAX) return err(absl::StrCat(at, ": GEMM rows ", m, " at T=", T));
          // The operands the GEMM touches, against their buffers' extents.
          if (l.a.extent.Eval(T) < ((m - 1) * l.lda + l.k) * 2 ||
              l.b.extent.Eval(T) < ((l.n - 1) * l.ldb + l.k) * 2 ||
              l.out.extent.Eval(T) < ((m - 1) * l.ldo + l.n) * 4) {
            return err(absl::StrCat(at, ": GEMM operands exceed their buffers at T=", T));
          }
        }
        for (const auto& [b, nm] : {std::pair{&l.a, "a"}, std::pair{&l.b, "b"}, std::pair{&l.out, "out"}}) {
          if (b->region == Region::kNone) return err(absl::StrCat(at, ": GEMM ", nm, " is null"));
          if (absl::Status s = check_buf(*b, l.t_min, l.t_max, absl::StrCat(at, " ", nm)); !s.ok()) return s;
        }
        break;
      }
      case LaunchKind::kCopy: {
        if (!expr_ok(l.bytes)) return err(absl::StrCat(at, ": invalid rule"));
        for (int64_t T : {l.t_min, l.t_max}) {
          if (l.bytes.Eval(T) < 0 || l.bytes.Eval(T) > l.dst.extent.Eval(T) ||
              l.bytes.Eval(T) > l.src.extent.Eval(T)) {
            return err(absl::StrCat(at, ": copies more than its buffers hold at T=", T));
          }
        }
        if (l.dst.region == Region::kNone || l.src.region == Region::kNone) {
          return err(absl::StrCat(at, ": copy from or to null"));
        }
        if (absl::Status s = check_buf(l.dst, l.t_min, l.t_max, at + " dst"); !s.ok()) return s;
        if (absl::Status s = check_buf(l.src, l.t_min, l.t_max, at + " src"); !s.ok()) return s;
        break;
      }
      case LaunchKind::kHost:
      case LaunchKind::kToHost:
      case LaunchKind::kFromHost: {
        // Which op, and that the op is the host's or a copy, the runtime
        // checks against the graph (the table alone has no ops).
        if (l.op < 0) return err(absl::StrCat(at, ": no op"));
        if (t.tp_ranks > 1) return err(absl::StrCat(at, ": host work in a tensor-parallel plan"));
        if (l.runs_in != RunsIn::kAlways) return err(absl::StrCat(at, ": host work inside a persistent kernel's step"));
        if (l.kind == LaunchKind::kHost) break;
        const BufRef& dev = l.kind == LaunchKind::kToHost ? l.src : l.dst;
        const BufRef& host = l.kind == LaunchKind::kToHost ? l.dst : l.src;
        if (dev.region != Region::kArena || host.region != Region::kNone || !expr_ok(l.bytes)) {
          return err(absl::StrCat(at, ": a transfer between the host and an arena buffer"));
        }
        if (absl::Status s = check_buf(dev, l.t_min, l.t_max, at + " device side"); !s.ok()) return s;
        for (int64_t T : {l.t_min, l.t_max}) {
          if (l.bytes.Eval(T) < 0 || l.bytes.Eval(T) > dev.extent.Eval(T)) {
            return err(absl::StrCat(at, ": transfers more than its buffer holds at T=", T));
          }
        }
        break;
      }
      case LaunchKind::kAllReduce:
      case LaunchKind::kAllGather: {
        if (t.tp_ranks < 2) return err(absl::StrCat(at, ": a collective in a plan of one rank"));
        if (l.dst.region != Region::kArena || l.src.region != Region::kArena) {
          return err(absl::StrCat(at, ": a collective's buffers are arena buffers"));
        }
        if (absl::Status s = check_buf(l.dst, l.t_min, l.t_max, at + " dst"); !s.ok()) return s;
        if (absl::Status s = check_buf(l.src, l.t_min, l.t_max, at + " src"); !s.ok()) return s;
        for (int64_t T : {l.t_min, l.t_max}) {
          if (l.kind == LaunchKind::kAllReduce) {
            if (!expr_ok(l.bytes)) return err(absl::StrCat(at, ": invalid rule"));
            const int64_t b = l.bytes.Eval(T);
            if (b < 0 || b % 4 != 0 || b > l.dst.extent.Eval(T) || b > l.src.extent.Eval(T)) {
              return err(absl::StrCat(at, ": all_reduce of ", b, " bytes exceeds its buffers at T=", T));
            }
          } else {
            if (!expr_ok(l.m) || l.n < 1 || l.n > INT32_MAX) return err(absl::StrCat(at, ": all_gather shape"));
            const int64_t m = l.m.Eval(T);
            // m and n below 2^31 each: their product times 4 and the ranks
            // would overflow int64, so it is compared in 128 bits.
            const __int128 bytes = static_cast<__int128>(m) * l.n * 4;
            if (m < 0 || m > INT32_MAX || bytes > l.src.extent.Eval(T) ||
                bytes * t.tp_ranks > l.dst.extent.Eval(T)) {
              return err(absl::StrCat(at, ": all_gather of ", m, " x ", l.n, " exceeds its buffers at T=", T));
            }
            if (l.a.region != Region::kScratch) return err(absl::StrCat(at, ": all_gather needs scratch"));
            if (absl::Status s = check_buf(l.a, l.t_min, l.t_max, at + " scratch"); !s.ok()) return s;
            if (bytes * t.tp_ranks > l.a.extent.Eval(T)) {
              return err(absl::StrCat(at, ": all_gather scratch too small at T=", T));
            }
          }
        }
        // The add kernel and its grid, for ranks that share one GPU.
        if (l.kind == LaunchKind::kAllReduce) {
          if (l.kernel < 0 || l.kernel >= static_cast<int32_t>(t.kernels.size()) ||
              t.kernels[l.kernel] != "vb_add") {
            return err(absl::StrCat(at, ": kernel index ", l.kernel, " does not name vb_add"));
          }
          if (!expr_ok(l.grid[0])) return err(absl::StrCat(at, ": invalid grid rule"));
          for (int64_t T : {l.t_min, l.t_max}) {
            const int64_t g = l.grid[0].Eval(T);
            if (g < 1 || g > kMaxGrid[0]) return err(absl::StrCat(at, ": grid ", g, " at T=", T));
          }
          if (l.block[0] < 1 || l.block[0] > 1024 || l.block[1] != 1 || l.block[2] != 1) {
            return err(absl::StrCat(at, ": block ", l.block[0]));
          }
        }
        break;
      }
    }
  }
  return absl::OkStatus();
}

std::string Describe(const Table& t) {
  std::string out = absl::StrFormat(
      "dispatch: %d launches (%d kernels), max_tokens %d, arena %d B, weights %d B, kv %d B, "
      "scratch %d B, state %d B; CUDA graph for T <= %d%s\n",
      t.launches.size(), t.kernels.size(), t.max_tokens, t.region_bytes[1], t.region_bytes[2],
      t.region_bytes[3], t.region_bytes[4], t.region_bytes[5], t.graph_max_tokens,
      t.pdl ? ", programmatic dependent launch" : "");
  if (t.tp_ranks > 1) absl::StrAppend(&out, "  tensor parallel: ", t.tp_ranks, " ranks\n");
  if (t.seq_ids.region != Region::kNone) {
    absl::StrAppend(&out, "  paged: seq_ids ", BufText(t.seq_ids), ", block_table ", BufText(t.block_table),
                    " (", t.n_seq, " x ", t.max_blocks, " blocks of ", t.block_size, ")\n");
  }
  absl::StrAppend(&out, "  in: tokens ", BufText(t.tokens), ", positions ", BufText(t.positions),
                  "; out: logits ", BufText(t.logits), " (", ExprText(t.logits_elems), " floats)");
  if (t.token.region != Region::kNone) {
    absl::StrAppend(&out, "; sampling: params ", BufText(t.sampling), " in, token ", BufText(t.token), " out");
  }
  out += "\n";
  for (size_t i = 0; i < t.launches.size(); ++i) {
    const Launch& l = t.launches[i];
    std::string range = l.t_min == l.t_max ? absl::StrCat("T=", l.t_min)
                                           : absl::StrCat("T=", l.t_min, "..", l.t_max);
    absl::StrAppend(&out, "  #", i, " op ", l.op, " ", range, " ");
    if (l.runs_in == RunsIn::kScheduledOnly) out += "[scheduled] ";
    if (l.runs_in == RunsIn::kPerOpOnly) out += "[per-op only] ";
    switch (l.kind) {
      case LaunchKind::kKernel: {
        absl::StrAppend(&out, l.name, " grid(", ExprText(l.grid[0]), ", ", ExprText(l.grid[1]), ", ",
                        ExprText(l.grid[2]), ") block(", l.block[0], ", ", l.block[1], ", ", l.block[2],
                        ")");
        if (l.smem) absl::StrAppend(&out, " smem ", l.smem);
        out += " (";
        for (size_t k = 0; k < l.args.size(); ++k) {
          const Arg& a = l.args[k];
          if (k) out += ", ";
          switch (a.kind) {
            case Arg::Kind::kPtr: out += BufText(a.buf); break;
            case Arg::Kind::kI32: absl::StrAppend(&out, "i32 ", ExprText(a.value)); break;
            case Arg::Kind::kI64: absl::StrAppend(&out, "i64 ", ExprText(a.value)); break;
            case Arg::Kind::kF32: absl::StrAppend(&out, "f32 ", a.f); break;
          }
        }
        out += ")";
        break;
      }
      case LaunchKind::kGemm:
        absl::StrAppend(&out, "cublaslt out ", BufText(l.out), " [", ExprText(l.m), " x ", l.n,
                        "] = a ", BufText(l.a), " . b ", BufText(l.b), "^T, K ", l.k);
        break;
      case LaunchKind::kCopy:
        absl::StrAppend(&out, "memcpy ", BufText(l.dst), " <- ", BufText(l.src), ", ",
                        ExprText(l.bytes), " B");
        break;
      case LaunchKind::kAllReduce:
        absl::StrAppend(&out, "all_reduce ", BufText(l.dst), " <- sum over ", t.tp_ranks, " ranks of ",
                        BufText(l.src), ", ", ExprText(l.bytes), " B");
        break;
      case LaunchKind::kAllGather:
        absl::StrAppend(&out, "all_gather ", BufText(l.dst), " <- ", t.tp_ranks, " ranks' ", BufText(l.src),
                        " [", ExprText(l.m), " x ", l.n, "] via ", BufText(l.a));
        break;
      case LaunchKind::kHost:
        out += "host (the CPU backend runs the op)";
        break;
      case LaunchKind::kToHost:
        absl::StrAppend(&out, "to_host <- ", BufText(l.src), ", ", ExprText(l.bytes), " B");
        break;
      case LaunchKind::kFromHost:
        absl::StrAppend(&out, "from_host ", BufText(l.dst), ", ", ExprText(l.bytes), " B");
        break;
    }
    out += "\n";
  }
  return out;
}

}  // namespace vibrant::dispatch
