#include "runtime/backend.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/thread_pool.h"

namespace vibrant {
namespace {

class CpuBackend : public Executor {
 public:
  explicit CpuBackend(std::unique_ptr<CpuExecutor> exec) : exec_(std::move(exec)) {}
  absl::StatusOr<absl::Span<const float>> Step(absl::Span<const int32_t> tokens,
                                               int32_t pos0) override {
    return exec_->Step(tokens, pos0);
  }
  absl::StatusOr<absl::Span<const float>> StepBatch(const BatchInputs& in) override {
    return exec_->StepBatch(in);
  }
  void Reset() override { exec_->Reset(); }
  bool samples() const override { return exec_->samples(); }
  absl::StatusOr<int32_t> StepSample(absl::Span<const int32_t> tokens, int32_t pos0,
                                     const SampleDraw& draw) override {
    return exec_->StepSample(tokens, pos0, draw);
  }
  // The threads the executor runs with (fewer than asked when capped).
  std::string Describe() const override {
    return absl::StrCat("cpu (", exec_->num_threads(), " threads, ", exec_->KernelSummary(), ")");
  }

 private:
  std::unique_ptr<CpuExecutor> exec_;
};

}  // namespace

absl::StatusOr<absl::Span<const float>> Executor::StepBatch(const BatchInputs&) {
  return absl::UnimplementedError(
      absl::StrCat("continuous batching (paged graphs) is not implemented by the backend ", Describe()));
}

absl::StatusOr<int32_t> Executor::StepSample(absl::Span<const int32_t>, int32_t, const SampleDraw&) {
  return absl::FailedPreconditionError(
      "StepSample: this plan has no sample op (compile it with --gpu-sampling)");
}

absl::StatusOr<std::unique_ptr<Executor>> CreateCpuBackend(const ir::Graph& graph,
                                                           WeightResolver weights,
                                                           CpuExecutorOptions opts) {
  absl::StatusOr<std::unique_ptr<CpuExecutor>> exec =
      CpuExecutor::Create(graph, std::move(weights), opts);
  if (!exec.ok()) return exec.status();
  return std::unique_ptr<Executor>(new CpuBackend(*std::move(exec)));
}

}  // namespace vibrant
