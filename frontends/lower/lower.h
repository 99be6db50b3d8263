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
  // in chunks of this size. Clamped to the KV cache length (Graph::max_tokens
  // holds the value used).
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
// blk.3.attn_q.weight: expected shape [256, 256], file has [256, 128]";
// tensor shapes in errors are in the file's ggml order, innermost first).
// Metadata errors name the key ("m.gguf: metadata llama.block_count: missing
// (required)"). Like llama.cpp, a file with tensors the graph does not use is
// refused (an unsupported model variant, e.g. mixture of experts).
//
// The graph, per layer l (values "attn_norm.l", "q.l", "q_heads.l",
// "q_rope.l", "k_cache.l", "attn.l", "ffn_inp.l", "l_out.l", ...; weights are
// named by their GGUF tensor names): rms_norm + mul(attn_norm), q/k/v matmuls
// (+ separate bias adds: required for qwen2, used when present for llama),
// reshape to heads, rope on q and k (mode 0 llama, 2 qwen2; with
// rope_freqs.weight as frequency factors when the file has it), kv_store of
// k and v, attention(scale 1/sqrt(head_dim)), reshape, attn_output matmul,
// residual add, rms_norm + mul(ffn_norm), silu(gate) * up, ffn_down, residual
// add. Then rms_norm + mul(output_norm), last_row unless all_logits, and the
// output matmul with output.weight, or token_embd.weight when the file has no
// output.weight (tied embeddings).
absl::StatusOr<ir::Graph> LowerGguf(const GgufFile& file, const LowerOptions& opts);

}  // namespace vibrant

#endif  // VIBRANT_FRONTENDS_LOWER_LOWER_H_
