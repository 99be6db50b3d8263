// Element types of Vibrant tensors, quantized block formats included.
//
// The numeric values are ggml's type ids, so a GGUF tensor's type field maps
// onto DType without a table. Quantized types are first-class: a tensor of
// type Q4_K holds blocks of 256 weights in 144 bytes, and ops such as MatMul
// accept it directly.
//
// Every ggml type that a GGUF file can hold has an entry (its block layout),
// so that a valid file of any type can be read and described (`vibrantc
// inspect`). Only the `supported` ones can be computed with (CPU
// dequantization and dot products, lowering, the verifier); the others
// (iq2_xxs, tq1_0, mxfp4, ...) are named in a clean error where a model
// would use them (CheckSupported).
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
  kQ8_1 = 9,  // not supported (ggml's activation format)
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,  // not supported
  kIQ2_XS = 17,   // not supported
  kIQ3_XXS = 18,  // not supported
  kIQ1_S = 19,    // not supported
  kIQ4_NL = 20,
  kIQ3_S = 21,    // not supported
  kIQ2_S = 22,    // not supported
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,      // not supported
  kF64 = 28,      // not supported
  kIQ1_M = 29,    // not supported
  kBF16 = 30,
  kTQ1_0 = 34,    // not supported
  kTQ2_0 = 35,    // not supported
  kMXFP4 = 39,    // not supported
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
  // Vibrant computes with it: the IR may hold it (the verifier accepts it),
  // and for GGUF types CPU dequantization and dot products exist and lowering
  // accepts it.
  bool supported;
  bool in_gguf = true;  // a ggml type a GGUF tensor may have (not q8a)
};

// Every type with a block layout (supported or not), in id order.
const DTypeInfo* AllDTypes(int* count);

// The info of a type of the enum.
const DTypeInfo& GetDTypeInfo(DType t);
inline std::string_view DTypeName(DType t) { return GetDTypeInfo(t).name; }
inline bool IsQuantized(DType t) { return GetDTypeInfo(t).quantized; }
inline bool IsSupported(DType t) { return GetDTypeInfo(t).supported; }

// OK for a supported type; otherwise an Unimplemented error naming the type
// and listing the supported ones: "tensor type iq2_xxs (16) is not supported
// (supported: f32, f16, ...)".
absl::Status CheckSupported(DType t);
// The supported GGUF types: "f32, f16, q4_0, ..." (id order).
std::string SupportedDTypeNames();

// Maps a ggml type id to a DType: every type with a block layout, supported
// or not (check IsSupported before computing with it). Ids ggml removed
// (q4_2, q4_0_4_4, ...) or never used are errors naming the id
// ("unknown (1000)"); Vibrant's own activation types (q8a) are not GGUF types.
absl::StatusOr<DType> DTypeFromGgmlId(uint32_t id);
// Any DType this build knows (the IR's serialized dtypes), q8a included.
absl::StatusOr<DType> DTypeFromId(uint32_t id);

// Looks a type up by its name, case-insensitively ("q4_k", "F16", "bf16").
// Any type of the table, supported or not.
absl::StatusOr<DType> DTypeFromName(std::string_view name);

// The name ggml gives to any type id, supported or not ("iq2_xxs"), or
// "unknown" for ids ggml never used.
std::string_view GgmlTypeName(uint32_t id);

// Bytes of `n` elements of type `t`; fails when `n` is not a whole number of
// blocks or when the size overflows int64.
absl::StatusOr<int64_t> DTypeBytes(DType t, int64_t n);

}  // namespace vibrant

#endif  // VIBRANT_IR_DTYPE_H_
