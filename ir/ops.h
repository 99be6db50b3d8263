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
  //   cache[positions[t], :, :] = convert(src[t]) to the cache dtype:
  //   f32: copy; f16: round to nearest even;
  //   q8_0 (llama.cpp's --cache-type-k/-v q8_0; hd % 32 == 0): each head row
  //     in blocks of 32 along head_dim (GGUF q8_0 blocks: f16 d, 32 int8
  //     codes), rounded as ggml's quantize_row_q8_0_ref: amax = max |x|,
  //     d = amax / 127, id = d != 0 ? 1 / d : 0, code = roundf(x * id) (half
  //     away from zero), d stored as f16 (nearest even); a block holding a
  //     non-finite value stores d = NaN and codes 0 (it reads back as NaN).
  //   The output aliases the cache (Value::alias_of); later readers use
  //   the output so the order is explicit. positions[t] >= C is an error.
  // Paged variant (continuous batching: several sequences per step, KV cache
  //   in fixed-size blocks):
  //   kv_store(src[T, KVH, hd], cache[NB*BS, KVH, hd], positions[T] i32,
  //            seq_ids[T] i32, block_table[S, MB] i32) {block_size = BS}
  //   The cache is a pool of NB blocks of BS rows; sequence s's position p
  //   lives in row  block_table[s, p / BS] * BS + p % BS  (PagedRow below), and
  //   token t belongs to sequence seq_ids[t] (a slot in [0, S)). Each row is
  //   converted as above. seq_ids[t] outside [0, S), p / BS >= MB, or a block
  //   id outside [0, NB) is an error (never an out-of-bounds write). Two tokens
  //   of a step writing one row: the later token's value is stored.
  kKvStore,
  // attention(q[T, H, hd], k[C, KVH, hd], v[C, KVH, hd], positions[T] i32)
  //   {scale [, window]} -> [T, H, hd]. GQA: head h reads KV head h / (H / KVH).
  //   Causal: query t attends cache rows 0..positions[t] inclusive; with
  //   window W > 0 (sliding-window attention, gemma3's local layers) only
  //   rows j with positions[t] - j < W (the last W positions, itself
  //   included). window 0 or absent: no window.
  //   out[t,h] = softmax_j(scale * q[t,h] . k[j,kvh]) weighted sum of v[j,kvh].
  //   k and v are each f32, f16 or q8_0 (they may differ; same shape) and are
  //   read as their dequantized values (q8_0: code * d, a float product).
  // Paged variant: attention(q, k[NB*BS, KVH, hd], v, positions[T],
  //   seq_ids[T], block_table[S, MB]) {scale, block_size = BS}: query t of
  //   sequence s = seq_ids[t] attends that sequence's positions
  //   0..positions[t], position p read from cache row PagedRow(s, p) (as
  //   kv_store's paged variant). The same numbers as the contiguous op on
  //   the rows gathered in position order. Errors as paged kv_store.
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
  //     quantize_q8(x): x a row value of whole 32-element blocks; its q8a
  //       output is a body output and no body op reads it (codegen rounds a
  //       block with one warp as it writes the row).
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
  // scale(x) {scale} -> x's shape: out = x * (float)scale (gemma3 multiplies
  //   the embedding by sqrt(n_embd)). Elementwise in meaning, but its
  //   attribute keeps it out of the registry's scalar functions and of fused
  //   bodies (its own kernels).
  kScale,
  // gelu(x) -> x's shape: GELU with the tanh approximation, in ggml's float
  //   operations: 0.5f*x*(1.0f + tanhf(0.7978845608f*x*(1.0f + 0.044715f*x*x)))
  //   (ir/ops.cc: GeluFn, its registry scalar function). gemma3's FFN is
  //   gelu(gate) * up. Elementwise.
  kGelu,
  // Mixture of experts (qwen3moe), as llama.cpp's build_moe_ffn with softmax
  // gating: the router's probabilities p[t] = softmax(logits[t]) over the E
  // experts (runtime/cpu/kernels.h: MoeSoftmax gives the float operations),
  // the k experts of largest p per token, each expert's FFN on the token,
  // and their sum weighted by p (renormalized over the k).
  // moe_topk(logits[T, E]) {k} -> i32 [T, k]: per token the k experts of
  //   largest p, in decreasing p; equal p: the lower expert first. 1 <= k <= E.
  kMoeTopK,
  // moe_weights(logits[T, E], ids[T, k] i32) {norm} -> f32 [T, k]:
  //   w[t, j] = p[t, ids[t, j]]; norm = 1: then divided by the float sum
  //   of w[t, 0..k-1] (j ascending). An id outside [0, E) is a runtime error.
  kMoeWeights,
  // matmul_id(x[T, K] or x[T, k, K], w[E, N, K] any dtype, ids[T, k] i32)
  //   -> [T, k, N]: out[t, j, :] = matmul of x[t] (rank 2: the same row for
  //   every j) or x[t, j] (rank 3) with expert ids[t, j]'s matrix w[e]
  //   (each element as matmul computes it: DotRow of the dequantized row).
  //   Only the chosen experts' rows are read. An id outside [0, E) is a
  //   runtime error.
  kMatMulId,
  // moe_sum(y[T, k, D], w[T, k]) -> [T, D]: out[t] = w[t, 0] * y[t, 0] +
  //   w[t, 1] * y[t, 1] + ... (float, j ascending, each product rounded).
  kMoeSum,
  // sample(logits[R, V] f32, params[8] i32) -> i32[1]: the next token, drawn
  //   from the last row of logits by llama.cpp's sampler chain as
  //   runtime/sampler.h defines it (greedy when temp <= 0; else top-k ->
  //   top-p -> min-p -> temperature -> one counter-based draw). params are the
  //   draw's parameters packed as runtime/sampler.h's PackSampleParams:
  //   [0] temp (f32 bits) [1] top_k [2] top_p (f32 bits) [3] min_p (f32 bits)
  //   [4] seed [5] draw index low word [6] high word [7] 0. NaN and infinite
  //   logits are never drawn; a row without a finite logit gives -1.
  //   Its CPU reference is runtime/sampler.h's SampleToken. Appended by
  //   passes/append_sample (vibrantc compile --gpu-sampling): the step then
  //   returns the token id, not the whole row.
  kSample,
  // Collectives of a tensor-parallel graph (meta tp = N ranks; made by
  // passes/shard_tensor_parallel): the graph is the program every rank runs
  // on its own shard of the weights, and these ops combine the value each
  // rank holds at that op. {ranks} must equal meta tp.
  // all_reduce(x f32) {ranks} -> x's shape: out = x_0 + x_1 + ... + x_{N-1},
  //   element by element, summed in rank order in f32 (each sum rounded),
  //   the same result on every rank (where partial sums of a row-parallel
  //   matmul meet).
  kAllReduce,
  // all_gather(x[..., C] f32) {ranks} -> [..., N*C]: out[..., r*C + j] =
  //   x_r[..., j] on every rank (a column-parallel result made whole: the
  //   vocab-parallel logits).
  kAllGather,
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
  kBlockQuantize,  // quantize_q8: rounds each 32-element block of a row; its
                   // q8a output leaves the body (rows of whole blocks)
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

// An elementwise op's value, element by element, defined once: the CPU
// backend applies `unary` / `binary` (b broadcast over a), and codegen uses
// `cuda`, an expression in $x (unary) or $a and $b (binary) with the same
// float operations (no contraction: __fadd_rn / __fmul_rn), so the GPU gives
// the CPU's bits.
struct ScalarFn {
  float (*unary)(float) = nullptr;
  float (*binary)(float, float) = nullptr;
  std::string_view cuda;
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
  // Elementwise ops: their scalar function (others: empty).
  ScalarFn scalar = {};
};



const OpInfo& GetOpInfo(OpKind kind);

// Whether a kv_store / attention op is the paged variant (seq_ids and a
// block table among its inputs).
bool IsPagedKv(OpKind kind, size_t num_inputs);
inline std::string_view OpName(OpKind kind) { return GetOpInfo(kind).name; }
absl::StatusOr<OpKind> OpKindFromName(std::string_view name);
// Whether `kind` is the number of an OpKind (for decoders of untrusted data).
bool IsValidOpKind(int kind);
// The attribute spec of `key` for `kind`, or null when the op does not take it.
const AttrSpec* FindAttrSpec(OpKind kind, std::string_view key);

}  // namespace vibrant::ir

#endif  // VIBRANT_IR_OPS_H_
