// Which CPU kernels run an op: the exact reference kernels (kernels.h, what
// conformance and `vibrant-run --verify` compare against) or the fast ones
// (fast_matmul.h, fast_attention.h, fast_elementwise.h: 8-bit activations,
// SIMD, results within measured tolerances of the exact ones).
//
// The choice is the compiler's, carried in the plan: select-kernels, given
// the CPU target (codegen/cpu_target.h), records on every cpu op that has a
// choice its variant in ir::Op::kernels (printed `kernels[T=1..64:
// cpu.matmul.q8x256]`), from CpuVariants below. The executor reads them once
// per op at creation (KernelsForOp) and runs what they name; an op without
// variants (hand-built graphs, plans compiled without the CPU target) runs
// the exact kernel, the IR's reference semantics.
//
// The variants, by op kind (`cpu.<kind>.<variant>`):
//   matmul, multi_matmul  cpu.matmul.exact   f32 activations (kernels.h MatMul)
//                         cpu.matmul.q8x32   x rounded to 8 bits per 32 (q4_0,
//                                            q4_1, q5_0, q5_1, q8_0 weights)
//                         cpu.matmul.q8x256  x rounded per 256 (q2_K..q6_K)
//                         cpu.matmul.f32     weight rows decoded to f32, f32
//                                            SIMD dot (f32, f16, bf16,
//                                            iq4_nl, iq4_xs, ...)
//   attention             cpu.attention.exact (double sums) | cpu.attention.flash
//   silu                  cpu.silu.exact | cpu.silu.fast (polynomial exp)
//   fused                 cpu.fused.exact | cpu.fused.fast (fast silu inside)
// Other ops have one kernel and no variants.
#ifndef VIBRANT_RUNTIME_CPU_KERNEL_SELECT_H_
#define VIBRANT_RUNTIME_CPU_KERNEL_SELECT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace vibrant::cpu {

enum class CpuKernels { kExact, kFast };

const char* CpuKernelsName(CpuKernels k);

// Whether ops of this kind have a fast CPU kernel (and so variants).
bool HasFastKernel(ir::OpKind k);

// The variant name op `op` of `g` runs with under `choice` ("" for ops
// without a choice).
std::string CpuVariantName(const ir::Graph& g, const ir::Op& op, CpuKernels choice);

// What select-kernels records for op `op` of `g` under `choice`: one variant
// covering T = 1..g.max_tokens, or none for ops without a choice.
std::vector<ir::KernelVariant> CpuVariants(const ir::Graph& g, const ir::Op& op, CpuKernels choice);

// The kernels op `op` of `g` runs with, from its variants: none (or those of
// another device's op) = exact. A variant this build does not have for the
// op (another build's plan, a hand-edited one) is an InvalidArgument error
// naming it and what was expected.
absl::StatusOr<CpuKernels> KernelsForOp(const ir::Graph& g, const ir::Op& op);

}  // namespace vibrant::cpu

#endif  // VIBRANT_RUNTIME_CPU_KERNEL_SELECT_H_
