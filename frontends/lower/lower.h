// Lowering of GGUF models (llama, qwen2) into the static tensor IR.
#ifndef VIBRANT_FRONTENDS_LOWER_LOWER_H_
#define VIBRANT_FRONTENDS_LOWER_LOWER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

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
  // KV cache element types, K and V apart (llama.cpp's --cache-type-k /
  // --cache-type-v): f16 (the default, as llama.cpp), f32, or q8_0 (blocks of
  // 32 along head_dim, half of f16's bytes; needs head_dim % 32 == 0).
  DType cache_type_k = DType::kF16;
  DType cache_type_v = DType::kF16;
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

// A model known by its metadata and tensor table alone, without tensor data:
// everything lowering reads of a GGUF. For compiling and sizing models whose
// weights are absent (the Qwen2.5-3B figures in docs/architecture.md).
struct ModelShapes {
  std::string name;  // stands for the file path in errors
  std::vector<std::pair<std::string, GgufValue>> metadata;
  std::vector<GgufTensorInfo> tensors;  // name, dims (ggml order), type
};

// LowerGguf over shapes: the same graph a GGUF with this metadata and these
// tensor infos gives, with the same checks and errors.
absl::StatusOr<ir::Graph> LowerShapes(const ModelShapes& model, const LowerOptions& opts);

// The hyperparameters of a llama / qwen2 model.
struct TransformerSpec {
  std::string name;  // for errors; default "<arch shapes>"
  std::string arch = "llama";  // "llama" or "qwen2"
  int64_t n_layer = 1;
  int64_t n_embd = 64;
  int64_t n_head = 1;
  int64_t n_head_kv = 1;
  int64_t head_dim = 0;  // 0: n_embd / n_head (no key_length metadata)
  int64_t n_ff = 64;
  int64_t n_vocab = 32;
  int64_t n_ctx_train = 2048;
  double rope_freq_base = 10000.0;
  double rms_eps = 1e-5;
  bool tied_embeddings = false;  // no output.weight: token_embd.weight projects
  bool qkv_bias = false;         // attn_{q,k,v}.bias (qwen2 has them)
  DType matrix_type = DType::kF16;  // of every weight matrix; vectors are f32
};

// The metadata keys and tensor table llama.cpp's converter writes for such a
// model (tensor byte sizes set, offsets 0); lowering accepts it when the
// spec is consistent (a quantized matrix_type needs rows of whole blocks).
ModelShapes ShapesFromSpec(const TransformerSpec& spec);

}  // namespace vibrant

#endif  // VIBRANT_FRONTENDS_LOWER_LOWER_H_
