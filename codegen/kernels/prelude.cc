// The common head of every generated module: types, conversions, reductions.
#include "codegen/kernels/families.h"

namespace vibrant::codegen {

std::string PreludeSource() {
  return R"CUDA(
typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

#define VB_INLINE __device__ __forceinline__
// First statement of every kernel (codegen::WithGridDependency): on sm_90+,
// wait until the previous grid in the stream has completed and its writes
// are visible (griddepcontrol.wait; a no-op without a programmatic
// dependency), then allow the next grid to launch early.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define VB_GRID_DEPENDENCY() \
  asm volatile("griddepcontrol.wait;\n\tgriddepcontrol.launch_dependents;" ::: "memory")
#else
#define VB_GRID_DEPENDENCY()
#endif
#define VB_NEG_INF __int_as_float(0xff800000)
#define VB_NAN __int_as_float(0x7fc00000)

// IEEE half -> float (exact) and float -> half (round to nearest even).
VB_INLINE float vb_h2f(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
VB_INLINE u16 vb_f2h(float f) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
VB_INLINE float vb_bf2f(u16 h) { return __uint_as_float(((u32)h) << 16); }

// Little-endian loads from 2-byte aligned addresses (every block size is even
// and every weight starts 256-byte aligned); 32-bit fields inside blocks are
// not 4-byte aligned, so they are assembled from bytes.
VB_INLINE u16 vb_ld16(const u8* p) { return *(const u16*)p; }
VB_INLINE u32 vb_ld32(const u8* p) {
  return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}
VB_INLINE float vb_half_at(const u8* p) { return vb_h2f(vb_ld16(p)); }

VB_INLINE float vb_warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
VB_INLINE double vb_warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
VB_INLINE float vb_warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Rounds a value of a q8a row (quantize_q8) as it is written: called by all
// 32 lanes of a warp for the 32 consecutive elements i (i % 32 == lane) of
// one block: d = amax / 127, code = round(v / d), and lane 0 writes the
// block's {d, d * sum(codes)} (vb_q8_block's arithmetic).
VB_INLINE void vb_q8a_store(float v, i8* __restrict__ qx, float2* __restrict__ ds, i64 i) {
  const float amax = vb_warp_max(fabsf(v));
  const float d = __fdiv_rn(amax, 127.0f);
  const int q = d == 0.0f ? 0 : (int)roundf(__fdiv_rn(v, d));  // ir/ops.h: 0 when d == 0
  qx[i] = (i8)q;
  int s = q;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((i & 31) == 0) ds[i >> 5] = make_float2(d, __fmul_rn(d, (float)s));
}

// Block-wide reductions for blocks of up to 1024 threads (a multiple of 32).
// Every thread gets the result. `scratch` holds 32 entries.
VB_INLINE float vb_block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  v = vb_warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.0f;
  return vb_warp_sum(v);
}
VB_INLINE double vb_block_sum_d(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  v = vb_warp_sum_d(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.0;
  return vb_warp_sum_d(v);
}
VB_INLINE float vb_block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  v = vb_warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : VB_NEG_INF;
  return vb_warp_max(v);
}
)CUDA";
}

}  // namespace vibrant::codegen
