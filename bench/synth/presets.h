// Real model shapes for synthetic benchmark models.
//
// Each preset carries the hyperparameters of a published model, as its
// Hugging Face config.json gives them and as llama.cpp's convert_hf_to_gguf.py
// writes them into GGUF metadata. Speed depends on shapes and types, not on
// the values of the weights, so a model synthesized from a preset (random
// weights) benchmarks like the real one.
#ifndef VIBRANT_BENCH_SYNTH_PRESETS_H_
#define VIBRANT_BENCH_SYNTH_PRESETS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vibrant::synth {

enum class VocabKind {
  kQwen2,   // Qwen2/2.5 and Qwen3 byte-level BPE (151643 regular tokens + specials)
  kLlama3,  // Llama 3 byte-level BPE (128000 regular tokens + 256 specials)
  kGemma3,  // Gemma 3 SentencePiece (262144 pieces, <pad> <eos> <bos> <unk> first)
};

// Llama 3 "rope_type: llama3" frequency scaling. convert_hf_to_gguf.py turns
// it into the rope_freqs.weight tensor (one factor per rotated pair) and
// writes no rope.scaling.* metadata.
struct Llama3RopeScaling {
  double factor = 0;  // 0: the model has no llama3 scaling
  double low_freq_factor = 1;
  double high_freq_factor = 4;
  int64_t original_context = 8192;
};

struct ModelPreset {
  std::string_view name;     // CLI name, e.g. "qwen2.5-3b"
  std::string_view source;   // the Hugging Face repository the numbers come from
  std::string_view arch;     // general.architecture: "qwen2" or "llama"
  int64_t n_layer;           // num_hidden_layers
  int64_t n_embd;            // hidden_size
  int64_t n_head;            // num_attention_heads
  int64_t n_head_kv;         // num_key_value_heads
  int64_t head_dim;          // hidden_size / num_attention_heads (or config head_dim)
  int64_t n_ff;              // intermediate_size
  int64_t n_vocab;           // vocab_size (rows of token_embd.weight)
  int64_t n_ctx_train;       // max_position_embeddings
  bool tied_embeddings;      // tie_word_embeddings: no output.weight
  bool qkv_bias;             // attention Q/K/V biases (qwen2)
  double rope_freq_base;     // rope_theta
  double rms_eps;            // rms_norm_eps
  Llama3RopeScaling llama3_rope;
  // The config has an explicit head_dim, so convert_hf_to_gguf.py also writes
  // <arch>.attention.key_length / value_length.
  bool head_dim_keys;
  // convert_hf_to_gguf.py writes <arch>.rope.dimension_count (LlamaModel does).
  bool rope_dim_key;
  // convert_hf_to_gguf.py writes <arch>.vocab_size (LlamaModel does).
  bool vocab_size_key;
  VocabKind vocab;
  // qwen3, gemma3, qwen3moe: per-head RMSNorm of q and k before RoPE
  // (attn_q_norm / attn_k_norm, [head_dim]).
  bool qk_norm = false;
  // qwen3moe: experts per layer (num_experts), experts per token
  // (num_experts_per_tok) and the expert FFN width (moe_intermediate_size);
  // n_ff is then the unused dense width the config also states. 0: dense.
  int64_t n_expert = 0;
  int64_t n_expert_used = 0;
  int64_t n_ff_exp = 0;
  // gemma3: sliding-window attention window (sliding_window; 0: none) and
  // linear rope scaling of the global layers (rope_scaling.factor; 0: none).
  int64_t sliding_window = 0;
  double rope_scaling_linear = 0;
};

// All presets, in a fixed order.
absl::Span<const ModelPreset> AllPresets();

// The preset called `name` (exact, lower case); the error lists the names.
absl::StatusOr<ModelPreset> FindPreset(std::string_view name);

// Number of weights of a model of this preset with `n_layer` layers.
int64_t ParameterCount(const ModelPreset& p, int64_t n_layer);

// One tensor of a model: GGUF name and ggml dims (dims[0] is the row length).
struct TensorDesc {
  std::string name;
  std::vector<int64_t> dims;
};

// The tensors of a llama.cpp GGUF of this preset with `n_layer` layers, in the
// order llama-quantize writes them (llama-model-loader's weight_name_comparer:
// tensors outside blocks first, then by block number, by name within each).
std::vector<TensorDesc> PresetTensors(const ModelPreset& p, int64_t n_layer);

// The values of rope_freqs.weight that convert_hf_to_gguf.py computes for
// llama3 rope scaling (head_dim / 2 factors); empty when the preset has none.
std::vector<float> Llama3RopeFactors(const ModelPreset& p);

}  // namespace vibrant::synth

#endif  // VIBRANT_BENCH_SYNTH_PRESETS_H_
