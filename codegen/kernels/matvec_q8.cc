// Mat-vec on 8-bit activations (the decode path for quantized weights).
//
// Why: at decode each weight byte is read once per token, so a mat-vec must
// stream weights at memory bandwidth. Decoding 4-bit weights to floats and
// multiplying them with float activations costs ~4 instructions per weight
// and 8 bytes of x per weight byte from L1, which caps the float kernel
// (matmul.cc) at a small fraction of the H100's bandwidth. Here x is first
// rounded to 8-bit blocks (vb_quantize_q8: per 32 elements d = amax / 127,
// q = round(x / d), as llama.cpp's q8_1 for its CUDA mat-vec), and the
// weights' integer codes are multiplied with x's codes four at a time with
// __dp4a; the block scales are applied once per sub-block.
//
// Numerics: the result equals, up to float rounding of the accumulation,
// matmul(RoundActivationsToQ8(x), w) with the CPU reference (the CUDA
// executor's --verify and the tests compare against exactly that).
//
// Layout of the rounded activations: qx[T][K] int8 and ds[T][K / 32] float2
// {d, d * sum(q)} (the sum serves the "- min" term of Q4_K / Q5_K).
//
// Kernel per weight type: one warp per output row; a warp pass covers
// 32 / TPB quantization blocks, TPB lanes per block (each lane reads 16 or
// 12 contiguous bytes of codes), then a shuffle reduction. TT tokens share
// each decoded weight word.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernels/families.h"

namespace vibrant::codegen {
namespace {

struct DotSource {
  DType type;
  const char* source;
};

// `dot<TT>(b, sub, xq, xd, K, nt, acc)`: lane `sub` of the TPB lanes on block
// `b`; xq / xd point at the block's first element / ds entry for token 0;
// token t's are K (resp. K / 32) further on; nt <= TT tokens are live.
constexpr DotSource kDots[] = {
    {DType::kQ4_0, R"CUDA(
struct Q8D_q4_0 {
  enum { QK = 32, BYTES = 18, TPB = 1 };
  template <int TT>
  static VB_INLINE void dot(const u8* b, int sub, const i8* xq, const float2* xd, int K, int nt,
                            float* acc) {
    const float d = vb_half_at(b);
    u32 lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const u32 q = vb_ld32_a2(b + 2 + 4 * i);
      lo[i] = __vsub4(q & 0x0F0F0F0Fu, 0x08080808u);
      hi[i] = __vsub4((q >> 4) & 0x0F0F0F0Fu, 0x08080808u);
    }
#pragma unroll
    for (int tt = 0; tt < TT; ++tt) {
      if (tt < nt) {
        const i8* x = xq + (i64)tt * K;
        const int s = vb_dot16(hi, *(const int4*)(x + 16), vb_dot16(lo, *(const int4*)x, 0));
        acc[tt] += d * xd[(i64)tt * (K >> 5)].x * (float)s;
      }
    }
  }
};
)CUDA"},
    // Q4_1: (d q + m) x summed = d dx sum(q qx) + m * (dx sum(qx)).
    {DType::kQ4_1, R"CUDA(
struct Q8D_q4_1 {
  enum { QK = 32, BYTES = 20, TPB = 1 };
  template <int TT>
  static VB_INLINE void dot(const u8* b, int sub, const i8* xq, const float2* xd, int K, int nt,
                            float* acc) {
    const float d = vb_half_at(b), m = vb_half_at(b + 2);
    u32 lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const u32 q = vb_ld32_a2(b + 4 + 4 * i);
      lo[i] = q & 0x0F0F0F0Fu;
      hi[i] = (q >> 4) & 0x0F0F0F0Fu;
    }
#pragma unroll
    for (int tt = 0; tt < TT; ++tt) {
      if (tt < nt) {
        const i8* x = xq + (i64)tt * K;
        const int s = vb_dot16(hi, *(const int4*)(x + 16), vb_dot16(lo, *(const int4*)x, 0));
        const float2 dx = xd[(i64)tt * (K >> 5)];
        acc[tt] += d * dx.x * (float)s + m * dx.y;
      }
    }
  }
};
)CUDA"},
    // Q5_0 / Q5_1: the fifth bit of element l is bit l of qh (32 bits), moved
    // to bit 4 of its byte by vb_q5_spread.
    {DType::kQ5_0, R"CUDA(
struct Q8D_q5_0 {
  enum { QK = 32, BYTES = 22, TPB = 1 };
  template <int TT>
  static VB_INLINE void dot(const u8* b, int sub, const i8* xq, const float2* xd, int K, int nt,
                            float* acc) {
    const float d = vb_half_at(b);
    const u32 qh = vb_ld32_a2(b + 2);
    u32 lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const u32 q = vb_ld32_a2(b + 6 + 4 * i);
      lo[i] = __vsub4((q & 0x0F0F0F0Fu) | vb_q5_spread(qh >> (4 * i)), 0x10101010u);
      hi[i] = __vsub4(((q >> 4) & 0x0F0F0F0Fu) | vb_q5_spread(qh >> (16 + 4 * i)), 0x10101010u);
    }
#pragma unroll
    for (int tt = 0; tt < TT; ++tt) {
      if (tt < nt) {
        const i8* x = xq + (i64)tt * K;
        const int s = vb_dot16(hi, *(const int4*)(x + 16), vb_dot16(lo, *(const int4*)x, 0));
        acc[tt] += d * xd[(i64)tt * (K >> 5)].x * (float)s;
      }
    }
  }
};
)CUDA"},
    {DType::kQ5_1, R"CUDA(
struct Q8D_q5_1 {
  enum { QK = 32, BYTES = 24, TPB = 1 };
  template <int TT>
  static VB_INLINE void dot(const u8* b, int sub, const i8* xq, const float2* xd, int K, int nt,
                            float* acc) {
    const float d = vb_half_at(b), m = vb_half_at(b + 2);
    const u32 qh = vb_ld32_a2(b + 4);
    u32 lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const u32 q = vb_ld32_a2(b + 8 + 4 * i);
      lo[i] = (q & 0x0F0F0F0Fu) | vb_q5_spread(qh >> (4 * i));
      hi[i] = ((q >> 4) & 0x0F0F0F0Fu) | vb_q5_spread(qh >> (16 + 4 * i));
    }
#pragma unroll
    for (int tt = 0; tt < TT; ++tt) {
      if (tt < nt) {
        const i8* x = xq + (i64)tt * K;
        const int s = vb_dot16(hi, *(const int4*)(x + 16), vb_dot16(lo, *(const int4*)x, 0));
        const float2 dx = xd[(i64)tt * (K >> 5)];
        acc[tt] += d * dx.x * (float)s + m * dx.y;
      }
    }
  }
};
)CUDA"},
    {DType::kQ8_0, R"CUDA(
struct Q8D_q8_0 {
  enum { QK = 32, BYTES = 34, TPB = 2 };
  template <int TT>
  static VB_INLINE void dot(const u8* b, int sub, const i8* xq, const float2* xd, int K, int nt,
                            float* acc) {
    const float d = vb_half_at(b);
    u32 q[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) q[i] = vb_ld32_a2(b + 2 + 16 * sub + 4 * i);
#pragma unroll
    for (int tt = 0; tt < TT; ++tt) {
      if (tt < nt) {
        const int s = vb_dot16(q, *(const int4*)(xq + (i64)tt * K + 16 * sub), 0);
        acc[tt] += d * xd[(i64)tt * (K >> 5)].x * (float)s;
      }
    }
  }
};
)CUDA"},
    // Q4_K: lane sub = 2p + h reads codes qs[32p + 16h .. +15]: low nibbles are
    // elements 64p + 16h + 0..15 (sub-block 2p), high nibbles the same + 32
    // (sub-block 2p + 1). The "- dmin * m" term is added once per sub-block
    // (by the h = 0 lane) from x's block sums.
    {DType::kQ4_K, R"CUDA(
struct Q8D_q4_K {
  enum { QK = 256, BYTES = 144, TPB = 8 };
  template <int TT>
  static VB_INLINE void dot(const u8* b, int sub, const i8* xq, const float2* xd, int K, int nt,
                            float* acc) {
    const int p = sub >> 1, h = sub & 1;
    const uint4 hd = *(const uint4*)b;
    const uint4 qv = *(const uint4*)(b + 16 + 32 * p + 16 * h);
    const float d = vb_h2f((u16)(hd.x & 0xffffu)), dmin = vb_h2f((u16)(hd.x >> 16));
    int sc0, m0, sc1, m1;
    vb_k4_scale_min(hd.y, hd.z, hd.w, 2 * p, &sc0, &m0);
    vb_k4_scale_min(hd.y, hd.z, hd.w, 2 * p + 1, &sc1, &m1);
    const u32 q[4] = {qv.x, qv.y, qv.z, qv.w};
    u32 lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      lo[i] = q[i] & 0x0F0F0F0Fu;
      hi[i] = (q[i] >> 4) & 0x0F0F0F0Fu;
    }
#pragma unroll
    for (int tt = 0; tt < TT; ++tt) {
      if (tt < nt) {
        const i8* x = xq + (i64)tt * K + 64 * p + 16 * h;
        const int s0 = vb_dot16(lo, *(const int4*)x, 0);
        const int s1 = vb_dot16(hi, *(const int4*)(x + 32), 0);
        const float2 a = xd[(i64)tt * (K >> 5) + 2 * p];
        const float2 c = xd[(i64)tt * (K >> 5) + 2 * p + 1];
        float r = d * ((float)sc0 * a.x * (float)s0 + (float)sc1 * c.x * (float)s1);
        if (h == 0) r -= dmin * ((float)m0 * a.y + (float)m1 * c.y);
        acc[tt] += r;
      }
    }
  }
};
)CUDA"},
    // Q5_K: as Q4_K, with the fifth bit of element 32j + l at bit j of qh[l].
    {DType::kQ5_K, R"CUDA(
struct Q8D_q5_K {
  enum { QK = 256, BYTES = 176, TPB = 8 };
  template <int TT>
  static VB_INLINE void dot(const u8* b, int sub, const i8* xq, const float2* xd, int K, int nt,
                            float* acc) {
    const int p = sub >> 1, h = sub & 1;
    const uint4 hd = *(const uint4*)b;
    const uint4 hv = *(const uint4*)(b + 16 + 16 * h);
    const uint4 qv = *(const uint4*)(b + 48 + 32 * p + 16 * h);
    const float d = vb_h2f((u16)(hd.x & 0xffffu)), dmin = vb_h2f((u16)(hd.x >> 16));
    int sc0, m0, sc1, m1;
    vb_k4_scale_min(hd.y, hd.z, hd.w, 2 * p, &sc0, &m0);
    vb_k4_scale_min(hd.y, hd.z, hd.w, 2 * p + 1, &sc1, &m1);
    const u32 q[4] = {qv.x, qv.y, qv.z, qv.w};
    const u32 qh[4] = {hv.x, hv.y, hv.z, hv.w};
    u32 lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      lo[i] = (q[i] & 0x0F0F0F0Fu) | (((qh[i] >> (2 * p)) & 0x01010101u) << 4);
      hi[i] = ((q[i] >> 4) & 0x0F0F0F0Fu) | (((qh[i] >> (2 * p + 1)) & 0x01010101u) << 4);
    }
#pragma unroll
    for (int tt = 0; tt < TT; ++tt) {
      if (tt < nt) {
        const i8* x = xq + (i64)tt * K + 64 * p + 16 * h;
        const int s0 = vb_dot16(lo, *(const int4*)x, 0);
        const int s1 = vb_dot16(hi, *(const int4*)(x + 32), 0);
        const float2 a = xd[(i64)tt * (K >> 5) + 2 * p];
        const float2 c = xd[(i64)tt * (K >> 5) + 2 * p + 1];
        float r = d * ((float)sc0 * a.x * (float)s0 + (float)sc1 * c.x * (float)s1);
        if (h == 0) r -= dmin * ((float)m0 * a.y + (float)m1 * c.y);
        acc[tt] += r;
      }
    }
  }
};
)CUDA"},
    // Q6_K (210-byte blocks: 2-byte aligned only, so 32-bit words are read as
    // two halves): lane sub = 8 * half + k covers, for gq = 0..3, elements
    // 128 half + 32 gq + 4k .. +3: low/high nibbles of ql words A (gq 0, 2)
    // and B (gq 1, 3), two bits each of the qh word.
    {DType::kQ6_K, R"CUDA(
struct Q8D_q6_K {
  enum { QK = 256, BYTES = 210, TPB = 16 };
  template <int TT>
  static VB_INLINE void dot(const u8* b, int sub, const i8* xq, const float2* xd, int K, int nt,
                            float* acc) {
    const int half = sub >> 3, l0 = 4 * (sub & 7);
    const u32 A = vb_ld32_a2(b + 64 * half + l0);
    const u32 B = vb_ld32_a2(b + 64 * half + 32 + l0);
    const u32 H = vb_ld32_a2(b + 128 + 32 * half + l0);
    const float d = vb_half_at(b + 208);
    const i8* scales = (const i8*)(b + 192 + 8 * half + (l0 >> 4));
    u32 q[4];
    q[0] = __vsub4((A & 0x0F0F0F0Fu) | ((H & 0x03030303u) << 4), 0x20202020u);
    q[1] = __vsub4((B & 0x0F0F0F0Fu) | (((H >> 2) & 0x03030303u) << 4), 0x20202020u);
    q[2] = __vsub4(((A >> 4) & 0x0F0F0F0Fu) | (((H >> 4) & 0x03030303u) << 4), 0x20202020u);
    q[3] = __vsub4(((B >> 4) & 0x0F0F0F0Fu) | (((H >> 6) & 0x03030303u) << 4), 0x20202020u);
    float sc[4];
#pragma unroll
    for (int gq = 0; gq < 4; ++gq) sc[gq] = (float)scales[2 * gq];
#pragma unroll
    for (int tt = 0; tt < TT; ++tt) {
      if (tt < nt) {
        const i8* x = xq + (i64)tt * K + 128 * half + l0;
        const float2* dx = xd + (i64)tt * (K >> 5) + 4 * half;
        float r = 0.0f;
#pragma unroll
        for (int gq = 0; gq < 4; ++gq) {
          const int s = __dp4a((int)q[gq], *(const int*)(x + 32 * gq), 0);
          r += sc[gq] * dx[gq].x * (float)s;
        }
        acc[tt] += d * r;
      }
    }
  }
};
)CUDA"},
    // IQ4_NL: as Q4_0, each code replaced by its int8 level (vb_iq4_levels4).
    {DType::kIQ4_NL, R"CUDA(
struct Q8D_iq4_nl {
  enum { QK = 32, BYTES = 18, TPB = 1 };
  template <int TT>
  static VB_INLINE void dot(const u8* b, int sub, const i8* xq, const float2* xd, int K, int nt,
                            float* acc) {
    const float d = vb_half_at(b);
    u32 lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const u32 q = vb_ld32_a2(b + 2 + 4 * i);
      lo[i] = vb_iq4_levels4(q & 0x0F0F0F0Fu);
      hi[i] = vb_iq4_levels4((q >> 4) & 0x0F0F0F0Fu);
    }
#pragma unroll
    for (int tt = 0; tt < TT; ++tt) {
      if (tt < nt) {
        const i8* x = xq + (i64)tt * K;
        const int s = vb_dot16(hi, *(const int4*)(x + 16), vb_dot16(lo, *(const int4*)x, 0));
        acc[tt] += d * xd[(i64)tt * (K >> 5)].x * (float)s;
      }
    }
  }
};
)CUDA"},
    // IQ4_XS (136-byte blocks: 8-byte aligned): lane sub = sub-block s of 32
    // elements, codes qs[16s .. 16s+15] (two 8-byte loads), scale
    // d * (ls - 32) with ls's low 4 bits in scales_l and high 2 in scales_h.
    {DType::kIQ4_XS, R"CUDA(
struct Q8D_iq4_xs {
  enum { QK = 256, BYTES = 136, TPB = 8 };
  template <int TT>
  static VB_INLINE void dot(const u8* b, int sub, const i8* xq, const float2* xd, int K, int nt,
                            float* acc) {
    const uint2 h = *(const uint2*)b;  // d | scales_h | scales_l[4]
    const uint2 c0 = *(const uint2*)(b + 8 + 16 * sub);
    const uint2 c1 = *(const uint2*)(b + 16 + 16 * sub);
    const int ls = (int)((h.y >> (4 * sub)) & 15u) | (int)(((h.x >> (16 + 2 * sub)) & 3u) << 4);
    const float dl = vb_h2f((u16)(h.x & 0xffffu)) * (float)(ls - 32);
    const u32 q[4] = {c0.x, c0.y, c1.x, c1.y};
    u32 lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      lo[i] = vb_iq4_levels4(q[i] & 0x0F0F0F0Fu);
      hi[i] = vb_iq4_levels4((q[i] >> 4) & 0x0F0F0F0Fu);
    }
#pragma unroll
    for (int tt = 0; tt < TT; ++tt) {
      if (tt < nt) {
        const i8* x = xq + (i64)tt * K + 32 * sub;
        const int s = vb_dot16(hi, *(const int4*)(x + 16), vb_dot16(lo, *(const int4*)x, 0));
        acc[tt] += dl * xd[(i64)tt * (K >> 5) + sub].x * (float)s;
      }
    }
  }
};
)CUDA"},
};

const DotSource* FindDot(DType t) {
  for (const DotSource& d : kDots) {
    if (d.type == t) return &d;
  }
  return nullptr;
}

}  // namespace

bool MatvecQ8Supports(DType t) { return FindDot(t) != nullptr; }

std::string MatvecQ8KernelName(DType t, int tokens_per_pass) {
  return absl::StrCat("vb_mvq", tokens_per_pass, "_", TypeTag(t));
}

std::string MatvecQ8DotSource(const std::vector<DType>& types) {
  std::string out = R"CUDA(
// A 32-bit word from a 2-byte aligned address.
VB_INLINE u32 vb_ld32_a2(const u8* p) {
  const u16* h = (const u16*)p;
  return (u32)h[0] | ((u32)h[1] << 16);
}
// s + the dot product of 16 signed bytes of codes with 16 of x.
VB_INLINE int vb_dot16(const u32* q, int4 x, int s) {
  s = __dp4a((int)q[0], x.x, s);
  s = __dp4a((int)q[1], x.y, s);
  s = __dp4a((int)q[2], x.z, s);
  return __dp4a((int)q[3], x.w, s);
}
// Bits 0..3 of h to bit 4 of bytes 0..3 (Q5_0 / Q5_1 high bits).
VB_INLINE u32 vb_q5_spread(u32 h) {
  return ((h & 1u) << 4) | ((h & 2u) << 11) | ((h & 4u) << 18) | ((h & 8u) << 25);
}
// Scale and min of K-quant sub-block j (0..7) from the 12 scale bytes held in
// three little-endian words (ggml's get_scale_min_k4).
VB_INLINE int vb_k4_byte(u32 w0, u32 w1, u32 w2, int i) {
  const u32 w = i < 4 ? w0 : (i < 8 ? w1 : w2);
  return (int)((w >> (8 * (i & 3))) & 255u);
}
VB_INLINE void vb_k4_scale_min(u32 w0, u32 w1, u32 w2, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = vb_k4_byte(w0, w1, w2, j) & 63;
    *mn = vb_k4_byte(w0, w1, w2, j + 4) & 63;
  } else {
    const int a = vb_k4_byte(w0, w1, w2, j + 4);
    *sc = (a & 15) | ((vb_k4_byte(w0, w1, w2, j - 4) >> 6) << 4);
    *mn = (a >> 4) | ((vb_k4_byte(w0, w1, w2, j) >> 6) << 4);
  }
}
// IQ4_NL / IQ4_XS: the 16 int8 levels, four per word (also defined by the
// decoders when they are in the same module).
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
// Four codes (one per byte, 0..15) -> their four int8 levels, in registers:
// the codes' low 3 bits select from levels 0..7 and from 8..15 (two byte
// permutes over the level words), bit 3 picks between the two.
VB_INLINE u32 vb_iq4_levels4(u32 codes) {
  u32 c = (codes | (codes >> 4)) & 0x00FF00FFu;
  c = (c | (c >> 8)) & 0xFFFFu;  // code of byte i in nibble i
  const u32 lo = __byte_perm(VB_IQ4_L0, VB_IQ4_L1, c & 0x7777u);
  const u32 hi = __byte_perm(VB_IQ4_L2, VB_IQ4_L3, c & 0x7777u);
  return __byte_perm(lo, hi, 0x3210u | ((c >> 1) & 0x4444u));
}
)CUDA";
  for (DType t : types) {
    if (const DotSource* d = FindDot(t); d != nullptr) out += d->source;
  }
  return out;
}

std::string MatvecQ8MultiKernelName(DType t) { return absl::StrCat("vb_mvs_", TypeTag(t)); }

std::string MatvecQ8Source(const std::vector<DType>& types) {
  std::string out = MatvecQ8DotSource(types);
  out += absl::StrReplaceAll(R"CUDA(
// Block `blk` of 32 values of x -> codes qx[blk * 32 ..] and ds[blk] = {d,
// d * sum(q)}; called by a whole warp, lane = element. d = amax / 127 and
// q = round(x / d), both correctly rounded (the CPU's RoundActivationsToQ8
// is the same arithmetic).
VB_INLINE void vb_q8_block(const float* __restrict__ x, i8* qx, float2* ds, i64 blk, int lane) {
  const float v = x[blk * 32 + lane];
  const float amax = vb_warp_max(fabsf(v));
  const float d = __fdiv_rn(amax, 127.0f);
  // d == 0 (amax 0, or so small that amax / 127 underflows): every code is
  // 0, as ir/ops.h says; v / d would be infinite.
  const int q = d == 0.0f ? 0 : (int)roundf(__fdiv_rn(v, d));
  qx[blk * 32 + lane] = (i8)q;
  int s = q;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) ds[blk] = make_float2(d, __fmul_rn(d, (float)s));
}

// x[nblocks * 32] -> qx, ds; one warp per block.
extern "C" __global__ void __launch_bounds__($QTHREADS) vb_quantize_q8(
    const float* __restrict__ x, i8* __restrict__ qx, float2* __restrict__ ds, i64 nblocks) {
  const i64 blk = (i64)blockIdx.x * ($QTHREADS / 32) + (threadIdx.x >> 5);
  if (blk >= nblocks) return;  // whole warps
  vb_q8_block(x, qx, ds, blk, threadIdx.x & 31);
}

// The decode (one token) mat-vec over up to three weights that read the same
// rounded x (q/k/v, gate/up): rows [0, n0) are w0's, the next n1 w1's, the
// next n2 w2's; one warp per row, as vb_mvq_impl. (Rounding x per block in
// shared memory instead of in vb_quantize_q8 measured slower on the H100: the
// rounding prologue delays every block's weight loads.)
template <class D>
VB_INLINE void vb_mvs_impl(const i8* __restrict__ qx, const float2* __restrict__ ds, int K,
                           i64 row_bytes, const u8* w0, const float* b0, float* o0, int n0,
                           const u8* w1, const float* b1, float* o1, int n1,
                           const u8* w2, const float* b2, float* o2, int n2) {
  const int lane = threadIdx.x & 31;
  int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const u8* w;
  const float* bias;
  float* out;
  if (n < n0) {
    w = w0; bias = b0; out = o0;
  } else if ((n -= n0) < n1) {
    w = w1; bias = b1; out = o1;
  } else if ((n -= n1) < n2) {
    w = w2; bias = b2; out = o2;
  } else {
    return;  // whole warps
  }
  const u8* row = w + (i64)n * row_bytes;
  const int nblk = K / D::QK;
  const int sub = lane % D::TPB;
  float acc = 0.0f;
#pragma unroll 2
  for (int blk = lane / D::TPB; blk < nblk; blk += 32 / D::TPB) {
    D::template dot<1>(row + (i64)blk * D::BYTES, sub, qx + blk * D::QK, ds + blk * (D::QK / 32),
                       K, 1, &acc);
  }
  const float s = vb_warp_sum(acc);
  if (lane == 0) out[n] = bias != 0 ? s + bias[n] : s;
}

template <class D, int TT>
VB_INLINE void vb_mvq_impl(const u8* __restrict__ w, i64 row_bytes, const i8* __restrict__ qx,
                           const float2* __restrict__ ds, const float* __restrict__ bias,
                           float* __restrict__ out, int K, int N, int T) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (n >= N) return;  // whole warps; no block-level synchronization below
  const int t0 = blockIdx.y * TT;
  const int nt = T - t0 < TT ? T - t0 : TT;
  const u8* row = w + (i64)n * row_bytes;
  const int nblk = K / D::QK;
  const int sub = lane % D::TPB;
  const i8* xq = qx + (i64)t0 * K;
  const float2* xd = ds + (i64)t0 * (K >> 5);
  float acc[TT];
#pragma unroll
  for (int tt = 0; tt < TT; ++tt) acc[tt] = 0.0f;
#pragma unroll 2
  for (int blk = lane / D::TPB; blk < nblk; blk += 32 / D::TPB) {
    D::template dot<TT>(row + (i64)blk * D::BYTES, sub, xq + blk * D::QK,
                        xd + blk * (D::QK / 32), K, nt, acc);
  }
#pragma unroll
  for (int tt = 0; tt < TT; ++tt) {
    const float s = vb_warp_sum(acc[tt]);
    if (lane == 0 && tt < nt) out[(i64)(t0 + tt) * N + n] = bias != 0 ? s + bias[n] : s;
  }
}
)CUDA",
                                        {{"$QTHREADS", absl::StrCat(kQuantizeQ8Threads)}});
  for (DType t : types) {
    if (FindDot(t) == nullptr) continue;
    {
      std::string k = R"CUDA(
extern "C" __global__ void __launch_bounds__($THREADS) $NAME(const i8* qx, const float2* ds, int K,
    i64 row_bytes, const u8* w0, const float* b0, float* o0, int n0, const u8* w1,
    const float* b1, float* o1, int n1, const u8* w2, const float* b2, float* o2, int n2) {
  vb_mvs_impl<Q8D_$TAG>(qx, ds, K, row_bytes, w0, b0, o0, n0, w1, b1, o1, n1, w2, b2, o2, n2);
}
)CUDA";
      absl::StrReplaceAll({{"$NAME", MatvecQ8MultiKernelName(t)},
                           {"$TAG", TypeTag(t)},
                           {"$THREADS", absl::StrCat(kMatvecQ8Threads)}},
                          &k);
      out += k;
    }
    for (int tt : {1, 8}) {
      std::string k = R"CUDA(
extern "C" __global__ void __launch_bounds__($THREADS) $NAME(const u8* w, i64 row_bytes,
    const i8* qx, const float2* ds, const float* bias, float* out, int K, int N, int T) {
  vb_mvq_impl<Q8D_$TAG, $TT>(w, row_bytes, qx, ds, bias, out, K, N, T);
}
)CUDA";
      absl::StrReplaceAll({{"$NAME", MatvecQ8KernelName(t, tt)},
                           {"$TAG", TypeTag(t)},
                           {"$TT", absl::StrCat(tt)},
                           {"$THREADS", absl::StrCat(kMatvecQ8Threads)}},
                          &k);
      out += k;
    }
  }
  return out;
}

}  // namespace vibrant::codegen
