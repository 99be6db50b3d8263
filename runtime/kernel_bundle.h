// A compiled kernel module as stored in plan.bin's KERNELS section and in the
// on-disk kernel cache: the CUBIN for one architecture plus the PTX (which the
// driver can JIT for a newer GPU), and what they were built from.
//
// Layout (little-endian):
//   char[8] "VBKERNEL" | u32 version (1) | u64 source hash (HashText of the
//   module source) | then four strings, each u64 length + bytes: arch
//   ("sm_90"), NVRTC version ("13.0"), CUBIN, PTX.
#ifndef VIBRANT_RUNTIME_KERNEL_BUNDLE_H_
#define VIBRANT_RUNTIME_KERNEL_BUNDLE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vibrant {

struct KernelBundle {
  uint64_t source_hash = 0;
  std::string arch;           // "sm_90"
  std::string nvrtc_version;  // "13.0"
  std::string cubin;
  std::string ptx;
};

std::string SerializeKernelBundle(const KernelBundle& b);
// Parses a bundle; errors read "<where>: at offset N: ...".
absl::StatusOr<KernelBundle> ParseKernelBundle(absl::Span<const uint8_t> data,
                                               const std::string& where);

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_KERNEL_BUNDLE_H_
