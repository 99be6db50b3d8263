#include "runtime/cpu/kernel_select.h"

#include <string>
#include <variant>

#include "absl/strings/str_cat.h"

namespace vibrant::cpu {
namespace {

absl::StatusOr<CpuKernels> Parse(const ir::AttrValue& v, const std::string& where) {
  const std::string* s = std::get_if<std::string>(&v);
  if (s != nullptr && *s == "fast") return CpuKernels::kFast;
  if (s != nullptr && *s == "exact") return CpuKernels::kExact;
  return absl::InvalidArgumentError(absl::StrCat(
      "CPU backend: ", where, " must be \"fast\" or \"exact\"",
      s != nullptr ? absl::StrCat(", not \"", *s, "\"") : std::string(" (a string)")));
}

}  // namespace

bool HasFastKernel(ir::OpKind k) {
  return k == ir::OpKind::kMatMul || k == ir::OpKind::kMultiMatMul ||
         k == ir::OpKind::kAttention || k == ir::OpKind::kFused || k == ir::OpKind::kSilu;
}

const char* CpuKernelsName(CpuKernels k) { return k == CpuKernels::kFast ? "fast" : "exact"; }

absl::StatusOr<CpuKernels> GraphCpuKernels(const ir::Graph& g) {
  auto it = g.meta.find(kCpuKernelsMetaKey);
  if (it == g.meta.end()) return CpuKernels::kExact;
  return Parse(it->second, absl::StrCat("graph meta '", kCpuKernelsMetaKey, "'"));
}

void SetGraphCpuKernels(ir::Graph& g, CpuKernels k) {
  g.meta[kCpuKernelsMetaKey] = std::string(CpuKernelsName(k));
}

CpuKernels KernelsForOp(const ir::Graph& g, const ir::Op& op, CpuKernels graph_choice) {
  (void)g;
  return HasFastKernel(op.kind) ? graph_choice : CpuKernels::kExact;
}

}  // namespace vibrant::cpu
