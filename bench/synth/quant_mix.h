// GGUF file types ("q4_k_m", ...) and the tensor types llama.cpp's quantizer
// gives each tensor in them.
#ifndef VIBRANT_BENCH_SYNTH_QUANT_MIX_H_
#define VIBRANT_BENCH_SYNTH_QUANT_MIX_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bench/synth/presets.h"
#include "ir/dtype.h"

namespace vibrant::synth {

enum class FileType { kF16, kQ8_0, kQ4_0, kQ4_K_M, kQ5_K_M, kQ6_K };

struct FileTypeInfo {
  FileType type;
  std::string_view name;         // as llama.cpp spells it, lower case: "q4_k_m"
  std::string_view description;  // llama_model_ftype_name: "Q4_K - Medium"
  uint32_t llama_ftype;          // general.file_type (enum llama_ftype): 15
  DType base;                    // llama_ftype_get_default_type: q4_K
};

// Every supported file type, in a fixed order.
absl::Span<const FileTypeInfo> AllFileTypes();
const FileTypeInfo& GetFileTypeInfo(FileType t);
// Case-insensitive ("Q4_K_M" works); the error lists the names.
absl::StatusOr<FileType> FileTypeFromName(std::string_view name);
// The FileTypeInfo whose llama_ftype is `id`, or null.
const FileTypeInfo* FileTypeFromLlamaFtype(uint32_t id);

// The type of each tensor of `tensors` (same order) in a file of type `ft`,
// as llama-quantize (without an importance matrix, no overrides) chooses it
// when quantizing the F16 conversion of a model of `n_layer` layers
// (llama_tensor_get_type in llama.cpp's src/llama-quant.cpp). In that F16
// conversion 2-D and 3-D weights are F16 and 1-D tensors (norms, biases,
// rope_freqs) and MoE routers (ffn_gate_inp) F32; those are never quantized,
// so they stay F32 in every type.
// `tensors` may be in any order: the per-layer counters advance in
// llama-quantize's visiting order, which this function reproduces. Fails
// where llama-quantize does: a row length that no fallback type divides.
absl::StatusOr<std::vector<DType>> QuantMix(FileType ft, absl::Span<const TensorDesc> tensors, int64_t n_layer);

}  // namespace vibrant::synth

#endif  // VIBRANT_BENCH_SYNTH_QUANT_MIX_H_
