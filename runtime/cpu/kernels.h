// CPU reference kernels: one function per IR op (ir/ops.h), over raw
// row-major buffers. These define the numbers every other backend is checked
// against, so each states the float operations it performs and their order.
// Where ggml (llama.cpp's CPU backend) has a definite order we follow it, so
// that our results and llama.cpp's agree to the last bit where the inputs do.
//
// Conventions: `T` is the number of token rows in this step (the runtime
// value of the IR's symbolic dimension), activations are f32, token ids and
// positions i32. Kernels that can meet bad runtime data (ids, positions)
// return a Status and never read or write out of bounds; shapes are checked
// by the caller (the executor validates the graph once).
#ifndef VIBRANT_RUNTIME_CPU_KERNELS_H_
#define VIBRANT_RUNTIME_CPU_KERNELS_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ir/dtype.h"
#include "runtime/cpu/thread_pool.h"

namespace vibrant::cpu {

// embedding: out[t, :] = Dequantize(table row ids[t]) for t < T. `table` holds
// n_rows rows of `dim` elements of `dtype` (dim a whole number of blocks).
// An id outside [0, n_rows) is an InvalidArgument error naming the id.
absl::Status Embedding(DType dtype, const void* table, int64_t n_rows, int64_t dim,
                       const int32_t* ids, int64_t T, float* out);

// matmul: out[t, n] = DotRow(w row n, x row t, K) (+ bias[n], one float add)
// for x[T, K] f32, w[N, K] of `wtype`, bias[N] f32 or null, out[T, N].
// Parallel over n; each weight row is streamed once and dotted with all T
// rows of x, so a prefill step reads the weights once. Results are identical
// for any T and any thread count (out[t, n] depends only on x[t] and w[n]).
// Fails if K is not a whole number of `wtype` blocks.
absl::Status MatMul(ThreadPool* pool, const float* x, int64_t T, int64_t K, DType wtype,
                    const void* w, int64_t N, const float* bias, float* out);

// rms_norm over rows of D (ggml's order): sum = Σ (double)(x*x) (product in
// float, sum in double), mean = (float)(sum / D), scale = 1.0f /
// sqrtf(mean + eps), out = x * scale. In-place (out == x) is allowed.
void RmsNorm(const float* x, int64_t rows, int64_t D, float eps, float* out);

// add / mul with suffix broadcast: out[i] = a[i] op b[i % n_b], i < n_a;
// n_a must be a multiple of n_b. out may alias a or b.
void Add(const float* a, int64_t n_a, const float* b, int64_t n_b, float* out);

// Any elementwise op by its registry function (ir/ops.h, OpInfo::scalar):
// out[i] = f(x[i]), or f(a[i], b[i % n_b]). out may alias an input.
void Unary(float (*f)(float), const float* x, int64_t n, float* out);
void Binary(float (*f)(float, float), const float* a, int64_t n_a, const float* b, int64_t n_b, float* out);
void Mul(const float* a, int64_t n_a, const float* b, int64_t n_b, float* out);

// silu: out = x / (1.0f + expf(-x)) (ggml's form of x * sigmoid(x)).
void Silu(const float* x, int64_t n, float* out);

// scale: out = x * s (one float multiply). out may alias x.
void Scale(const float* x, int64_t n, float s, float* out);

// gelu is an elementwise op of the registry: its scalar function is in
// ir/ops.cc (GeluFn, ggml_gelu_f32's float formula; llama.cpp's CPU backend
// by default looks the result up in an f16 table of f16-rounded inputs, which
// the conformance tolerances measure) and runs through Unary.

// ---- mixture of experts (ir/ops.h: moe_topk, moe_weights, matmul_id, moe_sum)

// The router's probabilities of one token, ggml's soft_max: m = max_i l_i;
// e_i = expf(l_i - m); S = sum_i (double)e_i (i ascending);
// p_i = e_i * (float)(1.0 / S).
void MoeSoftmax(const float* logits, int64_t E, float* p);

// moe_topk: ids[t, 0..k) = the k experts of largest p (MoeSoftmax of
// logits[t]) in decreasing p, ties to the lower expert. Needs 1 <= k <= E.
absl::Status MoeTopK(const float* logits, int64_t T, int64_t E, int64_t k, int32_t* ids);

// moe_weights: w[t, j] = p[t, ids[t, j]]; with `norm`, divided by
// S = (float)(sum_j (double)w[t, j]). An id outside [0, E) is an error.
absl::Status MoeWeights(const float* logits, int64_t T, int64_t E, const int32_t* ids, int64_t k,
                        bool norm, float* w);

// The (token, slot) pairs routed to each expert: result[e] lists t * k + j for
// every ids[t, j] == e, ascending. An id outside [0, E) is an error naming it.
absl::StatusOr<std::vector<std::vector<int64_t>>> GroupByExpert(const int32_t* ids, int64_t T,
                                                                int64_t k, int64_t E);

// matmul_id: out[t, j, n] = DotRow(w[ids[t, j]] row n, x row, K) for
// x[T, K] (x_per_slot false: row t for every j) or x[T, k, K] (true: row
// t * k + j); w[E, N, K] of `wtype`. Tokens are grouped by expert
// (GroupByExpert) and each used expert runs as one MatMul over its rows, so
// an expert's weights are streamed once per step and unused experts are not
// read; every element equals the ungrouped DotRow, whatever the grouping.
absl::Status MatMulId(ThreadPool* pool, const float* x, bool x_per_slot, int64_t T, int64_t k,
                      int64_t K, DType wtype, const void* w, int64_t E, int64_t N,
                      const int32_t* ids, float* out);

// The grouping of MatMulId with the per-expert matmul given: `mm(e, xs, n,
// ys)` computes ys[n, N] from expert e's weights and the n gathered rows xs
// [n, K] (the fast kernels' matmul_id passes MatMulFast: runtime/cpu/
// fast_matmul.h). Every output row is mm's row for its (token, slot).
using ExpertMatMul = std::function<absl::Status(int64_t e, const float* xs, int64_t n, float* ys)>;
absl::Status MatMulIdGrouped(const float* x, bool x_per_slot, int64_t T, int64_t k, int64_t K, int64_t E,
                             int64_t N, const int32_t* ids, float* out, const ExpertMatMul& mm);

// moe_sum: out[t, d] = w[t,0] * y[t,0,d] + w[t,1] * y[t,1,d] + ... (float,
// j ascending, each product rounded, as llama.cpp's mul then chained adds).
void MoeSum(const float* y, const float* w, int64_t T, int64_t k, int64_t D, float* out);

struct RopeParams {
  int mode = 0;        // 0: normal (pairs 2i, 2i+1); 2: neox (pairs i, i + n_rot/2)
  int64_t n_rot = 0;   // rotated dims per head; even, <= head_dim
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;
  const float* freq_factors = nullptr;  // [n_rot/2] or null (all 1)
};
// rope on x[T, H, hd] with positions[T]; out may equal x. For token t and
// pair i < n_rot/2 the angle is computed exactly as ggml's rope cache:
//   theta_scale = powf(freq_base, -2.0f / n_rot)
//   th_0 = (float)p;  th_{i+1} = th_i * theta_scale    (float, iterated)
//   angle_i = freq_scale * (th_i / factor_i)           (float)
// and the pair (x0, x1) becomes (x0*cos - x1*sin, x0*sin + x1*cos) with
// cosf/sinf. Dims past n_rot are copied. Fails on an unsupported mode or an
// odd / too large n_rot.
absl::Status Rope(const float* x, int64_t T, int64_t H, int64_t hd, const int32_t* positions,
                  const RopeParams& params, float* out);

// kv_store: cache[positions[t], :] = convert(src[t, :]) for t < T, rows of
// `row` elements (KVH * hd). Cache dtype F32 (copy), F16 (FloatToHalf,
// round to nearest even) or Q8_0 (row % 32 == 0; q8_0 blocks of 32 along the
// row, which with hd % 32 == 0 never straddle heads; ggml's
// quantize_row_q8_0_ref: amax = max |x|, d = amax / 127.0f, id = d ? 1.0f / d
// : 0, code = roundf(x * id), d stored as FloatToHalf(d); a block with a
// non-finite value stores d = NaN (0x7e00) and codes 0). A position outside
// [0, n_ctx) is an OutOfRange error; all positions are checked before
// anything is written, so a failed store leaves the cache unchanged.
absl::Status KvStore(const float* src, int64_t T, int64_t row, const int32_t* positions,
                     DType cache_dtype, void* cache, int64_t n_ctx);

// The paged variants' extra inputs (ir/ops.h): token t belongs to sequence
// seq_ids[t] in [0, n_seq); sequence s's position p is cache row
// block_table[s * max_blocks + p / block_size] * block_size + p % block_size.
struct PagedKv {
  const int32_t* seq_ids = nullptr;
  const int32_t* block_table = nullptr;  // [n_seq, max_blocks]
  int64_t n_seq = 0;
  int64_t max_blocks = 0;
  int64_t block_size = 0;
};
// The cache row of sequence `seq`'s position `pos` in a cache of n_rows rows;
// an OutOfRange error naming the sequence, position or block when any of
// them is outside its range.
absl::StatusOr<int64_t> PagedRow(const PagedKv& paged, int64_t seq, int64_t pos, int64_t n_rows);
// kv_store, paged: as KvStore with row PagedRow(seq_ids[t], positions[t]).
// Every row is checked before anything is written.
absl::Status PagedKvStore(const float* src, int64_t T, int64_t row, const int32_t* positions,
                          const PagedKv& paged, DType cache_dtype, void* cache, int64_t n_rows);

struct AttentionShape {
  int64_t T = 0;        // query rows
  int64_t n_head = 0;   // H
  int64_t n_head_kv = 0;  // KVH, divides H
  int64_t head_dim = 0;
  int64_t n_ctx = 0;    // cache rows C
  int64_t window = 0;   // > 0: query t attends only rows j > positions[t] - window
};
// attention(q[T, H, hd], k[C, KVH, hd] of `k_dtype`, v[C, KVH, hd] of
// `v_dtype` (each F32, F16 or Q8_0 with hd % 32 == 0), positions[T]) ->
// out[T, H, hd]. Cache rows are read as their dequantized f32 values (f16:
// exact; q8_0: code * d, one float product, runtime/cpu/dequantize.h). Head h
// reads KV head h / (H / KVH); query t attends rows j = j0..positions[t],
// j0 = 0, or with a window W > 0 max(0, positions[t] - W + 1). Per (t, h),
// over those rows:
//   s_j = (float)(Σ_d (double)q[d] * (double)k_j[d]) * scale  (float multiply)
//   m = max_j s_j;  e_j = expf(s_j - m);  S = Σ_j (double)e_j
//   out[d] = (float)((Σ_j (double)e_j * (double)v_j[d]) / S)
// Parallel over (t, KV head). A position outside [0, n_ctx) is an OutOfRange
// error.
absl::Status Attention(ThreadPool* pool, const float* q, const void* k, const void* v,
                       DType k_dtype, DType v_dtype, const int32_t* positions,
                       const AttentionShape& shape, float scale, float* out);
// attention, paged: as above, query t reading sequence seq_ids[t]'s positions
// 0..positions[t] from rows PagedRow (shape.n_ctx = the pool's rows). The
// same float operations in the same order as the contiguous op.
absl::Status PagedAttention(ThreadPool* pool, const float* q, const void* k, const void* v,
                            DType k_dtype, DType v_dtype, const int32_t* positions,
                            const PagedKv& paged, const AttentionShape& shape, float scale,
                            float* out);
// The same with one dtype for both caches.
absl::Status Attention(ThreadPool* pool, const float* q, const void* k, const void* v,
                       DType cache_dtype, const int32_t* positions, const AttentionShape& shape,
                       float scale, float* out);

// last_row: out[0, :] = x[T - 1, :].
void LastRow(const float* x, int64_t T, int64_t D, float* out);

// sample: *out = the token runtime/sampler.h's SampleToken draws from row
// rows-1 of logits[rows, V] with the parameters packed in params[8]
// (PackSampleParams); -1 when the row has no finite logit. Parameters out of
// range are an InvalidArgument error.
absl::Status Sample(const float* logits, int64_t rows, int64_t V, const int32_t* params, int32_t* out);

// copy is a memcpy of the value's bytes and reshape a view of its input's
// buffer; the executor does both without a kernel.

}  // namespace vibrant::cpu

#endif  // VIBRANT_RUNTIME_CPU_KERNELS_H_
