#include "runtime/backend.h"

#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/cpu/tp_executor.h"

namespace vibrant {
namespace {

// The CPU executor (CpuExecutor), or a plan sharded for tensor parallelism
// with its ranks simulated on the CPU (TpCpuExecutor), behind the interface.
template <typename Exec>
class CpuBackend : public Executor {
 public:
  explicit CpuBackend(std::unique_ptr<Exec> exec) : exec_(std::move(exec)) {}
  absl::StatusOr<absl::Span<const float>> Step(absl::Span<const int32_t> tokens,
                                               int32_t pos0) override {
    return exec_->Step(tokens, pos0);
  }
  absl::StatusOr<absl::Span<const float>> StepBatch(const BatchInputs& in) override {
    if constexpr (std::is_same_v<Exec, CpuExecutor>) return exec_->StepBatch(in);
    return Executor::StepBatch(in);
  }
  void Reset() override { exec_->Reset(); }
  bool samples() const override { return exec_->samples(); }
  absl::StatusOr<int32_t> StepSample(absl::Span<const int32_t> tokens, int32_t pos0,
                                     const SampleDraw& draw) override {
    return exec_->StepSample(tokens, pos0, draw);
  }
  // The threads the executor runs with (fewer than asked when capped).
  std::string Describe() const override {
    if constexpr (std::is_same_v<Exec, TpCpuExecutor>) {
      return absl::StrCat("cpu, tensor parallelism over ", exec_->ranks(), " simulated ranks (",
                          exec_->num_threads(), " threads in all, ", exec_->KernelSummary(), ")");
    }
    return absl::StrCat("cpu (", exec_->num_threads(), " threads, ", exec_->KernelSummary(), ")");
  }

 private:
  std::unique_ptr<Exec> exec_;
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
  if (ir::TpRanks(graph) > 1) {
    absl::StatusOr<std::unique_ptr<TpCpuExecutor>> tp = TpCpuExecutor::Create(graph, std::move(weights), opts);
    if (!tp.ok()) return tp.status();
    return std::unique_ptr<Executor>(new CpuBackend<TpCpuExecutor>(*std::move(tp)));
  }
  absl::StatusOr<std::unique_ptr<CpuExecutor>> exec =
      CpuExecutor::Create(graph, std::move(weights), opts);
  if (!exec.ok()) return exec.status();
  return std::unique_ptr<Executor>(new CpuBackend<CpuExecutor>(*std::move(exec)));
}

}  // namespace vibrant
