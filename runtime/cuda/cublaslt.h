// cuBLASLt, loaded at run time (dlopen): the CUDA backend's prefill GEMMs.
//
// cuBLASLt ships only as a shared library, and Vibrant binaries must start on
// machines without CUDA libraries, so nothing links it: LoadCublasLt opens
// libcublasLt.so.13 (then libcublasLt.so, then the toolkit's lib directory
// this build saw) and looks up the dozen entry points used here. When it is
// missing, callers get Unavailable and keep their own kernels.
//
// RowMajorGemm hides cuBLAS's column-major convention: it computes
//   out[M, N] (f32, row-major, row stride ldo) =
//       a[M, K] (f16, row-major, row stride lda) · b[N, K]ᵀ (f16, row-major,
//       row stride ldb)  (+ bias[N], f32)
// with f32 accumulation. (In cuBLAS terms: D' = op(B')·A' with D' = outᵀ, an
// N x M column-major matrix with ld = ldo; B' = b read as a K x N column-major
// matrix and transposed; A' = a read as a K x M column-major matrix: the
// "TN" GEMM.) The algorithm is chosen by cuBLASLt's heuristic once per shape
// (and pointer alignment) and cached.
#ifndef VIBRANT_RUNTIME_CUDA_CUBLASLT_H_
#define VIBRANT_RUNTIME_CUDA_CUBLASLT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vibrant {

// The loaded library's entry points (opaque here; see cublaslt.cc).
struct CublasLtLib;

// The library names LoadCublasLt tries, in order.
std::vector<std::string> DefaultCublasLtNames();

// Loads the first of `names` that dlopen finds and resolves the entry points.
// Unavailable when none loads (the message names each file tried and
// dlerror's reason) or a symbol is missing. The library stays loaded for the
// life of the process. Needs no GPU.
absl::StatusOr<std::shared_ptr<const CublasLtLib>> LoadCublasLt(
    const std::vector<std::string>& names);
// LoadCublasLt(DefaultCublasLtNames()), loaded once per process.
absl::StatusOr<std::shared_ptr<const CublasLtLib>> LoadCublasLt();
// The file that was loaded and cublasLtGetVersion() ("libcublasLt.so.13, version 130100").
std::string CublasLtDescribe(const CublasLtLib& lib);
// OK when the default library loads (the reason to print when a test skips).
absl::Status CublasLtAvailable();

// One f16 x f16 -> f32 GEMM configuration (see the file comment).
struct GemmShape {
  int64_t M = 0, N = 0, K = 0;
  int64_t lda = 0, ldb = 0, ldo = 0;  // in elements
  bool bias = false;                  // through the BIAS epilogue
  // Pointer alignments in bytes (1 .. 256), part of the algorithm choice.
  uint32_t align_a = 256, align_b = 256, align_out = 256, align_bias = 256;

  auto Key() const {
    return std::make_tuple(M, N, K, lda, ldb, ldo, bias, align_a, align_b, align_out, align_bias);
  }
};

// The largest power of two (at most 256) that divides the address.
uint32_t PointerAlignment(const void* p);

// A cuBLASLt handle, its workspace and the algorithms chosen so far. Not
// thread-safe (one per executor, used from the thread that runs its steps).
class RowMajorGemm {
 public:
  // Creates the handle and a workspace of `workspace_bytes` of VRAM on the
  // current device.
  static absl::StatusOr<std::unique_ptr<RowMajorGemm>> Create(
      std::shared_ptr<const CublasLtLib> lib, int64_t workspace_bytes);
  ~RowMajorGemm();
  RowMajorGemm(const RowMajorGemm&) = delete;
  RowMajorGemm& operator=(const RowMajorGemm&) = delete;

  // Chooses (once) and caches the algorithm for `shape`. Fails, naming the
  // call and the cuBLAS status, when cuBLASLt has none (e.g. the BIAS
  // epilogue unsupported for this shape: callers then add the bias
  // themselves). Host-only: no GPU work.
  absl::Status Prepare(const GemmShape& shape, const void* bias_for_alignment = nullptr);
  // Enqueues the GEMM on `stream` (a cudaStream_t). `bias` must be non-null
  // exactly when shape.bias. The alignments in `shape` are replaced by the
  // pointers' own (PointerAlignment); prepares that shape first if needed.
  absl::Status Run(const GemmShape& shape, const void* a, const void* b, const float* bias,
                   float* out, void* stream);

  int64_t workspace_bytes() const { return workspace_bytes_; }
  const CublasLtLib& lib() const { return *lib_; }

 private:
  struct Plan;
  RowMajorGemm() = default;
  absl::StatusOr<Plan*> GetPlan(const GemmShape& shape, const void* bias);

  std::shared_ptr<const CublasLtLib> lib_;
  void* handle_ = nullptr;  // cublasLtHandle_t
  void* workspace_ = nullptr;
  int64_t workspace_bytes_ = 0;
  std::map<decltype(GemmShape{}.Key()), std::unique_ptr<Plan>> plans_;
  std::map<decltype(GemmShape{}.Key()), absl::Status> failed_;
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CUDA_CUBLASLT_H_
