// A tensor-parallel plan (vibrantc compile --device cuda --tp N) on GPUs:
// one CudaExecutor per rank, each on its GPU with its shard of the weights
// and its KV heads, their all_reduce / all_gather launches meeting in
// CudaCollectives. Two ways to place the ranks, one plan file for both:
//
// - One process driving every GPU of the host (the default, as
//   ncclCommInitAll's users do): the ranks' steps run on threads of this
//   process (rank 0 on the caller's); no launcher, no rendezvous, one plan
//   cache, one output. With N or more GPUs rank r runs on GPU r over NCCL
//   (loaded at run time; each rank's step is a CUDA graph holding its NCCL
//   calls). With one GPU every rank shares it (SharedGpuCollectives: the
//   result a real run gives, not its speed: no CUDA graphs), which is how
//   the plans are tested on one card. With 2..N-1 GPUs: an error.
// - One process per GPU, across hosts too (docs/architecture.md, "Tensor
//   parallelism beyond one host"): when the environment names a world of
//   processes (runtime/tp_bootstrap.h: VIBRANT_TP_* or torchrun's), this
//   process runs its rank alone on GPU local_rank, the NCCL id from rank 0.
#ifndef VIBRANT_RUNTIME_CUDA_TP_EXECUTOR_H_
#define VIBRANT_RUNTIME_CUDA_TP_EXECUTOR_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/backend.h"
#include "runtime/cuda/collectives.h"
#include "runtime/cuda/executor.h"
#include "runtime/program.h"

namespace vibrant {

struct TpCudaOptions {
  CudaExecutorOptions base;  // device and rank are set per rank
  // Every rank on GPU `base.device` (SharedGpuCollectives) even where there
  // are enough GPUs: tests of the simulation on a multi-GPU machine.
  bool share_one_gpu = false;
};

class TpCudaExecutor : public Executor {
 public:
  static absl::StatusOr<std::unique_ptr<TpCudaExecutor>> Create(const Program& program, WeightResolver weights,
                                                                TpCudaOptions opts = {});
  ~TpCudaExecutor() override;

  int ranks() const { return static_cast<int>(ranks_.size()); }
  // Rank 0's logits / token (every rank computes the same).
  absl::StatusOr<absl::Span<const float>> Step(absl::Span<const int32_t> tokens, int32_t pos0) override;
  absl::StatusOr<absl::Span<const float>> StepBatch(const BatchInputs& in) override;
  bool samples() const override { return ranks_[0]->samples(); }
  absl::StatusOr<int32_t> StepSample(absl::Span<const int32_t> tokens, int32_t pos0,
                                     const SampleDraw& draw) override;
  void Reset() override;
  std::string Describe() const override;

 private:
  TpCudaExecutor() = default;
  // fn(rank) on every rank at once; the first error, or OK. A failing rank
  // aborts the collectives so that no rank waits for it.
  absl::Status OnAllRanks(const std::function<absl::Status(int)>& fn);

  std::unique_ptr<CudaCollectives> collectives_;
  std::vector<std::unique_ptr<CudaExecutor>> ranks_;
  bool broken_ = false;  // NCCL aborted: the communicators are gone
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CUDA_TP_EXECUTOR_H_
