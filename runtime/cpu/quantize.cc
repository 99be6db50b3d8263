#include "runtime/cpu/quantize.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/dequantize.h"

// Each encoder below produces the block layout documented in dequantize.h and
// dequantize.cc, using the scale search and rounding of ggml's reference
// quantizer for that type. Float expressions are evaluated in the same order
// as ggml's, so on the same inputs the bytes normally match llama-quantize's
// (no importance matrix) exactly.

namespace vibrant {
namespace {

constexpr int kQK = 256;
// Groups whose largest magnitude is below this are treated as all-zero.
constexpr float kGroupMaxEps = 1e-15f;

inline void Store16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, sizeof(v)); }

// Rounds to the nearest integer, ties to even (the current rounding mode),
// for |v| < 2^22: adding 1.5*2^23 puts the integer into the low mantissa bits.
inline int NearestInt(float v) {
  v = std::clamp(v, -4194303.0f, 4194303.0f);
  const float t = v + 12582912.0f;
  return static_cast<int>(std::bit_cast<uint32_t>(t) & 0x7fffffu) - 0x400000;
}

// Largest magnitude of x[0..n) and the signed value that has it (first one).
inline void SignedAbsMax(const float* x, int n, float* amax, float* max) {
  *amax = 0.0f;
  *max = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > *amax) {
      *amax = a;
      *max = x[i];
    }
  }
}

// ---- scale searches (after ggml's make_qkx2_quants / make_q3_quants /
// make_qx_quants) -----------------------------------------------------------------

// Fits x[i] ~= scale * L[i] + min with L[i] in [0, nmax] and min <= 0,
// minimizing sum w[i] * err(i) where err is the squared or (use_mad) absolute
// difference. Starts from the min/max grid and tries nstep + 1 scales
// (nmax + rmin + k*rdelta) / (max - min), refitting scale and min by weighted
// least squares for each. Returns the scale; *neg_min receives -min.
float FitScaleMin(int n, int nmax, const float* x, const float* w, uint8_t* L,
                  float* neg_min, float rmin, float rdelta, int nstep, bool use_mad) {
  uint8_t laux[32];
  float min = x[0];
  float max = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *neg_min = -min;
    return 0.0f;
  }
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1.0f / iscale;
  float best_error = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(NearestInt(iscale * (x[i] - min)), 0, nmax);
    L[i] = static_cast<uint8_t>(l);
    float diff = scale * static_cast<float>(l) + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += w[i] * diff;
  }
  for (int step = 0; step <= nstep; ++step) {
    iscale = (rmin + rdelta * static_cast<float>(step) + static_cast<float>(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(NearestInt(iscale * (x[i] - min)), 0, nmax);
      laux[i] = static_cast<uint8_t>(l);
      const float fl = static_cast<float>(l);
      sum_l += w[i] * fl;
      sum_l2 += w[i] * fl * fl;
      sum_xl += w[i] * fl * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float error = 0.0f;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * static_cast<float>(laux[i]) + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        error += w[i] * diff;
      }
      if (error < best_error) {
        std::memcpy(L, laux, static_cast<size_t>(n));
        best_error = error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *neg_min = -min;
  return scale;
}

// Symmetric fit x[i] ~= scale * l[i], l in [-nmax, nmax-1], weights x^2: starts
// from the grid through the largest magnitude and then moves single elements
// to the level that most improves the weighted error (up to 5 sweeps).
// L receives l + nmax. Returns the scale.
float FitScaleSymmetricIterative(int n, int nmax, const float* x, int8_t* L) {
  float amax, max;
  SignedAbsMax(x, n, &amax, &max);
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  const float iscale = -static_cast<float>(nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * static_cast<float>(L[i]);
      if (slx > 0) {
        float sl2 = suml2 - w * static_cast<float>(L[i]) * static_cast<float>(L[i]);
        const int nl = std::clamp(NearestInt(x[i] * sl2 / slx), -nmax, nmax - 1);
        if (nl != L[i]) {
          slx += w * x[i] * static_cast<float>(nl);
          sl2 += w * static_cast<float>(nl) * static_cast<float>(nl);
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(nl);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (changed == 0) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Symmetric fit x[i] ~= scale * l[i], l in [-nmax, nmax-1], weights x^2: tries
// the 19 grids -(nmax + 0.1*k)/max, k = -9..9, keeping the least-squares scale
// of the best. L receives l + nmax. Returns the scale.
float FitScaleSymmetricGrid(int n, int nmax, const float* x, int8_t* L) {
  float amax, max;
  SignedAbsMax(x, n, &amax, &max);
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  float iscale = -static_cast<float>(nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(k)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * static_cast<float>(l);
      suml2 += w * static_cast<float>(l) * static_cast<float>(l);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        L[i] = static_cast<int8_t>(nmax + std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Packs 256 2-bit values: byte 32*h + l holds L[128h + l + 32k] in bits 2k..2k+1.
inline void Pack2Bit(const uint8_t* L, uint8_t* qs) {
  for (int h = 0; h < 2; ++h) {
    const uint8_t* v = L + 128 * h;
    for (int l = 0; l < 32; ++l) {
      qs[32 * h + l] = static_cast<uint8_t>(v[l] | (v[l + 32] << 2) | (v[l + 64] << 4) |
                                            (v[l + 96] << 6));
    }
  }
}

// Stores 6-bit scale/min of sub-block s in the 12-byte Q4_K/Q5_K packing
// (bytes must start zeroed).
inline void PackScaleMinK4(int s, int sc, int mn, uint8_t* q) {
  if (s < 4) {
    q[s] = static_cast<uint8_t>(sc);
    q[s + 4] = static_cast<uint8_t>(mn);
  } else {
    q[s + 4] = static_cast<uint8_t>((sc & 0x0f) | ((mn & 0x0f) << 4));
    q[s - 4] |= static_cast<uint8_t>((sc >> 4) << 6);
    q[s] |= static_cast<uint8_t>((mn >> 4) << 6);
  }
}

inline void UnpackScaleMinK4(int s, const uint8_t* q, int* sc, int* mn) {
  if (s < 4) {
    *sc = q[s] & 63;
    *mn = q[s + 4] & 63;
  } else {
    *sc = (q[s + 4] & 0x0f) | ((q[s - 4] >> 6) << 4);
    *mn = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
  }
}

// ---- block encoders ------------------------------------------------------------

void EncodeQ4_0(const float* x, uint8_t* b) {
  float amax, max;
  SignedAbsMax(x, 32, &amax, &max);
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  Store16(b, FloatToHalf(d));
  uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    const int q0 = std::min(15, static_cast<int>(x[j] * id + 8.5f));
    const int q1 = std::min(15, static_cast<int>(x[j + 16] * id + 8.5f));
    qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

inline void MinMax(const float* x, int n, float* mn, float* mx) {
  *mn = x[0];
  *mx = x[0];
  for (int i = 1; i < n; ++i) {
    *mn = std::min(*mn, x[i]);
    *mx = std::max(*mx, x[i]);
  }
}

void EncodeQ4_1(const float* x, uint8_t* b) {
  float min, max;
  MinMax(x, 32, &min, &max);
  const float d = (max - min) / 15.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  Store16(b, FloatToHalf(d));
  Store16(b + 2, FloatToHalf(min));
  uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    const int q0 = std::min(15, static_cast<int>((x[j] - min) * id + 0.5f));
    const int q1 = std::min(15, static_cast<int>((x[j + 16] - min) * id + 0.5f));
    qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

void EncodeQ5_0(const float* x, uint8_t* b) {
  float amax, max;
  SignedAbsMax(x, 32, &amax, &max);
  const float d = max / -16.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  Store16(b, FloatToHalf(d));
  uint32_t qh = 0;
  uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int q0 = std::min(31, static_cast<int>(x[j] * id + 16.5f));
    const int q1 = std::min(31, static_cast<int>(x[j + 16] * id + 16.5f));
    qs[j] = static_cast<uint8_t>((q0 & 0x0f) | ((q1 & 0x0f) << 4));
    qh |= static_cast<uint32_t>(q0 >> 4) << j;
    qh |= static_cast<uint32_t>(q1 >> 4) << (j + 16);
  }
  std::memcpy(b + 2, &qh, sizeof(qh));
}

void EncodeQ5_1(const float* x, uint8_t* b) {
  float min, max;
  MinMax(x, 32, &min, &max);
  const float d = (max - min) / 31.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  Store16(b, FloatToHalf(d));
  Store16(b + 2, FloatToHalf(min));
  uint32_t qh = 0;
  uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int q0 = std::min(31, static_cast<int>((x[j] - min) * id + 0.5f));
    const int q1 = std::min(31, static_cast<int>((x[j + 16] - min) * id + 0.5f));
    qs[j] = static_cast<uint8_t>((q0 & 0x0f) | ((q1 & 0x0f) << 4));
    qh |= static_cast<uint32_t>(q0 >> 4) << j;
    qh |= static_cast<uint32_t>(q1 >> 4) << (j + 16);
  }
  std::memcpy(b + 4, &qh, sizeof(qh));
}

void EncodeQ8_0(const float* x, uint8_t* b) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  Store16(b, FloatToHalf(d));
  int8_t* qs = reinterpret_cast<int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) qs[j] = static_cast<int8_t>(std::round(x[j] * id));
}

void EncodeQ2_K(const float* x, uint8_t* b) {
  uint8_t* scales_out = b;
  uint8_t* qs = b + 16;
  uint8_t L[kQK];
  float weights[16];
  float scales[16];
  float mins[16];
  float max_scale = 0.0f;
  float max_min = 0.0f;
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
    scales[j] = FitScaleMin(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], -0.5f, 0.1f, 15,
                            /*use_mad=*/true);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  if (max_scale > 0) {
    const float iscale = 15.0f / max_scale;
    for (int j = 0; j < 16; ++j) {
      scales_out[j] = static_cast<uint8_t>(std::clamp(NearestInt(iscale * scales[j]), 0, 15));
    }
    Store16(b + 80, FloatToHalf(max_scale / 15.0f));
  } else {
    std::memset(scales_out, 0, 16);
    Store16(b + 80, FloatToHalf(0.0f));
  }
  if (max_min > 0) {
    const float iscale = 15.0f / max_min;
    for (int j = 0; j < 16; ++j) {
      const int l = std::clamp(NearestInt(iscale * mins[j]), 0, 15);
      scales_out[j] = static_cast<uint8_t>(scales_out[j] | (l << 4));
    }
    Store16(b + 82, FloatToHalf(max_min / 15.0f));
  } else {
    Store16(b + 82, FloatToHalf(0.0f));
  }
  const float d_all = HalfToFloat(static_cast<uint16_t>(b[80] | (b[81] << 8)));
  const float m_all = HalfToFloat(static_cast<uint16_t>(b[82] | (b[83] << 8)));
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * static_cast<float>(scales_out[j] & 0x0f);
    if (d == 0.0f) continue;
    const float dm = m_all * static_cast<float>(scales_out[j] >> 4);
    for (int i = 0; i < 16; ++i) {
      L[16 * j + i] =
          static_cast<uint8_t>(std::clamp(NearestInt((x[16 * j + i] + dm) / d), 0, 3));
    }
  }
  Pack2Bit(L, qs);
}

void EncodeQ3_K(const float* x, uint8_t* b) {
  uint8_t* hmask = b;
  uint8_t* qs = b + 32;
  uint8_t* sc = b + 96;
  int8_t L[kQK];
  float scales[16];
  float max_scale = 0.0f;
  float amax = 0.0f;
  for (int j = 0; j < 16; ++j) {
    scales[j] = FitScaleSymmetricIterative(16, 4, x + 16 * j, L + 16 * j);
    const float a = std::fabs(scales[j]);
    if (a > amax) {
      amax = a;
      max_scale = scales[j];
    }
  }
  std::memset(sc, 0, 12);
  if (max_scale != 0.0f) {
    const float iscale = -32.0f / max_scale;
    for (int j = 0; j < 16; ++j) {
      const int l = std::clamp(NearestInt(iscale * scales[j]), -32, 31) + 32;
      if (j < 8) {
        sc[j] = static_cast<uint8_t>(l & 0x0f);
      } else {
        sc[j - 8] = static_cast<uint8_t>(sc[j - 8] | ((l & 0x0f) << 4));
      }
      sc[8 + j % 4] = static_cast<uint8_t>(sc[8 + j % 4] | ((l >> 4) << (2 * (j / 4))));
    }
    Store16(b + 108, FloatToHalf(1.0f / iscale));
  } else {
    Store16(b + 108, FloatToHalf(0.0f));
  }
  const float d_all = HalfToFloat(static_cast<uint16_t>(b[108] | (b[109] << 8)));
  for (int j = 0; j < 16; ++j) {
    const int low = j < 8 ? (sc[j] & 0x0f) : (sc[j - 8] >> 4);
    const int high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
    const float d = d_all * static_cast<float>((low | (high << 4)) - 32);
    if (d == 0.0f) continue;
    for (int i = 0; i < 16; ++i) {
      L[16 * j + i] =
          static_cast<int8_t>(std::clamp(NearestInt(x[16 * j + i] / d), -4, 3) + 4);
    }
  }
  // Third bit of element i goes to bit i/32 of hmask[i%32].
  std::memset(hmask, 0, 32);
  uint8_t low2[kQK];
  for (int i = 0; i < kQK; ++i) {
    int l = L[i];
    if (l > 3) {
      hmask[i % 32] = static_cast<uint8_t>(hmask[i % 32] | (1u << (i / 32)));
      l -= 4;
    }
    low2[i] = static_cast<uint8_t>(l);
  }
  Pack2Bit(low2, qs);
}

// Shared by Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins.
// Fills L with levels in [0, nmax] and writes d, dmin and the scale bytes.
void EncodeScaleMinK(const float* x, int nmax, float rmin, int nstep, uint8_t* b, uint8_t* L) {
  float weights[32];
  float scales[8];
  float mins[8];
  float max_scale = 0.0f;
  float max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0.0f;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float av_x = std::sqrt(sum_x2 / 32.0f);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
    scales[j] = FitScaleMin(32, nmax, xs, weights, L + 32 * j, &mins[j], rmin, 0.1f, nstep,
                            /*use_mad=*/false);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  uint8_t* sc = b + 4;
  std::memset(sc, 0, 12);
  for (int j = 0; j < 8; ++j) {
    const int ls = std::clamp(NearestInt(inv_scale * scales[j]), 0, 63);
    const int lm = std::clamp(NearestInt(inv_min * mins[j]), 0, 63);
    PackScaleMinK4(j, ls, lm, sc);
  }
  Store16(b, FloatToHalf(max_scale / 63.0f));
  Store16(b + 2, FloatToHalf(max_min / 63.0f));
  const float d_all = HalfToFloat(static_cast<uint16_t>(b[0] | (b[1] << 8)));
  const float m_all = HalfToFloat(static_cast<uint16_t>(b[2] | (b[3] << 8)));
  for (int j = 0; j < 8; ++j) {
    int s, m;
    UnpackScaleMinK4(j, sc, &s, &m);
    const float d = d_all * static_cast<float>(s);
    if (d == 0.0f) continue;
    const float dm = m_all * static_cast<float>(m);
    for (int i = 0; i < 32; ++i) {
      L[32 * j + i] =
          static_cast<uint8_t>(std::clamp(NearestInt((x[32 * j + i] + dm) / d), 0, nmax));
    }
  }
}

void EncodeQ4_K(const float* x, uint8_t* b) {
  uint8_t L[kQK];
  EncodeScaleMinK(x, 15, -1.0f, 20, b, L);
  uint8_t* qs = b + 16;
  for (int p = 0; p < 4; ++p) {
    for (int l = 0; l < 32; ++l) {
      qs[32 * p + l] = static_cast<uint8_t>(L[64 * p + l] | (L[64 * p + l + 32] << 4));
    }
  }
}

void EncodeQ5_K(const float* x, uint8_t* b) {
  uint8_t L[kQK];
  EncodeScaleMinK(x, 31, -0.5f, 15, b, L);
  uint8_t* qh = b + 16;
  uint8_t* qs = b + 48;
  std::memset(qh, 0, 32);
  for (int p = 0; p < 4; ++p) {
    for (int l = 0; l < 32; ++l) {
      const int l1 = L[64 * p + l];
      const int l2 = L[64 * p + l + 32];
      qh[l] = static_cast<uint8_t>(qh[l] | ((l1 >> 4) << (2 * p)) | ((l2 >> 4) << (2 * p + 1)));
      qs[32 * p + l] = static_cast<uint8_t>((l1 & 0x0f) | ((l2 & 0x0f) << 4));
    }
  }
}

void EncodeQ6_K(const float* x, uint8_t* b) {
  int8_t L[kQK];
  float scales[16];
  float max_scale = 0.0f;
  float max_abs_scale = 0.0f;
  for (int j = 0; j < 16; ++j) {
    scales[j] = FitScaleSymmetricGrid(16, 32, x + 16 * j, L + 16 * j);
    const float a = std::fabs(scales[j]);
    if (a > max_abs_scale) {
      max_abs_scale = a;
      max_scale = scales[j];
    }
  }
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(b, 0, 210);
    return;
  }
  const float iscale = -128.0f / max_scale;
  Store16(b + 208, FloatToHalf(1.0f / iscale));
  int8_t* sc = reinterpret_cast<int8_t*>(b + 192);
  for (int j = 0; j < 16; ++j) {
    sc[j] = static_cast<int8_t>(std::clamp(NearestInt(iscale * scales[j]), -128, 127));
  }
  const float d_all = HalfToFloat(static_cast<uint16_t>(b[208] | (b[209] << 8)));
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * static_cast<float>(sc[j]);
    if (d == 0.0f) continue;
    for (int i = 0; i < 16; ++i) {
      L[16 * j + i] =
          static_cast<int8_t>(std::clamp(NearestInt(x[16 * j + i] / d), -32, 31) + 32);
    }
  }
  uint8_t* ql = b;
  uint8_t* qh = b + 128;
  for (int h = 0; h < 2; ++h) {
    const int8_t* v = L + 128 * h;
    for (int l = 0; l < 32; ++l) {
      const int q1 = v[l], q2 = v[l + 32], q3 = v[l + 64], q4 = v[l + 96];
      ql[64 * h + l] = static_cast<uint8_t>((q1 & 0x0f) | ((q3 & 0x0f) << 4));
      ql[64 * h + l + 32] = static_cast<uint8_t>((q2 & 0x0f) | ((q4 & 0x0f) << 4));
      qh[32 * h + l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) |
                                            ((q4 >> 4) << 6));
    }
  }
}

void EncodeQ8_K(const float* x, uint8_t* b) {
  float amax, max;
  SignedAbsMax(x, kQK, &amax, &max);
  int8_t* qs = reinterpret_cast<int8_t*>(b + 4);
  int16_t bsums[16];
  if (amax == 0.0f) {
    std::memset(b, 0, 292);
    return;
  }
  const float iscale = -127.0f / max;
  for (int j = 0; j < kQK; ++j) {
    qs[j] = static_cast<int8_t>(std::min(127, NearestInt(iscale * x[j])));
  }
  for (int j = 0; j < 16; ++j) {
    int sum = 0;
    for (int i = 0; i < 16; ++i) sum += qs[16 * j + i];
    bsums[j] = static_cast<int16_t>(sum);
  }
  const float d = 1.0f / iscale;
  std::memcpy(b, &d, sizeof(d));
  std::memcpy(b + 260, bsums, sizeof(bsums));
}

// ---- IQ4_NL / IQ4_XS (after ggml's quantize_row_iq4_nl_impl, without an
// importance matrix: weights x^2, 7 scale trials either side) -----------------

constexpr int8_t kIQ4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

// Index of the level nearest to v (ties to the lower level), by bisection.
inline int NearestIQ4Level(float v) {
  if (v <= kIQ4Values[0]) return 0;
  if (v >= kIQ4Values[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (v < kIQ4Values[mid]) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  return v - kIQ4Values[hi - 1] < kIQ4Values[hi] - v ? hi - 1 : hi;
}

// The scale of one 32-element block: start from d = max / -127 (the extreme
// value on the level -127), fit d by weighted least squares for the levels it
// gives, then try the 15 inverse scales (k - 127) / max, k = -7..7, keeping
// the one with the best sumqx^2 / sumq2. Returns the scale (0 for an all-zero
// block); L receives the levels of the first fit (not used by the callers,
// which requantize with the final scale, as ggml does).
float FitIQ4Scale(const float* x, uint8_t* L) {
  constexpr int kTries = 7;
  float weight[32];
  for (int j = 0; j < 32; ++j) weight[j] = x[j] * x[j];
  float amax, max;
  SignedAbsMax(x, 32, &amax, &max);
  if (amax < kGroupMaxEps) return 0.0f;
  float d = -max / kIQ4Values[0];
  float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  for (int j = 0; j < 32; ++j) {
    const int l = NearestIQ4Level(id * x[j]);
    L[j] = static_cast<uint8_t>(l);
    const float q = kIQ4Values[l];
    const float w = weight[j];
    sumqx += w * q * x[j];
    sumq2 += w * q * q;
  }
  d = sumqx / sumq2;
  float best = d * sumqx;
  for (int itry = -kTries; itry <= kTries; ++itry) {
    id = static_cast<float>(itry + kIQ4Values[0]) / max;
    sumqx = sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const int l = NearestIQ4Level(id * x[j]);
      const float q = kIQ4Values[l];
      const float w = weight[j];
      sumqx += w * q * x[j];
      sumq2 += w * q * q;
    }
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  return d;
}

// Packs 32 levels as Q4_0 places nibbles.
inline void PackIQ4(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(L[j] | (L[16 + j] << 4));
}

void EncodeIQ4_NL(const float* x, uint8_t* b) {
  uint8_t L[32];
  const float scale = FitIQ4Scale(x, L);
  Store16(b, FloatToHalf(scale));
  const float id = scale != 0.0f ? 1 / scale : 0.0f;
  for (int j = 0; j < 32; ++j) L[j] = static_cast<uint8_t>(NearestIQ4Level(id * x[j]));
  PackIQ4(L, b + 2);
}

void EncodeIQ4_XS(const float* x, uint8_t* b) {
  uint8_t L[kQK];
  float scales[8];
  float max_scale = 0, amax_scale = 0;
  for (int ib = 0; ib < 8; ++ib) {
    scales[ib] = FitIQ4Scale(x + 32 * ib, L + 32 * ib);
    const float a = std::fabs(scales[ib]);
    if (a > amax_scale) {
      amax_scale = a;
      max_scale = scales[ib];
    }
  }
  // 6-bit signed sub-block scales l in [-32, 31] times a super-block d.
  const float d = -max_scale / 32;
  Store16(b, FloatToHalf(d));
  const float id = d != 0.0f ? 1 / d : 0.0f;
  uint16_t scales_h = 0;
  uint8_t* scales_l = b + 4;
  for (int ib = 0; ib < 8; ++ib) {
    int l = std::clamp(NearestInt(id * scales[ib]), -32, 31);
    const float dl = d * l;
    const float idl = dl != 0.0f ? 1 / dl : 0.0f;
    for (int j = 0; j < 32; ++j) {
      L[32 * ib + j] = static_cast<uint8_t>(NearestIQ4Level(idl * x[32 * ib + j]));
    }
    l += 32;
    if (ib % 2 == 0) {
      scales_l[ib / 2] = static_cast<uint8_t>(l & 0x0f);
    } else {
      scales_l[ib / 2] |= static_cast<uint8_t>((l & 0x0f) << 4);
    }
    scales_h |= static_cast<uint16_t>((l >> 4) << (2 * ib));
  }
  Store16(b + 2, scales_h);
  for (int ib = 0; ib < 8; ++ib) PackIQ4(L + 32 * ib, b + 8 + 16 * ib);
}

using BlockEncoder = void (*)(const float*, uint8_t*);

BlockEncoder EncoderFor(DType t) {
  switch (t) {
    case DType::kQ4_0: return EncodeQ4_0;
    case DType::kQ4_1: return EncodeQ4_1;
    case DType::kQ5_0: return EncodeQ5_0;
    case DType::kQ5_1: return EncodeQ5_1;
    case DType::kQ8_0: return EncodeQ8_0;
    case DType::kQ2_K: return EncodeQ2_K;
    case DType::kQ3_K: return EncodeQ3_K;
    case DType::kQ4_K: return EncodeQ4_K;
    case DType::kQ5_K: return EncodeQ5_K;
    case DType::kQ6_K: return EncodeQ6_K;
    case DType::kQ8_K: return EncodeQ8_K;
    case DType::kIQ4_NL: return EncodeIQ4_NL;
    case DType::kIQ4_XS: return EncodeIQ4_XS;
    default: return nullptr;
  }
}

}  // namespace

absl::StatusOr<int64_t> QuantizedBytes(DType t, int64_t n) { return DTypeBytes(t, n); }

absl::Status Quantize(DType t, const float* src, int64_t n, void* dst) {
  const DTypeInfo& info = GetDTypeInfo(t);
  if (info.type != t || !info.supported) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Quantize: unsupported type ", std::string(GgmlTypeName(static_cast<uint32_t>(t))), " (",
        static_cast<uint32_t>(t), ")"));
  }
  if (n < 0 || n % info.block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Quantize: ", n, " elements of type ", std::string(info.name),
        " is not a whole number of ", info.block_size, "-element blocks"));
  }
  if (t == DType::kI8 || t == DType::kI16 || t == DType::kI32) {
    return absl::UnimplementedError(
        absl::StrCat("Quantize: no float encoder for integer type ", std::string(info.name)));
  }
  if (n == 0) return absl::OkStatus();
  if (src == nullptr || dst == nullptr) return absl::InvalidArgumentError("Quantize: null buffer");
  uint8_t* out = static_cast<uint8_t*>(dst);
  switch (t) {
    case DType::kF32:
      std::memcpy(out, src, static_cast<size_t>(n) * sizeof(float));
      return absl::OkStatus();
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) Store16(out + 2 * i, FloatToHalf(src[i]));
      return absl::OkStatus();
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) Store16(out + 2 * i, FloatToBF16(src[i]));
      return absl::OkStatus();
    default:
      break;
  }
  const BlockEncoder encode = EncoderFor(t);
  const int64_t bs = info.block_size;
  const int64_t nb = n / bs;
  for (int64_t i = 0; i < nb; ++i) {
    const float* x = src + i * bs;
    for (int64_t j = 0; j < bs; ++j) {
      if (!std::isfinite(x[j])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Quantize: element ", i * bs + j, " is ", x[j], "; ", std::string(info.name),
            " can only encode finite values"));
      }
    }
    encode(x, out + i * info.block_bytes);
  }
  return absl::OkStatus();
}

absl::Status RoundActivationsToQ8(const float* x, int64_t n, float* out) {
  if (n % 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("RoundActivationsToQ8: ", n, " values are not whole blocks of 32"));
  }
  for (int64_t b = 0; b < n; b += 32) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b + j]));
    const float d = amax / 127.0f;
    for (int j = 0; j < 32; ++j) {
      out[b + j] = d == 0.0f ? 0.0f : std::round(x[b + j] / d) * d;
    }
  }
  return absl::OkStatus();
}

absl::Status QuantizeQ8A(const float* x, int64_t n, uint8_t* out) {
  if (n % 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantizeQ8A: ", n, " values are not whole blocks of 32"));
  }
  int8_t* codes = reinterpret_cast<int8_t*>(out);
  uint8_t* ds = out + n;
  for (int64_t b = 0; b < n; b += 32) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b + j]));
    const float d = amax / 127.0f;
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      // A NaN input (or inf / inf) rounds to code 0, as the GPU's cvt.rni
      // does; casting it to int would be undefined (found by the plan fuzzer).
      // d == 0 (amax 0, or subnormal enough that amax / 127 underflows): every
      // code is 0 (ir/ops.h), not x / 0 = inf cast to int (the plan fuzzer
      // again).
      const float r = d == 0.0f ? 0.0f : std::round(x[b + j] / d);
      const int q = std::isnan(r) ? 0 : static_cast<int>(r);
      codes[b + j] = static_cast<int8_t>(q);
      sum += q;
    }
    const float pair[2] = {d, d * static_cast<float>(sum)};
    std::memcpy(ds + (b / 32) * 8, pair, 8);
  }
  return absl::OkStatus();
}

absl::Status DequantizeQ8A(const uint8_t* q, int64_t n, float* out) {
  if (n % 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("DequantizeQ8A: ", n, " values are not whole blocks of 32"));
  }
  const int8_t* codes = reinterpret_cast<const int8_t*>(q);
  const uint8_t* ds = q + n;
  for (int64_t b = 0; b < n; b += 32) {
    float d;
    std::memcpy(&d, ds + (b / 32) * 8, 4);
    for (int j = 0; j < 32; ++j) out[b + j] = static_cast<float>(codes[b + j]) * d;
  }
  return absl::OkStatus();
}

}  // namespace vibrant
