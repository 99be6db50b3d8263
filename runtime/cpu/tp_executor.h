// Tensor parallelism without several GPUs: a plan sharded for N ranks
// (passes/shard_tensor_parallel.h, vibrantc compile --tp N) run on the CPU as
// N simulated ranks in one process: one CpuExecutor per rank (its shard of
// the weights, its KV heads), each step run by the N ranks on their own
// threads, their all_reduce / all_gather ops meeting in LocalCollectives.
// The result is rank 0's (every rank computes the same logits).
#ifndef VIBRANT_RUNTIME_CPU_TP_EXECUTOR_H_
#define VIBRANT_RUNTIME_CPU_TP_EXECUTOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ir/graph.h"
#include "runtime/cpu/collectives.h"
#include "runtime/cpu/executor.h"
#include "runtime/sampler.h"

namespace vibrant {

class TpCpuExecutor {
 public:
  // `opts.threads` and `opts.memory_limit` (default HostMemoryLimit()) are
  // the totals: each rank gets an equal share (at least 1 thread).
  // The graph must have meta tp >= 2.
  static absl::StatusOr<std::unique_ptr<TpCpuExecutor>> Create(const ir::Graph& graph, WeightResolver weights,
                                                                CpuExecutorOptions opts = {});
  ~TpCpuExecutor();

  int ranks() const { return static_cast<int>(ranks_.size()); }
  // As CpuExecutor's: rank 0's logits / token.
  absl::StatusOr<absl::Span<const float>> Step(absl::Span<const int32_t> tokens, int32_t pos0);
  absl::StatusOr<int32_t> StepSample(absl::Span<const int32_t> tokens, int32_t pos0, const SampleDraw& draw);
  bool samples() const { return ranks_[0]->samples(); }
  void Reset();
  // Threads of all ranks together.
  int num_threads() const;
  std::string KernelSummary() const { return ranks_[0]->KernelSummary(); }

 private:
  TpCpuExecutor() = default;
  // Runs fn(rank) on every rank at once (rank 0 on the caller's thread); the
  // first error, or OK. A failing rank aborts the collectives, so no rank
  // waits for it.
  absl::Status OnAllRanks(const std::function<absl::Status(int)>& fn);

  std::unique_ptr<LocalCollectives> collectives_;
  std::vector<std::unique_ptr<CpuExecutor>> ranks_;
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CPU_TP_EXECUTOR_H_
