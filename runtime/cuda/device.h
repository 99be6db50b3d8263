// The CUDA device as the runtime sees it, through the CUDA runtime API
// (static cudart; libcuda is loaded by cudart at run time, never linked, so
// binaries start on machines without the driver and report it cleanly).
#ifndef VIBRANT_RUNTIME_CUDA_DEVICE_H_
#define VIBRANT_RUNTIME_CUDA_DEVICE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vibrant {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;        // "NVIDIA H100 80GB HBM3"
  std::string arch;        // "sm_90"
  int sm_count = 0;
  int64_t total_bytes = 0;
  int64_t free_bytes = 0;
  int driver_version = 0;   // 13000 = 13.0
  int runtime_version = 0;
};

// The device `index`, or a clear error: "no CUDA driver" (cudart cannot load
// libcuda), "no CUDA device", "the driver is older than the runtime", an
// index out of range. Never aborts.
absl::StatusOr<CudaDeviceInfo> QueryCudaDevice(int index = 0);

// OK when QueryCudaDevice(0) succeeds: the reason to print when a test skips.
absl::Status CudaDeviceAvailable();
// The GPUs this process sees (0 without a driver or device).
int CudaDeviceCount();

// The status of a CUDA runtime call: OK, or `what` followed by the error's
// name and description ("cudaMalloc of 1.5 GiB for the weights:
// cudaErrorMemoryAllocation: out of memory").
absl::Status CudaStatus(int cuda_error, const std::string& what);

// "1.5 GiB", "12.0 MiB", "512 B".
std::string HumanBytes(int64_t bytes);

// The device-to-device copy bandwidth of GPU `index`: `reps` copies of
// `bytes` between two buffers on a stream, timed with events, after warm-up
// copies; bytes read + written per second (GB/s, decimal), the 100 % of a
// roofline. Buffers beyond the L2 (the default 1 GiB) measure DRAM.
absl::StatusOr<double> MeasureCopyBandwidth(int index = 0, int64_t bytes = int64_t{1} << 30, int reps = 20);

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CUDA_DEVICE_H_
