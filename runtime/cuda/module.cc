// The plan's kernels on the GPU (runtime/cuda/internal.h: KernelModule).
#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/cuda/internal.h"

namespace vibrant::cuda {
namespace {

// "sm_90" -> 90 (0 when malformed).
int ArchNumber(const std::string& arch) {
  if (arch.rfind("sm_", 0) != 0) return 0;
  int n = 0;
  for (char c : arch.substr(3)) {
    if (c < '0' || c > '9') return n;
    n = n * 10 + (c - '0');
  }
  return n;
}

}  // namespace

KernelModule::~KernelModule() {
  if (library_ != nullptr) cudaLibraryUnload(library_);
}

absl::StatusOr<std::unique_ptr<KernelModule>> KernelModule::Load(const KernelBundle& bundle,
                                                                 const std::vector<std::string>& names,
                                                                 const CudaDeviceInfo& device) {
  std::unique_ptr<KernelModule> m(new KernelModule());
  auto load = [&](const std::string& image) {
    return cudaLibraryLoadData(&m->library_, image.data(), nullptr, nullptr, 0, nullptr, nullptr, 0);
  };
  if (bundle.arch == device.arch && !bundle.cubin.empty()) {
    VB_CUDA(load(bundle.cubin), absl::StrCat("CUDA backend: loading the plan's kernels (CUBIN for ",
                                             bundle.arch, ")"));
    m->origin_ = absl::StrCat("plan (CUBIN ", bundle.arch, ")");
  } else if (!bundle.ptx.empty() && ArchNumber(device.arch) > ArchNumber(bundle.arch) &&
             ArchNumber(bundle.arch) > 0) {
    // PTX for an older architecture runs on a newer GPU: the driver compiles it.
    std::string ptx = bundle.ptx;
    if (ptx.back() != '\0') ptx.push_back('\0');
    cudaError_t e = load(ptx);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return absl::FailedPreconditionError(absl::StrCat(
          "CUDA backend: the plan's kernels are for ", bundle.arch, " and their PTX does not load on this ",
          device.arch, " GPU (", cudaGetErrorString(e), "): recompile the plan with vibrantc compile --arch ",
          device.arch));
    }
    m->origin_ = absl::StrCat("plan (PTX for ", bundle.arch, ", compiled by the driver for ", device.arch, ")");
  } else {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA backend: the plan's kernels are compiled for ", bundle.arch.empty() ? "?" : bundle.arch,
        ", this GPU (", device.name, ") is ", device.arch,
        ": recompile the plan with vibrantc compile --device cuda --arch ", device.arch));
  }
  for (const std::string& name : names) {
    cudaKernel_t k = nullptr;
    cudaError_t e = cudaLibraryGetKernel(&k, m->library_, name.c_str());
    if (e != cudaSuccess) {
      cudaGetLastError();
      return absl::FailedPreconditionError(absl::StrCat(
          "CUDA backend: the plan's dispatch table launches kernel ", name,
          ", which its KERNELS section lacks (the plan is inconsistent: recompile it)"));
    }
    m->kernels_.push_back(k);
  }
  return m;
}

}  // namespace vibrant::cuda
