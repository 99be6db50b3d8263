// Prefill GEMMs on quantized weights, on tensor cores, without a dequantized
// copy of the weights in memory (families.h: MmqSource). Each block computes
// a tile of BM token rows x 128 weight rows of out = x . w^T (+ bias):
// - x is the f16 copy of the activations (vb_q8a_to_f16 / vb_f32_to_f16, as
//   the cuBLASLt path makes it), streamed through a 3-stage cp.async ring of
//   BM x 64 tiles;
// - w is read as stored (GGUF blocks): every thread loads the raw bytes of
//   one 32-element run of a weight row (a q4_0 / q8_0 block, a K-quant
//   sub-block with its super-block header) of the next 64-column step into
//   registers with a few wide loads while the tensor cores work on the
//   current one, then decodes them to f16 into a double-buffered 128 x 64
//   shared tile. A decoded value is f16(the CPU
//   dequantizer's float), the same float operations as the block decoders
//   (decoders.cc) and vb_dequant_f16_*, so the operands are exactly those of
//   the cuBLASLt path;
// - 8 warps (2 along the tokens x 4 along the weight rows) multiply the tiles
//   with ldmatrix + mma.sync m16n8k16 (f16 in, f32 accumulate); the bias is
//   added in the epilogue.
// The kernel's helpers written in PTX have host definitions in the emulator
// test (codegen/mmq_host_test.cc), which compiles this text as C++ with
// VB_MMQ_HOST_EMULATION.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernels/families.h"

namespace vibrant::codegen {
namespace {

// Per weight type: `struct MQ_<tag>` with
//   struct Raw;                                        the bytes one quad needs
//   static void fetch(const u8* row, int kq, Raw&)     loads only (no arithmetic
//                                                      on the loaded values)
//   static void decode(const Raw&, int kq, u32 h[16])  32 f16 (element 2i in
//                                                      the low half of h[i])
// for the quad kq of a row: elements 32 kq .. 32 kq + 31 (one q4_0 / q8_0
// block, one 32-element run of a K-quant super-block), so that a thread
// loads one block header and contiguous code bytes with few wide loads.
// Blocks of 18, 34 and 210 bytes are only 2-byte aligned: their bytes are
// loaded as the aligned 32-bit words that cover them (at most 2 bytes before
// and after, inside the weight's 256-byte aligned slot) and realigned with a
// funnel shift in decode (vb_mmq_realign).
struct MmqType {
  DType type;
  const char* source;
};

// q4_K / q5_K compute d1 * q - m1 as one fused multiply-add: d1 * q is exact
// in f32 (d1 = d * sc has at most 17 significant bits, q at most 5), so the
// single rounding equals the decoders' rounded product minus m1.
constexpr MmqType kMmqTypes[] = {
    {DType::kQ4_0, R"CUDA(
struct MQ_q4_0 {
  struct Raw { u32 w[5]; int o; };
  static VB_INLINE void fetch(const u8* row, int kq, Raw& r) {
    const u8* b = row + kq * 18;
    r.o = vb_mmq_odd2(b);
    const u32* wp = (const u32*)(b - r.o);
#pragma unroll
    for (int i = 0; i < 5; ++i) r.w[i] = wp[i];
  }
  static VB_INLINE void decode(const Raw& r, int kq, u32 h[16]) {
    const float d = vb_h2f((u16)(r.o ? r.w[0] >> 16 : r.w[0] & 0xffffu));
    float v[32];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      // qs bytes 4i .. 4i+3 (block bytes 4i+2 ..): elements 4i.. (low
      // nibbles) and 16+4i.. (high nibbles).
      const u32 q = vb_mmq_realign(r.w[i], r.w[i + 1], 2 + r.o);
      const u32 lo = q & 0x0F0F0F0Fu, hi = (q >> 4) & 0x0F0F0F0Fu;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        v[4 * i + e] = __fmul_rn(vb_mmq_byte_f(lo, e, 8388616.0f), d);
        v[16 + 4 * i + e] = __fmul_rn(vb_mmq_byte_f(hi, e, 8388616.0f), d);
      }
    }
#pragma unroll
    for (int i = 0; i < 16; ++i) h[i] = vb_mmq_pack(v[2 * i], v[2 * i + 1]);
  }
};
)CUDA"},
    {DType::kQ8_0, R"CUDA(
struct MQ_q8_0 {
  struct Raw { u32 w[9]; int o; };
  static VB_INLINE void fetch(const u8* row, int kq, Raw& r) {
    const u8* b = row + kq * 34;
    r.o = vb_mmq_odd2(b);
    const u32* wp = (const u32*)(b - r.o);
#pragma unroll
    for (int i = 0; i < 9; ++i) r.w[i] = wp[i];
  }
  static VB_INLINE void decode(const Raw& r, int kq, u32 h[16]) {
    const float d = vb_h2f((u16)(r.o ? r.w[0] >> 16 : r.w[0] & 0xffffu));
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      // Signed codes biased by 128: (c ^ 0x80) - 128.
      const u32 q = vb_mmq_realign(r.w[i], r.w[i + 1], 2 + r.o) ^ 0x80808080u;
      h[2 * i] = vb_mmq_pack(__fmul_rn(vb_mmq_byte_f(q, 0, 8388736.0f), d),
                             __fmul_rn(vb_mmq_byte_f(q, 1, 8388736.0f), d));
      h[2 * i + 1] = vb_mmq_pack(__fmul_rn(vb_mmq_byte_f(q, 2, 8388736.0f), d),
                                 __fmul_rn(vb_mmq_byte_f(q, 3, 8388736.0f), d));
    }
  }
};
)CUDA"},
    {DType::kQ4_K, R"CUDA(
struct MQ_q4_K {
  struct Raw { uint4 hdr, qa, qb; };
  static VB_INLINE void fetch(const u8* row, int kq, Raw& r) {
    const u8* b = row + (kq >> 3) * 144;
    const int s = kq & 7;
    r.hdr = *(const uint4*)b;  // d, dmin, scales[12]
    const uint4* q = (const uint4*)(b + 16 + 32 * (s >> 1));
    r.qa = q[0];
    r.qb = q[1];
  }
  static VB_INLINE void decode(const Raw& r, int kq, u32 h[16]) {
    const int s = kq & 7;
    int sc, mn;
    vb_mmq_scale_min_k(s, r.hdr.y, r.hdr.z, r.hdr.w, &sc, &mn);
    const float d1 = __fmul_rn(vb_h2f((u16)(r.hdr.x & 0xffffu)), (float)sc);
    const float m1 = __fmul_rn(vb_h2f((u16)(r.hdr.x >> 16)), (float)mn);
    const int sh = 4 * (s & 1);
    const u32 q[8] = {r.qa.x, r.qa.y, r.qa.z, r.qa.w, r.qb.x, r.qb.y, r.qb.z, r.qb.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const u32 w = (q[i] >> sh) & 0x0F0F0F0Fu;
      h[2 * i] = vb_mmq_pack(__fmaf_rn(d1, vb_mmq_byte_f(w, 0, 8388608.0f), -m1),
                             __fmaf_rn(d1, vb_mmq_byte_f(w, 1, 8388608.0f), -m1));
      h[2 * i + 1] = vb_mmq_pack(__fmaf_rn(d1, vb_mmq_byte_f(w, 2, 8388608.0f), -m1),
                                 __fmaf_rn(d1, vb_mmq_byte_f(w, 3, 8388608.0f), -m1));
    }
  }
};
)CUDA"},
    {DType::kQ5_K, R"CUDA(
struct MQ_q5_K {
  struct Raw { uint4 hdr, ha, hb, qa, qb; };
  static VB_INLINE void fetch(const u8* row, int kq, Raw& r) {
    const u8* b = row + (kq >> 3) * 176;
    const int s = kq & 7;
    r.hdr = *(const uint4*)b;  // d, dmin, scales[12]
    const uint4* qh = (const uint4*)(b + 16);
    const uint4* q = (const uint4*)(b + 48 + 32 * (s >> 1));
    r.ha = qh[0];
    r.hb = qh[1];
    r.qa = q[0];
    r.qb = q[1];
  }
  static VB_INLINE void decode(const Raw& r, int kq, u32 h[16]) {
    const int s = kq & 7;
    int sc, mn;
    vb_mmq_scale_min_k(s, r.hdr.y, r.hdr.z, r.hdr.w, &sc, &mn);
    const float d1 = __fmul_rn(vb_h2f((u16)(r.hdr.x & 0xffffu)), (float)sc);
    const float m1 = __fmul_rn(vb_h2f((u16)(r.hdr.x >> 16)), (float)mn);
    const int sh = 4 * (s & 1);
    const u32 q[8] = {r.qa.x, r.qa.y, r.qa.z, r.qa.w, r.qb.x, r.qb.y, r.qb.z, r.qb.w};
    const u32 qh[8] = {r.ha.x, r.ha.y, r.ha.z, r.ha.w, r.hb.x, r.hb.y, r.hb.z, r.hb.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const u32 w = ((q[i] >> sh) & 0x0F0F0F0Fu) | (((qh[i] >> s) & 0x01010101u) << 4);
      h[2 * i] = vb_mmq_pack(__fmaf_rn(d1, vb_mmq_byte_f(w, 0, 8388608.0f), -m1),
                             __fmaf_rn(d1, vb_mmq_byte_f(w, 1, 8388608.0f), -m1));
      h[2 * i + 1] = vb_mmq_pack(__fmaf_rn(d1, vb_mmq_byte_f(w, 2, 8388608.0f), -m1),
                                 __fmaf_rn(d1, vb_mmq_byte_f(w, 3, 8388608.0f), -m1));
    }
  }
};
)CUDA"},
    // 32-element run s of a super-block: ql 32 bytes, qh 32 bytes (2 bits
    // each), scales 2s (elements 0..15) and 2s+1 (16..31).
    {DType::kQ6_K, R"CUDA(
struct MQ_q6_K {
  struct Raw { u32 l[9], hq[9]; u32 sc, d; int o; };
  static VB_INLINE void fetch(const u8* row, int kq, Raw& r) {
    const u8* b = row + (kq >> 3) * 210;
    const int s = kq & 7, half = s >> 2, gq = s & 3;
    r.o = vb_mmq_odd2(b);
    const u32* lp = (const u32*)(b - r.o + 64 * half + 32 * (gq & 1));
    const u32* hp = (const u32*)(b - r.o + 128 + 32 * half);
#pragma unroll
    for (int i = 0; i < 9; ++i) {
      r.l[i] = lp[i];
      r.hq[i] = hp[i];
    }
    r.sc = *(const u16*)(b + 192 + 2 * s);
    r.d = *(const u16*)(b + 208);
  }
  static VB_INLINE void decode(const Raw& r, int kq, u32 h[16]) {
    const int gq = kq & 3;
    const int lsh = gq < 2 ? 0 : 4, hsh = 2 * gq;
    const float d = vb_h2f((u16)r.d);
    const float dd0 = __fmul_rn(d, (float)(int)(i8)(u8)(r.sc & 0xffu));
    const float dd1 = __fmul_rn(d, (float)(int)(i8)(u8)(r.sc >> 8));
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const u32 ql = vb_mmq_realign(r.l[i], r.l[i + 1], r.o);
      const u32 qh = vb_mmq_realign(r.hq[i], r.hq[i + 1], r.o);
      const u32 w = ((ql >> lsh) & 0x0F0F0F0Fu) | (((qh >> hsh) & 0x03030303u) << 4);
      const float dd = i < 4 ? dd0 : dd1;
      h[2 * i] = vb_mmq_pack(__fmul_rn(dd, vb_mmq_byte_f(w, 0, 8388640.0f)),
                             __fmul_rn(dd, vb_mmq_byte_f(w, 1, 8388640.0f)));
      h[2 * i + 1] = vb_mmq_pack(__fmul_rn(dd, vb_mmq_byte_f(w, 2, 8388640.0f)),
                                 __fmul_rn(dd, vb_mmq_byte_f(w, 3, 8388640.0f)));
    }
  }
};
)CUDA"},
};

const MmqType* FindMmqType(DType t) {
  for (const MmqType& m : kMmqTypes) {
    if (m.type == t) return &m;
  }
  return nullptr;
}

}  // namespace

bool MmqSupports(DType t) { return FindMmqType(t) != nullptr; }

std::string MmqKernelName(DType t, int bm) { return absl::StrCat("vb_mmq_", TypeTag(t), "_m", bm); }

int MmqSharedBytes(int bm) {
  return 2 * kMmqLd * (kMmqXStages * bm + 2 * kMmqBn);
}

std::string MmqCommonSource() {
  std::string s = R"CUDA(
// ---- tensor-core GEMM on quantized weights (codegen/kernels/mmq.cc)
#define VB_MMQ_BN $BN
#define VB_MMQ_KS $KS
#define VB_MMQ_LD $LD
#define VB_MMQ_XSTAGES $XSTAGES
#define VB_MMQ_THREADS $THREADS

#ifndef VB_MMQ_HOST_EMULATION
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define VB_MMQ_OK 0
#else
#define VB_MMQ_OK 1
#endif
// Two floats -> f16x2 (round to nearest even), `lo` in the low half.
VB_INLINE u32 vb_mmq_pack(float lo, float hi) {
#if VB_MMQ_OK
  u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return (u32)vb_f2h(lo) | ((u32)vb_f2h(hi) << 16);
#endif
}
// D += A * B, m16n8k16, f16 operands, f32 accumulators (fragment layout:
// attention_common.cc, vb_mma16816).
VB_INLINE void vb_mmq_mma(float c[4], const u32 a[4], u32 b0, u32 b1) {
#if VB_MMQ_OK
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}
// Four 8x8 f16 matrices from shared memory (lane l: row l % 8 of matrix l / 8).
VB_INLINE void vb_mmq_ldsm(u32 r[4], const void* p) {
#if VB_MMQ_OK
  const u32 a = (u32)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
#else
  r[0] = r[1] = r[2] = r[3] = 0u;
  __trap();
#endif
}
// 16 bytes global -> shared, asynchronously; `valid` false writes zeros.
VB_INLINE void vb_mmq_cp16(void* dst, const void* src, bool valid) {
#if VB_MMQ_OK
  const u32 a = (u32)__cvta_generic_to_shared(dst);
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(a), "l"(src), "r"(n) : "memory");
#else
  __trap();
#endif
}
VB_INLINE void vb_mmq_cp_commit() {
#if VB_MMQ_OK
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
// Waits until at most N of this thread's committed groups are in flight.
template <int N>
VB_INLINE void vb_mmq_cp_wait() {
#if VB_MMQ_OK
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
#endif  // VB_MMQ_HOST_EMULATION

// Byte e of w as a float minus (bias - 2^23): the byte placed in the mantissa
// of 2^23 (exact), then one exact subtraction; bias 8388608 gives the byte.
VB_INLINE float vb_mmq_byte_f(u32 w, int e, float bias) {
  return __fsub_rn(__uint_as_float(__byte_perm(w, 0x4B000000u, 0x7440u + (u32)e)), bias);
}
// 2 when a 2-byte aligned pointer is not 4-byte aligned, else 0.
VB_INLINE int vb_mmq_odd2(const u8* p) { return (int)((unsigned long long)p & 2ull); }
// The 4 bytes at byte offset `o` (0, 2 or 4) of the 8 bytes lo, hi.
VB_INLINE u32 vb_mmq_realign(u32 lo, u32 hi, int o) {
  return o == 0 ? lo : (o == 4 ? hi : ((lo >> 16) | (hi << 16)));
}
// Byte j (0..11) of the 12 K-quant scale bytes held in three words.
VB_INLINE int vb_mmq_sbyte(u32 s0, u32 s1, u32 s2, int j) {
  const u32 w = j < 4 ? s0 : (j < 8 ? s1 : s2);
  return (int)((w >> (8 * (j & 3))) & 255u);
}
// q4_K / q5_K sub-block s (0..7): 6-bit scale and min (get_scale_min_k4).
VB_INLINE void vb_mmq_scale_min_k(int s, u32 s0, u32 s1, u32 s2, int* sc, int* mn) {
  if (s < 4) {
    *sc = vb_mmq_sbyte(s0, s1, s2, s) & 63;
    *mn = vb_mmq_sbyte(s0, s1, s2, s + 4) & 63;
  } else {
    const int q4 = vb_mmq_sbyte(s0, s1, s2, s + 4);
    *sc = (q4 & 15) | ((vb_mmq_sbyte(s0, s1, s2, s - 4) >> 6) << 4);
    *mn = (q4 >> 4) | ((vb_mmq_sbyte(s0, s1, s2, s) >> 6) << 4);
  }
}
)CUDA";
  absl::StrReplaceAll({{"$BN", absl::StrCat(kMmqBn)},
                       {"$KS", absl::StrCat(kMmqKs)},
                       {"$LD", absl::StrCat(kMmqLd)},
                       {"$XSTAGES", absl::StrCat(kMmqXStages)},
                       {"$THREADS", absl::StrCat(kMmqThreads)}},
                      &s);
  return s;
}

std::string MmqTypesSource(const std::vector<DType>& types) {
  std::string s;
  for (DType t : types) {
    if (const MmqType* m = FindMmqType(t)) s += m->source;
  }
  return s;
}

std::string MmqMainSource() {
  return R"CUDA(
// Block (mb, tile): token rows [BM mb, +BM) and weight rows [128 j, +128) of
// the member whose tiles hold `tile` (members in order, each ceil(n / 128)
// tiles; n = 0: unused). Warp w: token rows BM/2 (w / 4) .., weight rows
// 32 (w % 4) ...
template <class M, int BM>
VB_INLINE void vb_mmq_impl(u8* smem, const u16* __restrict__ x, int T, int K, i64 row_bytes,
                           const u8* w0, const float* b0, float* o0, int n0,
                           const u8* w1, const float* b1, float* o1, int n1,
                           const u8* w2, const float* b2, float* o2, int n2) {
  constexpr int BN = VB_MMQ_BN, KS = VB_MMQ_KS, LD = VB_MMQ_LD, XS = VB_MMQ_XSTAGES;
  constexpr int MT = BM / 32;  // m16 tiles per warp
  constexpr int NT = 4;        // n8 tiles per warp
  constexpr int XCH = BM * (KS / 8) / VB_MMQ_THREADS;  // 16-byte x chunks per thread and step
  constexpr int WQ = BN * (KS / 32) / VB_MMQ_THREADS;  // 32-element weight quads per thread and step
  u16* sx = (u16*)smem;          // [XS][BM][LD]
  u16* sw = sx + XS * BM * LD;   // [2][BN][LD]

  int tile = blockIdx.y;
  const u8* w;
  const float* bias;
  float* out;
  int N;
  const int tiles0 = (n0 + BN - 1) / BN, tiles1 = (n1 + BN - 1) / BN;
  if (tile < tiles0) {
    w = w0; bias = b0; out = o0; N = n0;
  } else if (tile < tiles0 + tiles1) {
    tile -= tiles0;
    w = w1; bias = b1; out = o1; N = n1;
  } else {
    tile -= tiles0 + tiles1;
    w = w2; bias = b2; out = o2; N = n2;
  }
  const int n_base = tile * BN, m_base = blockIdx.x * BM;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 2, wn = warp & 3;
  const int steps = (K + KS - 1) / KS;

  // One step's x tile: chunk p = tid + i * THREADS is row p / 8, columns
  // 8 (p % 8) .. +7; rows past T and columns past K are zero.
#define VB_MMQ_LOAD_X(step_, stage_)                                                        \
  do {                                                                                      \
    u16* dst_ = sx + (stage_) * BM * LD;                                                    \
    _Pragma("unroll") for (int i_ = 0; i_ < XCH; ++i_) {                                    \
      const int p_ = tid + i_ * VB_MMQ_THREADS;                                             \
      const int r_ = p_ >> 3, k_ = (step_) * KS + 8 * (p_ & 7);                             \
      const bool ok_ = m_base + r_ < T && k_ < K;                                           \
      const u16* src_ = ok_ ? x + (i64)(m_base + r_) * K + k_ : x;                          \
      vb_mmq_cp16(dst_ + r_ * LD + 8 * (p_ & 7), src_, ok_);                                \
    }                                                                                       \
  } while (0)

  // Weight quad p = tid + i * THREADS of a step: row p / 2, columns
  // 32 (2 step + p % 2) .. +31 (quads past N or K are zero).
  typename M::Raw raw[WQ] = {};  // decoded even where never fetched: defined values
  bool have[WQ];
#define VB_MMQ_FETCH_W(step_)                                                               \
  do {                                                                                      \
    _Pragma("unroll") for (int i_ = 0; i_ < WQ; ++i_) {                                     \
      const int p_ = tid + i_ * VB_MMQ_THREADS;                                             \
      const int n_ = n_base + (p_ >> 1), kq_ = (step_) * (KS / 32) + (p_ & 1);              \
      have[i_] = n_ < N && 32 * kq_ < K;                                                    \
      if (have[i_]) M::fetch(w + (i64)n_ * row_bytes, kq_, raw[i_]);                        \
    }                                                                                       \
  } while (0)
  // Decoded quads (f16 pairs) of the next step: decoded between the MMAs of
  // the current step (pure register arithmetic, so the tensor cores and the
  // ALUs overlap), stored after them; quads with have == false store zeros.
  u32 hw[WQ][16];
#define VB_MMQ_DECODE_W(step_)                                                              \
  do {                                                                                      \
    _Pragma("unroll") for (int i_ = 0; i_ < WQ; ++i_) {                                     \
      const int p_ = tid + i_ * VB_MMQ_THREADS;                                             \
      M::decode(raw[i_], (step_) * (KS / 32) + (p_ & 1), hw[i_]);                           \
    }                                                                                       \
  } while (0)
#define VB_MMQ_STORE_W(buf_)                                                                \
  do {                                                                                      \
    _Pragma("unroll") for (int i_ = 0; i_ < WQ; ++i_) {                                     \
      const int p_ = tid + i_ * VB_MMQ_THREADS;                                             \
      uint4* dst_ = (uint4*)(sw + (buf_) * BN * LD + (p_ >> 1) * LD + 32 * (p_ & 1));        \
      _Pragma("unroll") for (int j_ = 0; j_ < 4; ++j_) {                                    \
        dst_[j_] = have[i_] ? make_uint4(hw[i_][4 * j_], hw[i_][4 * j_ + 1], hw[i_][4 * j_ + 2], \
                                         hw[i_][4 * j_ + 3])                                \
                            : make_uint4(0u, 0u, 0u, 0u);                                   \
      }                                                                                     \
    }                                                                                       \
  } while (0)

  float acc[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
  }

#pragma unroll
  for (int s = 0; s < XS - 1; ++s) {
    if (s < steps) VB_MMQ_LOAD_X(s, s);
    vb_mmq_cp_commit();
  }
  VB_MMQ_FETCH_W(0);
  VB_MMQ_DECODE_W(0);
  VB_MMQ_STORE_W(0);

  for (int step = 0; step < steps; ++step) {
    // x of this step has landed (each thread waits for its own copies, the
    // barrier for everyone's) and the weights stored last step are visible;
    // every warp is done with step - 1's buffers.
    vb_mmq_cp_wait<XS - 2>();
    __syncthreads();
    if (step + XS - 1 < steps) VB_MMQ_LOAD_X(step + XS - 1, (step + XS - 1) % XS);
    vb_mmq_cp_commit();
    const bool next = step + 1 < steps;
    if (next) VB_MMQ_FETCH_W(step + 1);  // loads in flight during the MMAs

    const u16* xs = sx + (step % XS) * BM * LD;
    const u16* ws = sw + (step & 1) * BN * LD;
#pragma unroll
    for (int kk = 0; kk < KS / 32; ++kk) {
      // B: n-tile nt, k 32 kk .. +31 (matrices at k +0, +8, +16, +24).
      u32 b[NT][4];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        vb_mmq_ldsm(b[nt], ws + (32 * wn + 8 * nt + (lane & 7)) * LD + 32 * kk + 8 * (lane >> 3));
      }
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          // A: rows 16 mt + (lane % 16), k 32 kk + 16 ks + 8 (lane / 16).
          u32 a[4];
          vb_mmq_ldsm(a, xs + ((BM / 2) * wm + 16 * mt + (lane & 15)) * LD + 32 * kk + 16 * ks +
                             8 * (lane >> 4));
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) vb_mmq_mma(acc[mt][nt], a, b[nt][2 * ks], b[nt][2 * ks + 1]);
        }
      }
      // Between the two halves of the step: the next step's weights (after
      // the last step: harmless work on the last fetched bytes).
      if (kk == 0) VB_MMQ_DECODE_W(step + 1);
    }
    if (next) VB_MMQ_STORE_W((step + 1) & 1);
  }
#undef VB_MMQ_LOAD_X
#undef VB_MMQ_FETCH_W
#undef VB_MMQ_DECODE_W
#undef VB_MMQ_STORE_W

  // Epilogue: c0, c1 = (row g, cols 2c, 2c+1); c2, c3 = row g + 8.
  const int g = lane >> 2, c = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int t = m_base + (BM / 2) * wm + 16 * mt + g + 8 * e;
      if (t >= T) continue;
      float* orow = out + (i64)t * N;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int n = n_base + 32 * wn + 8 * nt + 2 * c;
        float v0 = acc[mt][nt][2 * e], v1 = acc[mt][nt][2 * e + 1];
        if (n < N) {
          if (bias != nullptr) v0 += bias[n];
          orow[n] = v0;
        }
        if (n + 1 < N) {
          if (bias != nullptr) v1 += bias[n + 1];
          orow[n + 1] = v1;
        }
      }
    }
  }
}
)CUDA";
}

std::string MmqEntry(DType t, int bm) {
  std::string s = R"CUDA(
extern "C" __global__ void __launch_bounds__($THREADS, $MINB) $NAME(const u16* x, int T, int K, i64 row_bytes,
    const u8* w0, const float* b0, float* o0, int n0, const u8* w1, const float* b1, float* o1, int n1,
    const u8* w2, const float* b2, float* o2, int n2) {
  extern __shared__ __align__(16) u8 vb_mmq_smem[];
  vb_mmq_impl<MQ_$TAG, $BM>(vb_mmq_smem, x, T, K, row_bytes, w0, b0, o0, n0, w1, b1, o1, n1, w2, b2, o2, n2);
}
)CUDA";
  absl::StrReplaceAll({{"$THREADS", absl::StrCat(kMmqThreads)},
                       {"$NAME", MmqKernelName(t, bm)},
                       {"$TAG", TypeTag(t)},
                       {"$BM", absl::StrCat(bm)},
                       // 64-row blocks: two per multiprocessor (<= 128 registers).
                       {"$MINB", bm == 64 ? "2" : "1"}},
                      &s);
  return s;
}

std::string MmqSource(const std::vector<DType>& types) {
  std::vector<DType> supported;
  for (DType t : types) {
    if (MmqSupports(t)) supported.push_back(t);
  }
  if (supported.empty()) return "";
  std::string s = MmqCommonSource() + MmqTypesSource(supported) + MmqMainSource();
  for (DType t : supported) {
    for (int bm : {64, 128}) s += MmqEntry(t, bm);
  }
  return s;
}

}  // namespace vibrant::codegen
