// The op set, with each op's semantics defined once, here. Backends
// (runtime/cpu, runtime/cuda) implement exactly these semantics; the CPU
// backend is the reference.
//
// Shapes use T for the symbolic token count. "f32" activations unless stated.
#ifndef VIBRANT_IR_OPS_H_
#define VIBRANT_IR_OPS_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace vibrant::ir {

enum class OpKind : uint8_t {
  // embedding(table[V, D] any dtype, ids[T] i32) -> [T, D]
  //   out[t, :] = dequant(table[ids[t], :]). An id outside [0, V) is an error
  //   reported by the runtime, never an out-of-bounds read.
  kEmbedding,
  // matmul(x[T, K], w[N, K] any dtype [, bias[N] f32]) -> [T, N]
  //   out[t, n] = sum_k x[t, k] * dequant(w)[n, k] (+ bias[n]).
  kMatMul,
  // rms_norm(x[..., D]) {eps} -> same shape
  //   out = x / sqrt(mean(x^2 over the last dim) + eps). No weight: the scale
  //   is a separate mul (fusion folds it back).
  kRmsNorm,
  // add(a, b) / mul(a, b) -> shape of a. b's shape must equal a trailing
  //   suffix of a's shape (broadcast over the leading dims), e.g. [T, D] * [D].
  kAdd,
  kMul,
  // silu(x) -> x * sigmoid(x)
  kSilu,
  // reshape(x) {shape=[...]} -> same elements, new shape (T may appear once,
  //   and only where x has it at the same outer position).
  kReshape,
  // rope(x[T, H, hd], positions[T] i32 [, freq_factors[n_rot/2] f32])
  //   {mode, n_rot, freq_base, freq_scale}
  //   Rotates the first n_rot dims of each head by angle
  //   p * freq_scale * freq_base^(-2i/n_rot) / freq_factors[i] (factor 1
  //   when absent; llama 3.1's rope_freqs.weight), p = positions[t], for pair i:
  //   mode 0 ("normal", llama): pairs (2i, 2i+1);
  //   mode 2 ("neox", qwen2):   pairs (i, i + n_rot/2).
  //   Dims past n_rot pass through.
  kRope,
  // kv_store(src[T, KVH, hd], cache[C, KVH, hd], positions[T] i32) -> cache'
  //   cache[positions[t], :, :] = convert(src[t]) (to the cache dtype, f16 or
  //   f32). The output aliases the cache (Value::alias_of); later readers use
  //   the output so the order is explicit. positions[t] >= C is an error.
  kKvStore,
  // attention(q[T, H, hd], k[C, KVH, hd], v[C, KVH, hd], positions[T] i32)
  //   {scale} -> [T, H, hd]. GQA: head h reads KV head h / (H / KVH).
  //   Causal: query t attends cache rows 0..positions[t] inclusive.
  //   out[t,h] = softmax_j(scale * q[t,h] . k[j,kvh]) weighted sum of v[j,kvh].
  kAttention,
  // last_row(x[T, D]) -> [1, D]: the last token's row (logits of the last
  //   position only, for generation).
  kLastRow,
  // copy(x) -> x on another device (inserted by the device pass).
  kCopy,
  // fused(inputs...) {body} -> outputs: evaluates Op::body, an elementwise
  //   expression graph (made by the fusion pass).
  kFused,
};

struct OpInfo {
  OpKind kind;
  std::string_view name;  // text-format name, e.g. "rms_norm"
  int min_inputs;
  int max_inputs;
  bool elementwise;  // output[i] depends only on inputs at i (with broadcast);
                     // the ops a fused body may contain
};

const OpInfo& GetOpInfo(OpKind kind);
inline std::string_view OpName(OpKind kind) { return GetOpInfo(kind).name; }
absl::StatusOr<OpKind> OpKindFromName(std::string_view name);
// Whether `kind` is the number of an OpKind (for decoders of untrusted data).
bool IsValidOpKind(int kind);

}  // namespace vibrant::ir

#endif  // VIBRANT_IR_OPS_H_
