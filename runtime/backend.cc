#include "runtime/backend.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace vibrant {
namespace {

class CpuBackend : public Executor {
 public:
  explicit CpuBackend(std::unique_ptr<CpuExecutor> exec) : exec_(std::move(exec)) {}
  absl::StatusOr<absl::Span<const float>> Step(absl::Span<const int32_t> tokens,
                                               int32_t pos0) override {
    return exec_->Step(tokens, pos0);
  }
  void Reset() override { exec_->Reset(); }
  // The threads the executor runs with (fewer than asked when capped).
  std::string Describe() const override {
    return absl::StrCat("cpu (", exec_->num_threads(), " threads)");
  }

 private:
  std::unique_ptr<CpuExecutor> exec_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Executor>> CreateCpuBackend(const ir::Graph& graph,
                                                           WeightResolver weights,
                                                           CpuExecutorOptions opts) {
  absl::StatusOr<std::unique_ptr<CpuExecutor>> exec =
      CpuExecutor::Create(graph, std::move(weights), opts);
  if (!exec.ok()) return exec.status();
  return std::unique_ptr<Executor>(new CpuBackend(*std::move(exec)));
}

}  // namespace vibrant
