// Shared pieces of the tensor-core attention kernels (attention_mma.h): cache
// row loaders that deliver 8 elements as f16, the mma.sync and ldmatrix
// wrappers, the decode partition (one formula for the attention kernel and
// its combine), and the module assembly.
#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernels/attention_mma.h"

namespace vibrant::codegen {
namespace {

const char* TypeCode(DType t) {
  switch (t) {
    case DType::kF32: return "VB_KV_F32";
    case DType::kF16: return "VB_KV_F16";
    case DType::kQ8_0: return "VB_KV_Q8_0";
    default: return "VB_KV_UNSUPPORTED";
  }
}

std::string Suffix(const AttnConfig& c) {
  return absl::StrCat(std::string(DTypeName(c.k_type)), "_", std::string(DTypeName(c.v_type)),
                      "_hd", c.head_dim);
}

}  // namespace

absl::Status AttnMmaSupports(DType k_type, DType v_type, int64_t head_dim) {
  for (DType t : {k_type, v_type}) {
    if (t != DType::kF32 && t != DType::kF16 && t != DType::kQ8_0) {
      return absl::UnimplementedError(absl::StrCat("tensor-core attention: cache type ",
                                                   std::string(DTypeName(t)),
                                                   " (supported: f32, f16, q8_0)"));
    }
  }
  if (head_dim != 64 && head_dim != 128) {
    return absl::UnimplementedError(absl::StrCat("tensor-core attention: head_dim ", head_dim,
                                                 " (supported: 64, 128)"));
  }
  return absl::OkStatus();
}

std::string AttnDecodeKernelName(const AttnConfig& c) {
  return absl::StrCat("vb_attn_dec_", Suffix(c));
}
std::string AttnPrefillKernelName(const AttnConfig& c) {
  return absl::StrCat("vb_attn_pre_", Suffix(c));
}

// Template arguments of an entry point: "<VB_KV_F16, VB_KV_Q8_0, 128>".
std::string AttnTemplateArgs(const AttnConfig& c) {
  return absl::StrCat("<", TypeCode(c.k_type), ", ", TypeCode(c.v_type), ", ", c.head_dim, ">");
}

std::string AttentionMmaSource(const std::vector<AttnConfig>& configs) {
  std::set<AttnConfig> set;
  for (const AttnConfig& c : configs) {
    if (AttnMmaSupports(c.k_type, c.v_type, c.head_dim).ok()) set.insert(c);
  }
  std::string s = AttnCommonSource();
  absl::StrAppend(&s, AttnDecodeSource(), AttnPrefillSource());
  for (const AttnConfig& c : set) absl::StrAppend(&s, AttnDecodeEntry(c), AttnPrefillEntry(c));
  return s;
}

DecodePartition PartitionDecode(int max_pos, int n_ctx, int n_split) {
  DecodePartition p;
  p.keys = std::max(0, std::min(max_pos + 1, n_ctx));
  p.steps = (p.keys + kAttnDecStep - 1) / kAttnDecStep;
  const int warps = std::max(1, n_split) * kAttnDecWarps;
  p.steps_per_warp = std::max(1, (p.steps + warps - 1) / warps);
  p.used = (p.steps + kAttnDecWarps * p.steps_per_warp - 1) / (kAttnDecWarps * p.steps_per_warp);
  return p;
}

std::string AttnCommonSource() {
  std::string s = R"CUDA(
// ---- tensor-core attention: shared helpers (codegen/kernels/attention_common.cc)
#define VB_KV_F32 0
#define VB_KV_F16 1
#define VB_KV_Q8_0 2
#define VB_AD_WARPS $DEC_WARPS
#define VB_AD_STEP $DEC_STEP
#define VB_AD_MAX_SPLIT $DEC_MAX_SPLIT
#define VB_LOG2E 1.4426950408889634f

// The helpers written in PTX (vb_h2x, vb_mma16816, vb_ldsm_x4, vb_ldsm_x4_t)
// have host definitions in the emulator test (codegen/attention_host_test.cc),
// which compiles the rest of this text as C++ with VB_ATTN_HOST_EMULATION.
#ifndef VB_ATTN_HOST_EMULATION
// mma.sync m16n8k16 with f16 operands, ldmatrix and cvt.f16x2 need sm_80+;
// compiled for an older GPU the kernels trap (the compiler must not choose
// them there).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define VB_ATTN_MMA_OK 0
#else
#define VB_ATTN_MMA_OK 1
#endif

// Two floats -> f16x2 (round to nearest even), `lo` in the low half.
VB_INLINE u32 vb_h2x(float lo, float hi) {
#if VB_ATTN_MMA_OK
  u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return (u32)vb_f2h(lo) | ((u32)vb_f2h(hi) << 16);
#endif
}
#endif  // VB_ATTN_HOST_EMULATION
VB_INLINE float vb_h2x_sum(u32 h) {
  return vb_h2f((u16)(h & 0xffffu)) + vb_h2f((u16)(h >> 16));
}
VB_INLINE u32 vb_u4_word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

#ifndef VB_ATTN_HOST_EMULATION
// D += A * B: m16n8k16, A row-major 16x16 f16 (4 regs), B col-major 16x8 f16
// (2 regs), C/D 16x8 f32. Thread (g = lane / 4, c = lane % 4) holds
//   A: a0 = {A[g][2c], A[g][2c+1]}, a1 = rows g+8, a2 = cols 2c+8.., a3 = both;
//   B: b0 = {B[2c][g], B[2c+1][g]}, b1 = rows 2c+8, 2c+9;
//   C: c0, c1 = C[g][2c], C[g][2c+1]; c2, c3 = C[g+8][2c], C[g+8][2c+1].
VB_INLINE void vb_mma16816(float c[4], const u32 a[4], u32 b0, u32 b1) {
#if VB_ATTN_MMA_OK
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

// Four 8x8 f16 matrices from shared memory; lane l gives the address of row
// l % 8 of matrix l / 8. Plain: thread (g, c) gets row g, cols 2c, 2c+1 of
// each; .trans: rows 2c, 2c+1 of col g.
VB_INLINE void vb_ldsm_x4(u32 r[4], const void* p) {
#if VB_ATTN_MMA_OK
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
VB_INLINE void vb_ldsm_x4_t(u32 r[4], const void* p) {
#if VB_ATTN_MMA_OK
  const u32 a = (u32)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
#else
  r[0] = r[1] = r[2] = r[3] = 0u;
  __trap();
#endif
}

#endif  // VB_ATTN_HOST_EMULATION

// Cache rows. A head row is hd elements of (KV head kvh, cache row j), at
// byte (j * KVH + kvh) * row_bytes(hd). load(row, d0) fetches elements
// d0 .. d0+7 (d0 % 8 == 0) in the type's raw form; f16x8 converts them to
// 8 f16 values (uint4, element 2i in the low half of word i): f16 as stored,
// f32 rounded to nearest even, q8_0 as (float)code * d (the CPU's product)
// rounded to nearest even. zero() converts to 0.
template <int KV> struct VbKv;
template <> struct VbKv<VB_KV_F32> {
  struct Raw { float4 a, b; };
  static VB_INLINE i64 row_bytes(int hd) { return (i64)hd * 4; }
  static VB_INLINE Raw load(const u8* row, int d0) {
    Raw r;
    r.a = *(const float4*)(row + 4 * d0);
    r.b = *(const float4*)(row + 4 * d0 + 16);
    return r;
  }
  static VB_INLINE Raw zero() {
    Raw r;
    r.a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    r.b = r.a;
    return r;
  }
  static VB_INLINE uint4 f16x8(const Raw& r) {
    return make_uint4(vb_h2x(r.a.x, r.a.y), vb_h2x(r.a.z, r.a.w), vb_h2x(r.b.x, r.b.y),
                      vb_h2x(r.b.z, r.b.w));
  }
};
template <> struct VbKv<VB_KV_F16> {
  typedef uint4 Raw;
  static VB_INLINE i64 row_bytes(int hd) { return (i64)hd * 2; }
  static VB_INLINE Raw load(const u8* row, int d0) { return *(const uint4*)(row + 2 * d0); }
  static VB_INLINE Raw zero() { return make_uint4(0u, 0u, 0u, 0u); }
  static VB_INLINE uint4 f16x8(const Raw& r) { return r; }
};
template <> struct VbKv<VB_KV_Q8_0> {
  // 8 codes (bytes in order) and the block's f16 d. Blocks are 34 bytes, so
  // codes are only 2-byte aligned: two 32-bit loads where they are 4-byte
  // aligned (odd blocks of a head row whose size is a multiple of 4), else
  // 16 + 32 + 16 bits.
  struct Raw { u32 lo, hi, d; };
  static VB_INLINE i64 row_bytes(int hd) { return (i64)(hd >> 5) * 34; }
  static VB_INLINE Raw load(const u8* row, int d0) {
    const u8* b = row + (d0 >> 5) * 34;
    const u8* c = b + 2 + (d0 & 31);
    Raw r;
    r.d = *(const u16*)b;
    if (((unsigned long long)c & 3) == 0) {
      r.lo = *(const u32*)c;
      r.hi = *(const u32*)(c + 4);
    } else {
      const u32 mid = *(const u32*)(c + 2);
      r.lo = (u32)(*(const u16*)c) | (mid << 16);
      r.hi = (mid >> 16) | ((u32)(*(const u16*)(c + 6)) << 16);
    }
    return r;
  }
  static VB_INLINE Raw zero() {
    Raw r;
    r.lo = r.hi = r.d = 0u;
    return r;
  }
  static VB_INLINE float code(u32 w, int i) { return (float)(int)(signed char)((w >> (8 * i)) & 0xffu); }
  static VB_INLINE uint4 f16x8(const Raw& r) {
    const float d = vb_h2f((u16)r.d);
    return make_uint4(vb_h2x(__fmul_rn(code(r.lo, 0), d), __fmul_rn(code(r.lo, 1), d)),
                      vb_h2x(__fmul_rn(code(r.lo, 2), d), __fmul_rn(code(r.lo, 3), d)),
                      vb_h2x(__fmul_rn(code(r.hi, 0), d), __fmul_rn(code(r.hi, 1), d)),
                      vb_h2x(__fmul_rn(code(r.hi, 2), d), __fmul_rn(code(r.hi, 3), d)));
  }
};

// One tile of online softmax (base 2) for rows g and g + 8 of a warp's 16:
// s[NT][4] are the C fragments of NT n-tiles of 8 keys from key k0 (thread
// (g, c) holds keys k0 + 8 nt + 2c + {0, 1}). Scores are scaled by sl2 =
// scale * log2(e), keys past a row's position prow[] masked to -inf; the
// running max m and sum l are updated and the O accumulators o[NJ][4]
// rescaled; p = 2^(s - m) is rounded to f16 and packed as the A fragments
// pa[NT / 2] of P * V (one per 16 keys); l adds the rounded p. Per-lane l
// is a partial sum over the lane's keys (reduce over the 4 lanes c at the
// end). A row with nothing visible yet keeps m = -inf, l = 0, p = 0.
template <int NT, int NJ>
VB_INLINE void vb_attn_online_softmax(float s[NT][4], int k0, int c, const int prow[2], float sl2,
                                      float m[2], float l[2], float o[NJ][4], u32 pa[NT / 2][4]) {
  float mx[2] = {m[0], m[1]};
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = k0 + 8 * nt + 2 * c + (e & 1);
      const float x = key <= prow[e >> 1] ? s[nt][e] * sl2 : VB_NEG_INF;
      s[nt][e] = x;
      mx[e >> 1] = fmaxf(mx[e >> 1], x);
    }
  }
  float corr[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    corr[r] = mx[r] == VB_NEG_INF ? 1.0f : exp2f(m[r] - mx[r]);
    m[r] = mx[r];
    l[r] *= corr[r];
  }
#pragma unroll
  for (int j = 0; j < NJ; ++j) {
    o[j][0] *= corr[0];
    o[j][1] *= corr[0];
    o[j][2] *= corr[1];
    o[j][3] *= corr[1];
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const bool none = m[r] == VB_NEG_INF;
      const float p0 = none ? 0.0f : exp2f(s[nt][2 * r] - m[r]);
      const float p1 = none ? 0.0f : exp2f(s[nt][2 * r + 1] - m[r]);
      const u32 h = vb_h2x(p0, p1);
      l[r] += vb_h2x_sum(h);
      pa[nt >> 1][(nt & 1) * 2 + r] = h;
    }
  }
}

// The decode partition (codegen::PartitionDecode is the same on the host):
// keys in use, steps of VB_AD_STEP keys, steps per warp, used splits.
VB_INLINE int vb_attn_dec_partition(const int* pos, int T, int n_ctx, int n_split, int* keys,
                                    int* steps, int* spw) {
  int n = 0;
  for (int t = 0; t < T; ++t) n = max(n, pos[t] + 1);
  n = max(0, min(n, n_ctx));
  const int st = (n + VB_AD_STEP - 1) / VB_AD_STEP;
  const int warps = max(1, n_split) * VB_AD_WARPS;
  const int w = max(1, (st + warps - 1) / warps);
  *keys = n;
  *steps = st;
  *spw = w;
  return (st + VB_AD_WARPS * w - 1) / (VB_AD_WARPS * w);
}
)CUDA";
  absl::StrReplaceAll({{"$DEC_WARPS", absl::StrCat(kAttnDecWarps)},
                       {"$DEC_STEP", absl::StrCat(kAttnDecStep)},
                       {"$DEC_MAX_SPLIT", absl::StrCat(kAttnDecMaxSplits)}},
                      &s);
  return s;
}

}  // namespace vibrant::codegen
