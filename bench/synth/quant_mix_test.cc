// QuantMix against (1) llama.cpp's rule re-derived here by hand, layer by
// layer, for each preset's real layer count, and (2) the tensor types of
// files that llama-quantize itself wrote (../shared/models).
#include "bench/synth/quant_mix.h"

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "frontends/gguf/gguf.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant::synth {
namespace {

// Layers whose attn_v / ffn_down llama.cpp gives Q6_K in Q4_K_M and Q5_K_M,
// worked out by hand from use_more_bits(i, n) = i < n/8 || i >= 7n/8 ||
// (i - n/8) % 3 == 2.
const std::map<int64_t, std::set<int64_t>> kMoreBitsLayers = {
    // n=2: n/8=0, 7n/8=1.
    {2, {1}},
    // n=3: 7n/8=2; (i-0)%3==2 -> 2.
    {3, {2}},
    // n=16 (Llama-3.2-1B): n/8=2, 7n/8=14; 4, 7, 10, 13.
    {16, {0, 1, 4, 7, 10, 13, 14, 15}},
    // n=24 (Qwen2.5-0.5B): n/8=3, 7n/8=21; 5, 8, ..., 20.
    {24, {0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23}},
    // n=32 (Llama-3.1-8B): n/8=4, 7n/8=28; 6, 9, ..., 27.
    {32, {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}},
    // n=36 (Qwen2.5-3B, Qwen3-8B): n/8=4, 7n/8=31; 6, 9, ..., 30.
    {36, {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 31, 32, 33, 34, 35}},
    // n=34 (Gemma-3-4B): n/8=4, 7n/8=29; 6, 9, ..., 27.
    {34, {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 29, 30, 31, 32, 33}},
    // n=48 (Qwen3-30B-A3B): n/8=6, 7n/8=42; 8, 11, ..., 41.
    {48, {0, 1, 2, 3, 4, 5, 8, 11, 14, 17, 20, 23, 26, 29, 32, 35, 38, 41, 42, 43, 44, 45, 46,
          47}},
};

int LayerOf(const std::string& name) {
  int l = -1;
  std::sscanf(name.c_str(), "blk.%d.", &l);
  return l;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// What llama-quantize writes, per tensor, for the presets' shapes: written
// out directly from the rule in llama-quant.cpp, case by case.
DType Expected(FileType ft, const ModelPreset& p, const TensorDesc& t, int64_t n_layer) {
  if (t.dims.size() == 1) return DType::kF32;  // norms, biases, rope_freqs
  if (EndsWith(t.name, "ffn_gate_inp.weight")) return DType::kF32;  // MoE router: never quantized
  const int64_t cols = t.dims[0];
  auto fits = [cols](DType d) { return cols % GetDTypeInfo(d).block_size == 0; };
  // Shape fallbacks of tensor_type_fallback.
  auto fallback = [&](DType d) {
    if (fits(d)) return d;
    if (d == DType::kQ4_K) return DType::kQ5_0;
    if (d == DType::kQ5_K) return DType::kQ5_1;
    if (d == DType::kQ6_K) return DType::kQ8_0;
    return DType::kF16;
  };
  const bool output = t.name == "output.weight" || (p.tied_embeddings && t.name == "token_embd.weight");
  const int layer = LayerOf(t.name);
  const bool more_bits = layer >= 0 && kMoreBitsLayers.at(n_layer).count(layer) > 0;
  switch (ft) {
    case FileType::kF16:
      return DType::kF16;
    case FileType::kQ8_0:
      return DType::kQ8_0;
    case FileType::kQ4_0:
      return output ? fallback(DType::kQ6_K) : DType::kQ4_0;
    case FileType::kQ6_K:
      return fallback(DType::kQ6_K);
    case FileType::kQ4_K_M:
    case FileType::kQ5_K_M: {
      const DType base = ft == FileType::kQ4_K_M ? DType::kQ4_K : DType::kQ5_K;
      if (output) return fits(base) ? DType::kQ6_K : DType::kQ8_0;
      if ((EndsWith(t.name, "attn_v.weight") || EndsWith(t.name, "ffn_down.weight") ||
           EndsWith(t.name, "ffn_down_exps.weight")) &&
          more_bits) {
        return fallback(DType::kQ6_K);
      }
      return fallback(base);
    }
  }
  return DType::kF32;
}

TEST(QuantMix, MatchesTheRuleWrittenOutForEveryPresetAndType) {
  for (const ModelPreset& p : AllPresets()) {
    for (int64_t n_layer : {p.n_layer, int64_t{2}, int64_t{3}}) {
      const std::vector<TensorDesc> tensors = PresetTensors(p, n_layer);
      for (const FileTypeInfo& ft : AllFileTypes()) {
        absl::StatusOr<std::vector<DType>> got = QuantMix(ft.type, tensors, n_layer);
        ASSERT_TRUE(got.ok()) << got.status();
        ASSERT_EQ(got->size(), tensors.size());
        for (size_t i = 0; i < tensors.size(); ++i) {
          EXPECT_EQ(DTypeName((*got)[i]), DTypeName(Expected(ft.type, p, tensors[i], n_layer)))
              << p.name << " " << ft.name << " n_layer " << n_layer << " " << tensors[i].name;
        }
      }
    }
  }
}

// Hand-checked spot values, so that the written-out rule above is itself
// pinned: Qwen2.5-3B Q4_K_M keeps layers 0-3, 6, 9, ..., 30, 31-35 of attn_v
// and ffn_down in Q6_K, and Qwen2.5-0.5B (rows of 896, not a multiple of
// 256) falls back to q5_0 / q8_0 everywhere except ffn_down (rows of 4864).
TEST(QuantMix, SpotChecks) {
  auto type_of = [](const char* preset, FileType ft, int64_t layers, const std::string& name) {
    const ModelPreset p = *FindPreset(preset);
    const std::vector<TensorDesc> t = PresetTensors(p, layers);
    const std::vector<DType> types = *QuantMix(ft, t, layers);
    for (size_t i = 0; i < t.size(); ++i) {
      if (t[i].name == name) return std::string(DTypeName(types[i]));
    }
    return std::string("absent");
  };
  EXPECT_EQ(type_of("qwen2.5-3b", FileType::kQ4_K_M, 36, "token_embd.weight"), "q6_K");
  EXPECT_EQ(type_of("qwen2.5-3b", FileType::kQ4_K_M, 36, "output.weight"), "absent");
  EXPECT_EQ(type_of("qwen2.5-3b", FileType::kQ4_K_M, 36, "blk.3.attn_v.weight"), "q6_K");
  EXPECT_EQ(type_of("qwen2.5-3b", FileType::kQ4_K_M, 36, "blk.4.attn_v.weight"), "q4_K");
  EXPECT_EQ(type_of("qwen2.5-3b", FileType::kQ4_K_M, 36, "blk.6.ffn_down.weight"), "q6_K");
  EXPECT_EQ(type_of("qwen2.5-3b", FileType::kQ4_K_M, 36, "blk.7.ffn_down.weight"), "q4_K");
  EXPECT_EQ(type_of("qwen2.5-3b", FileType::kQ4_K_M, 36, "blk.30.ffn_down.weight"), "q6_K");
  EXPECT_EQ(type_of("qwen2.5-3b", FileType::kQ4_K_M, 36, "blk.29.ffn_down.weight"), "q4_K");
  EXPECT_EQ(type_of("qwen2.5-3b", FileType::kQ4_K_M, 36, "blk.31.attn_v.weight"), "q6_K");
  EXPECT_EQ(type_of("qwen2.5-3b", FileType::kQ4_K_M, 36, "blk.31.attn_q.weight"), "q4_K");
  EXPECT_EQ(type_of("qwen2.5-3b", FileType::kQ4_K_M, 36, "blk.31.attn_q.bias"), "f32");
  EXPECT_EQ(type_of("qwen2.5-0.5b", FileType::kQ4_K_M, 24, "token_embd.weight"), "q8_0");
  EXPECT_EQ(type_of("qwen2.5-0.5b", FileType::kQ4_K_M, 24, "blk.0.attn_v.weight"), "q8_0");
  EXPECT_EQ(type_of("qwen2.5-0.5b", FileType::kQ4_K_M, 24, "blk.3.attn_v.weight"), "q5_0");
  EXPECT_EQ(type_of("qwen2.5-0.5b", FileType::kQ4_K_M, 24, "blk.3.ffn_down.weight"), "q4_K");
  EXPECT_EQ(type_of("qwen2.5-0.5b", FileType::kQ4_K_M, 24, "blk.5.ffn_down.weight"), "q6_K");
  EXPECT_EQ(type_of("qwen2.5-0.5b", FileType::kQ5_K_M, 24, "blk.3.ffn_up.weight"), "q5_1");
  EXPECT_EQ(type_of("qwen2.5-0.5b", FileType::kQ6_K, 24, "blk.3.ffn_up.weight"), "q8_0");
  EXPECT_EQ(type_of("qwen2.5-0.5b", FileType::kQ6_K, 24, "blk.3.ffn_down.weight"), "q6_K");
  EXPECT_EQ(type_of("llama3.1-8b", FileType::kQ4_K_M, 32, "token_embd.weight"), "q4_K");
  EXPECT_EQ(type_of("llama3.1-8b", FileType::kQ4_K_M, 32, "output.weight"), "q6_K");
  EXPECT_EQ(type_of("llama3.1-8b", FileType::kQ4_0, 32, "output.weight"), "q6_K");
  EXPECT_EQ(type_of("llama3.1-8b", FileType::kQ4_0, 32, "token_embd.weight"), "q4_0");
  EXPECT_EQ(type_of("llama3.1-8b", FileType::kQ8_0, 32, "output.weight"), "q8_0");
  EXPECT_EQ(type_of("llama3.1-8b", FileType::kF16, 32, "output.weight"), "f16");
  EXPECT_EQ(type_of("llama3.1-8b", FileType::kF16, 32, "rope_freqs.weight"), "f32");
  EXPECT_EQ(type_of("llama3.2-1b", FileType::kQ5_K_M, 16, "blk.13.attn_v.weight"), "q6_K");
  EXPECT_EQ(type_of("llama3.2-1b", FileType::kQ5_K_M, 16, "blk.12.attn_v.weight"), "q5_K");
}

TEST(QuantMix, OrderOfTheInputDoesNotMatter) {
  const ModelPreset p = *FindPreset("llama3.2-1b");
  std::vector<TensorDesc> t = PresetTensors(p, 16);
  const std::vector<DType> sorted = *QuantMix(FileType::kQ4_K_M, t, 16);
  std::map<std::string, DType> want;
  for (size_t i = 0; i < t.size(); ++i) want[t[i].name] = sorted[i];
  // File order of convert_hf_to_gguf: layers ascending, but blk.10 after blk.1
  // when sorted as plain strings; reverse to be far from the visiting order.
  std::reverse(t.begin(), t.end());
  const std::vector<DType> got = *QuantMix(FileType::kQ4_K_M, t, 16);
  for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(got[i], want[t[i].name]) << t[i].name;
}

TEST(QuantMix, FileTypeNames) {
  EXPECT_EQ(*FileTypeFromName("Q4_K_M"), FileType::kQ4_K_M);
  EXPECT_EQ(GetFileTypeInfo(FileType::kQ4_K_M).llama_ftype, 15u);
  EXPECT_EQ(GetFileTypeInfo(FileType::kQ5_K_M).llama_ftype, 17u);
  EXPECT_EQ(GetFileTypeInfo(FileType::kQ6_K).llama_ftype, 18u);
  EXPECT_EQ(GetFileTypeInfo(FileType::kQ8_0).llama_ftype, 7u);
  EXPECT_EQ(GetFileTypeInfo(FileType::kQ4_0).llama_ftype, 2u);
  EXPECT_EQ(GetFileTypeInfo(FileType::kF16).llama_ftype, 1u);
  absl::StatusOr<FileType> bad = FileTypeFromName("q3_k_s");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), ::testing::HasSubstr("q4_k_m"));
}

// Files written by llama.cpp's llama-quantize (../shared/models): QuantMix
// applied to their tensor list gives their tensor types.
TEST(QuantMix, MatchesLlamaQuantizeOutputs) {
  const std::string dir = VIBRANT_SOURCE_DIR "/../shared/models";
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) GTEST_SKIP() << dir << " is absent";
  int checked = 0;
  std::vector<std::filesystem::directory_entry> files;
  for (const char* d : {"/../shared/models", "/../shared/next/models"}) {
    for (const auto& e :
         std::filesystem::directory_iterator(std::string(VIBRANT_SOURCE_DIR) + d, ec)) {
      files.push_back(e);
    }
  }
  for (const auto& e : files) {
    if (e.path().extension() != ".gguf") continue;
    absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(e.path().string());
    ASSERT_TRUE(f.ok()) << f.status();
    absl::StatusOr<int64_t> ftype = (*f)->GetInt("general.file_type");
    if (!ftype.ok()) continue;
    const FileTypeInfo* ft = FileTypeFromLlamaFtype(static_cast<uint32_t>(*ftype));
    if (ft == nullptr) continue;  // a type synth does not write (q2_k, bf16, ...)
    absl::StatusOr<std::string> arch = (*f)->Architecture();
    ASSERT_TRUE(arch.ok());
    const int64_t n_layer = *(*f)->GetInt(*arch + ".block_count");
    std::vector<TensorDesc> tensors;
    for (const GgufTensorInfo& t : (*f)->tensors()) tensors.push_back({t.name, t.dims});
    absl::StatusOr<std::vector<DType>> got = QuantMix(ft->type, tensors, n_layer);
    ASSERT_TRUE(got.ok()) << got.status();
    for (size_t i = 0; i < tensors.size(); ++i) {
      EXPECT_EQ(DTypeName((*got)[i]), DTypeName((*f)->tensors()[i].type))
          << e.path().filename() << " " << tensors[i].name;
    }
    ++checked;
  }
  // tiny-llama x4, tiny-qwen2 x5, and (../shared/next) the Q4_K_M files of
  // qwen3, gemma3, phi3 (fused attn_qkv) and qwen3moe (router, stacked experts
  // with fallbacks) at the time of writing.
  EXPECT_GE(checked, 8);
}

}  // namespace
}  // namespace vibrant::synth
