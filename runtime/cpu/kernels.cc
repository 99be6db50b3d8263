#include "runtime/cpu/kernels.h"

#include <math.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/sampler.h"

namespace vibrant::cpu {
namespace {

absl::Status CheckCacheDtype(DType dtype, int64_t head_dim) {
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kQ8_0) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache dtype ", std::string(DTypeName(dtype)),
                                                   " is not supported (f32, f16 or q8_0)"));
  }
  if (dtype == DType::kQ8_0 && head_dim % 32 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "q8_0 KV cache: rows of ", head_dim, " elements are not whole blocks of 32"));
  }
  return absl::OkStatus();
}

// ggml's quantize_row_q8_0_ref for one block of 32 (ir/ops.h, kv_store): a
// block with a non-finite value stores d = NaN and codes 0.
void StoreQ8_0Block(const float* x, uint8_t* b) {
  float amax = 0.0f;
  bool finite = true;
  for (int j = 0; j < 32; ++j) {
    finite = finite && std::isfinite(x[j]);
    amax = std::max(amax, std::fabs(x[j]));
  }
  int8_t* qs = reinterpret_cast<int8_t*>(b + 2);
  if (!finite) {
    const uint16_t nan = 0x7e00;
    std::memcpy(b, &nan, 2);
    std::memset(qs, 0, 32);
    return;
  }
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const uint16_t h = FloatToHalf(d);
  std::memcpy(b, &h, 2);
  for (int j = 0; j < 32; ++j) qs[j] = static_cast<int8_t>(std::round(x[j] * id));
}

absl::Status CheckPositions(const int32_t* positions, int64_t T, int64_t n_ctx,
                            const char* what) {
  for (int64_t t = 0; t < T; ++t) {
    if (positions[t] < 0 || positions[t] >= n_ctx) {
      return absl::OutOfRangeError(absl::StrCat(what, ": position ", positions[t], " of token ",
                                                t, " is outside the KV cache [0, ", n_ctx, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Embedding(DType dtype, const void* table, int64_t n_rows, int64_t dim,
                       const int32_t* ids, int64_t T, float* out) {
  absl::StatusOr<int64_t> row_bytes = DTypeBytes(dtype, dim);
  if (!row_bytes.ok()) return row_bytes.status();
  // Check every id first so a bad one leaves no half-written output behind.
  for (int64_t t = 0; t < T; ++t) {
    if (ids[t] < 0 || ids[t] >= n_rows) {
      return absl::InvalidArgumentError(absl::StrCat("embedding: token id ", ids[t], " at row ",
                                                     t, " is outside the vocabulary [0, ",
                                                     n_rows, ")"));
    }
  }
  const uint8_t* base = static_cast<const uint8_t*>(table);
  for (int64_t t = 0; t < T; ++t) {
    absl::Status s = Dequantize(dtype, base + ids[t] * *row_bytes, dim, out + t * dim);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status MatMul(ThreadPool* pool, const float* x, int64_t T, int64_t K, DType wtype,
                    const void* w, int64_t N, const float* bias, float* out) {
  absl::StatusOr<int64_t> row_bytes = DTypeBytes(wtype, K);
  if (!row_bytes.ok()) return row_bytes.status();
  const uint8_t* base = static_cast<const uint8_t*>(w);
  const int64_t rb = *row_bytes;
  auto rows = [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const uint8_t* wrow = base + n * rb;
      const float b = bias != nullptr ? bias[n] : 0.0f;
      for (int64_t t = 0; t < T; ++t) {
        float acc = DotRow(wtype, wrow, x + t * K, K);
        if (bias != nullptr) acc += b;
        out[t * N + n] = acc;
      }
    }
  };
  // Chunks of at least 16 rows keep the scheduling overhead small next to the
  // dot products, even for the tiniest models.
  if (pool != nullptr) {
    pool->ParallelFor(N, rows, 16);
  } else {
    rows(0, N);
  }
  return absl::OkStatus();
}

void RmsNorm(const float* x, int64_t rows, int64_t D, float eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * D;
    float* yr = out + r * D;
    double sum = 0.0;
    for (int64_t i = 0; i < D; ++i) sum += static_cast<double>(xr[i] * xr[i]);
    const float mean = static_cast<float>(sum / static_cast<double>(D));
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < D; ++i) yr[i] = xr[i] * scale;
  }
}

void Add(const float* a, int64_t n_a, const float* b, int64_t n_b, float* out) {
  for (int64_t i0 = 0; i0 < n_a; i0 += n_b) {
    for (int64_t j = 0; j < n_b; ++j) out[i0 + j] = a[i0 + j] + b[j];
  }
}

void Mul(const float* a, int64_t n_a, const float* b, int64_t n_b, float* out) {
  for (int64_t i0 = 0; i0 < n_a; i0 += n_b) {
    for (int64_t j = 0; j < n_b; ++j) out[i0 + j] = a[i0 + j] * b[j];
  }
}

void Unary(float (*f)(float), const float* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = f(x[i]);
}

void Binary(float (*f)(float, float), const float* a, int64_t n_a, const float* b, int64_t n_b, float* out) {
  for (int64_t i0 = 0; i0 < n_a; i0 += n_b) {
    for (int64_t j = 0; j < n_b; ++j) out[i0 + j] = f(a[i0 + j], b[j]);
  }
}

void Silu(const float* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] / (1.0f + expf(-x[i]));
}

void Scale(const float* x, int64_t n, float s, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * s;
}


void MoeSoftmax(const float* logits, int64_t E, float* p) {
  float m = -INFINITY;
  for (int64_t i = 0; i < E; ++i) m = std::max(m, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < E; ++i) {
    p[i] = expf(logits[i] - m);
    sum += static_cast<double>(p[i]);
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < E; ++i) p[i] *= inv;
}

absl::Status MoeTopK(const float* logits, int64_t T, int64_t E, int64_t k, int32_t* ids) {
  if (k < 1 || k > E) {
    return absl::InvalidArgumentError(absl::StrCat("moe_topk: k ", k, " is not in [1, ", E, "]"));
  }
  std::vector<float> p(E);
  std::vector<int32_t> order(E);
  for (int64_t t = 0; t < T; ++t) {
    MoeSoftmax(logits + t * E, E, p.data());
    for (int64_t i = 0; i < E; ++i) order[i] = static_cast<int32_t>(i);
    // Decreasing p; equal p: lower expert first (a strict weak order, so the
    // result does not depend on the sort algorithm).
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      return p[a] > p[b] || (p[a] == p[b] && a < b);
    });
    std::copy(order.begin(), order.begin() + k, ids + t * k);
  }
  return absl::OkStatus();
}

namespace {
absl::Status CheckExpertIds(const int32_t* ids, int64_t n, int64_t E, const char* what) {
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= E) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": expert id ", ids[i], " at slot ", i,
                                                     " is outside [0, ", E, ")"));
    }
  }
  return absl::OkStatus();
}
}  // namespace

absl::Status MoeWeights(const float* logits, int64_t T, int64_t E, const int32_t* ids, int64_t k,
                        bool norm, float* w) {
  if (absl::Status s = CheckExpertIds(ids, T * k, E, "moe_weights"); !s.ok()) return s;
  std::vector<float> p(E);
  for (int64_t t = 0; t < T; ++t) {
    MoeSoftmax(logits + t * E, E, p.data());
    float* wt = w + t * k;
    double sum = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      wt[j] = p[ids[t * k + j]];
      sum += static_cast<double>(wt[j]);
    }
    if (norm) {
      const float s = static_cast<float>(sum);
      for (int64_t j = 0; j < k; ++j) wt[j] = wt[j] / s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<int64_t>>> GroupByExpert(const int32_t* ids, int64_t T,
                                                                int64_t k, int64_t E) {
  if (absl::Status s = CheckExpertIds(ids, T * k, E, "matmul_id"); !s.ok()) return s;
  std::vector<std::vector<int64_t>> groups(E);
  for (int64_t i = 0; i < T * k; ++i) groups[ids[i]].push_back(i);
  return groups;
}

absl::Status MatMulIdGrouped(const float* x, bool x_per_slot, int64_t T, int64_t k, int64_t K, int64_t E,
                             int64_t N, const int32_t* ids, float* out, const ExpertMatMul& mm) {
  absl::StatusOr<std::vector<std::vector<int64_t>>> groups = GroupByExpert(ids, T, k, E);
  if (!groups.ok()) return groups.status();
  std::vector<float> xs, ys;
  for (int64_t e = 0; e < E; ++e) {
    const std::vector<int64_t>& slots = (*groups)[e];
    if (slots.empty()) continue;  // an unused expert is not read
    const int64_t n = static_cast<int64_t>(slots.size());
    xs.resize(n * K);
    ys.resize(n * N);
    for (int64_t r = 0; r < n; ++r) {
      const int64_t src = x_per_slot ? slots[r] : slots[r] / k;
      std::memcpy(xs.data() + r * K, x + src * K, K * sizeof(float));
    }
    if (absl::Status s = mm(e, xs.data(), n, ys.data()); !s.ok()) return s;
    for (int64_t r = 0; r < n; ++r) {
      std::memcpy(out + slots[r] * N, ys.data() + r * N, N * sizeof(float));
    }
  }
  return absl::OkStatus();
}

absl::Status MatMulId(ThreadPool* pool, const float* x, bool x_per_slot, int64_t T, int64_t k,
                      int64_t K, DType wtype, const void* w, int64_t E, int64_t N,
                      const int32_t* ids, float* out) {
  absl::StatusOr<int64_t> row_bytes = DTypeBytes(wtype, K);
  if (!row_bytes.ok()) return row_bytes.status();
  const uint8_t* wb = static_cast<const uint8_t*>(w);
  return MatMulIdGrouped(x, x_per_slot, T, k, K, E, N, ids, out,
                         [&](int64_t e, const float* xs, int64_t n, float* ys) {
                           return MatMul(pool, xs, n, K, wtype, wb + e * N * *row_bytes, N, nullptr, ys);
                         });
}

void MoeSum(const float* y, const float* w, int64_t T, int64_t k, int64_t D, float* out) {
  for (int64_t t = 0; t < T; ++t) {
    float* o = out + t * D;
    for (int64_t j = 0; j < k; ++j) {
      const float wj = w[t * k + j];
      const float* yj = y + (t * k + j) * D;
      if (j == 0) {
        for (int64_t d = 0; d < D; ++d) o[d] = yj[d] * wj;
      } else {
        for (int64_t d = 0; d < D; ++d) o[d] = o[d] + yj[d] * wj;
      }
    }
  }
}

// The rotation angle. ops.h defines it as p * freq_scale * base^(-2i/n_rot) /
// factor_i; we evaluate that expression exactly the way ggml's rope cache
// does (float, theta_scale = powf(base, -2/n_rot) applied multiplicatively
// starting from th_0 = p, then / factor, then * freq_scale) rather than in
// double. Reason: the iterated float product drifts from the exact value by
// up to ~i ulps, i.e. about p * 1e-7 radians — 4e-4 rad at position 4096,
// which shows in the logits. Reproducing ggml's float sequence makes our
// angles bit-identical to llama.cpp's (given the same libm cosf/sinf), which
// is what the reference data was produced with; a GPU backend that computes
// the same float sequence (it is n_rot/2 multiplies per token) agrees with us
// up to its sin/cos implementation.
absl::Status Rope(const float* x, int64_t T, int64_t H, int64_t hd, const int32_t* positions,
                  const RopeParams& params, float* out) {
  const int64_t n_rot = params.n_rot;
  if (params.mode != 0 && params.mode != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("rope: mode ", params.mode, " is not supported (0 normal, 2 neox)"));
  }
  if (n_rot <= 0 || n_rot % 2 != 0 || n_rot > hd) {
    return absl::InvalidArgumentError(
        absl::StrCat("rope: n_rot ", n_rot, " must be even and in (0, head_dim=", hd, "]"));
  }
  const int64_t half = n_rot / 2;
  const float theta_scale = powf(params.freq_base, -2.0f / static_cast<float>(n_rot));
  std::vector<float> cos_c(half), sin_c(half);
  for (int64_t t = 0; t < T; ++t) {
    float theta = static_cast<float>(positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const float ff = params.freq_factors != nullptr ? params.freq_factors[i] : 1.0f;
      const float angle = params.freq_scale * (theta / ff);
      cos_c[i] = cosf(angle);
      sin_c[i] = sinf(angle);
      theta *= theta_scale;
    }
    for (int64_t h = 0; h < H; ++h) {
      const float* src = x + (t * H + h) * hd;
      float* dst = out + (t * H + h) * hd;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t i0 = params.mode == 0 ? 2 * i : i;
        const int64_t i1 = params.mode == 0 ? 2 * i + 1 : i + half;
        const float x0 = src[i0];
        const float x1 = src[i1];
        dst[i0] = x0 * cos_c[i] - x1 * sin_c[i];
        dst[i1] = x0 * sin_c[i] + x1 * cos_c[i];
      }
      if (dst != src) {
        for (int64_t d = n_rot; d < hd; ++d) dst[d] = src[d];
      }
    }
  }
  return absl::OkStatus();
}

absl::Status KvStore(const float* src, int64_t T, int64_t row, const int32_t* positions,
                     DType cache_dtype, void* cache, int64_t n_ctx) {
  if (absl::Status s = CheckCacheDtype(cache_dtype, row); !s.ok()) return s;
  if (absl::Status s = CheckPositions(positions, T, n_ctx, "kv_store"); !s.ok()) return s;
  for (int64_t t = 0; t < T; ++t) {
    const float* s = src + t * row;
    const int64_t p = positions[t];
    if (cache_dtype == DType::kF32) {
      std::memcpy(static_cast<float*>(cache) + p * row, s, row * sizeof(float));
    } else if (cache_dtype == DType::kF16) {
      uint16_t* d = static_cast<uint16_t*>(cache) + p * row;
      for (int64_t i = 0; i < row; ++i) d[i] = FloatToHalf(s[i]);
    } else {
      uint8_t* d = static_cast<uint8_t*>(cache) + p * (row / 32) * 34;
      for (int64_t b = 0; b < row / 32; ++b) StoreQ8_0Block(s + 32 * b, d + 34 * b);
    }
  }
  return absl::OkStatus();
}

absl::Status Attention(ThreadPool* pool, const float* q, const void* k, const void* v,
                       DType cache_dtype, const int32_t* positions, const AttentionShape& shape,
                       float scale, float* out) {
  return Attention(pool, q, k, v, cache_dtype, cache_dtype, positions, shape, scale, out);
}

absl::StatusOr<int64_t> PagedRow(const PagedKv& paged, int64_t seq, int64_t pos, int64_t n_rows) {
  if (seq < 0 || seq >= paged.n_seq) {
    return absl::OutOfRangeError(
        absl::StrCat("sequence id ", seq, " is outside [0, ", paged.n_seq, ")"));
  }
  if (pos < 0 || paged.block_size <= 0 || pos / paged.block_size >= paged.max_blocks) {
    return absl::OutOfRangeError(absl::StrCat("position ", pos, " of sequence ", seq,
                                              " is outside its block table (", paged.max_blocks,
                                              " blocks of ", paged.block_size, ")"));
  }
  const int64_t block = paged.block_table[seq * paged.max_blocks + pos / paged.block_size];
  if (block < 0 || (block + 1) * paged.block_size > n_rows) {
    return absl::OutOfRangeError(absl::StrCat("sequence ", seq, " position ", pos, ": block ",
                                              block, " is outside the cache's ",
                                              n_rows / paged.block_size, " blocks"));
  }
  return block * paged.block_size + pos % paged.block_size;
}

absl::Status PagedKvStore(const float* src, int64_t T, int64_t row, const int32_t* positions,
                          const PagedKv& paged, DType cache_dtype, void* cache, int64_t n_rows) {
  if (absl::Status s = CheckCacheDtype(cache_dtype, row); !s.ok()) return s;
  std::vector<int32_t> rows(T);
  for (int64_t t = 0; t < T; ++t) {
    absl::StatusOr<int64_t> r = PagedRow(paged, paged.seq_ids[t], positions[t], n_rows);
    if (!r.ok()) {
      return absl::OutOfRangeError(absl::StrCat("kv_store: token ", t, ": ", r.status().message()));
    }
    rows[t] = static_cast<int32_t>(*r);
  }
  return KvStore(src, T, row, rows.data(), cache_dtype, cache, n_rows);
}

namespace {

// Attention over rows given per (token, position): row_of(t, j) is the cache
// row of query t's position j (the contiguous op: j; paged: PagedRow).
template <typename RowOf>
void AttentionRows(ThreadPool* pool, const float* q, const void* k, const void* v, DType k_dtype,
                   DType v_dtype, const int32_t* positions, const AttentionShape& shape,
                   float scale, float* out, const RowOf& row_of) {
  const int64_t H = shape.n_head, KVH = shape.n_head_kv, hd = shape.head_dim;
  const int64_t group = H / KVH;
  // Bytes of one head row (hd elements) of each cache; DTypeBytes cannot fail
  // for the types and head sizes checked above.
  const int64_t k_row = DTypeBytes(k_dtype, hd).value_or(0);
  const int64_t v_row = DTypeBytes(v_dtype, hd).value_or(0);
  const uint8_t* kb = static_cast<const uint8_t*>(k);
  const uint8_t* vb = static_cast<const uint8_t*>(v);
  // One work item per (token, KV head): the rows 0..positions[t] of that KV
  // head are converted to f32 once and used by all `group` query heads.
  auto items = [&](int64_t i0, int64_t i1) {
    std::vector<float> kf, vf, e;
    std::vector<double> acc(hd);
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t t = item / KVH, kvh = item % KVH;
      // Rows j0 .. positions[t]: the whole prefix, or the last `window`.
      const int64_t j0 =
          shape.window > 0 ? std::max<int64_t>(0, positions[t] - shape.window + 1) : 0;
      const int64_t n = static_cast<int64_t>(positions[t]) + 1 - j0;
      kf.resize(n * hd);
      vf.resize(n * hd);
      e.resize(n);
      for (int64_t j = 0; j < n; ++j) {
        const int64_t r = row_of(t, j0 + j) * KVH + kvh;  // head row r of the cache
        // f16: exact widening; q8_0: code * d (float); f32: a copy. Cannot
        // fail for the types and sizes checked above.
        (void)Dequantize(k_dtype, kb + r * k_row, hd, kf.data() + j * hd);
        (void)Dequantize(v_dtype, vb + r * v_row, hd, vf.data() + j * hd);
      }
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        const float* qr = q + (t * H + h) * hd;
        float m = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          const float* kr = kf.data() + j * hd;
          double dot = 0.0;
          for (int64_t d = 0; d < hd; ++d) dot += static_cast<double>(qr[d]) * kr[d];
          e[j] = static_cast<float>(dot) * scale;
          m = std::max(m, e[j]);
        }
        double sum = 0.0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < n; ++j) {
          const float ej = expf(e[j] - m);
          sum += static_cast<double>(ej);
          const float* vr = vf.data() + j * hd;
          for (int64_t d = 0; d < hd; ++d) acc[d] += static_cast<double>(ej) * vr[d];
        }
        float* o = out + (t * H + h) * hd;
        for (int64_t d = 0; d < hd; ++d) o[d] = static_cast<float>(acc[d] / sum);
      }
    }
  };
  if (pool != nullptr) {
    pool->ParallelFor(shape.T * KVH, items, 1);
  } else {
    items(0, shape.T * KVH);
  }
}

absl::Status CheckAttention(DType k_dtype, DType v_dtype, const AttentionShape& shape) {
  const int64_t H = shape.n_head, KVH = shape.n_head_kv, hd = shape.head_dim;
  if (absl::Status s = CheckCacheDtype(k_dtype, hd); !s.ok()) return s;
  if (absl::Status s = CheckCacheDtype(v_dtype, hd); !s.ok()) return s;
  if (KVH <= 0 || H % KVH != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: ", H,
                                                   " heads are not a multiple of ", KVH,
                                                   " KV heads"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Attention(ThreadPool* pool, const float* q, const void* k, const void* v,
                       DType k_dtype, DType v_dtype, const int32_t* positions,
                       const AttentionShape& shape, float scale, float* out) {
  if (absl::Status s = CheckAttention(k_dtype, v_dtype, shape); !s.ok()) return s;
  if (absl::Status s = CheckPositions(positions, shape.T, shape.n_ctx, "attention"); !s.ok()) {
    return s;
  }
  AttentionRows(pool, q, k, v, k_dtype, v_dtype, positions, shape, scale, out,
                [](int64_t, int64_t j) { return j; });
  return absl::OkStatus();
}

absl::Status PagedAttention(ThreadPool* pool, const float* q, const void* k, const void* v,
                            DType k_dtype, DType v_dtype, const int32_t* positions,
                            const PagedKv& paged, const AttentionShape& shape, float scale,
                            float* out) {
  if (absl::Status s = CheckAttention(k_dtype, v_dtype, shape); !s.ok()) return s;
  // Every row any query reads, checked (and looked up) before computing.
  std::vector<int64_t> first(shape.T + 1, 0);
  for (int64_t t = 0; t < shape.T; ++t) {
    if (positions[t] < 0) {
      return absl::OutOfRangeError(
          absl::StrCat("attention: token ", t, ": negative position ", positions[t]));
    }
    first[t + 1] = first[t] + positions[t] + 1;
  }
  std::vector<int32_t> rows(first[shape.T]);
  for (int64_t t = 0; t < shape.T; ++t) {
    for (int64_t j = 0; j <= positions[t]; ++j) {
      absl::StatusOr<int64_t> r = PagedRow(paged, paged.seq_ids[t], j, shape.n_ctx);
      if (!r.ok()) {
        return absl::OutOfRangeError(
            absl::StrCat("attention: token ", t, ": ", r.status().message()));
      }
      rows[first[t] + j] = static_cast<int32_t>(*r);
    }
  }
  AttentionRows(pool, q, k, v, k_dtype, v_dtype, positions, shape, scale, out,
                [&](int64_t t, int64_t j) { return int64_t{rows[first[t] + j]}; });
  return absl::OkStatus();
}



void LastRow(const float* x, int64_t T, int64_t D, float* out) {
  std::memmove(out, x + (T - 1) * D, D * sizeof(float));
}

absl::Status Sample(const float* logits, int64_t rows, int64_t V, const int32_t* params, int32_t* out) {
  const SampleDraw d = UnpackSampleParams(absl::Span<const int32_t>(params, kSampleParamWords));
  if (absl::Status s = CheckSampleDraw(d); !s.ok()) return s;
  const absl::Span<const float> row(logits + (rows - 1) * V, static_cast<size_t>(V));
  bool any_finite = false;
  for (float x : row) any_finite |= std::isfinite(x);
  if (!any_finite) {
    *out = -1;
    return absl::OkStatus();
  }
  absl::StatusOr<int32_t> id = SampleToken(row, d);
  if (!id.ok()) return id.status();
  *out = *id;
  return absl::OkStatus();
}

}  // namespace vibrant::cpu
