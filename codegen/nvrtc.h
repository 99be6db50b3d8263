// NVRTC: CUDA C++ source -> CUBIN (+ PTX) for one GPU architecture, with an
// on-disk cache. Needs no GPU (only libnvrtc), so `vibrantc compile --device
// cuda` and the CI compile test run on machines without one.
#ifndef VIBRANT_CODEGEN_NVRTC_H_
#define VIBRANT_CODEGEN_NVRTC_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/kernel_bundle.h"

namespace vibrant::codegen {

inline constexpr char kDefaultCudaArch[] = "sm_90";

struct NvrtcOptions {
  std::string arch = kDefaultCudaArch;  // "sm_NN" or "sm_NNa"
  // Kernel cache directory; empty = DefaultKernelCacheDir(). Set use_cache =
  // false to neither read nor write it.
  std::string cache_dir;
  bool use_cache = true;
  std::vector<std::string> extra_options;  // passed to NVRTC as they are
  // When set, receives NVRTC's log of a successful compile (e.g. ptxas's
  // register and spill report with extra_options "--ptxas-options=-v"); a
  // cache hit leaves it empty.
  std::string* info_log = nullptr;
};

// "13.0": the NVRTC library this process uses.
std::string NvrtcVersion();

// $VIBRANT_CACHE_DIR, else $XDG_CACHE_HOME/vibrant, else $HOME/.cache/vibrant,
// else "" (no cache).
std::string DefaultKernelCacheDir();

// Checks an architecture name: "sm_" followed by digits, optionally "a".
absl::Status ValidateCudaArch(const std::string& arch);

// Compiles `source` (named `name` in diagnostics). The cache key is the
// source's hash, the architecture, the options and the NVRTC version; a hit
// skips NVRTC. A compile error is InvalidArgument with NVRTC's log, each
// error followed by the generated source lines around it (numbered). Cache
// failures are not errors (the cache is only an accelerator). `cache_hit`,
// when non-null, says whether the result came from the cache.
absl::StatusOr<KernelBundle> CompileCuda(const std::string& source, const std::string& name,
                                         const NvrtcOptions& opts, bool* cache_hit = nullptr);

// Appends the numbered lines [line - context, line + context] of `source`
// after every "name(line): " diagnostic of `log` (exposed for tests).
std::string AnnotateNvrtcLog(const std::string& log, const std::string& name,
                             const std::string& source, int context = 2);

}  // namespace vibrant::codegen

#endif  // VIBRANT_CODEGEN_NVRTC_H_
