// GGUF v3 writer: metadata, tensor infos and aligned tensor data.
//
//   GgufWriter w;
//   w.AddString("general.architecture", "llama");
//   w.AddUint32("llama.block_count", 2);
//   w.AddTensor("output_norm.weight", {256}, DType::kF32, bytes);
//   absl::Status s = w.WriteFile("out.gguf");
//
// Adders never fail; everything is validated when the file is produced
// (Serialize, WriteFile, FileSize), which report the first problem: duplicate
// keys or tensor names, values that do not fit their declared type, array
// elements whose type differs from the array's, arrays nested deeper than the
// reader accepts, bad dimensions, data of the wrong size, a bad alignment.
//
// Layout is llama.cpp's: header, metadata, tensor infos, zero padding to the
// alignment, then each tensor's data at an aligned offset (in the order the
// tensors were added), each followed by zero padding to the alignment.
#ifndef VIBRANT_FRONTENDS_GGUF_GGUF_WRITER_H_
#define VIBRANT_FRONTENDS_GGUF_GGUF_WRITER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "frontends/gguf/gguf.h"
#include "ir/dtype.h"

namespace vibrant {

class GgufWriter {
 public:
  // Produces a tensor's data into `out`, which has exactly the tensor's size
  // (DTypeBytes of its elements) and is zero-filled. Called once per
  // Serialize/WriteFile, in the order tensors were added, possibly straight
  // into a memory-mapped output file, so a large model never has to be held
  // in memory twice.
  using FillFn = std::function<absl::Status(absl::Span<uint8_t> out)>;

  GgufWriter() = default;

  // Data alignment, a power of two (default 32) of at most kGgufMaxAlignment. A value other than 32 is
  // recorded as general.alignment (uint32) unless that key was added already.
  void SetAlignment(uint32_t alignment);
  uint32_t alignment() const { return alignment_; }

  // Metadata, written in the order added.
  void AddMetadata(std::string key, GgufValue value);
  void AddUint8(std::string key, uint8_t v);
  void AddInt8(std::string key, int8_t v);
  void AddUint16(std::string key, uint16_t v);
  void AddInt16(std::string key, int16_t v);
  void AddUint32(std::string key, uint32_t v);
  void AddInt32(std::string key, int32_t v);
  void AddUint64(std::string key, uint64_t v);
  void AddInt64(std::string key, int64_t v);
  void AddFloat32(std::string key, float v);
  void AddFloat64(std::string key, double v);
  void AddBool(std::string key, bool v);
  void AddString(std::string key, std::string v);
  void AddStringArray(std::string key, absl::Span<const std::string> v);
  void AddFloat32Array(std::string key, absl::Span<const float> v);
  void AddInt32Array(std::string key, absl::Span<const int32_t> v);
  void AddUint32Array(std::string key, absl::Span<const uint32_t> v);
  // Any array, nested arrays included.
  void AddArray(std::string key, GgufArray v);

  // A tensor. `dims` are in ggml order (dims[0] is the row length). The data
  // is copied.
  void AddTensor(std::string name, std::vector<int64_t> dims, DType type,
                 absl::Span<const uint8_t> data);
  // A tensor whose data `fill` produces when the file is written.
  void AddTensor(std::string name, std::vector<int64_t> dims, DType type, FillFn fill);

  size_t metadata_count() const { return metadata_.size(); }
  size_t tensor_count() const { return tensors_.size(); }

  // Size of the file Serialize/WriteFile would produce.
  absl::StatusOr<uint64_t> FileSize() const;
  // The whole file in memory.
  absl::StatusOr<std::string> Serialize() const;
  // Writes a temporary file in the same directory as `path` and renames it
  // over `path` when complete, so `path` never holds a partial file.
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> dims;
    DType type;
    std::shared_ptr<const std::vector<uint8_t>> data;  // set for copied data
    FillFn fill;                                       // set otherwise
  };
  struct Layout {
    std::string head;               // header, metadata, infos, padding
    std::vector<uint64_t> offsets;  // of each tensor, relative to the data section
    std::vector<uint64_t> bytes;    // of each tensor
    uint64_t total = 0;             // file size
  };
  absl::StatusOr<Layout> MakeLayout() const;
  absl::Status Fill(const Layout& layout, absl::Span<uint8_t> out) const;

  uint32_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace vibrant

#endif  // VIBRANT_FRONTENDS_GGUF_GGUF_WRITER_H_
