// Conversions to f16 for the prefill GEMM (runtime/cuda/cublaslt.h): weight
// rows decoded with the block decoders into a row-major f16 matrix, and f32
// activations narrowed to f16. Both round to nearest even (PTX cvt.rn), so an
// f16 weight (or any decoded value that f16 holds exactly) is copied exactly.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernels/families.h"

namespace vibrant::codegen {

std::string DequantF16KernelName(DType t) { return absl::StrCat("vb_dequant_f16_", TypeTag(t)); }

std::string DequantSource(const std::vector<DType>& types) {
  std::string out = R"CUDA(
struct alignas(16) vb_u32x4 { u32 x, y, z, w; };

VB_INLINE u32 vb_pack_h2(float lo, float hi) {
  return (u32)vb_f2h(lo) | ((u32)vb_f2h(hi) << 16);
}

// One thread per 8-element group of the rows [r0, r0 + rows); output row r
// (0-based in the chunk) at out + r * K.
template <class W>
VB_INLINE void vb_dequant_f16_impl(const u8* __restrict__ w, i64 row_bytes, u16* __restrict__ out,
                                   int K, int r0, int rows) {
  const i64 gpr = (K + 7) >> 3;
  const i64 total = (i64)rows * gpr;
  const i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const i64 r = i / gpr;
    const int g = (int)(i - r * gpr);
    float v[8];
    W::deq8(w + (r0 + r) * row_bytes, g, K, v);
    u16* o = out + r * K + 8 * g;
    if ((K & 7) == 0) {  // 16-byte aligned: one store
      vb_u32x4 q;
      q.x = vb_pack_h2(v[0], v[1]);
      q.y = vb_pack_h2(v[2], v[3]);
      q.z = vb_pack_h2(v[4], v[5]);
      q.w = vb_pack_h2(v[6], v[7]);
      *(vb_u32x4*)o = q;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        if (8 * g + e < K) o[e] = vb_f2h(v[e]);
      }
    }
  }
}

// f32 -> f16, grid-stride over n elements.
extern "C" __global__ void __launch_bounds__($THREADS) vb_f32_to_f16(const float* __restrict__ x,
                                                              u16* __restrict__ out, i64 n) {
  const i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) out[i] = vb_f2h(x[i]);
}

// q8a (8-bit activations: codes qx[n], then {d, d * sum} per 32) -> f16 of
// the values code * d, grid-stride over n elements: the GEMM operand of a
// matmul whose input quantize_q8 rounded.
extern "C" __global__ void __launch_bounds__($THREADS) vb_q8a_to_f16(const i8* __restrict__ qx,
                                                              const float2* __restrict__ ds,
                                                              u16* __restrict__ out, i64 n) {
  const i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = vb_f2h(__fmul_rn((float)qx[i], ds[i >> 5].x));
  }
}
)CUDA";
  absl::StrReplaceAll({{"$THREADS", absl::StrCat(kDequantThreads)}}, &out);
  for (DType t : types) {
    if (!CudaSupportsWeightType(t)) continue;
    std::string k = R"CUDA(
extern "C" __global__ void __launch_bounds__($THREADS) $NAME(const u8* w, i64 row_bytes, u16* out,
                                                       int K, int r0, int rows) {
  vb_dequant_f16_impl<W_$TAG>(w, row_bytes, out, K, r0, rows);
}
)CUDA";
    absl::StrReplaceAll({{"$NAME", DequantF16KernelName(t)},
                         {"$TAG", TypeTag(t)},
                         {"$THREADS", absl::StrCat(kDequantThreads)}},
                        &k);
    out += k;
  }
  return out;
}

}  // namespace vibrant::codegen
