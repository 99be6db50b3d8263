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
  // fused(inputs...) {body} -> outputs...: evaluates Op::body (made by the
  //   fusion pass), a graph that declares only inputs (its kInput values in id
  //   order are the op's inputs, same dtype and shape) and whose outputs() are
  //   the op's outputs (one or more). Value semantics: each body op means what
  //   it means in a step graph, evaluated in body order; a backend may
  //   evaluate in any order that gives those values (the CPU runs the body
  //   ops in order on chunks of rows with the unfused ops' kernels, so fused
  //   == unfused bit for bit).
  //   Iteration space, so that codegen can emit ONE kernel: the op works on
  //   N rows of R elements, N = output 0's outer dim (T or static), R = the
  //   product of its other dims (1 for rank 1). Every body value is a
  //     row value:  shape [N, ...] with R elements per row (reshapes between
  //                 row shapes keep row r = elements [r*R, (r+1)*R));
  //     per-row:    i32[N] rope positions (positions[r] for row r);
  //     constant:   a body input without the row dim, the same for all rows.
  //   Allowed body ops (nothing else, no nested fused):
  //     add/mul(a, b): a a row value; b a row value of a's shape, or a
  //       constant body input whose shape is a strict suffix of a's;
  //     silu(x): x a row value;
  //     reshape(x): row value -> row value, outer dim N kept;
  //     rms_norm(x) {eps}: x of shape [N, R] (reduces over the whole row);
  //     rope(x[N, H, hd], positions [, freq_factors]) {...}: H*hd = R,
  //       positions a per-row body input, freq_factors a constant body input;
  //       it couples elements only within a pair of one head (rope above).
  //   At most ONE row-coupling op (rms_norm or rope) per body; every other op
  //   is elementwise within the row. So a body is one of three kernel shapes:
  //   pure elementwise, one row reduction (compute the norm's input, reduce
  //   the row, finish), or one rotation of pairs. Body outputs are row values;
  //   intermediates a body does not output need no memory outside the kernel.
  //   Patterns the fusion pass forms (passes/fuse_elementwise.h):
  //   mul(rms_norm(x), w); mul(silu(g), u); rope(reshape(add(mm, bias)), pos);
  //   s = add(a, b), mul(rms_norm(s), w) with outputs (s, normalized row).
  kFused,
  // quantize_q8(x[..., K]) -> q8a of x's shape (K % 32 == 0): x rounded to
  //   8-bit blocks of 32, as llama.cpp's q8_1 activations: per block
  //   d = max|x| / 127, code = round(x / d) (0 when d == 0), value = code * d
  //   (runtime/cpu/quantize.h: RoundActivationsToQ8 is its definition).
  //   Inserted by passes/quantize_activations for kernels that multiply
  //   8-bit codes (q8 mat-vec, dp4a); matmul reads a q8a x as its values.
  kQuantizeQ8,
  // multi_matmul(x[T, K], w_0[N_0, K], ..., w_{n-1}[N_{n-1}, K], biases...)
  //   {bias=[b_0, ..., b_{n-1}]} -> out_0[T, N_0], ..., out_{n-1}[T, N_{n-1}]:
  //   n matmuls (kMatMul) of one x; b_i (0 or 1) says whether w_i has a bias,
  //   the biases follow the weights in order. All weights have one dtype.
  //   Made by passes/combine_matmuls (q/k/v, gate/up): one kernel reads x
  //   once for all of them.
  kMultiMatMul,
};

// ---- the op registry ------------------------------------------------------------
// One entry per OpKind (ir/ops.cc): what the verifier, the passes, the
// printer/parser/serializer and both backends know of an op besides its
// semantics above. Adding an op = an OpKind with its semantics here, a
// registry entry with its output inference in ops.cc, and the backends'
// kernels (docs/architecture.md, "How to add an op").

enum class AttrType : uint8_t { kInt, kFloat, kString, kIntList };

struct AttrSpec {
  std::string_view key;
  AttrType type;  // kFloat also accepts an integer value
  bool required;
};

// How an op may take part in a fused body (kFused).
enum class FusionRole : uint8_t {
  kNone,         // never in a body
  kElementwise,  // out[i] from the inputs at i (b of add/mul may broadcast)
  kRowReduce,    // couples all elements of a row (rms_norm); one per body
  kPairRotate,   // couples pairs within a head (rope); one per body
  kView,         // reshape: same elements, no work
};

// What memory an op's output may share.
enum class InPlaceRule : uint8_t {
  kNone,           // memory of its own
  kReuseDyingInput,  // may take the memory of an input of the same type and
                     // shape that dies at this op (each element is read
                     // before it is written: elementwise ops)
  kViewOfInput0,   // the same bytes as input 0 (reshape)
  kUpdatesInput1,  // input 1 updated in place (kv_store: aliases the cache)
};

struct OpInfo {
  OpKind kind;
  std::string_view name;  // text-format name, e.g. "rms_norm"
  int min_inputs;
  int max_inputs;
  // Outputs: 1, or -1 when they follow from the op (fused: its body's;
  // multi_matmul: one per weight).
  int outputs;
  const AttrSpec* attrs;  // the attributes it takes (others are errors)
  int num_attrs;
  FusionRole fusion;
  InPlaceRule in_place;
  bool side_effects;  // kept by dead-code elimination (kv_store)
  // Shorthand: fusion == kElementwise (add, mul, silu).
  bool elementwise;
};



const OpInfo& GetOpInfo(OpKind kind);
inline std::string_view OpName(OpKind kind) { return GetOpInfo(kind).name; }
absl::StatusOr<OpKind> OpKindFromName(std::string_view name);
// Whether `kind` is the number of an OpKind (for decoders of untrusted data).
bool IsValidOpKind(int kind);
// The attribute spec of `key` for `kind`, or null when the op does not take it.
const AttrSpec* FindAttrSpec(OpKind kind, std::string_view key);

}  // namespace vibrant::ir

#endif  // VIBRANT_IR_OPS_H_
