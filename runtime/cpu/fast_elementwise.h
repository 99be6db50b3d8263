// Fast versions of elementwise kernels (kernels.h), selected with the other
// fast kernels (kernel_select.h). Every ISA computes the same bits.
#ifndef VIBRANT_RUNTIME_CPU_FAST_ELEMENTWISE_H_
#define VIBRANT_RUNTIME_CPU_FAST_ELEMENTWISE_H_

#include <cstdint>

namespace vibrant::cpu {

// silu with the fast kernels' Exp (fast_attention.h): per element
//   e = Exp(-|x|);  s = x >= 0 ? 1 / (1 + e) : e / (1 + e);  out = x * s
// (each operation rounded once). out may equal x.
void SiluFast(const float* x, int64_t n, float* out);

}  // namespace vibrant::cpu

#endif  // VIBRANT_RUNTIME_CPU_FAST_ELEMENTWISE_H_
