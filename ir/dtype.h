// Element types of Vibrant tensors, quantized block formats included.
//
// The numeric values are ggml's type ids, so a GGUF tensor's type field maps
// onto DType without a table. Quantized types are first-class: a tensor of
// type Q4_K holds blocks of 256 weights in 144 bytes, and ops such as MatMul
// accept it directly.
#ifndef VIBRANT_IR_DTYPE_H_
#define VIBRANT_IR_DTYPE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace vibrant {

enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kBF16 = 30,
  // Vibrant's own, not a GGUF tensor type: 8-bit activations as the
  // quantize_q8 op writes them (ir/ops.h) and the 8-bit mat-vec kernels read
  // them. n elements (rows of K, K % 32 == 0) are laid out as n int8 codes,
  // then n / 32 pairs of f32 {d, d * sum(codes of the block)}: value i is
  // codes[i] * d[i / 32]. Same size as 40-byte blocks of 32.
  kQ8A = 1024,
};

struct DTypeInfo {
  DType type;
  std::string_view name;  // lower-case, as ggml spells it: "q4_K", "f32", ...
  int64_t block_size;     // elements per block (1 for plain types)
  int64_t block_bytes;    // bytes per block
  bool quantized;
  bool in_gguf = true;  // a ggml type a GGUF tensor may have (not q8a)
};

// Every supported type, in id order.
const DTypeInfo* AllDTypes(int* count);

// The info of a supported type.
const DTypeInfo& GetDTypeInfo(DType t);
inline std::string_view DTypeName(DType t) { return GetDTypeInfo(t).name; }
inline bool IsQuantized(DType t) { return GetDTypeInfo(t).quantized; }

// Maps a ggml type id to a DType. Ids that exist in ggml but are not supported
// here (IQ2_XXS, Q4_0_4_4, ...) are reported by name and number; Vibrant's own
// activation types (q8a) are not GGUF types.
absl::StatusOr<DType> DTypeFromGgmlId(uint32_t id);
// Any DType this build knows (the IR's serialized dtypes), q8a included.
absl::StatusOr<DType> DTypeFromId(uint32_t id);

// Looks a type up by its name, case-insensitively ("q4_k", "F16", "bf16").
absl::StatusOr<DType> DTypeFromName(std::string_view name);

// The name ggml gives to any type id, supported or not ("iq2_xxs"), or
// "unknown" for ids ggml never used.
std::string_view GgmlTypeName(uint32_t id);

// Bytes of `n` elements of type `t`; fails when `n` is not a whole number of
// blocks or when the size overflows int64.
absl::StatusOr<int64_t> DTypeBytes(DType t, int64_t n);

}  // namespace vibrant

#endif  // VIBRANT_IR_DTYPE_H_
