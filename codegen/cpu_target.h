// The CPU target: which CPU kernels run each cpu op (the select-kernels pass
// asks it through passes::KernelTarget, as it asks the CUDA target for cuda
// ops). The variants and their names are the CPU backend's
// (runtime/cpu/kernel_select.h: cpu.matmul.q8x256, cpu.attention.flash, ...);
// this target chooses among them: the fast kernels by default, the exact
// reference ones with `exact` (vibrantc compile --exact). The instruction
// set (portable, AVX2, AVX-512) is not a choice of the plan: every version of
// a fast kernel computes the same bits, and the CPU that runs the plan picks
// the widest it has.
//
// The CPU's fast matmul rounds its own input to 8 bits in the layout its
// weight type pairs with, so quantize-activations inserts no quantize_q8 ops
// for cpu matmuls (MatvecQ8Supports is false); combine-matmuls does combine
// cpu matmuls of one input (the input is then rounded once for all of them,
// and their rows run as one parallel job).
#ifndef VIBRANT_CODEGEN_CPU_TARGET_H_
#define VIBRANT_CODEGEN_CPU_TARGET_H_

#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "passes/pass.h"

namespace vibrant::codegen {

struct CpuTargetOptions {
  // The exact reference kernels (f32 activations, double-precision
  // attention sums) instead of the fast ones.
  bool exact = false;
};

class CpuTarget : public passes::KernelTarget {
 public:
  explicit CpuTarget(CpuTargetOptions opts = {}) : opts_(opts) {}
  ir::Device device() const override { return ir::Device::kCpu; }
  bool MatvecQ8Supports(DType) const override { return false; }
  absl::StatusOr<std::vector<ir::KernelVariant>> SelectKernels(const ir::Graph& g,
                                                                int index) const override;

 private:
  CpuTargetOptions opts_;
};

}  // namespace vibrant::codegen

#endif  // VIBRANT_CODEGEN_CPU_TARGET_H_
