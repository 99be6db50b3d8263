#include "ir/serialize.h"

#include <bit>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "ir/verifier.h"

namespace vibrant::ir {
namespace {

constexpr int kMaxDepth = 8;     // fused bodies nest at most this deep
constexpr uint32_t kMaxRank = 16;

enum AttrTag : uint8_t { kTagInt = 0, kTagFloat = 1, kTagString = 2, kTagIntList = 3 };

// Minimum encoded sizes, to bound counts by the bytes left before allocating.
constexpr size_t kMinValueBytes = 4 + 4 + 1 + 1 + 4 + 4 + 8 + 4 + 8;  // name, dtype, storage, device, rank, source, source offset, alias, arena offset
constexpr size_t kMinMemoryBytes = 1 + 8 + 8;  // device, arena bytes, KV bytes
constexpr size_t kMinOpBytes = 1 + 1 + 4 + 4 + 4 + 1 + 4;     // kind, device, n_in, n_out, n_attrs, has_body, n_kernels
constexpr size_t kMinKernelBytes = 8 + 8 + 4 + 4 + 4;        // t_min, t_max, name, n_params, n_launches
constexpr size_t kMinAttrBytes = 4 + 1 + 4;                   // key, tag, smallest payload

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) U8(static_cast<uint8_t>(v >> (8 * i)));
  }
  void U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) U8(static_cast<uint8_t>(v >> (8 * i)));
  }
  void I32(int32_t v) { U32(static_cast<uint32_t>(v)); }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void F64(double v) { U64(std::bit_cast<uint64_t>(v)); }
  void Str(const std::string& s) {
    U32(static_cast<uint32_t>(s.size()));
    out_ += s;
  }
  void Count(size_t n) { U32(static_cast<uint32_t>(n)); }

  void Attrs(const ir::Attrs& attrs) {
    Count(attrs.size());
    for (const auto& [key, value] : attrs) {
      Str(key);
      if (const int64_t* i = std::get_if<int64_t>(&value)) {
        U8(kTagInt);
        I64(*i);
      } else if (const double* d = std::get_if<double>(&value)) {
        U8(kTagFloat);
        F64(*d);
      } else if (const std::string* s = std::get_if<std::string>(&value)) {
        U8(kTagString);
        Str(*s);
      } else {
        const auto& list = std::get<std::vector<int64_t>>(value);
        U8(kTagIntList);
        Count(list.size());
        for (int64_t x : list) I64(x);
      }
    }
  }

  void Graph(const ir::Graph& g) {
    I64(g.max_tokens);
    Attrs(g.meta);
    Count(g.values().size());
    for (const Value& v : g.values()) {
      Str(v.name);
      U32(static_cast<uint32_t>(v.dtype));
      U8(static_cast<uint8_t>(v.storage));
      U8(static_cast<uint8_t>(v.device));
      Count(v.shape.size());
      for (int64_t d : v.shape) I64(d);
      Str(v.source);
      I64(v.source_offset);
      Count(v.rank_offsets.size());
      for (int64_t o : v.rank_offsets) I64(o);
      I64(v.source_row_stride);
      I32(v.alias_of);
      I64(v.arena_offset);
    }
    Count(g.ops().size());
    for (const Op& op : g.ops()) {
      U8(static_cast<uint8_t>(op.kind));
      U8(static_cast<uint8_t>(op.device));
      Count(op.inputs.size());
      for (ValueId v : op.inputs) I32(v);
      Count(op.outputs.size());
      for (ValueId v : op.outputs) I32(v);
      Attrs(op.attrs);
      U8(op.body != nullptr ? 1 : 0);
      if (op.body != nullptr) Graph(*op.body);
      Count(op.kernels.size());
      for (const ir::KernelVariant& k : op.kernels) {
        I64(k.t_min);
        I64(k.t_max);
        Str(k.name);
        Attrs(k.params);
        Count(k.launches.size());
        for (const std::string& l : k.launches) Str(l);
      }
    }
    Count(g.outputs().size());
    for (ValueId v : g.outputs()) I32(v);
    Count(g.memory.size());
    for (const auto& [device, mem] : g.memory) {
      U8(static_cast<uint8_t>(device));
      I64(mem.arena_bytes);
      I64(mem.kv_bytes);
    }
  }

  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(absl::Span<const uint8_t> bytes) : p_(bytes.data()), size_(bytes.size()) {}

  size_t offset() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  // `what` names the field for errors ("op 12 input 3").
  absl::Status Need(size_t n, const std::string& what) {
    if (n > left()) {
      return Error(what, absl::StrCat("truncated: needs ", n, " bytes, ", left(), " left"));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<uint8_t> U8(const std::string& what) {
    if (auto s = Need(1, what); !s.ok()) return s;
    return p_[pos_++];
  }
  absl::StatusOr<uint32_t> U32(const std::string& what) {
    if (auto s = Need(4, what); !s.ok()) return s;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p_[pos_ + i]) << (8 * i);
    pos_ += 4;
    return v;
  }
  absl::StatusOr<uint64_t> U64(const std::string& what) {
    if (auto s = Need(8, what); !s.ok()) return s;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p_[pos_ + i]) << (8 * i);
    pos_ += 8;
    return v;
  }
  absl::StatusOr<int64_t> I64(const std::string& what) {
    auto v = U64(what);
    if (!v.ok()) return v.status();
    return static_cast<int64_t>(*v);
  }
  absl::StatusOr<std::string> Str(const std::string& what) {
    auto n = U32(what);
    if (!n.ok()) return n.status();
    if (*n > left()) {
      pos_ -= 4;
      return Error(what, absl::StrCat("string length ", *n, " exceeds the ", left() - 4, " bytes left"));
    }
    std::string s(reinterpret_cast<const char*>(p_ + pos_), *n);
    pos_ += *n;
    return s;
  }
  // A count of items of at least `min_bytes` each.
  absl::StatusOr<uint32_t> Count(const std::string& what, size_t min_bytes) {
    auto n = U32(what);
    if (!n.ok()) return n.status();
    if (static_cast<uint64_t>(*n) * min_bytes > left()) {
      pos_ -= 4;
      return Error(what, absl::StrCat("count ", *n, " needs at least ", static_cast<uint64_t>(*n) * min_bytes,
                                      " bytes, ", left() - 4, " left"));
    }
    return *n;
  }
  // A value id in [lo, n_values).
  absl::StatusOr<ValueId> Id(const std::string& what, int64_t n_values, int32_t lo = 0) {
    const size_t at = pos_;
    auto v = U32(what);
    if (!v.ok()) return v.status();
    const int32_t id = static_cast<int32_t>(*v);
    if (id < lo || id >= n_values) {
      pos_ = at;
      return Error(what, absl::StrCat("value id ", id, " out of range (", n_values, " values)"));
    }
    return id;
  }

  absl::Status Error(const std::string& what, const std::string& problem) const {
    return absl::InvalidArgumentError(
        absl::StrCat("graph section: ", what, " at offset ", pos_, ": ", problem));
  }

 private:
  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
};

class Decoder {
 public:
  explicit Decoder(absl::Span<const uint8_t> bytes) : r_(bytes) {}

  absl::StatusOr<Graph> Run() {
    if (auto s = r_.Need(8, "header"); !s.ok()) return s;
    char magic[4];
    for (char& c : magic) c = static_cast<char>(*r_.U8("header"));
    if (std::memcmp(magic, kGraphMagic, 4) != 0) {
      return absl::InvalidArgumentError("graph section: bad magic (expected \"VIRG\")");
    }
    const uint32_t version = *r_.U32("header");
    // Version 4 is version 5 without the tensor-parallel fields of a value.
    if (version != kGraphFormatVersion && version != 4) {
      return absl::InvalidArgumentError(absl::StrCat("graph section: unsupported version ", version,
                                                     " (this build reads 4 and ", kGraphFormatVersion, ")"));
    }
    version_ = version;
    Graph g;
    if (auto s = DecodeGraph(g, "", 0); !s.ok()) return s;
    if (r_.left() != 0) return r_.Error("end", absl::StrCat(r_.left(), " trailing bytes"));
    if (auto s = Verify(g); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("graph section: ", s.message()));
    }
    return g;
  }

 private:
  uint32_t version_ = kGraphFormatVersion;

  absl::Status DecodeAttrs(Attrs& attrs, const std::string& what) {
    auto n = r_.Count(absl::StrCat(what, " attribute count"), kMinAttrBytes);
    if (!n.ok()) return n.status();
    for (uint32_t i = 0; i < *n; ++i) {
      const std::string at = absl::StrCat(what, " attribute ", i);
      auto key = r_.Str(at);
      if (!key.ok()) return key.status();
      auto tag = r_.U8(at);
      if (!tag.ok()) return tag.status();
      AttrValue value;
      switch (*tag) {
        case kTagInt: {
          auto v = r_.I64(at);
          if (!v.ok()) return v.status();
          value = *v;
          break;
        }
        case kTagFloat: {
          auto v = r_.U64(at);
          if (!v.ok()) return v.status();
          value = std::bit_cast<double>(*v);
          break;
        }
        case kTagString: {
          auto v = r_.Str(at);
          if (!v.ok()) return v.status();
          value = *v;
          break;
        }
        case kTagIntList: {
          auto count = r_.Count(at, 8);
          if (!count.ok()) return count.status();
          std::vector<int64_t> list(*count);
          for (int64_t& x : list) x = *r_.I64(at);  // bytes checked by Count
          value = std::move(list);
          break;
        }
        default:
          return r_.Error(at, absl::StrCat("unknown attribute tag ", *tag));
      }
      // Keys are written in increasing order (std::map's); requiring that
      // keeps the encoding canonical: one graph, one byte string.
      if (!attrs.empty() && !(attrs.rbegin()->first < *key)) {
        return r_.Error(at, absl::StrCat("attribute '", *key, "' out of order or repeated"));
      }
      attrs.emplace_hint(attrs.end(), *key, std::move(value));
    }
    return absl::OkStatus();
  }

  absl::Status DecodeGraph(Graph& g, const std::string& path, int depth) {
    auto mt = r_.I64(absl::StrCat(path, "max_tokens"));
    if (!mt.ok()) return mt.status();
    g.max_tokens = *mt;
    if (auto s = DecodeAttrs(g.meta, absl::StrCat(path, "meta")); !s.ok()) return s;

    auto nv = r_.Count(absl::StrCat(path, "value count"), kMinValueBytes);
    if (!nv.ok()) return nv.status();
    if (*nv > static_cast<uint32_t>(INT32_MAX)) return r_.Error(path + "value count", "too many values");
    const int64_t n_values = *nv;
    for (int64_t i = 0; i < n_values; ++i) {
      const std::string at = absl::StrCat(path, "value ", i);
      Value v;
      auto name = r_.Str(at);
      if (!name.ok()) return name.status();
      v.name = *std::move(name);
      auto dtype = r_.U32(at);
      if (!dtype.ok()) return dtype.status();
      auto t = DTypeFromId(*dtype);
      if (!t.ok()) return r_.Error(at, absl::StrCat("dtype: ", t.status().message()));
      v.dtype = *t;
      auto storage = r_.U8(at);
      if (!storage.ok()) return storage.status();
      if (*storage > static_cast<uint8_t>(Storage::kOutput)) {
        return r_.Error(at, absl::StrCat("invalid storage ", *storage));
      }
      v.storage = static_cast<Storage>(*storage);
      auto device = r_.U8(at);
      if (!device.ok()) return device.status();
      if (*device > static_cast<uint8_t>(Device::kCuda)) return r_.Error(at, absl::StrCat("invalid device ", *device));
      v.device = static_cast<Device>(*device);
      auto rank = r_.Count(at, 8);
      if (!rank.ok()) return rank.status();
      if (*rank > kMaxRank) return r_.Error(at, absl::StrCat("rank ", *rank, " exceeds ", kMaxRank));
      v.shape.resize(*rank);
      for (int64_t& d : v.shape) d = *r_.I64(at);  // bytes checked by Count
      auto source = r_.Str(at);
      if (!source.ok()) return source.status();
      v.source = *std::move(source);
      auto source_offset = r_.I64(absl::StrCat(at, " source offset"));
      if (!source_offset.ok()) return source_offset.status();
      v.source_offset = *source_offset;
      if (version_ >= 5) {
        auto ranks = r_.Count(absl::StrCat(at, " rank offsets"), 8);
        if (!ranks.ok()) return ranks.status();
        if (*ranks > static_cast<uint64_t>(kMaxTpRanks)) {
          return r_.Error(at, absl::StrCat(*ranks, " rank offsets exceed ", kMaxTpRanks));
        }
        v.rank_offsets.resize(*ranks);
        for (int64_t& o : v.rank_offsets) o = *r_.I64(at);  // bytes checked by Count
        auto row_stride = r_.I64(absl::StrCat(at, " row stride"));
        if (!row_stride.ok()) return row_stride.status();
        v.source_row_stride = *row_stride;
      }
      auto alias = r_.Id(absl::StrCat(at, " alias"), n_values, -1);
      if (!alias.ok()) return alias.status();
      v.alias_of = *alias;
      auto offset = r_.I64(absl::StrCat(at, " arena offset"));
      if (!offset.ok()) return offset.status();
      if (*offset < -1) return r_.Error(at, absl::StrCat("invalid arena offset ", *offset));
      v.arena_offset = *offset;
      g.AddValue(std::move(v));
    }

    auto nops = r_.Count(absl::StrCat(path, "op count"), kMinOpBytes);
    if (!nops.ok()) return nops.status();
    for (uint32_t o = 0; o < *nops; ++o) {
      const std::string at = absl::StrCat(path, "op ", o);
      Op op;
      auto kind = r_.U8(at);
      if (!kind.ok()) return kind.status();
      if (!IsValidOpKind(*kind)) return r_.Error(at, absl::StrCat("invalid op kind ", *kind));
      op.kind = static_cast<OpKind>(*kind);
      auto device = r_.U8(at);
      if (!device.ok()) return device.status();
      if (*device > static_cast<uint8_t>(Device::kCuda)) return r_.Error(at, absl::StrCat("invalid device ", *device));
      op.device = static_cast<Device>(*device);
      for (auto* list : {&op.inputs, &op.outputs}) {
        const char* role = list == &op.inputs ? " input" : " output";
        auto n = r_.Count(absl::StrCat(at, role, " count"), 4);
        if (!n.ok()) return n.status();
        for (uint32_t k = 0; k < *n; ++k) {
          auto id = r_.Id(absl::StrCat(at, role, " ", k), n_values);
          if (!id.ok()) return id.status();
          list->push_back(*id);
        }
      }
      if (auto s = DecodeAttrs(op.attrs, at); !s.ok()) return s;
      auto has_body = r_.U8(at);
      if (!has_body.ok()) return has_body.status();
      if (*has_body > 1) return r_.Error(at, absl::StrCat("invalid body flag ", *has_body));
      if (*has_body == 1) {
        if (depth + 1 >= kMaxDepth) return r_.Error(at, "fused bodies nested too deeply");
        auto body = std::make_shared<Graph>();
        if (auto s = DecodeGraph(*body, absl::StrCat(at, " body: "), depth + 1); !s.ok()) return s;
        op.body = std::move(body);
      }
      auto nk = r_.Count(absl::StrCat(at, " kernel count"), kMinKernelBytes);
      if (!nk.ok()) return nk.status();
      for (uint32_t k = 0; k < *nk; ++k) {
        const std::string kat = absl::StrCat(at, " kernel variant ", k);
        ir::KernelVariant kv;
        auto t_min = r_.I64(kat);
        if (!t_min.ok()) return t_min.status();
        auto t_max = r_.I64(kat);
        if (!t_max.ok()) return t_max.status();
        kv.t_min = *t_min;
        kv.t_max = *t_max;
        auto name = r_.Str(kat);
        if (!name.ok()) return name.status();
        kv.name = *std::move(name);
        if (auto s = DecodeAttrs(kv.params, kat); !s.ok()) return s;
        auto nl = r_.Count(absl::StrCat(kat, " launch count"), 4);
        if (!nl.ok()) return nl.status();
        for (uint32_t l = 0; l < *nl; ++l) {
          auto launch = r_.Str(kat);
          if (!launch.ok()) return launch.status();
          kv.launches.push_back(*std::move(launch));
        }
        op.kernels.push_back(std::move(kv));
      }
      g.AddRawOp(std::move(op));
    }

    auto nout = r_.Count(absl::StrCat(path, "output count"), 4);
    if (!nout.ok()) return nout.status();
    for (uint32_t k = 0; k < *nout; ++k) {
      auto id = r_.Id(absl::StrCat(path, "output ", k), n_values);
      if (!id.ok()) return id.status();
      g.mutable_outputs().push_back(*id);
    }
    auto nmem = r_.Count(absl::StrCat(path, "memory plan count"), kMinMemoryBytes);
    if (!nmem.ok()) return nmem.status();
    for (uint32_t k = 0; k < *nmem; ++k) {
      const std::string at = absl::StrCat(path, "memory plan ", k);
      const uint8_t device = *r_.U8(at);  // bytes checked by Count
      if (device > static_cast<uint8_t>(Device::kCuda)) {
        return r_.Error(at, absl::StrCat("invalid device ", device));
      }
      // Devices in increasing order (std::map's): canonical, no repeats.
      if (!g.memory.empty() && static_cast<uint8_t>(g.memory.rbegin()->first) >= device) {
        return r_.Error(at, absl::StrCat("device ", device, " out of order or repeated"));
      }
      DeviceMemory mem;
      mem.arena_bytes = *r_.I64(at);
      mem.kv_bytes = *r_.I64(at);
      if (mem.arena_bytes < 0 || mem.kv_bytes < 0) return r_.Error(at, "negative byte count");
      g.memory.emplace(static_cast<Device>(device), mem);
    }
    g.Reindex();
    return absl::OkStatus();
  }

  Reader r_;
};

}  // namespace

std::string SerializeGraph(const Graph& g) {
  Writer w;
  for (char c : kGraphMagic) w.U8(static_cast<uint8_t>(c));
  w.U32(kGraphFormatVersion);
  w.Graph(g);
  return w.Take();
}

absl::StatusOr<Graph> DeserializeGraph(absl::Span<const uint8_t> bytes) { return Decoder(bytes).Run(); }

}  // namespace vibrant::ir
