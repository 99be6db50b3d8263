#include "runtime/cuda/tp_executor.h"

#include <cuda_runtime_api.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/ranks.h"
#include "runtime/cuda/device.h"
#include "runtime/tp_bootstrap.h"

namespace vibrant {

absl::StatusOr<std::unique_ptr<TpCudaExecutor>> TpCudaExecutor::Create(const Program& program,
                                                                       WeightResolver weights,
                                                                       TpCudaOptions opts) {
  if (program.device != "cuda" || !program.dispatch) {
    return absl::InvalidArgumentError("tensor-parallel CUDA backend: not a cuda program");
  }
  const int n = static_cast<int>(program.dispatch->tp_ranks);
  if (n < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor-parallel CUDA backend: the plan has ", n, " rank (compile it with --tp N)"));
  }
  absl::StatusOr<CudaDeviceInfo> first = QueryCudaDevice(opts.base.device);
  if (!first.ok()) return first.status();
  // One process per GPU (torchrun, MPI, or VIBRANT_TP_* on each host): this
  // process runs its rank only, its NCCL id from rank 0 over TCP.
  absl::StatusOr<TpEnv> env = TpEnvFromEnvironment();
  if (!env.ok()) return env.status();
  if (env->world_size > 1) {
    if (env->world_size != n) {
      return absl::FailedPreconditionError(absl::StrCat("the plan is sharded for ", n, " ranks; ", env->source,
                                                        " gives a world of ", env->world_size, " processes"));
    }
    absl::StatusOr<std::shared_ptr<const NcclLib>> lib = LoadNccl();
    if (!lib.ok()) return lib.status();
    NcclUniqueId id{};
    if (env->rank == 0) {
      absl::StatusOr<NcclUniqueId> made = NcclGetUniqueId(**lib);
      if (!made.ok()) return made.status();
      id = *made;
    }
    if (absl::Status s = ExchangeUniqueId(*env, id, absl::Seconds(120)); !s.ok()) return s;
    if (absl::Status s = CudaStatus(cudaSetDevice(env->local_rank), "cudaSetDevice"); !s.ok()) return s;
    absl::StatusOr<std::unique_ptr<NcclComm>> comm = NcclComm::Init(*lib, env->rank, n, id);
    if (!comm.ok()) return comm.status();
    std::unique_ptr<TpCudaExecutor> tp(new TpCudaExecutor());
    tp->collectives_ = NcclCollectives::ForOneRank(*std::move(comm));
    CudaExecutorOptions o = opts.base;
    o.device = env->local_rank;
    o.rank = env->rank;
    o.collectives = tp->collectives_.get();
    absl::StatusOr<std::unique_ptr<CudaExecutor>> e = CudaExecutor::Create(program, weights, o);
    if (!e.ok()) return e.status();
    tp->ranks_.push_back(*std::move(e));
    return tp;
  }
  const int count = CudaDeviceCount();
  std::unique_ptr<TpCudaExecutor> tp(new TpCudaExecutor());
  std::vector<int> devices;  // rank r's GPU
  if (opts.share_one_gpu || count == 1) {
    devices.assign(static_cast<size_t>(n), opts.base.device);
    absl::StatusOr<std::unique_ptr<SharedGpuCollectives>> c = SharedGpuCollectives::Create(n, opts.base.device);
    if (!c.ok()) return c.status();
    tp->collectives_ = *std::move(c);
  } else if (count - opts.base.device >= n) {
    for (int r = 0; r < n; ++r) devices.push_back(opts.base.device + r);
    absl::StatusOr<std::unique_ptr<NcclCollectives>> c = NcclCollectives::Create(devices);
    if (!c.ok()) return c.status();
    tp->collectives_ = *std::move(c);
  } else {
    return absl::FailedPreconditionError(absl::StrCat(
        "the plan is sharded for ", n, " GPUs (tensor parallelism); this machine has ", count,
        " from device ", opts.base.device, ": recompile it with --tp ", count - opts.base.device,
        ", or run it on one GPU"));
  }
  for (int r = 0; r < n; ++r) {
    CudaExecutorOptions o = opts.base;
    o.device = devices[static_cast<size_t>(r)];
    o.rank = r;
    o.collectives = tp->collectives_.get();
    absl::StatusOr<std::unique_ptr<CudaExecutor>> e = CudaExecutor::Create(program, weights, o);
    if (!e.ok()) {
      return absl::Status(e.status().code(), absl::StrCat("rank ", r, " of ", n, ": ", e.status().message()));
    }
    tp->ranks_.push_back(*std::move(e));
  }
  return tp;
}

TpCudaExecutor::~TpCudaExecutor() {
  ranks_.clear();  // before the collectives they use
  collectives_.reset();
}

absl::Status TpCudaExecutor::OnAllRanks(const std::function<absl::Status(int)>& fn) {
  if (broken_) {
    return absl::FailedPreconditionError(
        "tensor-parallel CUDA backend: an earlier step failed and its NCCL communicators were aborted");
  }
  absl::Status s = RunOnRanks(ranks(), fn, [&](const absl::Status& why) { collectives_->Abort(why); });
  collectives_->Reset();
  if (!s.ok() && collectives_->capturable()) broken_ = true;  // NCCL's abort is final
  return s;
}

absl::StatusOr<absl::Span<const float>> TpCudaExecutor::Step(absl::Span<const int32_t> tokens, int32_t pos0) {
  // Bad inputs fail here, before any rank starts: over NCCL a failing rank
  // aborts the communicators for good.
  if (absl::Status s = ranks_[0]->CheckStepInputs(tokens, pos0); !s.ok()) return s;
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

absl::StatusOr<absl::Span<const float>> TpCudaExecutor::StepBatch(const BatchInputs& in) {
  absl::Span<const float> logits;
  absl::Status s = OnAllRanks([&](int r) -> absl::Status {
    absl::StatusOr<absl::Span<const float>> l = ranks_[static_cast<size_t>(r)]->StepBatch(in);
    if (!l.ok()) return l.status();
    if (r == 0) logits = *l;
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return logits;
}

absl::StatusOr<int32_t> TpCudaExecutor::StepSample(absl::Span<const int32_t> tokens, int32_t pos0,
                                                   const SampleDraw& draw) {
  if (absl::Status s = ranks_[0]->CheckStepInputs(tokens, pos0); !s.ok()) return s;
  if (absl::Status s = CheckSampleDraw(draw); !s.ok()) return s;
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

void TpCudaExecutor::Reset() {
  for (auto& r : ranks_) r->Reset();
}

std::string TpCudaExecutor::Describe() const {
  std::string out = absl::StrCat("tensor parallel, ", ranks(), " ranks (", collectives_->Describe(), ")");
  for (int r = 0; r < ranks(); ++r) absl::StrAppend(&out, "\n  rank ", r, ": ", ranks_[static_cast<size_t>(r)]->Describe());
  return out;
}

}  // namespace vibrant
