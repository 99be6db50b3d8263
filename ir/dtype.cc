#include "ir/dtype.h"

#include <array>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace vibrant {
namespace {

// Block sizes and bytes per block are those of ggml's block_* structs
// (ggml-common.h); the unsupported ones only let a reader size and skip them.
constexpr DTypeInfo kTypes[] = {
    {DType::kF32, "f32", 1, 4, false, true},
    {DType::kF16, "f16", 1, 2, false, true},
    {DType::kQ4_0, "q4_0", 32, 18, true, true},     // f16 d; 16 bytes of nibbles
    {DType::kQ4_1, "q4_1", 32, 20, true, true},     // f16 d, m; 16 bytes of nibbles
    {DType::kQ5_0, "q5_0", 32, 22, true, true},     // f16 d; u32 high bits; 16 bytes
    {DType::kQ5_1, "q5_1", 32, 24, true, true},     // f16 d, m; u32 high bits; 16 bytes
    {DType::kQ8_0, "q8_0", 32, 34, true, true},     // f16 d; 32 int8
    {DType::kQ8_1, "q8_1", 32, 36, true, false},    // f16 d, s; 32 int8
    {DType::kQ2_K, "q2_K", 256, 84, true, true},    // 16 scales, 64 qs, f16 d, dmin
    {DType::kQ3_K, "q3_K", 256, 110, true, true},   // 32 hmask, 64 qs, 12 scales, f16 d
    {DType::kQ4_K, "q4_K", 256, 144, true, true},   // f16 d, dmin; 12 scales; 128 qs
    {DType::kQ5_K, "q5_K", 256, 176, true, true},   // f16 d, dmin; 12 scales; 32 qh; 128 qs
    {DType::kQ6_K, "q6_K", 256, 210, true, true},   // 128 ql, 64 qh, 16 int8 scales, f16 d
    {DType::kQ8_K, "q8_K", 256, 292, true, true},   // f32 d; 256 int8; 16 int16 bsums
    {DType::kIQ2_XXS, "iq2_xxs", 256, 66, true, false},  // f16 d; u16 qs[32]
    {DType::kIQ2_XS, "iq2_xs", 256, 74, true, false},    // f16 d; u16 qs[32]; scales[8]
    {DType::kIQ3_XXS, "iq3_xxs", 256, 98, true, false},  // f16 d; qs[96]
    {DType::kIQ1_S, "iq1_s", 256, 50, true, false},      // f16 d; qs[32]; u16 qh[8]
    {DType::kIQ4_NL, "iq4_nl", 32, 18, true, true},      // f16 d; 16 bytes of nibbles
    {DType::kIQ3_S, "iq3_s", 256, 110, true, false},     // f16 d; qs[64]; qh[8]; signs[32]; scales[4]
    {DType::kIQ2_S, "iq2_s", 256, 82, true, false},      // f16 d; qs[64]; qh[8]; scales[8]
    {DType::kIQ4_XS, "iq4_xs", 256, 136, true, true},    // f16 d; u16 scales_h; scales_l[4]; qs[128]
    {DType::kI8, "i8", 1, 1, false, true},
    {DType::kI16, "i16", 1, 2, false, true},
    {DType::kI32, "i32", 1, 4, false, true},
    {DType::kI64, "i64", 1, 8, false, false},
    {DType::kF64, "f64", 1, 8, false, false},
    {DType::kIQ1_M, "iq1_m", 256, 56, true, false},      // qs[32]; qh[16]; scales[8]
    {DType::kBF16, "bf16", 1, 2, false, true},
    {DType::kTQ1_0, "tq1_0", 256, 54, true, false},      // qs[48]; qh[4]; f16 d
    {DType::kTQ2_0, "tq2_0", 256, 66, true, false},      // qs[64]; f16 d
    {DType::kMXFP4, "mxfp4", 32, 17, true, false},       // e8m0 e; 16 bytes of fp4 pairs
    {DType::kQ8A, "q8a", 32, 40, true, true, /*in_gguf=*/false},  // 32 int8 codes + f32 {d, d*sum}
};

// ggml's names for every type id it has used, supported or not.
constexpr std::array<std::string_view, 40> kGgmlNames = {
    "f32",     "f16",     "q4_0",    "q4_1",    "q4_2",   "q4_3",    "q5_0",
    "q5_1",    "q8_0",    "q8_1",    "q2_K",    "q3_K",   "q4_K",    "q5_K",
    "q6_K",    "q8_K",    "iq2_xxs", "iq2_xs",  "iq3_xxs", "iq1_s",  "iq4_nl",
    "iq3_s",   "iq2_s",   "iq4_xs",  "i8",      "i16",    "i32",     "i64",
    "f64",     "iq1_m",   "bf16",    "q4_0_4_4", "q4_0_4_8", "q4_0_8_8",
    "tq1_0",   "tq2_0",   "iq4_nl_4_4", "iq4_nl_4_8", "iq4_nl_8_8", "mxfp4"};

}  // namespace

const DTypeInfo* AllDTypes(int* count) {
  *count = static_cast<int>(std::size(kTypes));
  return kTypes;
}

const DTypeInfo& GetDTypeInfo(DType t) {
  for (const DTypeInfo& info : kTypes) {
    if (info.type == t) return info;
  }
  return kTypes[0];  // unreachable for valid enum values
}

std::string_view GgmlTypeName(uint32_t id) {
  if (id < kGgmlNames.size()) return kGgmlNames[id];
  return "unknown";
}

absl::StatusOr<DType> DTypeFromGgmlId(uint32_t id) {
  for (const DTypeInfo& info : kTypes) {
    if (static_cast<uint32_t>(info.type) == id && info.in_gguf) return info.type;
  }
  if (GgmlTypeName(id) == "unknown") {
    return absl::UnimplementedError(absl::StrCat("unsupported tensor type unknown (", id, ")"));
  }
  return absl::UnimplementedError(absl::StrCat("unsupported tensor type ",
                                               std::string(GgmlTypeName(id)), " (", id,
                                               "): removed from ggml, no block layout"));
}

std::string SupportedDTypeNames() {
  std::string out;
  for (const DTypeInfo& info : kTypes) {
    if (!info.supported || !info.in_gguf) continue;
    if (!out.empty()) out += ", ";
    out += std::string(info.name);
  }
  return out;
}

absl::Status CheckSupported(DType t) {
  const DTypeInfo& info = GetDTypeInfo(t);
  if (info.type == t && info.supported) return absl::OkStatus();
  return absl::UnimplementedError(
      absl::StrCat("tensor type ", std::string(GgmlTypeName(static_cast<uint32_t>(t))), " (",
                   static_cast<uint32_t>(t), ") is not supported (supported: ",
                   SupportedDTypeNames(), ")"));
}

absl::StatusOr<DType> DTypeFromId(uint32_t id) {
  for (const DTypeInfo& info : kTypes) {
    if (static_cast<uint32_t>(info.type) == id) return info.type;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype id ", id));
}

absl::StatusOr<DType> DTypeFromName(std::string_view name) {
  std::string lower = absl::AsciiStrToLower(std::string(name));
  for (const DTypeInfo& info : kTypes) {
    if (absl::AsciiStrToLower(std::string(info.name)) == lower) return info.type;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown type name '", std::string(name), "'"));
}

absl::StatusOr<int64_t> DTypeBytes(DType t, int64_t n) {
  const DTypeInfo& info = GetDTypeInfo(t);
  if (n < 0) return absl::InvalidArgumentError("negative element count");
  if (n % info.block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        n, " elements of ", std::string(info.name), " are not a whole number of ",
        info.block_size, "-element blocks"));
  }
  int64_t blocks = n / info.block_size;
  int64_t bytes;
  if (__builtin_mul_overflow(blocks, info.block_bytes, &bytes)) {
    return absl::OutOfRangeError(absl::StrCat("size of ", n, " ", std::string(info.name),
                                              " elements overflows"));
  }
  return bytes;
}

}  // namespace vibrant
