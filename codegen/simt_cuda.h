// CUDA's device-side names on the SIMT emulator (simt_emulator.h), for the
// tests that run generated kernel text on the host (attention_host_test,
// mmq_host_test): the vector types, the rounding intrinsics, byte permutes,
// warp shuffles and the tensor-core instructions (mma.sync m16n8k16,
// ldmatrix x4) with their PTX semantics, written once from the PTX ISA's
// fragment tables. A test says `using namespace simt_cuda;` in the namespace
// that includes its kernel text, and defines there what is its own (the
// kernels' names for these, the prelude pieces they use, macros).
#ifndef VIBRANT_CODEGEN_SIMT_CUDA_H_
#define VIBRANT_CODEGEN_SIMT_CUDA_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#include "codegen/simt_emulator.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/quantize.h"

namespace vibrant::codegen::simt_cuda {

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

struct float2 {
  float x, y;
};
struct float4 {
  float x, y, z, w;
};
struct uint2 {
  u32 x, y;
};
struct uint4 {
  u32 x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint4 make_uint4(u32 x, u32 y, u32 z, u32 w) { return {x, y, z, w}; }
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
// Rounded float operations (no contraction: volatile keeps each rounding).
inline float __fmul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}
inline float __fsub_rn(float a, float b) {
  volatile float r = a - b;
  return r;
}
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __uint_as_float(u32 u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float vb_h2f(u16 h) { return HalfToFloat(h); }
inline u16 vb_f2h(float f) { return FloatToHalf(f); }
// Two floats as f16 (nearest even), lo in the low half (cvt.rn.f16x2.f32).
inline u32 PackHalves(float lo, float hi) {
  return static_cast<u32>(FloatToHalf(lo)) | (static_cast<u32>(FloatToHalf(hi)) << 16);
}
// __byte_perm(x, y, s): result byte i = byte (s >> 4i) & 7 of {x (0-3), y (4-7)}.
inline u32 __byte_perm(u32 x, u32 y, u32 s) {
  const uint64_t b = static_cast<uint64_t>(x) | (static_cast<uint64_t>(y) << 32);
  u32 r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<u32>((b >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
  return r;
}
inline void __syncthreads() { simt::SyncThreads(); }
template <class T>
T __shfl_xor_sync(unsigned, T v, int m) {
  T all[32];
  simt::WarpExchange(&v, sizeof(T), all);
  return all[simt::LaneId() ^ m];
}
inline bool __all_sync(unsigned, bool p) {
  bool all[32];
  simt::WarpExchange(&p, sizeof(bool), all);
  for (bool b : all) {
    if (!b) return false;
  }
  return true;
}

// mma.sync.m16n8k16.row.col.f32.f16.f16.f32 (PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"): groupID = lane / 4,
// threadID_in_group = lane % 4;
//   A (16x16): a0,a1: row g, cols 2t, 2t+1; a2,a3: row g+8; a4,a5: row g,
//     cols 2t+8, 2t+9; a6,a7: row g+8 (two halves per register, the lower
//     column in the low half);
//   B (16x8): b0,b1: rows 2t, 2t+1 of col g; b2,b3: rows 2t+8, 2t+9;
//   C/D (16x8 f32): c0,c1: row g, cols 2t, 2t+1; c2,c3: row g+8.
// Products of halves are exact in float; the sum runs in k order.
inline void Mma16816(float c[4], const u32 a[4], u32 b0, u32 b1) {
  struct Regs {
    u32 a[4];
    u32 b[2];
  } mine{{a[0], a[1], a[2], a[3]}, {b0, b1}}, all[32];
  simt::WarpExchange(&mine, sizeof(Regs), all);
  auto half = [](u32 w, int k) { return HalfToFloat(static_cast<u16>((k & 1) ? w >> 16 : w & 0xffff)); };
  auto A = [&](int r, int k) {
    return half(all[(r & 7) * 4 + ((k & 7) >> 1)].a[(r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k);
  };
  auto B = [&](int k, int n) { return half(all[n * 4 + ((k & 7) >> 1)].b[k >= 8 ? 1 : 0], k); };
  const int lane = simt::LaneId(), g = lane >> 2, t = lane & 3;
  for (int x = 0; x < 4; ++x) {
    const int r = g + 8 * (x >> 1), n = 2 * t + (x & 1);
    float acc = c[x];
    for (int k = 0; k < 16; ++k) acc += A(r, k) * B(k, n);
    c[x] = acc;
  }
}
// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i .. 8i+7 give the
// row addresses of matrix i; register i of lane l holds row l / 4, elements
// 2 (l % 4), +1 of matrix i (.trans: rows 2 (l % 4), +1 of column l / 4).
inline void LdsmX4(u32 r[4], const void* p) {
  const void* all[32];
  simt::WarpExchange(&p, sizeof(p), all);
  const int lane = simt::LaneId();
  for (int i = 0; i < 4; ++i) {
    const u16* row = static_cast<const u16*>(all[8 * i + lane / 4]);
    r[i] = row[2 * (lane % 4)] | (static_cast<u32>(row[2 * (lane % 4) + 1]) << 16);
  }
}
inline void LdsmX4Trans(u32 r[4], const void* p) {
  const void* all[32];
  simt::WarpExchange(&p, sizeof(p), all);
  const int lane = simt::LaneId();
  for (int i = 0; i < 4; ++i) {
    const u16* r0 = static_cast<const u16*>(all[8 * i + 2 * (lane % 4)]);
    const u16* r1 = static_cast<const u16*>(all[8 * i + 2 * (lane % 4) + 1]);
    r[i] = r0[lane / 4] | (static_cast<u32>(r1[lane / 4]) << 16);
  }
}

}  // namespace vibrant::codegen::simt_cuda

#endif  // VIBRANT_CODEGEN_SIMT_CUDA_H_
