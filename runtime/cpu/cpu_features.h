// Which SIMD instruction sets the fast CPU kernels may use on this machine.
//
// The fast kernels (fast_matmul.h, fast_attention.h) exist in a portable
// version and in versions for x86-64 instruction sets, chosen at run time
// from what the CPU reports (cpuid) and the OS enables (xgetbv). Every
// version computes bit-identical results (integer dot products are exact and
// the float operations are specified lane by lane), so the choice changes
// speed only; tests run every version the machine has and compare them.
#ifndef VIBRANT_RUNTIME_CPU_CPU_FEATURES_H_
#define VIBRANT_RUNTIME_CPU_CPU_FEATURES_H_

#include <string>

namespace vibrant::cpu {

enum class Isa {
  kPortable = 0,  // plain C++ (any CPU)
  kAvx2 = 1,      // x86-64 with AVX2, FMA and F16C
  kAvx512 = 2,    // kAvx2 plus AVX-512 F/BW/VL/VNNI
};

const char* IsaName(Isa isa);

// The best instruction set this CPU supports (cached after the first call).
Isa DetectedIsa();

// The instruction set the fast kernels use: DetectedIsa(), capped by the
// environment variable VIBRANT_CPU_ISA (portable|avx2|avx512) when set (for
// benchmarks and for reproducing a slower machine), or by SetIsaForTesting.
// Never above DetectedIsa().
Isa ActiveIsa();

// Caps ActiveIsa() at `isa` (clamped to DetectedIsa()); returns the previous
// cap. Not thread-safe against running kernels: tests only.
Isa SetIsaForTesting(Isa isa);

// Number of physical cores this process may run on (the CPUs of its
// affinity mask, hyper-threads of one core counted once); at least 1.
int PhysicalCoreCount();

// "avx2 fma f16c avx512f ..." for logs.
std::string CpuFeatureString();

}  // namespace vibrant::cpu

#endif  // VIBRANT_RUNTIME_CPU_CPU_FEATURES_H_
