// sample: the next token from the last row of logits on the GPU, with the
// chain and the draw of runtime/sampler.h (ir/ops.h: sample), in two
// launches:
//
//   vb_sample_gather  grid ceil(V / chunk) blocks of kSampleGatherThreads:
//     block b reads logits [b*chunk, (b+1)*chunk) once and writes its largest
//     key (the argmax, for greedy), its number of finite logits and, unless
//     the draw is greedy, its C largest keys (C = top_k when 1 <= top_k <=
//     kSampleCap, else kSampleCap; the rest of its C slots 0).
//   vb_sample_pick    one block of kSamplePickThreads: the global maximum and
//     count; greedy ends there. Otherwise the candidates are ranked in
//     windows of at most kSampleCap keys, each sorted descending: the top-k
//     cut, top-p on the probabilities of the top-k set, min-p against the top
//     logit, the temperature, and the draw by the counter-based uniform number
//     (the same Philox4x32-10 as the CPU) walking the cumulative probabilities.
//     When the top-k set is known to be among the gathered keys (1 <= top_k <=
//     kSampleCap, or at most kSampleCap finite logits) the windows come from
//     those keys; otherwise (top_k 0 or larger, a long row) from the whole row,
//     one radix selection per window: correct for any parameters, slower.
//
// A key orders candidates as the CPU does: descending logit, then ascending
// id; (sortable logit bits << 32) | (2^32 - 1 - id), unique per token; 0 for
// NaN and infinities (never candidates); -0 is +0. The float and double
// operations are the CPU reference's (runtime/sampler.cc): exp in float of a
// float difference, sums of probabilities in double, probabilities rounded to
// float; sums run in another order (a tree, not a loop), so the cumulative
// masses agree to rounding and a draw can differ from the CPU's only when u
// falls within that rounding of a boundary.
//
// The code uses __syncthreads, shared-memory atomics and warp shuffles only,
// so that the host test (codegen/sample_host_test.cc) runs this very text on
// emulated threads against SampleToken.
#include <string>

#include "codegen/kernels/families.h"

namespace vibrant::codegen {

std::string SampleSource() {
  return R"CUDA(
typedef unsigned long long vb_u64;
#define VB_SAMPLE_CAP 1024
#define VB_SAMPLE_CHUNK 4096
#define VB_SAMPLE_FULL 0xffffffffu

struct VbSampleParams {
  float temp;
  int top_k;
  float top_p;
  float min_p;
  u32 seed;
  vb_u64 n;
};

VB_INLINE VbSampleParams vb_sample_params(const int* p) {
  VbSampleParams s;
  s.temp = __int_as_float(p[0]);
  s.top_k = p[1];
  s.top_p = __int_as_float(p[2]);
  s.min_p = __int_as_float(p[3]);
  s.seed = (u32)p[4];
  s.n = (vb_u64)(u32)p[5] | ((vb_u64)(u32)p[6] << 32);
  return s;
}

// Keys: larger = earlier (higher logit, then lower id); 0 = not a candidate.
VB_INLINE vb_u64 vb_sample_key(float x, int id) {
  if (!isfinite(x)) return 0ull;
  u32 b = __float_as_uint(x == 0.0f ? 0.0f : x);
  b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return ((vb_u64)b << 32) | (vb_u64)(0xffffffffu - (u32)id);
}
VB_INLINE float vb_sample_logit(vb_u64 k) {
  u32 b = (u32)(k >> 32);
  b = (b & 0x80000000u) ? (b & 0x7fffffffu) : ~b;
  return __uint_as_float(b);
}
VB_INLINE int vb_sample_id(vb_u64 k) { return (int)(0xffffffffu - (u32)k); }

// Keys gathered per block.
VB_INLINE int vb_sample_c(const VbSampleParams& p) {
  return (p.top_k > 0 && p.top_k <= VB_SAMPLE_CAP) ? p.top_k : VB_SAMPLE_CAP;
}

// Philox4x32-10 (runtime/sampler.h: Philox4x32_10, SampleUniform).
VB_INLINE void vb_philox4x32_10(u32 c[4], u32 k0, u32 k1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const u32 lo0 = 0xD2511F53u * c[0], hi0 = __umulhi(0xD2511F53u, c[0]);
    const u32 lo1 = 0xCD9E8D57u * c[2], hi1 = __umulhi(0xCD9E8D57u, c[2]);
    const u32 n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
  }
}
VB_INLINE double vb_sample_uniform(u32 seed, vb_u64 n) {
  u32 c[4] = {(u32)n, (u32)(n >> 32), 0u, 0u};
  vb_philox4x32_10(c, seed, 0u);
  const vb_u64 bits = ((vb_u64)c[0] << 21) | (vb_u64)(c[1] >> 11);
  return (double)bits * 0x1p-53;
}

// ---- block-wide helpers (blocks of 32..1024 threads, a multiple of 32; every
// thread calls them and gets the result) ----

struct VbSampleShared {
  vb_u64 r64[32];
  double rd[32];
  u32 hist[256];
  u32 wsum[8];
  u32 digit, need, bucket, total;
  int pos;
};

VB_INLINE vb_u64 vb_sample_max_u64(vb_u64 v, VbSampleShared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const vb_u64 y = __shfl_xor_sync(VB_SAMPLE_FULL, v, o);
    v = y > v ? y : v;
  }
  __syncthreads();
  if (lane == 0) sh.r64[warp] = v;
  __syncthreads();
  v = lane < nw ? sh.r64[lane] : 0ull;
  for (int o = 16; o > 0; o >>= 1) {
    const vb_u64 y = __shfl_xor_sync(VB_SAMPLE_FULL, v, o);
    v = y > v ? y : v;
  }
  return v;
}
VB_INLINE vb_u64 vb_sample_min_u64(vb_u64 v, VbSampleShared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const vb_u64 y = __shfl_xor_sync(VB_SAMPLE_FULL, v, o);
    v = y < v ? y : v;
  }
  __syncthreads();
  if (lane == 0) sh.r64[warp] = v;
  __syncthreads();
  v = lane < nw ? sh.r64[lane] : ~0ull;
  for (int o = 16; o > 0; o >>= 1) {
    const vb_u64 y = __shfl_xor_sync(VB_SAMPLE_FULL, v, o);
    v = y < v ? y : v;
  }
  return v;
}
VB_INLINE vb_u64 vb_sample_sum_u64(vb_u64 v, VbSampleShared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(VB_SAMPLE_FULL, v, o);
  __syncthreads();
  if (lane == 0) sh.r64[warp] = v;
  __syncthreads();
  v = lane < nw ? sh.r64[lane] : 0ull;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(VB_SAMPLE_FULL, v, o);
  return v;
}
VB_INLINE double vb_sample_sum_d(double v, VbSampleShared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = __dadd_rn(v, __shfl_xor_sync(VB_SAMPLE_FULL, v, o));
  __syncthreads();
  if (lane == 0) sh.rd[warp] = v;
  __syncthreads();
  v = lane < nw ? sh.rd[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) v = __dadd_rn(v, __shfl_xor_sync(VB_SAMPLE_FULL, v, o));
  return v;
}
// Inclusive prefix sum over the block in thread order; *total gets the sum.
VB_INLINE double vb_sample_scan_d(double v, double* total, VbSampleShared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 1; o < 32; o <<= 1) {
    const double y = __shfl_up_sync(VB_SAMPLE_FULL, v, o);
    if (lane >= o) v = __dadd_rn(v, y);
  }
  __syncthreads();
  if (lane == 31) sh.rd[warp] = v;
  __syncthreads();
  double base = 0.0, all = 0.0;
  for (int w = 0; w < nw; ++w) {
    if (w < warp) base = __dadd_rn(base, sh.rd[w]);
    all = __dadd_rn(all, sh.rd[w]);
  }
  *total = all;
  return __dadd_rn(base, v);
}

// Where the candidates come from: gathered keys (keys != 0) or a row of
// logits (keys computed from them).
struct VbSampleSrc {
  const vb_u64* keys;
  const float* logits;
  int n;
  VB_INLINE vb_u64 key(int i) const { return keys != 0 ? keys[i] : vb_sample_key(logits[i], i); }
};

// The smallest key of the `want` (>= 1) largest keys of src below `bound`:
// the keys in [result, bound) are exactly those (all of them, and the result
// is 1, when fewer than `want` lie below bound). An 8-bit radix selection
// from the top digit; keys are unique, so it ends by the last digit.
VB_INLINE vb_u64 vb_sample_select(const VbSampleSrc& src, vb_u64 bound, int want, VbSampleShared& sh) {
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  vb_u64 prefix = 0ull;
  u32 need = (u32)want;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int i = t; i < 256; i += blockDim.x) sh.hist[i] = 0u;
    __syncthreads();
    for (int i = t; i < src.n; i += blockDim.x) {
      const vb_u64 k = src.key(i);
      if (k == 0ull || k >= bound) continue;
      if (shift < 56 && (k >> (shift + 8)) != prefix) continue;
      atomicAdd(&sh.hist[(u32)(k >> shift) & 255u], 1u);
    }
    __syncthreads();
    // Counts by descending digit (thread t: digit 255 - t), inclusive.
    const u32 own = t < 256 ? sh.hist[255 - t] : 0u;
    u32 c = own;
    for (int o = 1; o < 32; o <<= 1) {
      const u32 y = __shfl_up_sync(VB_SAMPLE_FULL, c, o);
      if (lane >= o) c += y;
    }
    if (t < 256 && lane == 31) sh.wsum[warp] = c;
    __syncthreads();
    if (t < 256) {
      for (int w = 0; w < warp; ++w) c += sh.wsum[w];
      if (c - own < need && need <= c) {
        sh.digit = 255u - (u32)t;
        sh.need = need - (c - own);
        sh.bucket = own;
      }
      if (t == 255) sh.total = c;
    }
    __syncthreads();
    if (shift == 56 && sh.total <= (u32)want) return 1ull;
    prefix = (prefix << 8) | (vb_u64)sh.digit;
    need = sh.need;
    const bool done = sh.bucket == need;
    __syncthreads();  // the next pass rewrites hist and the selection
    if (done) return prefix << shift;
  }
  return prefix;
}

// The `want` (1..VB_SAMPLE_CAP) largest keys of src below `bound`, sorted
// descending into win[0, n); returns n (fewer when fewer lie below bound).
VB_INLINE int vb_sample_window(const VbSampleSrc& src, vb_u64 bound, int want, vb_u64* win, vb_u64* tmp,
                               VbSampleShared& sh) {
  const vb_u64 thr = vb_sample_select(src, bound, want, sh);
  if (threadIdx.x == 0) sh.pos = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < src.n; i += blockDim.x) {
    const vb_u64 k = src.key(i);
    if (k == 0ull || k < thr || k >= bound) continue;
    const int j = atomicAdd(&sh.pos, 1);
    if (j < VB_SAMPLE_CAP) tmp[j] = k;
  }
  __syncthreads();
  const int n = sh.pos < VB_SAMPLE_CAP ? sh.pos : VB_SAMPLE_CAP;
  // Rank sort: the keys are unique, so a key's place is the number of larger ones.
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const vb_u64 k = tmp[j];
    int r = 0;
    for (int q = 0; q < n; ++q) r += tmp[q] > k;
    win[r] = k;
  }
  __syncthreads();
  return n;
}

extern "C" __global__ void __launch_bounds__(256) vb_sample_gather(const float* __restrict__ logits, const int* __restrict__ params,
                                            vb_u64* part, int V, int chunk) {
  __shared__ vb_u64 keys[VB_SAMPLE_CHUNK];
  __shared__ VbSampleShared sh;
  const VbSampleParams p = vb_sample_params(params);
  const int b = blockIdx.x, nb = gridDim.x;
  const int i0 = b * chunk;
  const int n = V - i0 < chunk ? (V - i0 > 0 ? V - i0 : 0) : chunk;
  vb_u64 best = 0ull, count = 0ull;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const vb_u64 k = vb_sample_key(logits[i0 + i], i0 + i);
    keys[i] = k;
    best = k > best ? k : best;
    count += k != 0ull;
  }
  best = vb_sample_max_u64(best, sh);
  count = vb_sample_sum_u64(count, sh);
  if (threadIdx.x == 0) {
    part[b] = best;
    part[nb + b] = count;
  }
  if (p.temp <= 0.0f) return;  // greedy: the maxima are all it needs
  const int C = vb_sample_c(p);
  vb_u64* out = part + 2 * nb + (i64)b * C;
  VbSampleSrc src;
  src.keys = keys;
  src.logits = 0;
  src.n = n;
  const vb_u64 thr = vb_sample_select(src, ~0ull, C, sh);
  if (threadIdx.x == 0) sh.pos = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const vb_u64 k = keys[i];
    if (k == 0ull || k < thr) continue;
    const int j = atomicAdd(&sh.pos, 1);
    if (j < C) out[j] = k;
  }
  __syncthreads();
  for (int j = sh.pos + threadIdx.x; j < C; j += blockDim.x) out[j] = 0ull;
}

extern "C" __global__ void __launch_bounds__(1024) vb_sample_pick(const float* __restrict__ logits, const int* __restrict__ params,
                                          const vb_u64* __restrict__ part, int* token, int V, int nb) {
  __shared__ vb_u64 win[VB_SAMPLE_CAP];
  __shared__ vb_u64 tmp[VB_SAMPLE_CAP];
  __shared__ VbSampleShared sh;
  const int t = threadIdx.x;
  const VbSampleParams p = vb_sample_params(params);
  vb_u64 best = 0ull, count = 0ull;
  for (int b = t; b < nb; b += blockDim.x) {
    best = part[b] > best ? part[b] : best;
    count += part[nb + b];
  }
  best = vb_sample_max_u64(best, sh);
  count = vb_sample_sum_u64(count, sh);
  if (best == 0ull || p.temp <= 0.0f) {
    if (t == 0) *token = best == 0ull ? -1 : vb_sample_id(best);
    return;
  }
  const float M = vb_sample_logit(best);
  const int C = vb_sample_c(p);
  const bool gathered = (p.top_k > 0 && p.top_k <= VB_SAMPLE_CAP) || count <= (vb_u64)VB_SAMPLE_CAP;
  VbSampleSrc src;
  src.keys = gathered ? part + 2 * nb : 0;
  src.logits = logits;
  src.n = gathered ? nb * C : V;
  // The top-k set: ranks [0, kk).
  const vb_u64 kk = p.top_k > 0 && (vb_u64)p.top_k < count ? (vb_u64)p.top_k : count;
  const int cap = VB_SAMPLE_CAP;
  // win holds ranks [w0, w0 + wn) of the order.
  vb_u64 w0 = 0ull;
  int wn = vb_sample_window(src, ~0ull, kk < (vb_u64)cap ? (int)kk : cap, win, tmp, sh);

  // top-p needs the mass of the whole top-k set: sum of exp(l - M).
  double Z = 1.0;
  if (p.top_p < 1.0f) {
    double z = 0.0;
    if (kk <= (vb_u64)cap) {
      if (t < wn && (vb_u64)t < kk) z = (double)expf(__fsub_rn(vb_sample_logit(win[t]), M));
      Z = vb_sample_sum_d(z, sh);
    } else if (kk == count) {
      for (int i = t; i < src.n; i += blockDim.x) {
        const vb_u64 k = src.key(i);
        if (k != 0ull) z = __dadd_rn(z, (double)expf(__fsub_rn(vb_sample_logit(k), M)));
      }
      Z = vb_sample_sum_d(z, sh);
    } else {
      // Windows over ranks [0, kk).
      Z = 0.0;
      vb_u64 r0 = 0ull, bound = ~0ull;
      int n = wn;
      bool first = true;
      while (r0 < kk && n > 0) {
        if (!first) {
          const vb_u64 left = kk - r0;
          n = vb_sample_window(src, bound, left < (vb_u64)cap ? (int)left : cap, win, tmp, sh);
          w0 = r0;
          wn = n;
        }
        first = false;
        z = 0.0;
        if (t < n && r0 + (vb_u64)t < kk) z = (double)expf(__fsub_rn(vb_sample_logit(win[t]), M));
        Z = __dadd_rn(Z, vb_sample_sum_d(z, sh));
        if (n == 0) break;
        bound = win[n - 1];
        r0 += (vb_u64)n;
        __syncthreads();
      }
    }
  }

  // The cut L: top-k, then top-p (the first rank where the cumulative
  // probability reaches top_p is kept), then min-p (the first rank below
  // M + log(min_p) is dropped), at least 1.
  vb_u64 L = kk;
  const bool top_p = p.top_p < 1.0f, min_p = p.min_p > 0.0f;
  if (top_p || min_p) {
    const float floor_l = min_p ? __fadd_rn(M, logf(p.min_p)) : 0.0f;
    double cum0 = 0.0;
    vb_u64 r0 = 0ull, bound = ~0ull;
    if (w0 != 0ull) {  // back to the first window
      wn = vb_sample_window(src, bound, kk < (vb_u64)cap ? (int)kk : cap, win, tmp, sh);
      w0 = 0ull;
    }
    int n = wn;
    while (true) {
      vb_u64 stop = ~0ull;
      double pf = 0.0;
      const bool mine = t < n && r0 + (vb_u64)t < kk;
      float l = 0.0f;
      if (mine) {
        l = vb_sample_logit(win[t]);
        if (min_p && r0 + (vb_u64)t > 0ull && l < floor_l) stop = r0 + (vb_u64)t;
        if (top_p) pf = (double)(float)(__ddiv_rn((double)expf(__fsub_rn(l, M)), Z));
      }
      double window_mass = 0.0;
      const double cum = __dadd_rn(cum0, vb_sample_scan_d(pf, &window_mass, sh));
      if (mine && top_p && cum >= (double)p.top_p) {
        const vb_u64 s = r0 + (vb_u64)t + 1ull;
        stop = s < stop ? s : stop;
      }
      stop = vb_sample_min_u64(stop, sh);
      L = stop < L ? stop : L;
      if (L <= r0 + (vb_u64)n || r0 + (vb_u64)n >= kk || n == 0) break;
      cum0 = __dadd_rn(cum0, window_mass);
      bound = win[n - 1];
      r0 += (vb_u64)n;
      __syncthreads();
      const vb_u64 left = kk - r0;
      n = vb_sample_window(src, bound, left < (vb_u64)cap ? (int)left : cap, win, tmp, sh);
      w0 = r0;
      wn = n;
    }
  }

  // The temperature and the draw over ranks [0, L): probabilities
  // (float)(exp(l/temp - M/temp) / Z_T), u * (their sum) against their
  // running sum.
  const float MT = __fdiv_rn(M, p.temp);
  const double u = vb_sample_uniform(p.seed, p.n);
  if (L <= (vb_u64)cap) {
    if (w0 != 0ull) {
      wn = vb_sample_window(src, ~0ull, (int)L, win, tmp, sh);
      w0 = 0ull;
    }
    const bool mine = (vb_u64)t < L && t < wn;
    const double e = mine ? (double)expf(__fsub_rn(__fdiv_rn(vb_sample_logit(win[t]), p.temp), MT)) : 0.0;
    const double ZT = vb_sample_sum_d(e, sh);
    const double pf = mine ? (double)(float)__ddiv_rn(e, ZT) : 0.0;
    double total = 0.0;
    const double cum = vb_sample_scan_d(pf, &total, sh);
    const double target = __dmul_rn(u, total);
    vb_u64 pick = mine && target < cum ? (vb_u64)t : ~0ull;
    pick = vb_sample_min_u64(pick, sh);
    if (t == 0) *token = vb_sample_id(win[pick != ~0ull ? pick : L - 1ull]);
    return;
  }
  // More than a window survives: three passes over the windows (the sum of
  // the exponentials, the sum of the probabilities, the walk).
  double ZT = 0.0, total = 0.0, cum0 = 0.0;
  vb_u64 last = 0ull;
  for (int pass = 0; pass < 3; ++pass) {
    vb_u64 r0 = 0ull, bound = ~0ull;
    while (r0 < L) {
      const vb_u64 left = L - r0;
      const int n = vb_sample_window(src, bound, left < (vb_u64)cap ? (int)left : cap, win, tmp, sh);
      if (n == 0) break;
      const bool mine = t < n;
      const double e =
          mine ? (double)expf(__fsub_rn(__fdiv_rn(vb_sample_logit(win[t]), p.temp), MT)) : 0.0;
      if (pass == 0) {
        ZT = __dadd_rn(ZT, vb_sample_sum_d(e, sh));
      } else {
        const double pf = mine ? (double)(float)__ddiv_rn(e, ZT) : 0.0;
        double mass = 0.0;
        const double cum = __dadd_rn(cum0, vb_sample_scan_d(pf, &mass, sh));
        if (pass == 1) {
          total = __dadd_rn(total, mass);
        } else {
          const double target = __dmul_rn(u, total);
          vb_u64 pick = mine && target < cum ? r0 + (vb_u64)t : ~0ull;
          pick = vb_sample_min_u64(pick, sh);
          if (pick != ~0ull) {
            if (t == 0) *token = vb_sample_id(win[pick - r0]);
            return;
          }
          cum0 = __dadd_rn(cum0, mass);
        }
      }
      last = win[n - 1];
      bound = last;
      r0 += (vb_u64)n;
      __syncthreads();
    }
  }
  if (t == 0) *token = vb_sample_id(last);
}
)CUDA";
}

}  // namespace vibrant::codegen
