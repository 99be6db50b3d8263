// Block decoders for every weight type the CUDA backend reads: GGUF blocks as
// stored, decoded 8 elements at a time into registers. The bit placement of
// each format is documented in runtime/cpu/dequantize.{h,cc}; the float
// expressions here are the same (no fused multiply-add), so decoded values are
// bit-identical to the CPU reference's.
#include <string>
#include <vector>

#include "codegen/kernels/families.h"

namespace vibrant::codegen {
namespace {

struct Decoder {
  DType type;
  const char* source;
};

// Each decoder: elements 8g .. 8g+7 of a row (g: the group index in the row).
constexpr Decoder kDecoders[] = {
    {DType::kF32, R"CUDA(
struct W_f32 {
  enum { QK = 1, BYTES = 4, PLAIN = 1 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const float* r = (const float*)row;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int k = 8 * g + e;
      v[e] = k < K ? r[k] : 0.0f;
    }
  }
};
)CUDA"},
    {DType::kF16, R"CUDA(
struct W_f16 {
  enum { QK = 1, BYTES = 2, PLAIN = 1 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u16* r = (const u16*)row;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int k = 8 * g + e;
      v[e] = k < K ? vb_h2f(r[k]) : 0.0f;
    }
  }
};
)CUDA"},
    {DType::kBF16, R"CUDA(
struct W_bf16 {
  enum { QK = 1, BYTES = 2, PLAIN = 1 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u16* r = (const u16*)row;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int k = 8 * g + e;
      v[e] = k < K ? vb_bf2f(r[k]) : 0.0f;
    }
  }
};
)CUDA"},
    // 32-element formats: group j = g % 4 of block g / 4 holds elements
    // 8j..8j+7: the low nibbles of qs[8j..] for j < 2, the high nibbles of
    // qs[8(j-2)..] for j >= 2.
    {DType::kQ4_0, R"CUDA(
struct W_q4_0 {
  enum { QK = 32, BYTES = 18, PLAIN = 0 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u8* b = row + (g >> 2) * 18;
    const int j = g & 3;
    const float d = vb_half_at(b);
    const u8* qs = b + 2 + 8 * (j & 1);
    const int sh = 4 * (j >> 1);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = __fmul_rn((float)(((qs[e] >> sh) & 15) - 8), d);
  }
};
)CUDA"},
    {DType::kQ4_1, R"CUDA(
struct W_q4_1 {
  enum { QK = 32, BYTES = 20, PLAIN = 0 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u8* b = row + (g >> 2) * 20;
    const int j = g & 3;
    const float d = vb_half_at(b);
    const float m = vb_half_at(b + 2);
    const u8* qs = b + 4 + 8 * (j & 1);
    const int sh = 4 * (j >> 1);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = __fadd_rn(__fmul_rn((float)((qs[e] >> sh) & 15), d), m);
  }
};
)CUDA"},
    {DType::kQ5_0, R"CUDA(
struct W_q5_0 {
  enum { QK = 32, BYTES = 22, PLAIN = 0 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u8* b = row + (g >> 2) * 22;
    const int j = g & 3;
    const float d = vb_half_at(b);
    const u32 qh = vb_ld32(b + 2);
    const u8* qs = b + 6 + 8 * (j & 1);
    const int sh = 4 * (j >> 1);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int i = 8 * j + e;
      const int q = ((qs[e] >> sh) & 15) | (int)(((qh >> i) & 1u) << 4);
      v[e] = __fmul_rn((float)(q - 16), d);
    }
  }
};
)CUDA"},
    {DType::kQ5_1, R"CUDA(
struct W_q5_1 {
  enum { QK = 32, BYTES = 24, PLAIN = 0 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u8* b = row + (g >> 2) * 24;
    const int j = g & 3;
    const float d = vb_half_at(b);
    const float m = vb_half_at(b + 2);
    const u32 qh = vb_ld32(b + 4);
    const u8* qs = b + 8 + 8 * (j & 1);
    const int sh = 4 * (j >> 1);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int i = 8 * j + e;
      const int q = ((qs[e] >> sh) & 15) | (int)(((qh >> i) & 1u) << 4);
      v[e] = __fadd_rn(__fmul_rn((float)q, d), m);
    }
  }
};
)CUDA"},
    {DType::kQ8_0, R"CUDA(
struct W_q8_0 {
  enum { QK = 32, BYTES = 34, PLAIN = 0 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u8* b = row + (g >> 2) * 34;
    const float d = vb_half_at(b);
    const i8* qs = (const i8*)(b + 2) + 8 * (g & 3);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = __fmul_rn((float)qs[e], d);
  }
};
)CUDA"},
    // K-quants: 32 groups per 256-element super-block; group i0 = 8 * (g % 32)
    // lies inside one 16-element sub-block and one 32-element run.
    {DType::kQ2_K, R"CUDA(
struct W_q2_K {
  enum { QK = 256, BYTES = 84, PLAIN = 0 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u8* b = row + (g >> 5) * 84;
    const int i0 = 8 * (g & 31);
    const int sc = b[i0 >> 4];
    const float d = vb_half_at(b + 80);
    const float dmin = vb_half_at(b + 82);
    const float dl = __fmul_rn(d, (float)(sc & 15));
    const float ml = __fmul_rn(dmin, (float)(sc >> 4));
    const u8* q = b + 16 + 32 * (i0 >> 7) + (i0 & 31);
    const int sh = 2 * ((i0 & 127) >> 5);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = __fsub_rn(__fmul_rn(dl, (float)((q[e] >> sh) & 3)), ml);
  }
};
)CUDA"},
    {DType::kQ3_K, R"CUDA(
struct W_q3_K {
  enum { QK = 256, BYTES = 110, PLAIN = 0 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u8* b = row + (g >> 5) * 110;
    const int i0 = 8 * (g & 31);
    const u8* scb = b + 96;
    const int s = i0 >> 4;
    const int low = s < 8 ? (scb[s] & 15) : (scb[s - 8] >> 4);
    const int high = (scb[8 + (s & 3)] >> (2 * (s >> 2))) & 3;
    const int scale = (low | (high << 4)) - 32;
    const float d = vb_half_at(b + 108);
    const float dl = __fmul_rn(d, (float)scale);
    const u8* q = b + 32 + 32 * (i0 >> 7) + (i0 & 31);
    const int sh = 2 * ((i0 & 127) >> 5);
    const u8* hm = b + (i0 & 31);
    const int hb = i0 >> 5;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int q2 = (q[e] >> sh) & 3;
      const int h = (hm[e] >> hb) & 1;
      v[e] = __fmul_rn(dl, (float)(q2 - (h ? 0 : 4)));
    }
  }
};
)CUDA"},
    {DType::kQ4_K, R"CUDA(
VB_INLINE void vb_scale_min_k4(int s, const u8* q, int* sc, int* mn) {
  if (s < 4) {
    *sc = q[s] & 63;
    *mn = q[s + 4] & 63;
  } else {
    *sc = (q[s + 4] & 15) | ((q[s - 4] >> 6) << 4);
    *mn = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
  }
}
struct W_q4_K {
  enum { QK = 256, BYTES = 144, PLAIN = 0 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u8* b = row + (g >> 5) * 144;
    const int i0 = 8 * (g & 31);
    const int s = i0 >> 5;
    int sc, mn;
    vb_scale_min_k4(s, b + 4, &sc, &mn);
    const float d1 = __fmul_rn(vb_half_at(b), (float)sc);
    const float m1 = __fmul_rn(vb_half_at(b + 2), (float)mn);
    const u8* q = b + 16 + 32 * (s >> 1) + (i0 & 31);
    const int sh = 4 * (s & 1);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = __fsub_rn(__fmul_rn(d1, (float)((q[e] >> sh) & 15)), m1);
  }
};
)CUDA"},
    {DType::kQ5_K, R"CUDA(
VB_INLINE void vb_scale_min_k5(int s, const u8* q, int* sc, int* mn) {
  if (s < 4) {
    *sc = q[s] & 63;
    *mn = q[s + 4] & 63;
  } else {
    *sc = (q[s + 4] & 15) | ((q[s - 4] >> 6) << 4);
    *mn = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
  }
}
struct W_q5_K {
  enum { QK = 256, BYTES = 176, PLAIN = 0 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u8* b = row + (g >> 5) * 176;
    const int i0 = 8 * (g & 31);
    const int s = i0 >> 5;
    int sc, mn;
    vb_scale_min_k5(s, b + 4, &sc, &mn);
    const float d1 = __fmul_rn(vb_half_at(b), (float)sc);
    const float m1 = __fmul_rn(vb_half_at(b + 2), (float)mn);
    const u8* qh = b + 16 + (i0 & 31);
    const u8* q = b + 48 + 32 * (s >> 1) + (i0 & 31);
    const int sh = 4 * (s & 1);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int q5 = ((q[e] >> sh) & 15) | (((qh[e] >> s) & 1) << 4);
      v[e] = __fsub_rn(__fmul_rn(d1, (float)q5), m1);
    }
  }
};
)CUDA"},
    {DType::kQ6_K, R"CUDA(
struct W_q6_K {
  enum { QK = 256, BYTES = 210, PLAIN = 0 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u8* b = row + (g >> 5) * 210;
    const int i0 = 8 * (g & 31);
    const int half = i0 >> 7, gq = (i0 & 127) >> 5, l0 = i0 & 31;
    const u8* ql = b + 64 * half + 32 * (gq & 1) + l0;
    const u8* qh = b + 128 + 32 * half + l0;
    const int lsh = gq < 2 ? 0 : 4;
    const int hsh = 2 * gq;
    const float dd = __fmul_rn(vb_half_at(b + 208), (float)((const i8*)b)[192 + (i0 >> 4)]);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int q = ((ql[e] >> lsh) & 15) | (((qh[e] >> hsh) & 3) << 4);
      v[e] = __fmul_rn(dd, (float)(q - 32));
    }
  }
};
)CUDA"},
    {DType::kQ8_K, R"CUDA(
struct W_q8_K {
  enum { QK = 256, BYTES = 292, PLAIN = 0 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u8* b = row + (g >> 5) * 292;
    const float d = __uint_as_float(vb_ld32(b));
    const i8* qs = (const i8*)(b + 4) + 8 * (g & 31);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = __fmul_rn(d, (float)qs[e]);
  }
};
)CUDA"},
    // IQ4_NL: Q4_0's nibble placement; a code is an index into 16 non-linear
    // levels (ggml's kvalues_iq4nl), kept as int8 in four words so that no
    // table lives in memory. vb_iq4_level is shared with IQ4_XS (guarded).
    {DType::kIQ4_NL, R"CUDA(
#ifndef VB_IQ4_LEVELS
#define VB_IQ4_LEVELS
#define VB_IQ4_L0 0xBFAD9881u
#define VB_IQ4_L1 0xF6EADDCFu
#define VB_IQ4_L2 0x26190D01u
#define VB_IQ4_L3 0x71594535u
// Level c (0..15): -127 -104 -83 -65 -49 -35 -22 -10 1 13 25 38 53 69 89 113.
VB_INLINE int vb_iq4_level(int c) {
  const u32 w = c < 8 ? (c < 4 ? VB_IQ4_L0 : VB_IQ4_L1) : (c < 12 ? VB_IQ4_L2 : VB_IQ4_L3);
  return (int)(i8)(u8)(w >> (8 * (c & 3)));
}
#endif
struct W_iq4_nl {
  enum { QK = 32, BYTES = 18, PLAIN = 0 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u8* b = row + (g >> 2) * 18;
    const int j = g & 3;
    const float d = vb_half_at(b);
    const u8* qs = b + 2 + 8 * (j & 1);
    const int sh = 4 * (j >> 1);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = __fmul_rn(d, (float)vb_iq4_level((qs[e] >> sh) & 15));
  }
};
)CUDA"},
    // IQ4_XS: 8 sub-blocks of 32 (qs[16s..16s+15], Q4_0's nibble placement)
    // with 6-bit scales ls (low 4 bits in scales_l, high 2 in scales_h):
    // x = (d * (ls - 32)) * level.
    {DType::kIQ4_XS, R"CUDA(
#ifndef VB_IQ4_LEVELS
#define VB_IQ4_LEVELS
#define VB_IQ4_L0 0xBFAD9881u
#define VB_IQ4_L1 0xF6EADDCFu
#define VB_IQ4_L2 0x26190D01u
#define VB_IQ4_L3 0x71594535u
VB_INLINE int vb_iq4_level(int c) {
  const u32 w = c < 8 ? (c < 4 ? VB_IQ4_L0 : VB_IQ4_L1) : (c < 12 ? VB_IQ4_L2 : VB_IQ4_L3);
  return (int)(i8)(u8)(w >> (8 * (c & 3)));
}
#endif
struct W_iq4_xs {
  enum { QK = 256, BYTES = 136, PLAIN = 0 };
  static VB_INLINE void deq8(const u8* row, int g, int K, float* v) {
    const u8* b = row + (g >> 5) * 136;
    const int i0 = 8 * (g & 31);
    const int s = i0 >> 5, e0 = i0 & 31;
    const int ls = ((b[4 + (s >> 1)] >> (4 * (s & 1))) & 15) | (((vb_ld16(b + 2) >> (2 * s)) & 3) << 4);
    const float dl = __fmul_rn(vb_half_at(b), (float)(ls - 32));
    const u8* qs = b + 8 + 16 * s + (e0 & 15);
    const int sh = e0 < 16 ? 0 : 4;
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = __fmul_rn(dl, (float)vb_iq4_level((qs[e] >> sh) & 15));
  }
};
)CUDA"},
};

const Decoder* FindDecoder(DType t) {
  for (const Decoder& d : kDecoders) {
    if (d.type == t) return &d;
  }
  return nullptr;
}

}  // namespace

bool CudaSupportsWeightType(DType t) { return FindDecoder(t) != nullptr; }

std::string TypeTag(DType t) { return std::string(DTypeName(t)); }

std::string DecodersSource(const std::vector<DType>& types) {
  std::string out;
  // Q5_K's scale helper duplicates Q4_K's so either can be emitted alone.
  for (DType t : types) {
    const Decoder* d = FindDecoder(t);
    if (d != nullptr) out += d->source;
  }
  return out;
}

}  // namespace vibrant::codegen
