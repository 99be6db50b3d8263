// The collectives of a tensor-parallel plan on GPUs (dispatch launches
// kAllReduce / kAllGather; ir/ops.h: all_reduce, all_gather), enqueued on
// the calling rank's stream. Two implementations:
// - NcclCollectives: one rank per GPU, through NCCL (runtime/cuda/nccl.h,
//   loaded at run time). Calls are stream-ordered and can be captured in
//   CUDA graphs; the ranks run on threads of one process
//   (runtime/cuda/tp_executor.h), or one rank per process.
// - SharedGpuCollectives: every rank on the same GPU (a sharded plan tested
//   on one card, as the CPU simulates ranks: runtime/cpu/collectives.h).
//   The ranks meet at host barriers; their streams wait on each other's
//   events, and each rank sums the inputs in rank order with the plan's own
//   vb_add kernel. Not capturable in CUDA graphs.
#ifndef VIBRANT_RUNTIME_CUDA_COLLECTIVES_H_
#define VIBRANT_RUNTIME_CUDA_COLLECTIVES_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/cpu/ranks.h"
#include "runtime/cuda/nccl.h"

namespace vibrant {

class CudaCollectives {
 public:
  // The plan's vb_add (out = a + b over n f32) and the grid it was lowered
  // with: what ranks sharing a GPU sum with.
  struct AddKernel {
    cudaKernel_t fn = nullptr;
    dim3 grid, block;
  };
  virtual ~CudaCollectives() = default;
  virtual int ranks() const = 0;
  // "NCCL 2.28.9 across 4 GPUs", "4 ranks sharing one GPU (simulation)".
  virtual std::string Describe() const = 0;
  // Whether a rank's calls may be captured in its CUDA graph.
  virtual bool capturable() const = 0;
  // out[i] = sum over ranks of their in[i], i < n, every rank the same result.
  virtual absl::Status AllReduceSum(int rank, const float* in, float* out, int64_t n, cudaStream_t stream,
                                    const AddKernel& add) = 0;
  // out[row, r * cols + j] = rank r's in[row, j]; `scratch` holds rows *
  // cols * ranks floats (NCCL gathers rank after rank).
  virtual absl::Status AllGather(int rank, const float* in, int64_t rows, int64_t cols, float* out,
                                 float* scratch, cudaStream_t stream) = 0;
  // A rank that failed outside a collective: the others stop waiting for it.
  virtual void Abort(const absl::Status& why) = 0;
  // After every rank has returned from a step that aborted: usable again
  // where the implementation can be (SharedGpuCollectives), else a no-op.
  virtual void Reset() {}
};

// One rank per GPU over NCCL. Create(): one process driving `devices.size()`
// GPUs (rank r on devices[r]), its communicators initialised together.
class NcclCollectives : public CudaCollectives {
 public:
  static absl::StatusOr<std::unique_ptr<NcclCollectives>> Create(const std::vector<int>& devices);
  // One rank of a communicator that spans processes (runtime/tp_bootstrap.h).
  static std::unique_ptr<NcclCollectives> ForOneRank(std::unique_ptr<NcclComm> comm);
  ~NcclCollectives() override;
  int ranks() const override { return world_; }
  std::string Describe() const override { return describe_; }
  bool capturable() const override { return true; }
  absl::Status AllReduceSum(int rank, const float* in, float* out, int64_t n, cudaStream_t stream,
                            const AddKernel& add) override;
  absl::Status AllGather(int rank, const float* in, int64_t rows, int64_t cols, float* out, float* scratch,
                         cudaStream_t stream) override;
  void Abort(const absl::Status& why) override;

 private:
  NcclCollectives() = default;
  NcclComm* Comm(int rank) const;
  int world_ = 0;
  std::vector<std::unique_ptr<NcclComm>> comms_;  // by rank; one entry (comms_[0]) for ForOneRank
  std::string describe_;
};

class SharedGpuCollectives : public CudaCollectives {
 public:
  // The events are made on `device` (every rank's).
  static absl::StatusOr<std::unique_ptr<SharedGpuCollectives>> Create(int ranks, int device);
  ~SharedGpuCollectives() override;
  int ranks() const override { return ranks_; }
  std::string Describe() const override;
  bool capturable() const override { return false; }
  absl::Status AllReduceSum(int rank, const float* in, float* out, int64_t n, cudaStream_t stream,
                            const AddKernel& add) override;
  absl::Status AllGather(int rank, const float* in, int64_t rows, int64_t cols, float* out, float* scratch,
                         cudaStream_t stream) override;
  void Abort(const absl::Status& why) override { barrier_.Abort(why); }
  void Reset() override { barrier_.Reset(); }

 private:
  explicit SharedGpuCollectives(int ranks) : ranks_(ranks), barrier_(ranks) {}
  // Records `ev` on `stream`, publishes `in` (unless null), and waits for
  // every rank.
  absl::Status Arrive(int rank, const void* in, cudaEvent_t ev, cudaStream_t stream);
  // `stream` waits for every rank's `evs`.
  absl::Status WaitAll(const std::vector<cudaEvent_t>& evs, cudaStream_t stream);

  const int ranks_;
  int device_ = 0;
  RankBarrier barrier_;
  std::vector<const void*> in_;
  std::vector<cudaEvent_t> ready_, done_;
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CUDA_COLLECTIVES_H_
