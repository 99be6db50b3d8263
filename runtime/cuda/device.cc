#include "runtime/cuda/device.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vibrant {

absl::Status CudaStatus(int cuda_error, const std::string& what) {
  const cudaError_t e = static_cast<cudaError_t>(cuda_error);
  if (e == cudaSuccess) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
  switch (e) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(msg);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::InternalError(msg);
  }
}

std::string HumanBytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes >= (int64_t{1} << 30)) return absl::StrFormat("%.2f GiB", b / (1 << 30));
  if (bytes >= (int64_t{1} << 20)) return absl::StrFormat("%.1f MiB", b / (1 << 20));
  if (bytes >= (int64_t{1} << 10)) return absl::StrFormat("%.1f KiB", b / (1 << 10));
  return absl::StrCat(bytes, " B");
}

absl::StatusOr<CudaDeviceInfo> QueryCudaDevice(int index) {
  CudaDeviceInfo info;
  info.index = index;
  cudaRuntimeGetVersion(&info.runtime_version);
  cudaError_t e = cudaDriverGetVersion(&info.driver_version);
  if (e != cudaSuccess || info.driver_version == 0) {
    return absl::FailedPreconditionError(
        "CUDA backend: no NVIDIA driver found (libcuda could not be loaded); use --device cpu");
  }
  int count = 0;
  e = cudaGetDeviceCount(&count);
  if (e == cudaErrorInsufficientDriver) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "CUDA backend: the NVIDIA driver (CUDA %d.%d) is older than this build's CUDA runtime "
        "(%d.%d); update the driver or use --device cpu",
        info.driver_version / 1000, (info.driver_version % 1000) / 10,
        info.runtime_version / 1000, (info.runtime_version % 1000) / 10));
  }
  if (e == cudaErrorNoDevice || (e == cudaSuccess && count == 0)) {
    return absl::FailedPreconditionError(
        "CUDA backend: no CUDA device found (the driver is present); use --device cpu");
  }
  if (e != cudaSuccess) return CudaStatus(e, "CUDA backend: cudaGetDeviceCount");
  if (index < 0 || index >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA backend: device ", index, " does not exist (", count, " found)"));
  }
  cudaDeviceProp prop;
  if (absl::Status s = CudaStatus(cudaGetDeviceProperties(&prop, index),
                                  "CUDA backend: cudaGetDeviceProperties");
      !s.ok()) {
    return s;
  }
  info.name = prop.name;
  info.arch = absl::StrCat("sm_", prop.major, prop.minor);
  info.sm_count = prop.multiProcessorCount;
  info.total_bytes = static_cast<int64_t>(prop.totalGlobalMem);
  if (cudaSetDevice(index) == cudaSuccess) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
      info.free_bytes = static_cast<int64_t>(free_b);
    }
  }
  return info;
}

absl::Status CudaDeviceAvailable() { return QueryCudaDevice(0).status(); }

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

absl::StatusOr<double> MeasureCopyBandwidth(int index, int64_t bytes, int reps) {
  if (bytes < 1 || reps < 1) return absl::InvalidArgumentError("MeasureCopyBandwidth: bytes and reps must be >= 1");
  absl::StatusOr<CudaDeviceInfo> dev = QueryCudaDevice(index);
  if (!dev.ok()) return dev.status();
  if (absl::Status s = CudaStatus(cudaSetDevice(index), "cudaSetDevice"); !s.ok()) return s;
  const size_t n = static_cast<size_t>(bytes);
  void* src = nullptr;
  void* dst = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  float ms = 0;
  absl::Status s = CudaStatus(cudaMalloc(&src, n), "copy bandwidth: cudaMalloc");
  if (s.ok()) s = CudaStatus(cudaMalloc(&dst, n), "copy bandwidth: cudaMalloc");
  if (s.ok()) s = CudaStatus(cudaMemset(src, 1, n), "copy bandwidth: cudaMemset");
  if (s.ok()) s = CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "copy bandwidth: stream");
  if (s.ok()) s = CudaStatus(cudaEventCreate(&start), "copy bandwidth: event");
  if (s.ok()) s = CudaStatus(cudaEventCreate(&stop), "copy bandwidth: event");
  for (int i = 0; i < 3 && s.ok(); ++i) {
    s = CudaStatus(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream), "copy bandwidth: copy");
  }
  if (s.ok()) s = CudaStatus(cudaEventRecord(start, stream), "copy bandwidth: event");
  for (int i = 0; i < reps && s.ok(); ++i) {
    s = CudaStatus(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream), "copy bandwidth: copy");
  }
  if (s.ok()) s = CudaStatus(cudaEventRecord(stop, stream), "copy bandwidth: event");
  if (s.ok()) s = CudaStatus(cudaEventSynchronize(stop), "copy bandwidth: synchronize");
  if (s.ok()) s = CudaStatus(cudaEventElapsedTime(&ms, start, stop), "copy bandwidth: elapsed time");
  if (start != nullptr) cudaEventDestroy(start);
  if (stop != nullptr) cudaEventDestroy(stop);
  if (stream != nullptr) cudaStreamDestroy(stream);
  if (src != nullptr) cudaFree(src);
  if (dst != nullptr) cudaFree(dst);
  if (!s.ok()) {
    cudaGetLastError();
    return s;
  }
  if (!(ms > 0)) return absl::InternalError("copy bandwidth: the copies took no measurable time");
  return 2.0 * static_cast<double>(bytes) * reps / (static_cast<double>(ms) * 1e-3) / 1e9;
}

}  // namespace vibrant
