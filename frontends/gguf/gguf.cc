#include "frontends/gguf/gguf.h"


#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "frontends/io/file.h"

namespace vibrant {
namespace {

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr uint32_t kMaxDims = 4;
constexpr int kMaxArrayDepth = 8;  // an array value at the top level has depth 1
// All metadata arrays of one file together may hold at most this many
// elements. Real files hold well under a million (a 256k-token vocabulary with
// scores, types and merges); the cap bounds memory for hostile files.
constexpr uint64_t kMaxMetadataElements = uint64_t{1} << 23;

// Minimal encoded sizes, used to reject absurd counts before allocating.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;             // key length, type, 1-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // name len, n_dims, 1 dim, type, offset

bool IsValidType(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kFloat64); }

// Bytes one element of type `t` takes at least.
uint64_t MinValueBytes(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
    case GgufType::kString:
      return 8;
    case GgufType::kArray:
      return 4 + 8;
  }
  return 1;
}

bool IsUnsignedType(GgufType t) {
  return t == GgufType::kUint8 || t == GgufType::kUint16 || t == GgufType::kUint32 ||
         t == GgufType::kUint64;
}
bool IsSignedType(GgufType t) {
  return t == GgufType::kInt8 || t == GgufType::kInt16 || t == GgufType::kInt32 ||
         t == GgufType::kInt64;
}

// A printable, bounded rendering of untrusted text for error messages.
std::string Quote(std::string_view s, size_t max_len = 64) {
  std::string out = "'";
  size_t n = std::min(s.size(), max_len);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    } else {
      out += static_cast<char>(c);
    }
  }
  out += "'";
  if (s.size() > max_len) absl::StrAppend(&out, "... (", s.size(), " bytes)");
  return out;
}

std::string FormatDouble(double v, bool as_float32) {
  char buf[64];
  std::to_chars_result r = as_float32
                               ? std::to_chars(buf, buf + sizeof(buf), static_cast<float>(v))
                               : std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

std::string EscapeString(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
        } else {
          out += ch;
        }
    }
  }
  out += "\"";
  return out;
}

using FieldFn = absl::FunctionRef<std::string()>;

// Bounds-checked little-endian reading of an untrusted buffer. Every error
// names the file, the field and the offset where the field starts.
class Parser {
 public:
  Parser(const std::string& name, absl::Span<const uint8_t> data) : name_(name), data_(data) {}

  uint64_t pos() const { return pos_; }
  uint64_t size() const { return data_.size(); }
  uint64_t remaining() const { return data_.size() - pos_; }
  void set_context(std::string c) { context_ = std::move(c); }

  absl::Status Error(std::string_view field, uint64_t offset, std::string_view problem,
                     absl::StatusCode code = absl::StatusCode::kInvalidArgument) const {
    std::string msg = absl::StrCat(name_, ": ", AV(field), " at offset ", offset, ": ", AV(problem));
    if (!context_.empty()) absl::StrAppend(&msg, " (", context_, ")");
    return absl::Status(code, msg);
  }

  absl::Status Truncated(FieldFn field, uint64_t need) const {
    return Error(field(), pos_,
                 absl::StrCat("needs ", need, " bytes but only ", remaining(),
                              " remain before the end of the file (size ", size(), ")"));
  }

  template <typename T>
  absl::Status Read(FieldFn field, T* out) {
    if (remaining() < sizeof(T)) return Truncated(field, sizeof(T));
    std::memcpy(out, data_.data() + pos_, sizeof(T));  // little-endian host assumed
    pos_ += sizeof(T);
    return absl::OkStatus();
  }

  absl::Status ReadString(FieldFn field, std::string* out) {
    uint64_t start = pos_;
    uint64_t len = 0;
    if (absl::Status s = Read(field, &len); !s.ok()) return s;
    if (len > remaining()) {
      return Error(field(), start,
                   absl::StrCat("string length ", len, " runs past the end of the file (size ",
                                size(), ")"));
    }
    out->assign(reinterpret_cast<const char*>(data_.data() + pos_), len);
    pos_ += len;
    return absl::OkStatus();
  }

  // Reads a value of type `t`; `depth` counts enclosing arrays.
  absl::Status ReadValue(GgufType t, FieldFn field, int depth, GgufValue* out);

 private:
  absl::Status ReadArray(FieldFn field, int depth, GgufValue* out);

  const std::string& name_;
  absl::Span<const uint8_t> data_;
  uint64_t pos_ = 0;
  uint64_t total_elements_ = 0;
  std::string context_;
};

absl::Status Parser::ReadValue(GgufType t, FieldFn field, int depth, GgufValue* out) {
  switch (t) {
#define VIBRANT_READ_SCALAR(TYPE, CTYPE, MAKE)              \
  case GgufType::TYPE: {                                    \
    CTYPE v{};                                              \
    if (absl::Status s = Read(field, &v); !s.ok()) return s; \
    *out = MAKE;                                            \
    return absl::OkStatus();                                \
  }
    VIBRANT_READ_SCALAR(kUint8, uint8_t, GgufValue::Uint(t, v))
    VIBRANT_READ_SCALAR(kUint16, uint16_t, GgufValue::Uint(t, v))
    VIBRANT_READ_SCALAR(kUint32, uint32_t, GgufValue::Uint(t, v))
    VIBRANT_READ_SCALAR(kUint64, uint64_t, GgufValue::Uint(t, v))
    VIBRANT_READ_SCALAR(kInt8, int8_t, GgufValue::Int(t, v))
    VIBRANT_READ_SCALAR(kInt16, int16_t, GgufValue::Int(t, v))
    VIBRANT_READ_SCALAR(kInt32, int32_t, GgufValue::Int(t, v))
    VIBRANT_READ_SCALAR(kInt64, int64_t, GgufValue::Int(t, v))
    VIBRANT_READ_SCALAR(kFloat32, float, GgufValue::Float(t, v))
    VIBRANT_READ_SCALAR(kFloat64, double, GgufValue::Float(t, v))
#undef VIBRANT_READ_SCALAR
    case GgufType::kBool: {
      uint64_t at = pos_;
      uint8_t v = 0;
      if (absl::Status s = Read(field, &v); !s.ok()) return s;
      if (v > 1) {
        return Error(field(), at, absl::StrCat("bool value ", v, " is neither 0 nor 1"));
      }
      *out = GgufValue::Bool(v != 0);
      return absl::OkStatus();
    }
    case GgufType::kString: {
      std::string v;
      if (absl::Status s = ReadString(field, &v); !s.ok()) return s;
      *out = GgufValue::String(std::move(v));
      return absl::OkStatus();
    }
    case GgufType::kArray:
      return ReadArray(field, depth + 1, out);
  }
  return Error(field(), pos_, "invalid value type");  // callers validate types first
}

absl::Status Parser::ReadArray(FieldFn field, int depth, GgufValue* out) {
  uint64_t start = pos_;
  if (depth > kMaxArrayDepth) {
    return Error(field(), start,
                 absl::StrCat("arrays nested more than ", kMaxArrayDepth, " deep"));
  }
  uint32_t elem_type = 0;
  if (absl::Status s = Read([&] { return absl::StrCat(field(), ".type"); }, &elem_type);
      !s.ok()) {
    return s;
  }
  if (!IsValidType(elem_type)) {
    return Error(absl::StrCat(field(), ".type"), start,
                 absl::StrCat("unknown value type ", elem_type));
  }
  GgufType et = static_cast<GgufType>(elem_type);
  uint64_t count_at = pos_;
  uint64_t count = 0;
  if (absl::Status s = Read([&] { return absl::StrCat(field(), ".count"); }, &count); !s.ok()) {
    return s;
  }
  uint64_t min_bytes = MinValueBytes(et);
  if (count > remaining() / min_bytes) {
    return Error(absl::StrCat(field(), ".count"), count_at,
                 absl::StrCat("array length ", count, " of ", AV(GgufTypeName(et)),
                              " cannot fit in the remaining ", remaining(),
                              " bytes of the file (size ", size(), ")"));
  }
  if (count > kMaxMetadataElements - total_elements_) {
    return Error(absl::StrCat(field(), ".count"), count_at,
                 absl::StrCat("array length ", count, " brings the metadata past the limit of ",
                              kMaxMetadataElements, " array elements in total"));
  }
  total_elements_ += count;
  GgufArray arr;
  arr.elem_type = et;
  // Grow with what is actually parsed, so a count that the file cannot back
  // up costs memory only for the elements that are really there.
  arr.elems.reserve(std::min<uint64_t>(count, 4096));
  for (uint64_t i = 0; i < count; ++i) {
    auto elem_field = [&] { return absl::StrCat(field(), "[", i, "]"); };
    GgufValue elem;
    if (absl::Status s = ReadValue(et, elem_field, depth, &elem); !s.ok()) return s;
    arr.elems.push_back(std::move(elem));
  }
  *out = GgufValue::Array(std::move(arr));
  return absl::OkStatus();
}

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace

std::string_view GgufTypeName(GgufType t) {
  switch (t) {
    case GgufType::kUint8: return "uint8";
    case GgufType::kInt8: return "int8";
    case GgufType::kUint16: return "uint16";
    case GgufType::kInt16: return "int16";
    case GgufType::kUint32: return "uint32";
    case GgufType::kInt32: return "int32";
    case GgufType::kFloat32: return "float32";
    case GgufType::kBool: return "bool";
    case GgufType::kString: return "string";
    case GgufType::kArray: return "array";
    case GgufType::kUint64: return "uint64";
    case GgufType::kInt64: return "int64";
    case GgufType::kFloat64: return "float64";
  }
  return "unknown";
}

// ---- GgufValue ----

GgufValue GgufValue::Uint(GgufType t, uint64_t v) {
  GgufValue r;
  r.type_ = t;
  r.v_ = v;
  return r;
}
GgufValue GgufValue::Int(GgufType t, int64_t v) {
  GgufValue r;
  r.type_ = t;
  r.v_ = v;
  return r;
}
GgufValue GgufValue::Float(GgufType t, double v) {
  GgufValue r;
  r.type_ = t;
  r.v_ = v;
  return r;
}
GgufValue GgufValue::Bool(bool v) {
  GgufValue r;
  r.type_ = GgufType::kBool;
  r.v_ = v;
  return r;
}
GgufValue GgufValue::String(std::string v) {
  GgufValue r;
  r.type_ = GgufType::kString;
  r.v_ = std::move(v);
  return r;
}
GgufValue GgufValue::Array(GgufArray v) {
  GgufValue r;
  r.type_ = GgufType::kArray;
  r.v_ = std::make_shared<const GgufArray>(std::move(v));
  return r;
}

bool GgufValue::is_integer() const { return IsUnsignedType(type_) || IsSignedType(type_); }
bool GgufValue::is_float() const {
  return type_ == GgufType::kFloat32 || type_ == GgufType::kFloat64;
}

absl::StatusOr<int64_t> GgufValue::AsInt() const {
  if (is_integer()) {
    if (const uint64_t* u = std::get_if<uint64_t>(&v_)) {
      if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return absl::OutOfRangeError(
            absl::StrCat(AV(GgufTypeName(type_)), " value ", *u, " does not fit in int64"));
      }
      return static_cast<int64_t>(*u);
    }
    if (const int64_t* i = std::get_if<int64_t>(&v_)) return *i;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("value of type ", AV(GgufTypeName(type_)), " is not an integer"));
}

absl::StatusOr<uint64_t> GgufValue::AsUint() const {
  if (is_integer()) {
    if (const uint64_t* u = std::get_if<uint64_t>(&v_)) return *u;
    if (const int64_t* i = std::get_if<int64_t>(&v_)) {
      if (*i < 0) {
        return absl::OutOfRangeError(absl::StrCat(AV(GgufTypeName(type_)), " value ", *i,
                                                  " is negative"));
      }
      return static_cast<uint64_t>(*i);
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("value of type ", AV(GgufTypeName(type_)), " is not an integer"));
}

absl::StatusOr<double> GgufValue::AsFloat() const {
  if (is_integer() || is_float()) {
    if (const uint64_t* u = std::get_if<uint64_t>(&v_)) return static_cast<double>(*u);
    if (const int64_t* i = std::get_if<int64_t>(&v_)) return static_cast<double>(*i);
    if (const double* d = std::get_if<double>(&v_)) return *d;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("value of type ", AV(GgufTypeName(type_)), " is not a number"));
}

absl::StatusOr<bool> GgufValue::AsBool() const {
  if (type_ == GgufType::kBool) {
    if (const bool* b = std::get_if<bool>(&v_)) return *b;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("value of type ", AV(GgufTypeName(type_)), " is not a bool"));
}

absl::StatusOr<std::string_view> GgufValue::AsString() const {
  if (type_ == GgufType::kString) {
    if (const std::string* s = std::get_if<std::string>(&v_)) return std::string_view(*s);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("value of type ", AV(GgufTypeName(type_)), " is not a string"));
}

absl::StatusOr<const GgufArray*> GgufValue::AsArray() const {
  if (type_ == GgufType::kArray) {
    if (const auto* a = std::get_if<std::shared_ptr<const GgufArray>>(&v_)) {
      if (*a) return a->get();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("value of type ", AV(GgufTypeName(type_)), " is not an array"));
}

std::string GgufValue::ToString(int max_items) const {
  struct Visitor {
    const GgufValue& self;
    int max_items;
    std::string operator()(uint64_t v) const { return absl::StrCat(v); }
    std::string operator()(int64_t v) const { return absl::StrCat(v); }
    std::string operator()(double v) const {
      return FormatDouble(v, self.type_ == GgufType::kFloat32);
    }
    std::string operator()(bool v) const { return v ? "true" : "false"; }
    std::string operator()(const std::string& v) const { return EscapeString(v); }
    std::string operator()(const std::shared_ptr<const GgufArray>& a) const {
      if (!a) return "[]";
      std::string out = "[";
      size_t n = a->elems.size();
      size_t shown = max_items < 0 ? n : std::min(n, static_cast<size_t>(max_items));
      for (size_t i = 0; i < shown; ++i) {
        if (i > 0) out += ", ";
        out += a->elems[i].ToString(max_items);
      }
      if (shown < n) absl::StrAppend(&out, shown > 0 ? ", " : "", "... (", n, " items)");
      out += "]";
      return out;
    }
  };
  return std::visit(Visitor{*this, max_items}, v_);
}

// ---- GgufTensorInfo ----

int64_t GgufTensorInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (__builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

// ---- GgufFile ----

GgufFile::~GgufFile() = default;

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  // Regular files only (a FIFO is refused without blocking), mapped with the
  // guard that turns a truncation during use into a named error
  // (frontends/io/file.h).
  absl::StatusOr<std::unique_ptr<io::MappedFile>> mapped = io::MappedFile::Open(path);
  if (!mapped.ok()) return mapped.status();
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->data_ = (*mapped)->bytes();
  f->mapped_ = *std::move(mapped);
  if (absl::Status s = f->Parse(); !s.ok()) return s;
  return f;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBuffer(std::string name,
                                                               absl::Span<const uint8_t> data) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = std::move(name);
  f->data_ = data;
  if (absl::Status s = f->Parse(); !s.ok()) return s;
  return f;
}

absl::Status GgufFile::Parse() {
  Parser p(path_, data_);

  // ---- header ----
  uint8_t magic[4];
  if (p.remaining() < 4) return p.Truncated([] { return std::string("magic"); }, 4);
  std::memcpy(magic, data_.data(), 4);
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    return p.Error("magic", 0,
                   absl::StrCat("expected \"GGUF\" (47 47 55 46), found ",
                                absl::Hex(magic[0], absl::kZeroPad2), " ",
                                absl::Hex(magic[1], absl::kZeroPad2), " ",
                                absl::Hex(magic[2], absl::kZeroPad2), " ",
                                absl::Hex(magic[3], absl::kZeroPad2), "; not a GGUF file"));
  }
  uint32_t magic_word = 0;
  if (absl::Status s = p.Read([] { return std::string("magic"); }, &magic_word); !s.ok()) {
    return s;
  }
  if (absl::Status s = p.Read([] { return std::string("version"); }, &version_); !s.ok()) {
    return s;
  }
  if (version_ != 2 && version_ != 3) {
    std::string why = absl::StrCat("unsupported version ", version_,
                                   " (only GGUF versions 2 and 3 are supported)");
    if (version_ == 0x02000000 || version_ == 0x03000000) {
      why = absl::StrCat("unsupported version ", version_,
                         " (a big-endian GGUF file; only little-endian files are supported)");
    }
    return p.Error("version", 4, why, absl::StatusCode::kUnimplemented);
  }
  uint64_t tensor_count = 0, kv_count = 0;
  if (absl::Status s = p.Read([] { return std::string("tensor_count"); }, &tensor_count);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = p.Read([] { return std::string("metadata_kv_count"); }, &kv_count);
      !s.ok()) {
    return s;
  }
  // Counts are checked against the bytes that remain (the tensor count once the
  // metadata is read), and memory is reserved for at most a bounded number of
  // records up front, so absurd counts fail fast without huge allocations.
  if (kv_count > p.remaining() / kMinKvBytes) {
    return p.Error("metadata_kv_count", 16,
                   absl::StrCat(kv_count, " key-value pairs cannot fit in the remaining ",
                                p.remaining(), " bytes of the file (each needs at least ",
                                kMinKvBytes, ")"));
  }

  // ---- metadata ----
  constexpr uint64_t kMaxReserve = 4096;
  metadata_.reserve(std::min(kv_count, kMaxReserve));
  metadata_index_.reserve(std::min(kv_count, kMaxReserve));
  for (uint64_t i = 0; i < kv_count; ++i) {
    p.set_context("");
    uint64_t key_at = p.pos();
    std::string key;
    auto key_field = [&] { return absl::StrCat("metadata[", i, "].key"); };
    if (absl::Status s = p.ReadString(key_field, &key); !s.ok()) return s;
    if (auto it = metadata_index_.find(key); it != metadata_index_.end()) {
      return p.Error(key_field(), key_at,
                     absl::StrCat("duplicate key ", Quote(key), " (also metadata[", it->second,
                                  "])"));
    }
    p.set_context(absl::StrCat("key ", Quote(key)));
    uint64_t type_at = p.pos();
    uint32_t type = 0;
    auto type_field = [&] { return absl::StrCat("metadata[", i, "].type"); };
    if (absl::Status s = p.Read(type_field, &type); !s.ok()) return s;
    if (!IsValidType(type)) {
      return p.Error(type_field(), type_at, absl::StrCat("unknown value type ", type));
    }
    uint64_t value_at = p.pos();
    GgufValue value;
    auto value_field = [&] { return absl::StrCat("metadata[", i, "].value"); };
    if (absl::Status s = p.ReadValue(static_cast<GgufType>(type), value_field, 0, &value);
        !s.ok()) {
      return s;
    }
    if (key == "general.alignment") {
      if (value.type() != GgufType::kUint32) {
        return p.Error(value_field(), value_at,
                       absl::StrCat("general.alignment must be a uint32, not ",
                                    AV(GgufTypeName(value.type()))));
      }
      uint64_t a = static_cast<uint64_t>(*value.AsInt());
      if (!IsPowerOfTwo(a)) {
        return p.Error(value_field(), value_at,
                       absl::StrCat("alignment ", a, " is not a non-zero power of two"));
      }
      if (a > kGgufMaxAlignment) {
        return p.Error(value_field(), value_at,
                       absl::StrCat("alignment ", a, " exceeds the maximum of ", kGgufMaxAlignment));
      }
      alignment_ = a;
    }
    metadata_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(value));
  }
  p.set_context("");

  // ---- tensor infos ----
  if (tensor_count > p.remaining() / kMinTensorInfoBytes) {
    return p.Error("tensor_count", 8,
                   absl::StrCat(tensor_count, " tensors cannot fit in the remaining ",
                                p.remaining(), " bytes after the metadata (each needs at least ",
                                kMinTensorInfoBytes, ")"));
  }
  tensors_.reserve(std::min(tensor_count, kMaxReserve));
  tensor_index_.reserve(std::min(tensor_count, kMaxReserve));
  std::vector<uint64_t> offset_field_at;  // where each tensor's offset field is
  offset_field_at.reserve(std::min(tensor_count, kMaxReserve));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    p.set_context("");
    GgufTensorInfo t;
    t.info_offset = p.pos();
    auto field = [&](std::string_view f) { return absl::StrCat("tensor_infos[", i, "].", AV(f)); };
    uint64_t name_at = p.pos();
    if (absl::Status s = p.ReadString([&] { return field("name"); }, &t.name); !s.ok()) {
      return s;
    }
    if (auto it = tensor_index_.find(t.name); it != tensor_index_.end()) {
      return p.Error(field("name"), name_at,
                     absl::StrCat("duplicate tensor name ", Quote(t.name), " (also tensor_infos[",
                                  it->second, "])"));
    }
    p.set_context(absl::StrCat("tensor ", Quote(t.name)));
    uint64_t n_dims_at = p.pos();
    uint32_t n_dims = 0;
    if (absl::Status s = p.Read([&] { return field("n_dims"); }, &n_dims); !s.ok()) return s;
    if (n_dims == 0) {
      return p.Error(field("n_dims"), n_dims_at, "0 dimensions; a tensor has 1 to 4");
    }
    if (n_dims > kMaxDims) {
      return p.Error(field("n_dims"), n_dims_at,
                     absl::StrCat(n_dims, " exceeds the maximum of ", kMaxDims));
    }
    uint64_t dims_at = p.pos();
    int64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim_at = p.pos();
      auto dim_field = [&] { return field(absl::StrCat("dims[", d, "]")); };
      uint64_t dim = 0;
      if (absl::Status s = p.Read(dim_field, &dim); !s.ok()) return s;
      if (dim == 0) {
        return p.Error(dim_field(), dim_at, "dimension is 0; every dimension must be at least 1");
      }
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return p.Error(dim_field(), dim_at,
                       absl::StrCat("dimension ", dim, " does not fit in int64"));
      }
      t.dims.push_back(static_cast<int64_t>(dim));
      if (elements >= 0 && __builtin_mul_overflow(elements, t.dims.back(), &elements)) {
        elements = -1;  // reported once all dims are read
      }
    }
    if (elements < 0) {
      return p.Error(field("dims"), dims_at,
                     absl::StrCat("the product of the dimensions [", absl::StrJoin(t.dims, ", "),
                                  "] overflows int64"));
    }
    uint64_t type_at = p.pos();
    uint32_t type_id = 0;
    if (absl::Status s = p.Read([&] { return field("type"); }, &type_id); !s.ok()) return s;
    absl::StatusOr<DType> dtype = DTypeFromGgmlId(type_id);
    if (!dtype.ok()) {
      return p.Error(field("type"), type_at, std::string(dtype.status().message()),
                     absl::StatusCode::kUnimplemented);
    }
    t.type = *dtype;
    const DTypeInfo& info = GetDTypeInfo(t.type);
    if (t.dims[0] % info.block_size != 0) {
      return p.Error(field("dims[0]"), dims_at,
                     absl::StrCat("row length ", t.dims[0], " is not a multiple of ",
                                  AV(info.name), "'s block size ", info.block_size));
    }
    absl::StatusOr<int64_t> bytes = DTypeBytes(t.type, elements);
    if (!bytes.ok()) {
      return p.Error(field("dims"), dims_at, std::string(bytes.status().message()));
    }
    t.bytes = static_cast<uint64_t>(*bytes);
    offset_field_at.push_back(p.pos());
    if (absl::Status s = p.Read([&] { return field("offset"); }, &t.offset); !s.ok()) return s;
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }
  p.set_context("");

  // ---- data section ----
  // Vocabulary-only files may end before the padding; the data section then
  // starts past the end of the file, which is fine as long as nothing is in it.
  uint64_t end_of_infos = p.pos();
  data_offset_ = end_of_infos + (alignment_ - end_of_infos % alignment_) % alignment_;
  for (uint64_t i = 0; i < tensors_.size(); ++i) {
    GgufTensorInfo& t = tensors_[i];
    p.set_context(absl::StrCat("tensor ", Quote(t.name)));
    std::string field = absl::StrCat("tensor_infos[", i, "].offset");
    if (t.offset % alignment_ != 0) {
      return p.Error(field, offset_field_at[i],
                     absl::StrCat(t.offset, " is not a multiple of the alignment ", alignment_));
    }
    uint64_t end;
    if (__builtin_add_overflow(data_offset_, t.offset, &t.file_offset) ||
        __builtin_add_overflow(t.file_offset, t.bytes, &end) || end > data_.size()) {
      return p.Error(field, offset_field_at[i],
                     absl::StrCat("data of ", t.bytes, " bytes at offset ", t.offset,
                                  " of the data section (which starts at ", data_offset_,
                                  ") runs past the end of the file (size ", data_.size(), ")"));
    }
  }
  // Tensor data must not overlap.
  std::vector<size_t> order(tensors_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return tensors_[a].offset != tensors_[b].offset ? tensors_[a].offset < tensors_[b].offset
                                                    : a < b;
  });
  for (size_t k = 1; k < order.size(); ++k) {
    const GgufTensorInfo& prev = tensors_[order[k - 1]];
    const GgufTensorInfo& cur = tensors_[order[k]];
    if (prev.offset + prev.bytes > cur.offset) {
      size_t later = std::max(order[k - 1], order[k]);
      size_t earlier = std::min(order[k - 1], order[k]);
      p.set_context(absl::StrCat("tensor ", Quote(tensors_[later].name)));
      return p.Error(absl::StrCat("tensor_infos[", later, "].offset"), offset_field_at[later],
                     absl::StrCat("data [", tensors_[later].offset, ", ",
                                  tensors_[later].offset + tensors_[later].bytes,
                                  ") overlaps the data of tensor_infos[", earlier, "] ",
                                  Quote(tensors_[earlier].name), " [", tensors_[earlier].offset,
                                  ", ", tensors_[earlier].offset + tensors_[earlier].bytes, ")"));
    }
  }
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

namespace {

template <typename T>
absl::StatusOr<T> Typed(const std::string& path, std::string_view key, absl::StatusOr<T> r) {
  if (r.ok()) return r;
  return absl::Status(r.status().code(),
                      absl::StrCat(path, ": metadata key '", AV(key), "': ", r.status().message()));
}

}  // namespace

#define VIBRANT_GGUF_GETTER(NAME, T, CALL)                                           \
  absl::StatusOr<T> GgufFile::NAME(std::string_view key) const {                     \
    const GgufValue* v = Find(key);                                                  \
    if (v == nullptr) {                                                              \
      return absl::NotFoundError(                                                    \
          absl::StrCat(path_, ": metadata key '", AV(key), "' not found"));           \
    }                                                                                \
    return Typed<T>(path_, key, CALL);                                            \
  }

VIBRANT_GGUF_GETTER(GetInt, int64_t, v->AsInt())
VIBRANT_GGUF_GETTER(GetFloat, double, v->AsFloat())
VIBRANT_GGUF_GETTER(GetBool, bool, v->AsBool())
VIBRANT_GGUF_GETTER(GetArray, const GgufArray*, v->AsArray())
#undef VIBRANT_GGUF_GETTER

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) {
    return absl::NotFoundError(absl::StrCat(path_, ": metadata key '", AV(key), "' not found"));
  }
  absl::StatusOr<std::string_view> s = v->AsString();
  if (!s.ok()) {
    return absl::Status(s.status().code(), absl::StrCat(path_, ": metadata key '", AV(key),
                                                        "': ", s.status().message()));
  }
  return std::string(*s);
}

absl::StatusOr<std::string> GgufFile::Architecture() const {
  return GetString("general.architecture");
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace vibrant
