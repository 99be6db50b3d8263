#include "runtime/backends.h"

#include "absl/strings/str_cat.h"
#ifdef VIBRANT_WITH_CUDA
#include "runtime/cuda/executor.h"
#include "runtime/cuda/tp_executor.h"
#endif

namespace vibrant {

absl::StatusOr<std::unique_ptr<Executor>> CreateBackend(const Program& program, WeightResolver weights,
                                                        const BackendOptions& opts) {
  if (program.device == "cpu") {
    CpuExecutorOptions o;
    o.threads = opts.threads;
    return CreateCpuBackend(program.graph, std::move(weights), o);
  }
  if (program.device == "cuda") {
#ifdef VIBRANT_WITH_CUDA
    CudaExecutorOptions o;
    o.device = opts.cuda_device;
    o.host_threads = opts.threads;  // a split plan's host ops (-ngl)
    if (program.dispatch && program.dispatch->tp_ranks > 1) {  // one executor per rank
      TpCudaOptions tp;
      tp.base = o;
      absl::StatusOr<std::unique_ptr<TpCudaExecutor>> e = TpCudaExecutor::Create(program, std::move(weights), tp);
      if (!e.ok()) return e.status();
      return std::unique_ptr<Executor>(std::move(*e));
    }
    absl::StatusOr<std::unique_ptr<CudaExecutor>> e = CudaExecutor::Create(program, std::move(weights), o);
    if (!e.ok()) return e.status();
    return std::unique_ptr<Executor>(std::move(*e));
#else
    return absl::UnimplementedError(
        "the program is compiled for device 'cuda', but this build has no CUDA backend (no CUDA toolkit "
        "was found when it was configured): compile for --device cpu");
#endif
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown device '", program.device, "'"));
}

WeightResolver GgufWeights(const GgufFile& file) {
  const GgufFile* f = &file;
  return [f](const std::string& source) -> absl::StatusOr<absl::Span<const uint8_t>> {
    const GgufTensorInfo* t = f->FindTensor(source);
    if (t == nullptr) {
      return absl::NotFoundError(absl::StrCat(f->path(), ": no tensor '", source, "', which the graph reads"));
    }
    return f->TensorData(*t);
  };
}

bool HaveCudaBackend() {
#ifdef VIBRANT_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace vibrant
