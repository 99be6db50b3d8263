// embedding: one block per token row, decoding the table row in registers.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernels/families.h"

namespace vibrant::codegen {

std::string EmbeddingKernelName(DType t) { return absl::StrCat("vb_embed_", TypeTag(t)); }

std::string EmbeddingSource(const std::vector<DType>& types) {
  std::string out = R"CUDA(
template <class W>
VB_INLINE void vb_embed_impl(const u8* __restrict__ table, i64 row_bytes,
                             const int* __restrict__ ids, float* __restrict__ out, int D, int V) {
  const int t = blockIdx.x;
  const int id = ids[t];
  float* o = out + (i64)t * D;
  if (id < 0 || id >= V) {
    for (int k = threadIdx.x; k < D; k += blockDim.x) o[k] = VB_NAN;
    return;
  }
  const u8* row = table + (i64)id * row_bytes;
  const int ng = (D + 7) >> 3;
  for (int g = threadIdx.x; g < ng; g += blockDim.x) {
    float v[8];
    W::deq8(row, g, D, v);
    const int k0 = g << 3;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      if (k0 + e < D) o[k0 + e] = v[e];
    }
  }
}
)CUDA";
  for (DType t : types) {
    if (!CudaSupportsWeightType(t)) continue;
    std::string k = R"CUDA(
extern "C" __global__ void $NAME(const u8* table, i64 row_bytes, const int* ids, float* out,
                                 int D, int V) {
  vb_embed_impl<W_$TAG>(table, row_bytes, ids, out, D, V);
}
)CUDA";
    absl::StrReplaceAll({{"$NAME", EmbeddingKernelName(t)}, {"$TAG", TypeTag(t)}}, &k);
    out += k;
  }
  return out;
}

}  // namespace vibrant::codegen
