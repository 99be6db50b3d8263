// Standalone CUDA harness for the attention kernels (the GPU test and the
// micro-benchmark): NVRTC-compiles a module of the attention families for the
// local GPU, loads it with the CUDA runtime API (cudaLibraryLoadData,
// cudaLibraryGetKernel) and launches kernels by name with cudaLaunchKernel,
// without the CUDA executor (whose launch code is being rewritten). Links
// cudart (static) and NVRTC, never libcuda. Header-only; include it only from
// targets that link CUDA::cudart_static and vibrant_nvrtc.
#ifndef VIBRANT_CODEGEN_ATTENTION_CUDA_HARNESS_H_
#define VIBRANT_CODEGEN_ATTENTION_CUDA_HARNESS_H_

#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "codegen/kernel_source.h"
#include "codegen/kernels/attention_mma.h"
#include "codegen/kernels/families.h"
#include "codegen/nvrtc.h"

namespace vibrant::codegen::harness {

inline absl::Status Cuda(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorName(e), ": ",
                                          cudaGetErrorString(e)));
}

// OK when a CUDA device is usable; else the reason (tests skip with it).
inline absl::Status GpuAvailable() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return Cuda(e, "cudaGetDeviceCount");
  if (n == 0) return absl::UnavailableError("no CUDA device");
  return absl::OkStatus();
}

// The module: prelude, kv_store, the scalar attention kernels (vb_attn_split_*,
// vb_attn_combine, for comparisons) and the tensor-core ones for `configs`,
// with the grid-dependency prologue every generated kernel has.
inline std::string AttentionModuleSource(const std::vector<AttnConfig>& configs) {
  return WithGridDependency(PreludeSource() + KvStoreSource() + AttentionSource() +
                            AttentionMmaSource(configs));
}

class Module {
 public:
  static absl::StatusOr<std::unique_ptr<Module>> Load(const std::string& source) {
    cudaDeviceProp prop;
    if (absl::Status s = Cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
        !s.ok()) {
      return s;
    }
    NvrtcOptions opts;
    opts.arch = absl::StrCat("sm_", prop.major * 10 + prop.minor);
    absl::StatusOr<KernelBundle> b = CompileCuda(source, "attention_test.cu", opts);
    if (!b.ok()) return b.status();
    auto m = std::unique_ptr<Module>(new Module());
    m->sm_count_ = prop.multiProcessorCount;
    m->name_ = prop.name;
    m->arch_ = opts.arch;
    if (absl::Status s = Cuda(cudaLibraryLoadData(&m->lib_, b->cubin.data(), nullptr, nullptr, 0,
                                                  nullptr, nullptr, 0),
                              "cudaLibraryLoadData");
        !s.ok()) {
      return s;
    }
    return m;
  }
  ~Module() {
    if (lib_ != nullptr) cudaLibraryUnload(lib_);
  }
  absl::StatusOr<cudaKernel_t> Kernel(const std::string& name) {
    auto it = kernels_.find(name);
    if (it != kernels_.end()) return it->second;
    cudaKernel_t k = nullptr;
    if (absl::Status s = Cuda(cudaLibraryGetKernel(&k, lib_, name.c_str()),
                              "cudaLibraryGetKernel " + name);
        !s.ok()) {
      return s;
    }
    kernels_[name] = k;
    return k;
  }
  // Launches `l` with `args` (pointers to the argument values, in order).
  absl::Status Launch(const AttnLaunch& l, std::vector<void*> args, cudaStream_t stream) {
    absl::StatusOr<cudaKernel_t> k = Kernel(l.kernel);
    if (!k.ok()) return k.status();
    return Cuda(cudaLaunchKernel(reinterpret_cast<const void*>(*k),
                                 dim3(l.grid[0], l.grid[1], l.grid[2]),
                                 dim3(l.block[0], l.block[1], l.block[2]), args.data(),
                                 static_cast<size_t>(l.dynamic_smem), stream),
                "launch " + l.kernel);
  }
  int sm_count() const { return sm_count_; }
  const std::string& name() const { return name_; }
  const std::string& arch() const { return arch_; }

 private:
  Module() = default;
  cudaLibrary_t lib_ = nullptr;
  std::map<std::string, cudaKernel_t> kernels_;
  int sm_count_ = 0;
  std::string name_, arch_;
};

// A device buffer (freed on destruction).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&ptr_, bytes == 0 ? 1 : bytes) != cudaSuccess) ptr_ = nullptr;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  bool ok() const { return ptr_ != nullptr; }
  void* get() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace vibrant::codegen::harness

#endif  // VIBRANT_CODEGEN_ATTENTION_CUDA_HARNESS_H_
