// The interface every execution backend implements, so that tools pick one by
// the plan's device: the CPU reference (runtime/cpu) or CUDA (runtime/cuda).
#ifndef VIBRANT_RUNTIME_BACKEND_H_
#define VIBRANT_RUNTIME_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ir/graph.h"
#include "runtime/cpu/executor.h"
#include "runtime/sampler.h"

namespace vibrant {

class Executor {
 public:
  virtual ~Executor() = default;
  // Runs one step over `tokens` (1..max_tokens) at positions pos0, pos0+1, ...
  // and returns the graph output "logits" on the host, valid until the next
  // call. Same contract as CpuExecutor::Step.
  virtual absl::StatusOr<absl::Span<const float>> Step(absl::Span<const int32_t> tokens,
                                                       int32_t pos0) = 0;
  // Forgets the KV cache (a new sequence).
  virtual void Reset() = 0;
  // Whether the program picks the next token itself: it has a `sample` op
  // (ir/ops.h; vibrantc compile --gpu-sampling, the default for cuda plans).
  virtual bool samples() const { return false; }
  // Runs one step like Step, its sample op drawing from the last row of
  // logits with `draw` (Sampler::NextDraw: the same draw the host sampler
  // would make), and returns the token id. Only the id leaves the device.
  // FailedPrecondition when !samples(); an error when the row has no finite
  // logit.
  virtual absl::StatusOr<int32_t> StepSample(absl::Span<const int32_t> tokens, int32_t pos0,
                                             const SampleDraw& draw);
  // One line for logs: the backend, its device and memory.
  virtual std::string Describe() const = 0;
};

// The CPU reference backend (CpuExecutor) behind the interface.
absl::StatusOr<std::unique_ptr<Executor>> CreateCpuBackend(const ir::Graph& graph,
                                                           WeightResolver weights,
                                                           CpuExecutorOptions opts = {});

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_BACKEND_H_
