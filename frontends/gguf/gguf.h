// GGUF reader: metadata, tensor infos, memory-mapped tensor data.
//
// Supports GGUF v2 and v3 (little-endian). Every count, length, dimension and
// offset is checked against the file size with overflow-safe arithmetic before
// it is used. Errors name the file, the field and the byte offset:
//   "model.gguf: tensor_infos[3].n_dims at offset 1234: 9 exceeds the maximum of 4"
#ifndef VIBRANT_FRONTENDS_GGUF_GGUF_H_
#define VIBRANT_FRONTENDS_GGUF_GGUF_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ir/dtype.h"

namespace vibrant {
namespace io {
class MappedFile;
}  // namespace io

enum class GgufType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5,
  kFloat32 = 6, kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11,
  kFloat64 = 12,
};
std::string_view GgufTypeName(GgufType t);

// general.alignment: a power of two, at most this. Real files use 32 (a few
// 64); the bound keeps a hostile value from making the writer pad a copy to
// gigabytes (2^30 was accepted before) or the data section start gigabytes
// past the metadata.
inline constexpr uint64_t kGgufMaxAlignment = 65536;

class GgufValue;
struct GgufArray {
  GgufType elem_type;
  std::vector<GgufValue> elems;
};

// One metadata value. Integers keep their signedness; arrays may nest.
class GgufValue {
 public:
  GgufValue() = default;
  static GgufValue Uint(GgufType t, uint64_t v);
  static GgufValue Int(GgufType t, int64_t v);
  static GgufValue Float(GgufType t, double v);
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  static GgufValue Array(GgufArray v);

  GgufType type() const { return type_; }
  bool is_integer() const;
  bool is_float() const;
  bool is_string() const { return type_ == GgufType::kString; }
  bool is_array() const { return type_ == GgufType::kArray; }

  // Any integer type, range-checked into int64 (fails on uint64 > INT64_MAX).
  absl::StatusOr<int64_t> AsInt() const;
  // Any integer type, range-checked into uint64 (fails on negative values).
  absl::StatusOr<uint64_t> AsUint() const;
  // Any numeric type as double.
  absl::StatusOr<double> AsFloat() const;
  absl::StatusOr<bool> AsBool() const;
  absl::StatusOr<std::string_view> AsString() const;
  absl::StatusOr<const GgufArray*> AsArray() const;

  // Human-readable rendering; arrays longer than `max_items` are elided
  // ("[1, 2, 3, ... (151936 items)]").
  std::string ToString(int max_items = 8) const;

 private:
  GgufType type_ = GgufType::kUint8;
  std::variant<uint64_t, int64_t, double, bool, std::string,
               std::shared_ptr<const GgufArray>>
      v_;
};

struct GgufTensorInfo {
  std::string name;
  // Dimensions in GGUF (ggml) order: dims[0] is the innermost, contiguous one
  // (the row length of a weight matrix). 1 to 4 entries.
  std::vector<int64_t> dims;
  DType type = DType::kF32;
  uint64_t offset = 0;       // relative to the start of the data section
  uint64_t file_offset = 0;  // absolute position of the data in the file
  uint64_t bytes = 0;        // size of the data
  uint64_t info_offset = 0;  // where this tensor's info record starts
  int64_t elements() const;
};

class GgufFile {
 public:
  // Memory-maps `path` read-only and parses it. Tensor data is never copied.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses a buffer the caller keeps alive (tests, fuzzer). `name` appears in errors.
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBuffer(
      std::string name, absl::Span<const uint8_t> data);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return data_.size(); }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const {
    return metadata_;
  }
  const GgufValue* Find(std::string_view key) const;
  // Typed getters; a missing key or a wrong type is an error naming the file and key.
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<const GgufArray*> GetArray(std::string_view key) const;
  // "general.architecture", or an error.
  absl::StatusOr<std::string> Architecture() const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(std::string_view name) const;
  absl::Span<const uint8_t> TensorData(const GgufTensorInfo& t) const {
    return data_.subspan(t.file_offset, t.bytes);
  }
  // The whole file.
  absl::Span<const uint8_t> bytes() const { return data_; }

 private:
  GgufFile() = default;
  absl::Status Parse();

  std::string path_;
  std::unique_ptr<io::MappedFile> mapped_;  // set when opened from a path
  absl::Span<const uint8_t> data_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensorInfo> tensors_;

  // Transparent hashing so lookups by string_view do not allocate.
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  using NameIndex = std::unordered_map<std::string, size_t, NameHash, std::equal_to<>>;
  NameIndex metadata_index_;  // key -> index into metadata_
  NameIndex tensor_index_;    // name -> index into tensors_
};

}  // namespace vibrant

#endif  // VIBRANT_FRONTENDS_GGUF_GGUF_H_
