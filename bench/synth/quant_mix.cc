#include "bench/synth/quant_mix.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <numeric>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vibrant::synth {
namespace {

constexpr FileTypeInfo kFileTypes[] = {
    {FileType::kF16, "f16", "F16", 1, DType::kF16},
    {FileType::kQ8_0, "q8_0", "Q8_0", 7, DType::kQ8_0},
    {FileType::kQ4_0, "q4_0", "Q4_0", 2, DType::kQ4_0},
    {FileType::kQ4_K_M, "q4_k_m", "Q4_K - Medium", 15, DType::kQ4_K},
    {FileType::kQ5_K_M, "q5_k_m", "Q5_K - Medium", 17, DType::kQ5_K},
    {FileType::kQ6_K, "q6_k", "Q6_K", 18, DType::kQ6_K},
};

int LayerOf(const std::string& name) {
  int layer = -1;
  if (std::sscanf(name.c_str(), "blk.%d.", &layer) != 1) return -1;
  return layer;
}

bool Contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

// ggml_n_dims: 1 + the index of the last dimension that is not 1.
int NDims(const std::vector<int64_t>& dims) {
  int n = 1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] != 1) n = static_cast<int>(i) + 1;
  }
  return n;
}

int64_t BlockSize(DType t) { return GetDTypeInfo(t).block_size; }

}  // namespace

absl::Span<const FileTypeInfo> AllFileTypes() { return kFileTypes; }

const FileTypeInfo& GetFileTypeInfo(FileType t) {
  for (const FileTypeInfo& i : kFileTypes) {
    if (i.type == t) return i;
  }
  return kFileTypes[0];  // unreachable: every enumerator is in the table
}

absl::StatusOr<FileType> FileTypeFromName(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::vector<std::string> names;
  for (const FileTypeInfo& i : kFileTypes) {
    if (i.name == lower) return i.type;
    names.emplace_back(i.name);
  }
  return absl::NotFoundError(absl::StrCat("unknown type '", std::string(name),
                                          "' (types: ", absl::StrJoin(names, ", "), ")"));
}

const FileTypeInfo* FileTypeFromLlamaFtype(uint32_t id) {
  for (const FileTypeInfo& i : kFileTypes) {
    if (i.llama_ftype == id) return &i;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------
// THE RULE. This is the one place that decides tensor types; it follows
// llama.cpp's src/llama-quant.cpp (llama_tensor_get_type and
// llama_tensor_get_type_impl, tensor_allows_quantization,
// tensor_type_fallback) for the file types above, for dense (non-MoE,
// non-Falcon, non-70B) llama/qwen2 models without an importance matrix:
//
//  * Only tensors of 2+ dims whose name ends in "weight" and that are not
//    "*_norm.weight" or a MoE router ("ffn_gate_inp.weight", which the F16
//    conversion writes in F32) are quantized; the rest keep their
//    F16-conversion type.
//  * F16 files: every quantizable tensor is F16 (nothing to quantize).
//  * output.weight, and token_embd.weight when the model has no
//    output.weight (tied embeddings): Q8_0 when the row length is not a
//    multiple of the base type's block, else Q8_0 stays Q8_0 and any other
//    base becomes Q6_K. (So Q4_0 files have a Q6_K output.)
//  * Untied token_embd.weight keeps the base type.
//  * attn_v.weight (and the fused attn_qkv.weight of phi3, which llama.cpp
//    counts and treats as attn_v) in Q4_K_M / Q5_K_M: Q6_K when
//    use_more_bits(i, n), where i counts the attn_v/attn_qkv tensors seen so
//    far and n is their total.
//  * ffn_down.weight (and the stacked experts ffn_down_exps.weight, one per
//    layer) in Q4_K_M / Q5_K_M: Q6_K when use_more_bits(i, n_layer), i
//    counting the ffn_down tensors seen so far.
//      use_more_bits(i, n) = i < n/8 || i >= 7*n/8 || (i - n/8) % 3 == 2
//    (integer division): the first and last eighth of the layers and every
//    third layer in between.
//  * Finally, a row length that is not a multiple of the chosen type's block
//    falls back: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0 (then F16 if even
//    that block does not divide it). Qwen2.5-0.5B (d_model 896 = 3.5 * 256)
//    is the preset where this matters.
//
// llama-quantize visits tensors sorted by (block number, name)
// (llama-model-loader's weight_name_comparer), so for these models the
// counters equal the layer index.
// ---------------------------------------------------------------------------
absl::StatusOr<std::vector<DType>> QuantMix(FileType ft, absl::Span<const TensorDesc> tensors,
                                            int64_t n_layer) {
  const FileTypeInfo& info = GetFileTypeInfo(ft);
  const bool mix_m = ft == FileType::kQ4_K_M || ft == FileType::kQ5_K_M;
  auto use_more_bits = [](int64_t i, int64_t n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
  };

  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const int la = LayerOf(tensors[a].name), lb = LayerOf(tensors[b].name);
    if (la != lb) return la < lb;
    return tensors[a].name < tensors[b].name;
  });

  bool tied = true;
  int64_t n_attn_v = 0;
  for (const TensorDesc& t : tensors) {
    if (t.name == "output.weight") tied = false;
    if (Contains(t.name, "attn_v.weight") || Contains(t.name, "attn_qkv.weight")) ++n_attn_v;
  }

  std::vector<DType> out(tensors.size(), DType::kF32);
  int64_t i_attn_v = 0, i_ffn_down = 0;
  for (size_t idx : order) {
    const TensorDesc& t = tensors[idx];
    const int nd = NDims(t.dims);
    const bool router = Contains(t.name, "ffn_gate_inp.weight");
    const DType source = nd >= 2 && !router ? DType::kF16 : DType::kF32;
    const bool quantizable = nd >= 2 && t.name.size() >= 6 &&
                             t.name.compare(t.name.size() - 6, 6, "weight") == 0 &&
                             !Contains(t.name, "_norm.weight") && !router;
    if (!quantizable) {
      out[idx] = source;
      continue;
    }
    DType type = info.base;
    if (!IsQuantized(type)) {
      out[idx] = type;
      continue;
    }
    const int64_t nx = t.dims[0];
    const bool is_output = t.name == "output.weight";
    const bool is_token_embd = t.name == "token_embd.weight";
    if (is_output || (tied && is_token_embd)) {
      if (nx % BlockSize(type) != 0) {
        type = DType::kQ8_0;
      } else if (type != DType::kQ8_0) {
        type = DType::kQ6_K;
      }
    } else if (is_token_embd) {
      // keeps the base type
    } else if (Contains(t.name, "attn_v.weight") || Contains(t.name, "attn_qkv.weight")) {
      if (mix_m && use_more_bits(i_attn_v, n_attn_v)) type = DType::kQ6_K;
      ++i_attn_v;
    } else if (Contains(t.name, "ffn_down")) {
      if (mix_m && use_more_bits(i_ffn_down, n_layer)) type = DType::kQ6_K;
      ++i_ffn_down;
    }
    // tensor_type_fallback
    if (nx % BlockSize(type) != 0) {
      DType fallback;
      switch (type) {
        case DType::kQ4_K: fallback = DType::kQ5_0; break;
        case DType::kQ5_K: fallback = DType::kQ5_1; break;
        case DType::kQ6_K: fallback = DType::kQ8_0; break;
        default:
          return absl::InvalidArgumentError(absl::StrCat(
              "tensor ", t.name, ": row length ", nx, " is not a multiple of the ",
              std::string(DTypeName(type)), " block, and llama.cpp defines no fallback"));
      }
      if (nx % BlockSize(fallback) != 0) fallback = DType::kF16;
      type = fallback;
    }
    out[idx] = type;
  }
  return out;
}

}  // namespace vibrant::synth
