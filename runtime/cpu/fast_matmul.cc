// The fast matmul's driver (activation rounding, tiling over rows and tokens,
// ISA dispatch) and its portable version, which is the executable definition
// of the semantics in fast_matmul.h: the SIMD versions must give its bits.
#include "runtime/cpu/fast_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "runtime/cpu/cpu_features.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/fast_matmul_internal.h"
#include "runtime/cpu/fast_matmul_portable.h"

namespace vibrant::cpu {
namespace internal {

bool IsQ32Family(DType t) {
  return t == DType::kQ4_0 || t == DType::kQ4_1 || t == DType::kQ5_0 || t == DType::kQ5_1 ||
         t == DType::kQ8_0;
}

bool IsKFamily(DType t) {
  return t == DType::kQ2_K || t == DType::kQ3_K || t == DType::kQ4_K || t == DType::kQ5_K ||
         t == DType::kQ6_K;
}

RowLayout LayoutFor(ActivationFormat f, int64_t K) {
  RowLayout l;
  switch (f) {
    case ActivationFormat::kFloat:
      l.bytes = Align32(4 * K);
      break;
    case ActivationFormat::kQ8x32: {
      const int64_t nb = K / 32;
      l.q = 0;
      l.d = Align32(K);
      l.sum = l.d + Align32(4 * nb);
      l.dsum = l.sum + Align32(4 * nb);
      l.bytes = l.dsum + Align32(4 * nb);
      break;
    }
    case ActivationFormat::kQ8x256: {
      const int64_t nb = K / 256;
      l.q = 0;
      l.d = Align32(K);
      l.bsum = l.d + Align32(4 * nb);
      l.bytes = l.bsum + Align32(2 * (K / 16));
      break;
    }
  }
  l.bytes = (l.bytes + 63) / 64 * 64;
  return l;
}

// ---- portable activation rounding -------------------------------------------------

namespace {

// round_half_even(v) as int8 in [-127, 127] for |v| <= 127.5; out-of-range
// and NaN inputs (only from non-finite activations) give what the x86
// conversion gives: -128 for NaN and |v| >= 2^31, else saturation.
inline int8_t RoundToInt8(float v) {
  const float r = std::nearbyint(v);
  if (r >= -128.0f && r <= 127.0f) return static_cast<int8_t>(static_cast<int>(r));
  if (r > 127.0f && r < 2147483648.0f) return 127;
  if (r < -128.0f && r >= -2147483648.0f) return -128;
  return -128;
}

// One block of n values: d and the codes.
inline float QuantizeBlock(const float* x, int n, int8_t* q) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
  for (int i = 0; i < n; ++i) q[i] = RoundToInt8(x[i] * id);
  return d;
}

}  // namespace

void QuantizePortable(ActivationFormat f, const float* x, int64_t K, int64_t t0, int64_t t1,
                      uint8_t* dst, const RowLayout& layout) {
  for (int64_t t = t0; t < t1; ++t) {
    const float* xr = x + t * K;
    uint8_t* row = dst + t * layout.bytes;
    if (f == ActivationFormat::kFloat) {
      std::memcpy(row, xr, static_cast<size_t>(K) * sizeof(float));
      continue;
    }
    int8_t* q = reinterpret_cast<int8_t*>(row + layout.q);
    float* d = reinterpret_cast<float*>(row + layout.d);
    if (f == ActivationFormat::kQ8x32) {
      int32_t* sum = reinterpret_cast<int32_t*>(row + layout.sum);
      float* dsum = reinterpret_cast<float*>(row + layout.dsum);
      for (int64_t b = 0; b < K / 32; ++b) {
        d[b] = QuantizeBlock(xr + 32 * b, 32, q + 32 * b);
        int32_t s = 0;
        for (int i = 0; i < 32; ++i) s += q[32 * b + i];
        sum[b] = s;
        dsum[b] = d[b] * static_cast<float>(s);
      }
    } else {
      int16_t* bsum = reinterpret_cast<int16_t*>(row + layout.bsum);
      for (int64_t b = 0; b < K / 256; ++b) {
        d[b] = QuantizeBlock(xr + 256 * b, 256, q + 256 * b);
        for (int g = 0; g < 16; ++g) {
          int s = 0;
          for (int i = 0; i < 16; ++i) s += q[256 * b + 16 * g + i];
          bsum[16 * b + g] = static_cast<int16_t>(s);
        }
      }
    }
  }
}

// ---- portable tiles ------------------------------------------------------------------

namespace {

// Sum of the 32 lanes of the float-weight dot product, in the specified order.
inline float ReduceLanes32(const float* l) {
  float c[8];
  for (int k = 0; k < 8; ++k) c[k] = (l[k] + l[8 + k]) + (l[16 + k] + l[24 + k]);
  return ((c[0] + c[4]) + (c[2] + c[6])) + ((c[1] + c[5]) + (c[3] + c[7]));
}

// The float-weight dot product of one f32 row (K values, padded to 32 by
// zeros) with x.
float FloatDot(const float* w, const float* x, int64_t K) {
  float lane[32] = {};
  int64_t i = 0;
  for (; i + 32 <= K; i += 32) {
    for (int k = 0; k < 32; ++k) lane[k] = std::fma(w[i + k], x[i + k], lane[k]);
  }
  if (i < K) {
    for (int k = 0; k < 32; ++k) {
      const float wk = i + k < K ? w[i + k] : 0.0f;
      const float xk = i + k < K ? x[i + k] : 0.0f;
      lane[k] = std::fma(wk, xk, lane[k]);
    }
  }
  return ReduceLanes32(lane);
}

inline void Store(const MatMulArgs& a, int64_t t, int64_t n, float acc) {
  a.out[t * a.N + n] = a.bias != nullptr ? acc + a.bias[n] : acc;
}

void PortableTileQ32(const MatMulArgs& a, int64_t n0, int64_t t0, int64_t t1) {
  const int64_t nb = a.K / 32;
  for (int64_t n = n0; n < std::min(n0 + 8, a.N); ++n) {
    const uint8_t* wrow = a.w + n * a.row_bytes;
    float acc[kTileTokens] = {};
    for (int64_t b = 0; b < nb; ++b) {
      Q32Block blk;
      DecodeQ32(a.wtype, wrow, b, &blk);
      for (int64_t t = t0; t < t1; ++t) {
        const uint8_t* xr = a.x + t * a.layout.bytes;
        const int8_t* q = reinterpret_cast<const int8_t*>(xr + a.layout.q) + 32 * b;
        const float dx = reinterpret_cast<const float*>(xr + a.layout.d)[b];
        int32_t I = 0;
        for (int i = 0; i < 32; ++i) I += static_cast<int32_t>(blk.v[i]) * q[i];
        float& s = acc[t - t0];
        s = std::fma(blk.d * dx, static_cast<float>(I), s);
        if (blk.has_min) {
          const float dsum = reinterpret_cast<const float*>(xr + a.layout.dsum)[b];
          s = std::fma(blk.m, dsum, s);
        }
      }
    }
    for (int64_t t = t0; t < t1; ++t) Store(a, t, n, acc[t - t0]);
  }
}

void PortableTileK(const MatMulArgs& a, int64_t n0, int64_t t0, int64_t t1) {
  const int64_t nb = a.K / 256;
  for (int64_t n = n0; n < std::min(n0 + 8, a.N); ++n) {
    const uint8_t* wrow = a.w + n * a.row_bytes;
    float acc[kTileTokens] = {};
    for (int64_t b = 0; b < nb; ++b) {
      KBlock blk;
      DecodeK(a.wtype, wrow, b, &blk);
      for (int64_t t = t0; t < t1; ++t) {
        const uint8_t* xr = a.x + t * a.layout.bytes;
        const int8_t* q = reinterpret_cast<const int8_t*>(xr + a.layout.q) + 256 * b;
        const float dx = reinterpret_cast<const float*>(xr + a.layout.d)[b];
        const int16_t* bsum = reinterpret_cast<const int16_t*>(xr + a.layout.bsum) + 16 * b;
        int32_t I = 0, M = 0;
        for (int g = 0; g < 16; ++g) {
          int32_t S = 0;
          for (int i = 0; i < 16; ++i) S += static_cast<int32_t>(blk.u[16 * g + i]) * q[16 * g + i];
          I += blk.sc[g] * (S - blk.o * bsum[g]);
          M += blk.mn[g] * bsum[g];
        }
        float& s = acc[t - t0];
        s = std::fma(blk.d * dx, static_cast<float>(I), s);
        if (blk.has_min) s = std::fma(-(blk.dmin * dx), static_cast<float>(M), s);
      }
    }
    for (int64_t t = t0; t < t1; ++t) Store(a, t, n, acc[t - t0]);
  }
}

void PortableTileFloat(const MatMulArgs& a, int64_t n0, int64_t t0, int64_t t1) {
  thread_local std::vector<float> wf;
  wf.resize(static_cast<size_t>(a.K));
  for (int64_t n = n0; n < std::min(n0 + 8, a.N); ++n) {
    // Dequantize never fails here: the driver checked the row size.
    (void)Dequantize(a.wtype, a.w + n * a.row_bytes, a.K, wf.data());
    for (int64_t t = t0; t < t1; ++t) {
      const float* xr = reinterpret_cast<const float*>(a.x + t * a.layout.bytes);
      Store(a, t, n, FloatDot(wf.data(), xr, a.K));
    }
  }
}

}  // namespace

TileFn PortableTile(DType wtype) {
  if (IsQ32Family(wtype)) return PortableTileQ32;
  if (IsKFamily(wtype)) return PortableTileK;
  return PortableTileFloat;
}

}  // namespace internal

// ---- public API ----------------------------------------------------------------------

using internal::MatMulArgs;
using internal::RowLayout;

ActivationFormat ActivationFormatFor(DType w) {
  if (internal::IsQ32Family(w)) return ActivationFormat::kQ8x32;
  if (internal::IsKFamily(w)) return ActivationFormat::kQ8x256;
  return ActivationFormat::kFloat;
}

int64_t ActivationRowBytes(ActivationFormat f, int64_t K) { return internal::LayoutFor(f, K).bytes; }

bool HasFastPath(DType wtype) {
  return internal::IsQ32Family(wtype) || internal::IsKFamily(wtype) || wtype == DType::kF32 ||
         wtype == DType::kF16 || wtype == DType::kBF16;
}

namespace {

int64_t FormatBlock(ActivationFormat f) {
  switch (f) {
    case ActivationFormat::kQ8x32: return 32;
    case ActivationFormat::kQ8x256: return 256;
    case ActivationFormat::kFloat: return 1;
  }
  return 1;
}

internal::QuantizeFn QuantizerFor(Isa isa) {
  if (isa >= Isa::kAvx2) {
    if (internal::QuantizeFn f = internal::Avx2Quantize(); f != nullptr) return f;
  }
  return internal::QuantizePortable;
}

internal::TileFn TileFor(Isa isa, DType wtype) {
  if (isa >= Isa::kAvx512) {
    if (internal::TileFn f = internal::Avx512Tile(wtype); f != nullptr) return f;
  }
  if (isa >= Isa::kAvx2) {
    if (internal::TileFn f = internal::Avx2Tile(wtype); f != nullptr) return f;
  }
  return internal::PortableTile(wtype);
}

}  // namespace

absl::Status QuantizeActivations(ActivationFormat f, const float* x, int64_t T, int64_t K,
                                 uint8_t* dst, ThreadPool* pool) {
  if (K <= 0 || K % FormatBlock(f) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("QuantizeActivations: K = ", K,
                                                   " is not a whole number of blocks of ",
                                                   FormatBlock(f)));
  }
  const RowLayout layout = internal::LayoutFor(f, K);
  const internal::QuantizeFn fn = QuantizerFor(ActiveIsa());
  auto rows = [&](int64_t t0, int64_t t1) { fn(f, x, K, t0, t1, dst, layout); };
  // Rows of at least 16K values per chunk: rounding is cheap next to a handoff.
  const int64_t min_rows = std::max<int64_t>(1, 16384 / K);
  if (pool != nullptr && T > min_rows) {
    pool->ParallelFor(T, rows, min_rows);
  } else {
    rows(0, T);
  }
  return absl::OkStatus();
}

namespace {

// One member's tiling: groups of 8 rows x token tiles of equal size.
struct Tiling {
  internal::MatMulArgs args;
  internal::TileFn tile = nullptr;
  int64_t n_items = 0, n_tt = 1, tile_t = 1;
};

absl::StatusOr<Tiling> MakeTiling(const uint8_t* xq, int64_t T, int64_t K, DType wtype,
                                  const void* w, int64_t N, const float* bias, float* out) {
  absl::StatusOr<int64_t> row_bytes = DTypeBytes(wtype, K);
  if (!row_bytes.ok()) return row_bytes.status();
  const ActivationFormat f = ActivationFormatFor(wtype);
  if (K % FormatBlock(f) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("fast matmul: K = ", K, " is not a whole number of ", std::string(DTypeName(wtype)),
                     " blocks"));
  }
  Tiling tl;
  MatMulArgs& a = tl.args;
  a.wtype = wtype;
  a.w = static_cast<const uint8_t*>(w);
  a.row_bytes = *row_bytes;
  a.N = N;
  a.K = K;
  a.x = xq;
  a.layout = internal::LayoutFor(f, K);
  a.bias = bias;
  a.out = out;
  tl.tile = TileFor(ActiveIsa(), wtype);
  tl.n_tt = (T + internal::kTileTokens - 1) / internal::kTileTokens;
  tl.tile_t = (T + tl.n_tt - 1) / tl.n_tt;
  tl.n_items = T > 0 && N > 0 ? (N + 7) / 8 * tl.n_tt : 0;
  return tl;
}

// Runs items [i0, i1) of a tiling: item i = rows 8 (i / n_tt), token tile i % n_tt.
void RunItems(const Tiling& tl, int64_t T, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t g = i / tl.n_tt, tt = i % tl.n_tt;
    const int64_t t0 = tt * tl.tile_t;
    tl.tile(tl.args, 8 * g, t0, std::min(T, t0 + tl.tile_t));
  }
}

// Items per chunk so that a chunk holds at least ~64K multiply-adds: handing
// less to another thread costs more than it saves.
int64_t MinChunk(int64_t K, int64_t tile_t) {
  return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, 8 * K * tile_t));
}

uint8_t* Aligned64(std::vector<uint8_t>* buf, size_t bytes) {
  if (buf->size() < bytes + 64) buf->resize(bytes + 64);
  uint8_t* p = buf->data();
  return p + (64 - reinterpret_cast<uintptr_t>(p) % 64) % 64;
}

}  // namespace

absl::Status MatMulQuantized(ThreadPool* pool, const uint8_t* xq, int64_t T, int64_t K,
                             DType wtype, const void* w, int64_t N, const float* bias,
                             float* out) {
  absl::StatusOr<Tiling> tl = MakeTiling(xq, T, K, wtype, w, N, bias, out);
  if (!tl.ok()) return tl.status();
  auto items = [&](int64_t i0, int64_t i1) { RunItems(*tl, T, i0, i1); };
  if (pool != nullptr) {
    pool->ParallelFor(tl->n_items, items, MinChunk(K, tl->tile_t));
  } else {
    items(0, tl->n_items);
  }
  return absl::OkStatus();
}

absl::Status MultiMatMulFast(ThreadPool* pool, const float* x, int64_t T, int64_t K,
                             const std::vector<MatMulMember>& members,
                             std::vector<uint8_t>* scratch) {
  // Round x once per format, into consecutive regions of the scratch.
  const ActivationFormat formats[] = {ActivationFormat::kFloat, ActivationFormat::kQ8x32,
                                      ActivationFormat::kQ8x256};
  int64_t offset[3] = {-1, -1, -1};
  int64_t total = 0;
  for (const MatMulMember& m : members) {
    const int f = static_cast<int>(ActivationFormatFor(m.wtype));
    if (offset[f] >= 0) continue;
    if (K <= 0 || K % FormatBlock(formats[f]) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("fast matmul: K = ", K, " is not a whole number of ",
                                                     std::string(DTypeName(m.wtype)), " blocks"));
    }
    offset[f] = total;
    total += ActivationRowBytes(formats[f], K) * T;
  }
  uint8_t* base = Aligned64(scratch, static_cast<size_t>(total));
  for (int f = 0; f < 3; ++f) {
    if (offset[f] < 0) continue;
    if (absl::Status s = QuantizeActivations(formats[f], x, T, K, base + offset[f], pool); !s.ok()) {
      return s;
    }
  }
  std::vector<Tiling> tilings;
  std::vector<int64_t> first;  // first item of each member
  int64_t n_items = 0;
  int64_t min_chunk = 1 << 30;
  for (const MatMulMember& m : members) {
    const int f = static_cast<int>(ActivationFormatFor(m.wtype));
    absl::StatusOr<Tiling> tl = MakeTiling(base + offset[f], T, K, m.wtype, m.w, m.N, m.bias, m.out);
    if (!tl.ok()) return tl.status();
    first.push_back(n_items);
    n_items += tl->n_items;
    min_chunk = std::min(min_chunk, MinChunk(K, tl->tile_t));
    tilings.push_back(*std::move(tl));
  }
  auto items = [&](int64_t i0, int64_t i1) {
    size_t m = static_cast<size_t>(std::upper_bound(first.begin(), first.end(), i0) - first.begin()) - 1;
    for (int64_t i = i0; i < i1;) {
      while (i >= first[m] + tilings[m].n_items) ++m;
      const int64_t end = std::min(i1, first[m] + tilings[m].n_items);
      RunItems(tilings[m], T, i - first[m], end - first[m]);
      i = end;
    }
  };
  if (pool != nullptr) {
    pool->ParallelFor(n_items, items, min_chunk);
  } else {
    items(0, n_items);
  }
  return absl::OkStatus();
}

absl::Status MatMulFast(ThreadPool* pool, const float* x, int64_t T, int64_t K, DType wtype,
                        const void* w, int64_t N, const float* bias, float* out,
                        std::vector<uint8_t>* scratch) {
  const ActivationFormat f = ActivationFormatFor(wtype);
  if (K <= 0 || K % FormatBlock(f) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("fast matmul: K = ", K, " is not a whole number of ", std::string(DTypeName(wtype)),
                     " blocks"));
  }
  uint8_t* base = Aligned64(scratch, static_cast<size_t>(ActivationRowBytes(f, K) * T));
  if (absl::Status s = QuantizeActivations(f, x, T, K, base, pool); !s.ok()) return s;
  return MatMulQuantized(pool, base, T, K, wtype, w, N, bias, out);
}

}  // namespace vibrant::cpu
