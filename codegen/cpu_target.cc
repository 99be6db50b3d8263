#include "codegen/cpu_target.h"

#include "runtime/cpu/kernel_select.h"

namespace vibrant::codegen {

absl::StatusOr<std::vector<ir::KernelVariant>> CpuTarget::SelectKernels(const ir::Graph& g,
                                                                         int index) const {
  return cpu::CpuVariants(g, g.ops()[index],
                          opts_.exact ? cpu::CpuKernels::kExact : cpu::CpuKernels::kFast);
}

}  // namespace vibrant::codegen
