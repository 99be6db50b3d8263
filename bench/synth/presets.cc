#include "bench/synth/presets.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vibrant::synth {
namespace {

// Numbers from each model's config.json on Hugging Face (checked against the
// published files; Qwen2.5: Qwen/Qwen2.5-{0.5B,3B}, Llama: meta-llama/...,
// Qwen3: Qwen/Qwen3-{8B,30B-A3B}, Gemma 3: google/gemma-3-4b-it's text_config).
constexpr ModelPreset kPresets[] = {
    {
        .name = "qwen2.5-0.5b",
        .source = "Qwen/Qwen2.5-0.5B",
        .arch = "qwen2",
        .n_layer = 24,
        .n_embd = 896,
        .n_head = 14,
        .n_head_kv = 2,
        .head_dim = 64,
        .n_ff = 4864,
        .n_vocab = 151936,
        .n_ctx_train = 32768,
        .tied_embeddings = true,
        .qkv_bias = true,
        .rope_freq_base = 1000000.0,
        .rms_eps = 1e-6,
        .llama3_rope = {},
        .head_dim_keys = false,
        .rope_dim_key = false,
        .vocab_size_key = false,
        .vocab = VocabKind::kQwen2,
    },
    {
        .name = "qwen2.5-3b",
        .source = "Qwen/Qwen2.5-3B",
        .arch = "qwen2",
        .n_layer = 36,
        .n_embd = 2048,
        .n_head = 16,
        .n_head_kv = 2,
        .head_dim = 128,
        .n_ff = 11008,
        .n_vocab = 151936,
        .n_ctx_train = 32768,
        .tied_embeddings = true,
        .qkv_bias = true,
        .rope_freq_base = 1000000.0,
        .rms_eps = 1e-6,
        .llama3_rope = {},
        .head_dim_keys = false,
        .rope_dim_key = false,
        .vocab_size_key = false,
        .vocab = VocabKind::kQwen2,
    },
    {
        .name = "llama3.2-1b",
        .source = "meta-llama/Llama-3.2-1B",
        .arch = "llama",
        .n_layer = 16,
        .n_embd = 2048,
        .n_head = 32,
        .n_head_kv = 8,
        .head_dim = 64,
        .n_ff = 8192,
        .n_vocab = 128256,
        .n_ctx_train = 131072,
        .tied_embeddings = true,
        .qkv_bias = false,
        .rope_freq_base = 500000.0,
        .rms_eps = 1e-5,
        .llama3_rope = {.factor = 32.0,
                        .low_freq_factor = 1.0,
                        .high_freq_factor = 4.0,
                        .original_context = 8192},
        .head_dim_keys = true,  // its config.json has "head_dim": 64
        .rope_dim_key = true,
        .vocab_size_key = true,
        .vocab = VocabKind::kLlama3,
    },
    {
        .name = "llama3.1-8b",
        .source = "meta-llama/Llama-3.1-8B",
        .arch = "llama",
        .n_layer = 32,
        .n_embd = 4096,
        .n_head = 32,
        .n_head_kv = 8,
        .head_dim = 128,
        .n_ff = 14336,
        .n_vocab = 128256,
        .n_ctx_train = 131072,
        .tied_embeddings = false,
        .qkv_bias = false,
        .rope_freq_base = 500000.0,
        .rms_eps = 1e-5,
        .llama3_rope = {.factor = 8.0,
                        .low_freq_factor = 1.0,
                        .high_freq_factor = 4.0,
                        .original_context = 8192},
        .head_dim_keys = false,  // the original config.json has no head_dim
        .rope_dim_key = true,
        .vocab_size_key = true,
        .vocab = VocabKind::kLlama3,
    },
    {
        .name = "qwen3-8b",
        .source = "Qwen/Qwen3-8B",
        .arch = "qwen3",
        .n_layer = 36,
        .n_embd = 4096,
        .n_head = 32,
        .n_head_kv = 8,
        .head_dim = 128,
        .n_ff = 12288,
        .n_vocab = 151936,
        .n_ctx_train = 40960,
        .tied_embeddings = false,
        .qkv_bias = false,
        .rope_freq_base = 1000000.0,
        .rms_eps = 1e-6,
        .llama3_rope = {},
        .head_dim_keys = true,  // "head_dim": 128 (Qwen3Model writes key/value_length)
        .rope_dim_key = false,
        .vocab_size_key = false,
        .vocab = VocabKind::kQwen2,
        .qk_norm = true,
    },
    {
        // The text model of Gemma 3 4B (text_config of google/gemma-3-4b-it;
        // the GGUF holds no vision tower).
        .name = "gemma3-4b",
        .source = "google/gemma-3-4b-it",
        .arch = "gemma3",
        .n_layer = 34,
        .n_embd = 2560,
        .n_head = 8,
        .n_head_kv = 4,
        .head_dim = 256,
        .n_ff = 10240,
        .n_vocab = 262208,
        .n_ctx_train = 131072,
        .tied_embeddings = true,
        .qkv_bias = false,
        .rope_freq_base = 1000000.0,  // global layers; local layers: 10000 (rope_local_base_freq)
        .rms_eps = 1e-6,
        .llama3_rope = {},
        .head_dim_keys = true,
        .rope_dim_key = false,
        .vocab_size_key = false,
        .vocab = VocabKind::kGemma3,
        .qk_norm = true,
        .sliding_window = 1024,
        .rope_scaling_linear = 8.0,
    },
    {
        .name = "qwen3-30b-a3b",
        .source = "Qwen/Qwen3-30B-A3B",
        .arch = "qwen3moe",
        .n_layer = 48,
        .n_embd = 2048,
        .n_head = 32,
        .n_head_kv = 4,
        .head_dim = 128,
        .n_ff = 6144,
        .n_vocab = 151936,
        .n_ctx_train = 40960,
        .tied_embeddings = false,
        .qkv_bias = false,
        .rope_freq_base = 1000000.0,
        .rms_eps = 1e-6,
        .llama3_rope = {},
        .head_dim_keys = true,
        .rope_dim_key = false,
        .vocab_size_key = false,
        .vocab = VocabKind::kQwen2,
        .qk_norm = true,
        .n_expert = 128,
        .n_expert_used = 8,
        .n_ff_exp = 768,
    },
};

int LayerOf(const std::string& name) {
  int layer = -1;
  // As llama-model-loader's comparer: sscanf(name, "blk.%d.", &layer).
  if (std::sscanf(name.c_str(), "blk.%d.", &layer) != 1) return -1;
  return layer;
}

}  // namespace

absl::Span<const ModelPreset> AllPresets() { return kPresets; }

absl::StatusOr<ModelPreset> FindPreset(std::string_view name) {
  std::vector<std::string> names;
  for (const ModelPreset& p : kPresets) {
    if (p.name == name) return p;
    names.emplace_back(p.name);
  }
  return absl::NotFoundError(absl::StrCat("unknown preset '", std::string(name),
                                          "' (presets: ", absl::StrJoin(names, ", "), ")"));
}

std::vector<TensorDesc> PresetTensors(const ModelPreset& p, int64_t n_layer) {
  const int64_t q_dim = p.n_head * p.head_dim;
  const int64_t kv_dim = p.n_head_kv * p.head_dim;
  std::vector<TensorDesc> t;
  if (!p.tied_embeddings) t.push_back({"output.weight", {p.n_embd, p.n_vocab}});
  t.push_back({"output_norm.weight", {p.n_embd}});
  if (p.llama3_rope.factor > 0) t.push_back({"rope_freqs.weight", {p.head_dim / 2}});
  t.push_back({"token_embd.weight", {p.n_embd, p.n_vocab}});
  for (int64_t l = 0; l < n_layer; ++l) {
    const std::string b = absl::StrCat("blk.", l, ".");
    if (p.qkv_bias) t.push_back({b + "attn_k.bias", {kv_dim}});
    t.push_back({b + "attn_k.weight", {p.n_embd, kv_dim}});
    t.push_back({b + "attn_norm.weight", {p.n_embd}});
    t.push_back({b + "attn_output.weight", {q_dim, p.n_embd}});
    if (p.qkv_bias) t.push_back({b + "attn_q.bias", {q_dim}});
    t.push_back({b + "attn_q.weight", {p.n_embd, q_dim}});
    if (p.qkv_bias) t.push_back({b + "attn_v.bias", {kv_dim}});
    t.push_back({b + "attn_v.weight", {p.n_embd, kv_dim}});
    if (p.qk_norm) {
      t.push_back({b + "attn_k_norm.weight", {p.head_dim}});
      t.push_back({b + "attn_q_norm.weight", {p.head_dim}});
    }
    if (p.arch == "gemma3") {
      t.push_back({b + "post_attention_norm.weight", {p.n_embd}});
      t.push_back({b + "post_ffw_norm.weight", {p.n_embd}});
    }
    if (p.n_expert > 0) {
      // Stacked experts: ggml dims {K, N, n_expert}.
      t.push_back({b + "ffn_down_exps.weight", {p.n_ff_exp, p.n_embd, p.n_expert}});
      t.push_back({b + "ffn_gate_exps.weight", {p.n_embd, p.n_ff_exp, p.n_expert}});
      t.push_back({b + "ffn_gate_inp.weight", {p.n_embd, p.n_expert}});
      t.push_back({b + "ffn_up_exps.weight", {p.n_embd, p.n_ff_exp, p.n_expert}});
    } else {
      t.push_back({b + "ffn_down.weight", {p.n_ff, p.n_embd}});
      t.push_back({b + "ffn_gate.weight", {p.n_embd, p.n_ff}});
      t.push_back({b + "ffn_up.weight", {p.n_embd, p.n_ff}});
    }
    t.push_back({b + "ffn_norm.weight", {p.n_embd}});
  }
  // Already in weight_name_comparer order by construction; sorting makes
  // that a checked property rather than a promise.
  std::stable_sort(t.begin(), t.end(), [](const TensorDesc& a, const TensorDesc& b) {
    const int la = LayerOf(a.name), lb = LayerOf(b.name);
    if (la != lb) return la < lb;
    return a.name < b.name;
  });
  return t;
}

int64_t ParameterCount(const ModelPreset& p, int64_t n_layer) {
  int64_t n = 0;
  for (const TensorDesc& t : PresetTensors(p, n_layer)) {
    int64_t e = 1;
    for (int64_t d : t.dims) e *= d;
    n += e;
  }
  return n;
}

std::vector<float> Llama3RopeFactors(const ModelPreset& p) {
  const Llama3RopeScaling& s = p.llama3_rope;
  if (s.factor <= 0) return {};
  // convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors): for each
  // rotated pair, freq = 1 / base^(2i / head_dim); wavelengths shorter than
  // original_context / high_freq_factor keep factor 1, longer than
  // original_context / low_freq_factor get `factor`, and the band between
  // interpolates 1 / ((1 - smooth) / factor + smooth).
  const double low_freq_wavelen = s.original_context / s.low_freq_factor;
  const double high_freq_wavelen = s.original_context / s.high_freq_factor;
  std::vector<float> out;
  for (int64_t i = 0; i < p.head_dim; i += 2) {
    const double freq =
        1.0 / std::pow(p.rope_freq_base, static_cast<double>(i) / static_cast<double>(p.head_dim));
    const double wavelen = 2 * std::numbers::pi / freq;
    double f;
    if (wavelen < high_freq_wavelen) {
      f = 1.0;
    } else if (wavelen > low_freq_wavelen) {
      f = s.factor;
    } else {
      const double smooth = (s.original_context / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      f = 1.0 / ((1.0 - smooth) / s.factor + smooth);
    }
    out.push_back(static_cast<float>(f));
  }
  return out;
}

}  // namespace vibrant::synth
