#include "frontends/gguf/gguf_writer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vibrant {
namespace {

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr int kMaxArrayDepth = 8;  // the reader's limit
constexpr char kAlignmentKey[] = "general.alignment";

template <typename T>
void Put(std::string* out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));  // little-endian host assumed
  out->append(buf, sizeof(T));
}

void PutString(std::string* out, std::string_view s) {
  Put<uint64_t>(out, s.size());
  out->append(s.data(), s.size());
}

absl::Status Bad(const std::string& what, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("GgufWriter: ", what, ": ", problem));
}

// Appends the encoding of `v` (declared type `t`) to `out`.
absl::Status EncodeValue(const GgufValue& v, GgufType t, int depth, const std::string& what,
                         std::string* out) {
  if (v.type() != t) {
    return Bad(what, absl::StrCat("element of type ", AV(GgufTypeName(v.type())),
                                  " in an array of ", AV(GgufTypeName(t))));
  }
  auto unsigned_in_range = [&](uint64_t max) -> absl::StatusOr<uint64_t> {
    absl::StatusOr<uint64_t> u = v.AsUint();
    if (!u.ok()) return Bad(what, u.status().message());
    if (*u > max) {
      return Bad(what, absl::StrCat("value ", *u, " does not fit ", AV(GgufTypeName(t))));
    }
    return *u;
  };
  auto signed_in_range = [&](int64_t min, int64_t max) -> absl::StatusOr<int64_t> {
    absl::StatusOr<int64_t> i = v.AsInt();
    if (!i.ok()) return Bad(what, i.status().message());
    if (*i < min || *i > max) {
      return Bad(what, absl::StrCat("value ", *i, " does not fit ", AV(GgufTypeName(t))));
    }
    return *i;
  };
  switch (t) {
#define VIBRANT_PUT_UNSIGNED(TYPE, CTYPE)                                            \
  case GgufType::TYPE: {                                                             \
    absl::StatusOr<uint64_t> u = unsigned_in_range(std::numeric_limits<CTYPE>::max()); \
    if (!u.ok()) return u.status();                                                  \
    Put<CTYPE>(out, static_cast<CTYPE>(*u));                                         \
    return absl::OkStatus();                                                         \
  }
#define VIBRANT_PUT_SIGNED(TYPE, CTYPE)                                    \
  case GgufType::TYPE: {                                                   \
    absl::StatusOr<int64_t> i = signed_in_range(                           \
        std::numeric_limits<CTYPE>::min(), std::numeric_limits<CTYPE>::max()); \
    if (!i.ok()) return i.status();                                        \
    Put<CTYPE>(out, static_cast<CTYPE>(*i));                               \
    return absl::OkStatus();                                               \
  }
    VIBRANT_PUT_UNSIGNED(kUint8, uint8_t)
    VIBRANT_PUT_UNSIGNED(kUint16, uint16_t)
    VIBRANT_PUT_UNSIGNED(kUint32, uint32_t)
    VIBRANT_PUT_UNSIGNED(kUint64, uint64_t)
    VIBRANT_PUT_SIGNED(kInt8, int8_t)
    VIBRANT_PUT_SIGNED(kInt16, int16_t)
    VIBRANT_PUT_SIGNED(kInt32, int32_t)
    VIBRANT_PUT_SIGNED(kInt64, int64_t)
#undef VIBRANT_PUT_UNSIGNED
#undef VIBRANT_PUT_SIGNED
    case GgufType::kFloat32:
    case GgufType::kFloat64: {
      absl::StatusOr<double> d = v.AsFloat();
      if (!d.ok()) return Bad(what, d.status().message());
      if (t == GgufType::kFloat32) {
        Put<float>(out, static_cast<float>(*d));
      } else {
        Put<double>(out, *d);
      }
      return absl::OkStatus();
    }
    case GgufType::kBool: {
      absl::StatusOr<bool> b = v.AsBool();
      if (!b.ok()) return Bad(what, b.status().message());
      Put<uint8_t>(out, *b ? 1 : 0);
      return absl::OkStatus();
    }
    case GgufType::kString: {
      absl::StatusOr<std::string_view> s = v.AsString();
      if (!s.ok()) return Bad(what, s.status().message());
      PutString(out, *s);
      return absl::OkStatus();
    }
    case GgufType::kArray: {
      if (depth + 1 > kMaxArrayDepth) {
        return Bad(what, absl::StrCat("arrays nested more than ", kMaxArrayDepth, " deep"));
      }
      absl::StatusOr<const GgufArray*> a = v.AsArray();
      if (!a.ok()) return Bad(what, a.status().message());
      const GgufArray& arr = **a;
      if (static_cast<uint32_t>(arr.elem_type) > static_cast<uint32_t>(GgufType::kFloat64)) {
        return Bad(what, absl::StrCat("unknown array element type ",
                                      static_cast<uint32_t>(arr.elem_type)));
      }
      Put<uint32_t>(out, static_cast<uint32_t>(arr.elem_type));
      Put<uint64_t>(out, arr.elems.size());
      for (const GgufValue& e : arr.elems) {
        if (absl::Status s = EncodeValue(e, arr.elem_type, depth + 1, what, out); !s.ok()) {
          return s;
        }
      }
      return absl::OkStatus();
    }
  }
  return Bad(what, absl::StrCat("unknown value type ", static_cast<uint32_t>(t)));
}

uint64_t AlignUp(uint64_t v, uint64_t a) { return v + (a - v % a) % a; }

}  // namespace

void GgufWriter::SetAlignment(uint32_t alignment) {
  alignment_ = alignment;
  for (auto& [key, value] : metadata_) {
    if (key == kAlignmentKey) value = GgufValue::Uint(GgufType::kUint32, alignment);
  }
}

void GgufWriter::AddMetadata(std::string key, GgufValue value) {
  if (key == kAlignmentKey && value.type() == GgufType::kUint32) {
    absl::StatusOr<uint64_t> a = value.AsUint();
    if (a.ok()) alignment_ = static_cast<uint32_t>(*a);
  }
  metadata_.emplace_back(std::move(key), std::move(value));
}

void GgufWriter::AddUint8(std::string key, uint8_t v) {
  AddMetadata(std::move(key), GgufValue::Uint(GgufType::kUint8, v));
}
void GgufWriter::AddInt8(std::string key, int8_t v) {
  AddMetadata(std::move(key), GgufValue::Int(GgufType::kInt8, v));
}
void GgufWriter::AddUint16(std::string key, uint16_t v) {
  AddMetadata(std::move(key), GgufValue::Uint(GgufType::kUint16, v));
}
void GgufWriter::AddInt16(std::string key, int16_t v) {
  AddMetadata(std::move(key), GgufValue::Int(GgufType::kInt16, v));
}
void GgufWriter::AddUint32(std::string key, uint32_t v) {
  AddMetadata(std::move(key), GgufValue::Uint(GgufType::kUint32, v));
}
void GgufWriter::AddInt32(std::string key, int32_t v) {
  AddMetadata(std::move(key), GgufValue::Int(GgufType::kInt32, v));
}
void GgufWriter::AddUint64(std::string key, uint64_t v) {
  AddMetadata(std::move(key), GgufValue::Uint(GgufType::kUint64, v));
}
void GgufWriter::AddInt64(std::string key, int64_t v) {
  AddMetadata(std::move(key), GgufValue::Int(GgufType::kInt64, v));
}
void GgufWriter::AddFloat32(std::string key, float v) {
  AddMetadata(std::move(key), GgufValue::Float(GgufType::kFloat32, v));
}
void GgufWriter::AddFloat64(std::string key, double v) {
  AddMetadata(std::move(key), GgufValue::Float(GgufType::kFloat64, v));
}
void GgufWriter::AddBool(std::string key, bool v) {
  AddMetadata(std::move(key), GgufValue::Bool(v));
}
void GgufWriter::AddString(std::string key, std::string v) {
  AddMetadata(std::move(key), GgufValue::String(std::move(v)));
}
void GgufWriter::AddStringArray(std::string key, absl::Span<const std::string> v) {
  GgufArray a{GgufType::kString, {}};
  a.elems.reserve(v.size());
  for (const std::string& s : v) a.elems.push_back(GgufValue::String(s));
  AddArray(std::move(key), std::move(a));
}
void GgufWriter::AddFloat32Array(std::string key, absl::Span<const float> v) {
  GgufArray a{GgufType::kFloat32, {}};
  a.elems.reserve(v.size());
  for (float f : v) a.elems.push_back(GgufValue::Float(GgufType::kFloat32, f));
  AddArray(std::move(key), std::move(a));
}
void GgufWriter::AddInt32Array(std::string key, absl::Span<const int32_t> v) {
  GgufArray a{GgufType::kInt32, {}};
  a.elems.reserve(v.size());
  for (int32_t i : v) a.elems.push_back(GgufValue::Int(GgufType::kInt32, i));
  AddArray(std::move(key), std::move(a));
}
void GgufWriter::AddUint32Array(std::string key, absl::Span<const uint32_t> v) {
  GgufArray a{GgufType::kUint32, {}};
  a.elems.reserve(v.size());
  for (uint32_t u : v) a.elems.push_back(GgufValue::Uint(GgufType::kUint32, u));
  AddArray(std::move(key), std::move(a));
}
void GgufWriter::AddArray(std::string key, GgufArray v) {
  AddMetadata(std::move(key), GgufValue::Array(std::move(v)));
}

void GgufWriter::AddTensor(std::string name, std::vector<int64_t> dims, DType type,
                           absl::Span<const uint8_t> data) {
  tensors_.push_back(Tensor{std::move(name), std::move(dims), type,
                            std::make_shared<const std::vector<uint8_t>>(data.begin(), data.end()),
                            nullptr});
}

void GgufWriter::AddTensor(std::string name, std::vector<int64_t> dims, DType type, FillFn fill) {
  tensors_.push_back(Tensor{std::move(name), std::move(dims), type, nullptr, std::move(fill)});
}

absl::StatusOr<GgufWriter::Layout> GgufWriter::MakeLayout() const {
  if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0) {
    return Bad("alignment", absl::StrCat(alignment_, " is not a non-zero power of two"));
  }
  if (alignment_ > kGgufMaxAlignment) {
    return Bad("alignment", absl::StrCat(alignment_, " exceeds the maximum of ", kGgufMaxAlignment));
  }
  Layout layout;
  std::string& h = layout.head;

  bool has_alignment_key = false;
  std::unordered_set<std::string_view> keys;
  for (const auto& [key, value] : metadata_) {
    if (!keys.insert(key).second) {
      return Bad(absl::StrCat("metadata '", AV(key), "'"), "duplicate key");
    }
    if (key == kAlignmentKey) {
      has_alignment_key = true;
      absl::StatusOr<uint64_t> a = value.AsUint();
      if (value.type() != GgufType::kUint32 || !a.ok() || *a != alignment_) {
        return Bad("metadata 'general.alignment'",
                   absl::StrCat("must be a uint32 equal to the writer's alignment ", alignment_,
                                ", got ", AV(GgufTypeName(value.type())), " ",
                                value.ToString()));
      }
    }
  }
  bool add_alignment_key = !has_alignment_key && alignment_ != 32;

  std::unordered_set<std::string_view> names;
  layout.offsets.reserve(tensors_.size());
  layout.bytes.reserve(tensors_.size());
  uint64_t data_size = 0;
  for (const Tensor& t : tensors_) {
    std::string what = absl::StrCat("tensor '", AV(t.name), "'");
    if (!names.insert(t.name).second) return Bad(what, "duplicate tensor name");
    if (t.dims.empty() || t.dims.size() > 4) {
      return Bad(what, absl::StrCat(t.dims.size(), " dimensions; a tensor has 1 to 4"));
    }
    int64_t n = 1;
    for (int64_t d : t.dims) {
      if (d <= 0) {
        return Bad(what, absl::StrCat("dimension ", d, " in [", absl::StrJoin(t.dims, ", "),
                                      "] is not positive"));
      }
      if (__builtin_mul_overflow(n, d, &n)) {
        return Bad(what, absl::StrCat("the product of the dimensions [",
                                      absl::StrJoin(t.dims, ", "), "] overflows int64"));
      }
    }
    const DTypeInfo& info = GetDTypeInfo(t.type);
    if (t.dims[0] % info.block_size != 0) {
      return Bad(what, absl::StrCat("row length ", t.dims[0], " is not a multiple of ",
                                    AV(info.name), "'s block size ", info.block_size));
    }
    absl::StatusOr<int64_t> bytes = DTypeBytes(t.type, n);
    if (!bytes.ok()) return Bad(what, bytes.status().message());
    if (t.data != nullptr && t.data->size() != static_cast<uint64_t>(*bytes)) {
      return Bad(what, absl::StrCat("has ", t.data->size(), " bytes of data but ",
                                    absl::StrJoin(t.dims, " x "), " ", AV(info.name),
                                    " needs ", *bytes));
    }
    if (t.data == nullptr && !t.fill) return Bad(what, "has neither data nor a fill function");
    layout.offsets.push_back(data_size);
    layout.bytes.push_back(static_cast<uint64_t>(*bytes));
    uint64_t end;
    if (__builtin_add_overflow(data_size, static_cast<uint64_t>(*bytes), &end) ||
        end > std::numeric_limits<uint64_t>::max() - alignment_) {
      return Bad(what, "the data section's size overflows");
    }
    data_size = AlignUp(end, alignment_);
  }

  // Header.
  h.append("GGUF", 4);
  Put<uint32_t>(&h, 3);
  Put<uint64_t>(&h, tensors_.size());
  Put<uint64_t>(&h, metadata_.size() + (add_alignment_key ? 1 : 0));
  // Metadata.
  for (const auto& [key, value] : metadata_) {
    PutString(&h, key);
    Put<uint32_t>(&h, static_cast<uint32_t>(value.type()));
    if (absl::Status s = EncodeValue(value, value.type(), 0,
                                     absl::StrCat("metadata '", AV(key), "'"), &h);
        !s.ok()) {
      return s;
    }
  }
  if (add_alignment_key) {
    PutString(&h, kAlignmentKey);
    Put<uint32_t>(&h, static_cast<uint32_t>(GgufType::kUint32));
    Put<uint32_t>(&h, alignment_);
  }
  // Tensor infos.
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    PutString(&h, t.name);
    Put<uint32_t>(&h, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) Put<uint64_t>(&h, static_cast<uint64_t>(d));
    Put<uint32_t>(&h, static_cast<uint32_t>(t.type));
    Put<uint64_t>(&h, layout.offsets[i]);
  }
  h.resize(AlignUp(h.size(), alignment_), '\0');
  if (__builtin_add_overflow(static_cast<uint64_t>(h.size()), data_size, &layout.total)) {
    return Bad("file", "size overflows");
  }
  return layout;
}

absl::Status GgufWriter::Fill(const Layout& layout, absl::Span<uint8_t> out) const {
  std::memcpy(out.data(), layout.head.data(), layout.head.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    absl::Span<uint8_t> dst = out.subspan(layout.head.size() + layout.offsets[i], layout.bytes[i]);
    if (t.data != nullptr) {
      if (!t.data->empty()) std::memcpy(dst.data(), t.data->data(), t.data->size());
    } else if (absl::Status s = t.fill(dst); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("GgufWriter: tensor '", AV(t.name),
                                                 "': filling its data: ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> GgufWriter::FileSize() const {
  absl::StatusOr<Layout> layout = MakeLayout();
  if (!layout.ok()) return layout.status();
  return layout->total;
}

absl::StatusOr<std::string> GgufWriter::Serialize() const {
  absl::StatusOr<Layout> layout = MakeLayout();
  if (!layout.ok()) return layout.status();
  if (layout->total > std::string().max_size()) {
    return absl::ResourceExhaustedError("GgufWriter: file too large to hold in memory");
  }
  std::string out(layout->total, '\0');
  absl::Span<uint8_t> span(reinterpret_cast<uint8_t*>(out.data()), out.size());
  if (absl::Status s = Fill(*layout, span); !s.ok()) return s;
  return out;
}

absl::Status GgufWriter::WriteFile(const std::string& path) const {
  absl::StatusOr<Layout> layout = MakeLayout();
  if (!layout.ok()) return layout.status();
  auto sys_error = [&](std::string_view what, int err) {
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(path, ": ", AV(what), ": ", std::strerror(err)));
  };

  std::string tmp = path + ".XXXXXX.tmp";
  int fd = mkstemps(tmp.data(), 4);
  if (fd < 0) return sys_error("cannot create a temporary file beside it", errno);
  // From here on every failure removes the temporary file.
  void* map = MAP_FAILED;
  auto fail = [&](absl::Status s) {
    if (map != MAP_FAILED) munmap(map, layout->total);
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  };
  const uint64_t total = layout->total;
  if (total > static_cast<uint64_t>(std::numeric_limits<off_t>::max())) {
    return fail(absl::ResourceExhaustedError(absl::StrCat(path, ": file too large")));
  }
  // Reserve the space first: writing through a mapping into a full disk
  // would kill the process with SIGBUS instead of failing.
  int err = posix_fallocate(fd, 0, static_cast<off_t>(total));
  if (err == EOPNOTSUPP || err == EINVAL) {
    err = ftruncate(fd, static_cast<off_t>(total)) == 0 ? 0 : errno;
  }
  if (err != 0) return fail(sys_error("cannot reserve space for the file", err));
  map = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return fail(sys_error("cannot map the file for writing", errno));
  if (absl::Status s = Fill(*layout, absl::Span<uint8_t>(static_cast<uint8_t*>(map), total));
      !s.ok()) {
    return fail(s);
  }
  if (munmap(map, total) != 0) {
    map = MAP_FAILED;
    return fail(sys_error("cannot unmap the file", errno));
  }
  map = MAP_FAILED;
  // mkstemp creates the file 0600; give it the usual permissions of an output.
  if (fchmod(fd, 0644) != 0) return fail(sys_error("cannot set permissions", errno));
  if (::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return sys_error("cannot close the file", e);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return sys_error("cannot rename the temporary file into place", e);
  }
  return absl::OkStatus();
}

}  // namespace vibrant
