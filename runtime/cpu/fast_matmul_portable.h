// Internal to the fast matmul: the canonical decoded form of one weight block
// (plain C++, used by the portable kernels, the scale decoding of the SIMD
// kernels, and the tests). Bit placement: dequantize.cc.
#ifndef VIBRANT_RUNTIME_CPU_FAST_MATMUL_PORTABLE_H_
#define VIBRANT_RUNTIME_CPU_FAST_MATMUL_PORTABLE_H_

#include <cstdint>
#include <cstring>

#include "ir/dtype.h"
#include "runtime/cpu/dequantize.h"

namespace vibrant::cpu::internal {

inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// A 32-value block: w_i = d * v_i (+ m when has_min), v_i = u_i - o.
struct Q32Block {
  int8_t v[32];
  float d = 0, m = 0;
  bool has_min = false;
};

// Block b of a row of `t` (q4_0, q4_1, q5_0, q5_1, q8_0).
inline void DecodeQ32(DType t, const uint8_t* row, int64_t b, Q32Block* out) {
  switch (t) {
    case DType::kQ4_0: {
      const uint8_t* p = row + 18 * b;
      out->d = HalfToFloat(LoadU16(p));
      for (int j = 0; j < 16; ++j) {
        out->v[j] = static_cast<int8_t>((p[2 + j] & 15) - 8);
        out->v[j + 16] = static_cast<int8_t>((p[2 + j] >> 4) - 8);
      }
      return;
    }
    case DType::kQ4_1: {
      const uint8_t* p = row + 20 * b;
      out->d = HalfToFloat(LoadU16(p));
      out->m = HalfToFloat(LoadU16(p + 2));
      out->has_min = true;
      for (int j = 0; j < 16; ++j) {
        out->v[j] = static_cast<int8_t>(p[4 + j] & 15);
        out->v[j + 16] = static_cast<int8_t>(p[4 + j] >> 4);
      }
      return;
    }
    case DType::kQ5_0: {
      const uint8_t* p = row + 22 * b;
      out->d = HalfToFloat(LoadU16(p));
      const uint32_t qh = LoadU32(p + 2);
      for (int j = 0; j < 16; ++j) {
        out->v[j] = static_cast<int8_t>(((p[6 + j] & 15) | (((qh >> j) & 1) << 4)) - 16);
        out->v[j + 16] =
            static_cast<int8_t>(((p[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16);
      }
      return;
    }
    case DType::kQ5_1: {
      const uint8_t* p = row + 24 * b;
      out->d = HalfToFloat(LoadU16(p));
      out->m = HalfToFloat(LoadU16(p + 2));
      out->has_min = true;
      const uint32_t qh = LoadU32(p + 4);
      for (int j = 0; j < 16; ++j) {
        out->v[j] = static_cast<int8_t>((p[8 + j] & 15) | (((qh >> j) & 1) << 4));
        out->v[j + 16] = static_cast<int8_t>((p[8 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
      }
      return;
    }
    case DType::kQ8_0: {
      const uint8_t* p = row + 34 * b;
      out->d = HalfToFloat(LoadU16(p));
      std::memcpy(out->v, p + 2, 32);
      return;
    }
    default:
      return;
  }
}

// A 256-value K-quant block: w_i = d * sc_g * (u_i - o) - dmin * mn_g for i in
// group g = i / 16 (the dmin term only when has_min).
struct KBlock {
  uint8_t u[256];
  int16_t sc[16];
  int16_t mn[16];
  int o = 0;
  float d = 0, dmin = 0;
  bool has_min = false;
};

// 6-bit scale and min of sub-block s (0..7) of a q4_K/q5_K block.
inline void ScaleMinK4(int s, const uint8_t* q, int* scale, int* min) {
  if (s < 4) {
    *scale = q[s] & 63;
    *min = q[s + 4] & 63;
  } else {
    *scale = (q[s + 4] & 0x0f) | ((q[s - 4] >> 6) << 4);
    *min = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
  }
}

// Scales (and mins) of a K-quant block only: sc, mn, o, d, dmin, has_min.
inline void DecodeKScales(DType t, const uint8_t* p, KBlock* out) {
  switch (t) {
    case DType::kQ2_K:
      out->d = HalfToFloat(LoadU16(p + 80));
      out->dmin = HalfToFloat(LoadU16(p + 82));
      out->has_min = true;
      out->o = 0;
      for (int g = 0; g < 16; ++g) {
        out->sc[g] = static_cast<int16_t>(p[g] & 15);
        out->mn[g] = static_cast<int16_t>(p[g] >> 4);
      }
      return;
    case DType::kQ3_K: {
      const uint8_t* s = p + 96;
      out->d = HalfToFloat(LoadU16(p + 108));
      out->has_min = false;
      out->o = 4;
      for (int g = 0; g < 16; ++g) {
        const int low = g < 8 ? (s[g] & 15) : (s[g - 8] >> 4);
        const int high = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
        out->sc[g] = static_cast<int16_t>((low | (high << 4)) - 32);
        out->mn[g] = 0;
      }
      return;
    }
    case DType::kQ4_K:
    case DType::kQ5_K:
      out->d = HalfToFloat(LoadU16(p));
      out->dmin = HalfToFloat(LoadU16(p + 2));
      out->has_min = true;
      out->o = 0;
      for (int s = 0; s < 8; ++s) {
        int sc, mn;
        ScaleMinK4(s, p + 4, &sc, &mn);
        out->sc[2 * s] = out->sc[2 * s + 1] = static_cast<int16_t>(sc);
        out->mn[2 * s] = out->mn[2 * s + 1] = static_cast<int16_t>(mn);
      }
      return;
    case DType::kQ6_K:
      out->d = HalfToFloat(LoadU16(p + 208));
      out->has_min = false;
      out->o = 32;
      for (int g = 0; g < 16; ++g) {
        out->sc[g] = static_cast<int16_t>(static_cast<int8_t>(p[192 + g]));
        out->mn[g] = 0;
      }
      return;
    default:
      return;
  }
}

inline int64_t KBlockBytes(DType t) {
  switch (t) {
    case DType::kQ2_K: return 84;
    case DType::kQ3_K: return 110;
    case DType::kQ4_K: return 144;
    case DType::kQ5_K: return 176;
    case DType::kQ6_K: return 210;
    default: return 0;
  }
}

// Block b of a row of `t` (q2_K .. q6_K).
inline void DecodeK(DType t, const uint8_t* row, int64_t b, KBlock* out) {
  const uint8_t* p = row + KBlockBytes(t) * b;
  DecodeKScales(t, p, out);
  switch (t) {
    case DType::kQ2_K:
    case DType::kQ3_K: {
      const uint8_t* qs = p + (t == DType::kQ2_K ? 16 : 32);
      for (int i = 0; i < 256; ++i) {
        const int half = i / 128, g = (i % 128) / 32, l = i % 32;
        int u = (qs[32 * half + l] >> (2 * g)) & 3;
        if (t == DType::kQ3_K) u |= ((p[l] >> (4 * half + g)) & 1) << 2;
        out->u[i] = static_cast<uint8_t>(u);
      }
      return;
    }
    case DType::kQ4_K:
    case DType::kQ5_K: {
      const uint8_t* qs = p + (t == DType::kQ4_K ? 16 : 48);
      for (int i = 0; i < 256; ++i) {
        const int s = i / 32, l = i % 32;
        int u = (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 15;
        if (t == DType::kQ5_K) u |= ((p[16 + l] >> s) & 1) << 4;
        out->u[i] = static_cast<uint8_t>(u);
      }
      return;
    }
    case DType::kQ6_K: {
      for (int i = 0; i < 256; ++i) {
        const int h = i / 128, g = (i % 128) / 32, l = i % 32;
        const int lo = (p[64 * h + 32 * (g & 1) + l] >> (g < 2 ? 0 : 4)) & 15;
        const int hi = (p[128 + 32 * h + l] >> (2 * g)) & 3;
        out->u[i] = static_cast<uint8_t>(lo | (hi << 4));
      }
      return;
    }
    default:
      return;
  }
}

}  // namespace vibrant::cpu::internal

#endif  // VIBRANT_RUNTIME_CPU_FAST_MATMUL_PORTABLE_H_
