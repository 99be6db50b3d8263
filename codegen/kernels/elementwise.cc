// Elementwise ops, one grid-stride kernel each, generated from the op
// registry's scalar expressions (ir/ops.h, OpInfo::scalar): vb_<op> for every
// elementwise op, binary ones with b broadcast over a (suffix).
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codegen/kernels/families.h"
#include "ir/ops.h"

namespace vibrant::codegen {

std::string ElementwiseKernelName(ir::OpKind kind) {
  return absl::StrCat("vb_", std::string(ir::OpName(kind)));
}

std::string ElementwiseSource() {
  std::string out;
  for (int k = 0; ir::IsValidOpKind(k); ++k) {
    const ir::OpInfo& info = ir::GetOpInfo(static_cast<ir::OpKind>(k));
    if (!info.elementwise || info.scalar.cuda.empty()) continue;
    const std::string expr(info.scalar.cuda.data(), info.scalar.cuda.size());
    const std::string name = ElementwiseKernelName(info.kind);
    if (info.scalar.binary != nullptr) {
      absl::StrAppend(&out, "extern \"C\" __global__ void ", name,
                      "(const float* a, const float* b, float* out, i64 n, i64 nb) {\n"
                      "  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; "
                      "i += (i64)gridDim.x * blockDim.x) {\n"
                      "    const float va = a[i], vb = b[i % nb];\n"
                      "    out[i] = ",
                      absl::StrReplaceAll(expr, {{"$a", "va"}, {"$b", "vb"}}), ";\n  }\n}\n");
    } else {
      absl::StrAppend(&out, "extern \"C\" __global__ void ", name,
                      "(const float* x, float* out, i64 n) {\n"
                      "  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; "
                      "i += (i64)gridDim.x * blockDim.x) {\n"
                      "    const float v = x[i];\n"
                      "    out[i] = ",
                      absl::StrReplaceAll(expr, {{"$x", "v"}}), ";\n  }\n}\n");
    }
  }
  // scale has an attribute, so it is no registry scalar function: x * s.
  out += R"CUDA(extern "C" __global__ void vb_scale(const float* x, float* out, i64 n, float s) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    out[i] = __fmul_rn(x[i], s);
  }
}
)CUDA";
  return out;
}

}  // namespace vibrant::codegen
