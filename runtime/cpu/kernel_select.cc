#include "runtime/cpu/kernel_select.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/fast_matmul.h"

namespace vibrant::cpu {

bool HasFastKernel(ir::OpKind k) {
  return k == ir::OpKind::kMatMul || k == ir::OpKind::kMultiMatMul || k == ir::OpKind::kMatMulId ||
         k == ir::OpKind::kAttention || k == ir::OpKind::kFused || k == ir::OpKind::kSilu;
}

const char* CpuKernelsName(CpuKernels k) { return k == CpuKernels::kFast ? "fast" : "exact"; }

std::string CpuVariantName(const ir::Graph& g, const ir::Op& op, CpuKernels choice) {
  const bool fast = choice == CpuKernels::kFast;
  switch (op.kind) {
    case ir::OpKind::kMatMul:
    case ir::OpKind::kMultiMatMul: {
      if (!fast) return "cpu.matmul.exact";
      // Members of a multi_matmul share one weight type (combine-matmuls).
      switch (ActivationFormatFor(g.value(op.inputs[1]).dtype)) {
        case ActivationFormat::kQ8x32:
          return "cpu.matmul.q8x32";
        case ActivationFormat::kQ8x256:
          return "cpu.matmul.q8x256";
        case ActivationFormat::kFloat:
          return "cpu.matmul.f32";
      }
      return "";
    }
    case ir::OpKind::kMatMulId: {
      // The chosen experts' rows, each expert's group as one fast matmul.
      if (!fast) return "cpu.matmul_id.exact";
      switch (ActivationFormatFor(g.value(op.inputs[1]).dtype)) {
        case ActivationFormat::kQ8x32:
          return "cpu.matmul_id.q8x32";
        case ActivationFormat::kQ8x256:
          return "cpu.matmul_id.q8x256";
        case ActivationFormat::kFloat:
          return "cpu.matmul_id.f32";
      }
      return "";
    }
    case ir::OpKind::kAttention:
      return fast ? "cpu.attention.flash" : "cpu.attention.exact";
    case ir::OpKind::kSilu:
      return fast ? "cpu.silu.fast" : "cpu.silu.exact";
    case ir::OpKind::kFused:
      return fast ? "cpu.fused.fast" : "cpu.fused.exact";
    default:
      return "";
  }
}

std::vector<ir::KernelVariant> CpuVariants(const ir::Graph& g, const ir::Op& op, CpuKernels choice) {
  std::string name = CpuVariantName(g, op, choice);
  if (name.empty()) return {};
  ir::KernelVariant v;
  v.t_min = 1;
  v.t_max = g.max_tokens;
  v.name = std::move(name);
  return {std::move(v)};
}

absl::StatusOr<CpuKernels> KernelsForOp(const ir::Graph& g, const ir::Op& op) {
  if (op.kernels.empty() || op.device == ir::Device::kCuda) return CpuKernels::kExact;
  auto where = [&]() {
    return absl::StrCat("CPU backend: op ", std::string(ir::OpName(op.kind)), " -> '",
                        g.value(op.outputs[0]).name, "'");
  };
  const std::string exact = CpuVariantName(g, op, CpuKernels::kExact);
  const std::string fast = CpuVariantName(g, op, CpuKernels::kFast);
  if (exact.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where(), " has kernel variant '", op.kernels[0].name,
                                                   "', but ops of this kind have one CPU kernel"));
  }
  // One choice for all token counts.
  const std::string& name = op.kernels[0].name;
  for (const ir::KernelVariant& k : op.kernels) {
    if (k.name != name) {
      return absl::InvalidArgumentError(absl::StrCat(where(), ": kernel variants '", name, "' and '",
                                                     k.name, "' by token count are not supported on the CPU"));
    }
  }
  if (name == exact) return CpuKernels::kExact;
  if (name == fast) return CpuKernels::kFast;
  return absl::InvalidArgumentError(absl::StrCat(where(), ": unknown kernel variant '", name,
                                                 "' (this build runs '", exact, "' or '", fast,
                                                 "' here; was the plan compiled by another version?)"));
}

}  // namespace vibrant::cpu
