// Lowering of GGUF models (llama, qwen2) into the static tensor IR.
#ifndef VIBRANT_FRONTENDS_LOWER_LOWER_H_
#define VIBRANT_FRONTENDS_LOWER_LOWER_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "frontends/gguf/gguf.h"
#include "ir/graph.h"

namespace vibrant {

struct LowerOptions {
  // Upper bound of tokens per step (the symbolic T). Prefill longer prompts
  // in chunks of this size.
  int64_t max_tokens = 512;
  // KV cache length in tokens; 0 = min(the model's context_length, 4096).
  int64_t n_ctx = 0;
  // KV cache element type: f16 (as llama.cpp) or f32.
  DType kv_dtype = DType::kF16;
  // true: logits for every token of a step ([T, vocab]); false: for the last
  // token only ([1, vocab]), which is what generation needs.
  bool all_logits = false;
};

// Builds the graph of one step. Graph inputs: "tokens" i32[T] and
// "positions" i32[T]; output: "logits" f32[T or 1, n_vocab]. KV caches
// "cache_k.<layer>" / "cache_v.<layer>" of shape [n_ctx, n_head_kv, head_dim].
// Hyperparameters are recorded in Graph::meta under the keys:
//   arch (string), n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff,
//   n_vocab, n_ctx, n_ctx_train, rope_dim, rope_mode (0 normal, 2 neox)
//   (int); rope_freq_base, rope_freq_scale, rms_eps (float);
//   all_logits (int 0/1).
// An unsupported architecture or a missing/inconsistent tensor is a named
// error ("m.gguf: unsupported architecture 'mamba'", "m.gguf: tensor
// blk.3.attn_q.weight: expected shape [256, 256], file has [256, 128]").
absl::StatusOr<ir::Graph> LowerGguf(const GgufFile& file, const LowerOptions& opts);

}  // namespace vibrant

#endif  // VIBRANT_FRONTENDS_LOWER_LOWER_H_
