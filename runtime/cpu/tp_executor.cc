#include "runtime/cpu/tp_executor.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/thread_pool.h"

namespace vibrant {

absl::StatusOr<std::unique_ptr<TpCpuExecutor>> TpCpuExecutor::Create(const ir::Graph& graph,
                                                                      WeightResolver weights,
                                                                      CpuExecutorOptions opts) {
  const int64_t n = ir::TpRanks(graph);
  if (n < 2 || n > ir::kMaxTpRanks) {
    return absl::InvalidArgumentError(absl::StrCat("tensor-parallel CPU backend: the graph has meta tp ", n,
                                                   ", not 2..", ir::kMaxTpRanks));
  }
  std::unique_ptr<TpCpuExecutor> tp(new TpCpuExecutor());
  tp->collectives_ = std::make_unique<LocalCollectives>(static_cast<int>(n));
  const int total = opts.threads > 0 ? opts.threads : cpu::DefaultThreadCount();
  // The memory limit bounds the ranks together: each gets its share.
  absl::StatusOr<MemoryLimit> limit =
      opts.memory_limit.has_value() ? absl::StatusOr<MemoryLimit>(*opts.memory_limit) : HostMemoryLimit();
  if (!limit.ok()) return limit.status();
  MemoryLimit share = *limit;
  if (share.bytes.has_value()) {
    share.bytes = *share.bytes / n;
    share.source = absl::StrCat(limit->source, " shared by ", n, " ranks");
  }
  for (int64_t r = 0; r < n; ++r) {
    CpuExecutorOptions o = opts;
    o.memory_limit = share;
    o.threads = std::max(1, total / static_cast<int>(n));
    o.rank = static_cast<int>(r);
    o.collectives = tp->collectives_.get();
    absl::StatusOr<std::unique_ptr<CpuExecutor>> e = CpuExecutor::Create(graph, weights, o);
    if (!e.ok()) {
      return absl::Status(e.status().code(), absl::StrCat("rank ", r, " of ", n, ": ", e.status().message()));
    }
    tp->ranks_.push_back(*std::move(e));
  }
  return tp;
}

TpCpuExecutor::~TpCpuExecutor() = default;

absl::Status TpCpuExecutor::OnAllRanks(const std::function<absl::Status(int)>& fn) {
  absl::Status s = RunOnRanks(ranks(), fn, [&](const absl::Status& why) { collectives_->Abort(why); });
  collectives_->Reset();
  return s;
}

absl::StatusOr<absl::Span<const float>> TpCpuExecutor::Step(absl::Span<const int32_t> tokens, int32_t pos0) {
  absl::Span<const float> logits;
  absl::Status s = OnAllRanks([&](int r) -> absl::Status {
    absl::StatusOr<absl::Span<const float>> l = ranks_[static_cast<size_t>(r)]->Step(tokens, pos0);
    if (!l.ok()) return l.status();
    if (r == 0) logits = *l;
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return logits;
}

absl::StatusOr<int32_t> TpCpuExecutor::StepSample(absl::Span<const int32_t> tokens, int32_t pos0,
                                                  const SampleDraw& draw) {
  int32_t token = -1;
  absl::Status s = OnAllRanks([&](int r) -> absl::Status {
    absl::StatusOr<int32_t> t = ranks_[static_cast<size_t>(r)]->StepSample(tokens, pos0, draw);
    if (!t.ok()) return t.status();
    if (r == 0) token = *t;
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return token;
}

void TpCpuExecutor::Reset() {
  for (auto& r : ranks_) r->Reset();
}

int TpCpuExecutor::num_threads() const {
  int n = 0;
  for (const auto& r : ranks_) n += r->num_threads();
  return n;
}

}  // namespace vibrant
