#include "runtime/cuda/collectives.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/cuda/device.h"

namespace vibrant {

namespace {

#define VB_RETURN_IF_ERROR_C(expr) \
  do {                             \
    absl::Status _s = (expr);      \
    if (!_s.ok()) return _s;       \
  } while (0)

// out[row, r * cols + j] = src_r[row, j]: one 2-D copy per rank.
absl::Status Interleave(const float* src, int64_t src_pitch_floats, int r, int ranks, int64_t rows, int64_t cols,
                        float* out, cudaStream_t stream) {
  return CudaStatus(cudaMemcpy2DAsync(out + r * cols, static_cast<size_t>(ranks * cols * 4), src,
                                      static_cast<size_t>(src_pitch_floats * 4), static_cast<size_t>(cols * 4),
                                      static_cast<size_t>(rows), cudaMemcpyDeviceToDevice, stream),
                    "all_gather: reordering rows");
}

absl::Status LaunchAdd(const CudaCollectives::AddKernel& add, const float* a, const float* b, float* out,
                       int64_t n, cudaStream_t stream) {
  int64_t nb = n;
  void* args[] = {&a, &b, &out, &n, &nb};
  return CudaStatus(cudaLaunchKernel(reinterpret_cast<const void*>(add.fn), add.grid, add.block, args, 0, stream),
                    "all_reduce: vb_add");
}

}  // namespace

// ---- NCCL ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<NcclCollectives>> NcclCollectives::Create(const std::vector<int>& devices) {
  const int n = static_cast<int>(devices.size());
  if (n < 2) return absl::InvalidArgumentError(absl::StrCat("NCCL collectives for ", n, " GPUs"));
  absl::StatusOr<std::shared_ptr<const NcclLib>> lib = LoadNccl();
  if (!lib.ok()) {
    return absl::Status(lib.status().code(),
                        absl::StrCat("tensor parallelism across ", n, " GPUs needs NCCL (", lib.status().message(),
                                     "); set ", kNcclLibraryEnv, " to libnccl.so.2"));
  }
  absl::StatusOr<NcclUniqueId> id = NcclGetUniqueId(**lib);
  if (!id.ok()) return id.status();
  std::unique_ptr<NcclCollectives> c(new NcclCollectives());
  c->world_ = n;
  c->comms_.resize(static_cast<size_t>(n));
  // ncclCommInitAll's way: the ranks' inits in one group, each on its GPU.
  int prev = 0;
  cudaGetDevice(&prev);
  VB_RETURN_IF_ERROR_C(NcclGroupStart(**lib));
  absl::Status first;
  for (int r = 0; r < n; ++r) {
    if (absl::Status s = CudaStatus(cudaSetDevice(devices[static_cast<size_t>(r)]), "cudaSetDevice"); !s.ok()) {
      if (first.ok()) first = s;
      break;
    }
    absl::StatusOr<std::unique_ptr<NcclComm>> comm = NcclComm::Init(*lib, r, n, *id);
    if (!comm.ok()) {
      if (first.ok()) first = comm.status();
      break;
    }
    c->comms_[static_cast<size_t>(r)] = *std::move(comm);
  }
  absl::Status end = NcclGroupEnd(**lib);
  cudaSetDevice(prev);
  if (!first.ok()) return first;
  if (!end.ok()) return end;
  c->describe_ = absl::StrCat(NcclDescribe(**lib), " across ", n, " GPUs");
  return c;
}

std::unique_ptr<NcclCollectives> NcclCollectives::ForOneRank(std::unique_ptr<NcclComm> comm) {
  std::unique_ptr<NcclCollectives> c(new NcclCollectives());
  c->world_ = comm->world_size();
  c->describe_ = absl::StrCat(NcclDescribe(comm->lib()), ", rank ", comm->rank(), " of ", comm->world_size(),
                              " (one process per GPU)");
  c->comms_.push_back(std::move(comm));
  return c;
}

NcclCollectives::~NcclCollectives() = default;

NcclComm* NcclCollectives::Comm(int rank) const {
  if (comms_.size() == 1 && comms_[0] != nullptr && comms_[0]->rank() == rank) return comms_[0].get();
  if (rank < 0 || rank >= static_cast<int>(comms_.size())) return nullptr;
  return comms_[static_cast<size_t>(rank)].get();
}

absl::Status NcclCollectives::AllReduceSum(int rank, const float* in, float* out, int64_t n,
                                           cudaStream_t stream, const AddKernel&) {
  NcclComm* c = Comm(rank);
  if (c == nullptr) return absl::InvalidArgumentError(absl::StrCat("all_reduce: no communicator for rank ", rank));
  return c->AllReduceSumF32(in, out, static_cast<size_t>(n), stream);
}

absl::Status NcclCollectives::AllGather(int rank, const float* in, int64_t rows, int64_t cols, float* out,
                                        float* scratch, cudaStream_t stream) {
  NcclComm* c = Comm(rank);
  if (c == nullptr) return absl::InvalidArgumentError(absl::StrCat("all_gather: no communicator for rank ", rank));
  if (rows == 1) return c->AllGatherF32(in, out, static_cast<size_t>(cols), stream);
  // NCCL concatenates the ranks' buffers; the rows are interleaved after.
  VB_RETURN_IF_ERROR_C(c->AllGatherF32(in, scratch, static_cast<size_t>(rows * cols), stream));
  for (int r = 0; r < world_; ++r) {
    VB_RETURN_IF_ERROR_C(Interleave(scratch + r * rows * cols, cols, r, world_, rows, cols, out, stream));
  }
  return absl::OkStatus();
}

void NcclCollectives::Abort(const absl::Status&) {
  // A rank that will not reach the collective its peers wait in on the GPU:
  // the communicators are torn down so that the others' kernels return.
  for (auto& c : comms_) {
    if (c != nullptr) c->Abort().IgnoreError();
  }
}

// ---- ranks sharing one GPU ------------------------------------------------------------

absl::StatusOr<std::unique_ptr<SharedGpuCollectives>> SharedGpuCollectives::Create(int ranks, int device) {
  if (ranks < 2) return absl::InvalidArgumentError(absl::StrCat("collectives for ", ranks, " ranks"));
  std::unique_ptr<SharedGpuCollectives> c(new SharedGpuCollectives(ranks));
  c->device_ = device;
  c->in_.assign(static_cast<size_t>(ranks), nullptr);
  VB_RETURN_IF_ERROR_C(CudaStatus(cudaSetDevice(device), "cudaSetDevice"));
  for (auto* evs : {&c->ready_, &c->done_}) {
    for (int r = 0; r < ranks; ++r) {
      cudaEvent_t e = nullptr;
      VB_RETURN_IF_ERROR_C(CudaStatus(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "collectives: event"));
      evs->push_back(e);
    }
  }
  return c;
}

SharedGpuCollectives::~SharedGpuCollectives() {
  for (auto* evs : {&ready_, &done_}) {
    for (cudaEvent_t e : *evs) cudaEventDestroy(e);
  }
}

std::string SharedGpuCollectives::Describe() const {
  return absl::StrCat(ranks_, " ranks sharing GPU ", device_, " (a simulation of tensor parallelism)");
}

absl::Status SharedGpuCollectives::Arrive(int rank, const void* in, cudaEvent_t ev, cudaStream_t stream) {
  if (absl::Status s = CudaStatus(cudaEventRecord(ev, stream), "collectives: event"); !s.ok()) {
    Abort(s);
    return s;
  }
  if (in != nullptr) barrier_.Locked([&] { in_[static_cast<size_t>(rank)] = in; });
  return barrier_.Wait();
}

absl::Status SharedGpuCollectives::WaitAll(const std::vector<cudaEvent_t>& evs, cudaStream_t stream) {
  for (cudaEvent_t e : evs) {
    if (absl::Status s = CudaStatus(cudaStreamWaitEvent(stream, e, 0), "collectives: waiting"); !s.ok()) {
      Abort(s);
      return s;
    }
  }
  return absl::OkStatus();
}

// Each call: every rank records `ready` after its input and meets the others
// (host barrier); its stream waits for all inputs, computes its result from
// them, records `done`; a second barrier, and its stream waits for every
// rank's `done` (no rank overwrites an input another still reads).
absl::Status SharedGpuCollectives::AllReduceSum(int rank, const float* in, float* out, int64_t n,
                                                cudaStream_t stream, const AddKernel& add) {
  if (rank < 0 || rank >= ranks_) return absl::InvalidArgumentError(absl::StrCat("all_reduce: rank ", rank));
  VB_RETURN_IF_ERROR_C(Arrive(rank, in, ready_[static_cast<size_t>(rank)], stream));
  VB_RETURN_IF_ERROR_C(WaitAll(ready_, stream));
  // Rank order, as the op defines: ((in_0 + in_1) + in_2) + ...
  absl::Status s = LaunchAdd(add, static_cast<const float*>(in_[0]), static_cast<const float*>(in_[1]), out, n,
                             stream);
  for (int r = 2; r < ranks_ && s.ok(); ++r) {
    s = LaunchAdd(add, out, static_cast<const float*>(in_[static_cast<size_t>(r)]), out, n, stream);
  }
  if (!s.ok()) {
    Abort(s);
    return s;
  }
  VB_RETURN_IF_ERROR_C(Arrive(rank, nullptr, done_[static_cast<size_t>(rank)], stream));
  return WaitAll(done_, stream);
}

absl::Status SharedGpuCollectives::AllGather(int rank, const float* in, int64_t rows, int64_t cols, float* out,
                                             float*, cudaStream_t stream) {
  if (rank < 0 || rank >= ranks_) return absl::InvalidArgumentError(absl::StrCat("all_gather: rank ", rank));
  VB_RETURN_IF_ERROR_C(Arrive(rank, in, ready_[static_cast<size_t>(rank)], stream));
  VB_RETURN_IF_ERROR_C(WaitAll(ready_, stream));
  for (int r = 0; r < ranks_; ++r) {
    absl::Status s =
        Interleave(static_cast<const float*>(in_[static_cast<size_t>(r)]), cols, r, ranks_, rows, cols, out, stream);
    if (!s.ok()) {
      Abort(s);
      return s;
    }
  }
  VB_RETURN_IF_ERROR_C(Arrive(rank, nullptr, done_[static_cast<size_t>(rank)], stream));
  return WaitAll(done_, stream);
}

}  // namespace vibrant
