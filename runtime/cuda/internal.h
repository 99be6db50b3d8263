// The CUDA runtime's pieces (one file each), shared by executor.cc and
// verify.cc. Not installed: the public interface is executor.h.
#ifndef VIBRANT_RUNTIME_CUDA_INTERNAL_H_
#define VIBRANT_RUNTIME_CUDA_INTERNAL_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "runtime/cpu/executor.h"
#include "runtime/cuda/collectives.h"
#include "runtime/cuda/cublaslt.h"
#include "runtime/cuda/device.h"
#include "runtime/dispatch.h"
#include "runtime/kernel_bundle.h"

namespace vibrant::cuda {

#define VB_RETURN_IF_ERROR(expr) \
  do {                           \
    absl::Status _s = (expr);    \
    if (!_s.ok()) return _s;     \
  } while (0)
#define VB_CUDA(call, what) VB_RETURN_IF_ERROR(CudaStatus((call), (what)))

// module.cc: the plan's kernels loaded on the GPU, by the table's kernel index.
class KernelModule {
 public:
  // Loads the CUBIN when it is for this GPU's architecture, else the PTX
  // (the driver JIT-compiles it for a newer GPU), and looks up every kernel
  // the table names. Errors name what does not fit and say to recompile.
  static absl::StatusOr<std::unique_ptr<KernelModule>> Load(const KernelBundle& bundle,
                                                            const std::vector<std::string>& names,
                                                            const CudaDeviceInfo& device);
  ~KernelModule();
  cudaKernel_t kernel(int index) const { return kernels_[index]; }
  const std::string& origin() const { return origin_; }

 private:
  KernelModule() = default;
  cudaLibrary_t library_ = nullptr;
  std::vector<cudaKernel_t> kernels_;
  std::string origin_;
};

// memory.cc: the table's regions on the GPU and the pinned step I/O.
class DeviceMemory {
 public:
  // Allocates every region (weights uploaded through `weights`, KV caches and
  // the arena zeroed) and the pinned buffers; out of memory names the region.
  // `rank`: which shard of a tensor-parallel plan's sharded weights to upload.
  static absl::StatusOr<std::unique_ptr<DeviceMemory>> Allocate(const dispatch::Table& t,
                                                                WeightResolver& weights,
                                                                const CudaDeviceInfo& device, int rank = 0);
  ~DeviceMemory();
  // The address of `b` at token count T (null for a null buffer).
  void* Address(const dispatch::BufRef& b, int64_t T) const;
  uint8_t* base(dispatch::Region r) const { return base_[static_cast<int>(r)]; }
  int64_t bytes(dispatch::Region r) const { return bytes_[static_cast<int>(r)]; }
  // Host copies of the weights the GPU holds, by weights-region offset (for
  // --verify's CPU side), or null.
  const uint8_t* HostWeight(int64_t offset) const;
  int32_t* io_host() const { return io_host_; }  // tokens [max_tokens], positions after
  // The sample op's parameters (8 i32) and the token it drew (1 i32), pinned.
  int32_t* sampling_host() const { return io_host_ + 2 * max_tokens_; }
  int32_t* token_host() const { return io_host_ + 2 * max_tokens_ + 8; }
  // Paged plans (continuous batching): seq_ids [max_tokens] and the block
  // table [n_seq * max_blocks], pinned.
  int32_t* seq_ids_host() const { return io_host_ + 2 * max_tokens_ + 16; }
  int32_t* block_table_host() const { return io_host_ + 3 * max_tokens_ + 16; }
  float* logits_host() const { return logits_host_; }

 private:
  DeviceMemory() = default;
  int64_t max_tokens_ = 0;
  uint8_t* base_[dispatch::kNumRegions] = {};
  int64_t bytes_[dispatch::kNumRegions] = {};
  std::map<int64_t, const uint8_t*> host_weights_;
  int32_t* io_host_ = nullptr;
  float* logits_host_ = nullptr;
};

// launch.cc: the table's launches, enqueued on one stream.
class Launcher {
 public:
  // `collectives`: a tensor-parallel plan's (rank `rank`), else null.
  Launcher(const ir::Graph& graph, const dispatch::Table& table, const DeviceMemory& mem,
           const KernelModule& module, RowMajorGemm* gemm, cudaStream_t stream, bool pdl,
           bool sync_each_op, bool profile, CudaCollectives* collectives = nullptr, int rank = 0,
           CpuExecutor* host = nullptr);
  ~Launcher();
  // One launch of a step of T tokens.
  absl::Status Enqueue(const dispatch::Launch& l, int64_t T);
  // What a step copies back to the host after its launches.
  enum class Output { kLogits, kToken };
  // Every launch of a step of T tokens, in order (replaying a captured CUDA
  // graph when the table allows it for this T), between the step's input
  // copies (tokens, positions, sampling parameters) and its output copy.
  // With `launch_ms`, each launch is timed with a pair of events (no CUDA
  // graph; the stream is synchronized) and launch_ms gets the times in
  // milliseconds, in the order of dispatch::LaunchesFor(table, T, per_op).
  // `per_op`: the op-by-op launches even where a persistent kernel runs the
  // step (as with sync_each_op or profile); no CUDA graph.
  absl::Status RunStep(int64_t T, Output out = Output::kLogits, std::vector<float>* launch_ms = nullptr,
                       bool per_op = false);
  int64_t enqueued() const { return enqueued_; }
  int64_t gemm_calls() const { return gemm_calls_; }
  bool graphs_used() const { return graph_note_.empty() && !sync_each_op_ && !profile_; }
  const std::string& graph_note() const { return graph_note_; }
  void PrintProfile() const;

 private:
  absl::Status Capture(int64_t T, Output out);
  absl::Status EnqueueInputs(int64_t T);
  absl::Status EnqueueOutput(int64_t T, Output out);

  const ir::Graph& graph_;
  const dispatch::Table& table_;
  const DeviceMemory& mem_;
  const KernelModule& module_;
  RowMajorGemm* gemm_;
  CudaCollectives* collectives_;
  int rank_;
  // A split plan's host side (kHost / kToHost / kFromHost launches), and
  // whether the stream has work the host must wait for before its next op.
  CpuExecutor* host_;
  bool gpu_pending_ = false;
  cudaStream_t stream_;
  bool pdl_;
  bool sync_each_op_;
  bool profile_;
  std::map<std::pair<int64_t, Output>, cudaGraphExec_t> graphs_;  // by T and output
  std::map<std::pair<int64_t, Output>, int64_t> graph_launches_;  // launches each graph holds
  std::string graph_note_;                     // why graphs are off, if they failed
  int64_t enqueued_ = 0, gemm_calls_ = 0;
  struct ProfileEntry {
    int64_t calls = 0;
    double ms = 0;
  };
  std::map<std::string, ProfileEntry> profile_by_kernel_;
  std::vector<cudaEvent_t> events_;
  int64_t profiled_steps_ = 0;
};

// "#12 matmul -> 'q.0' f32[T, 256]"
std::string OpDesc(const ir::Graph& g, int op_index);

}  // namespace vibrant::cuda

#endif  // VIBRANT_RUNTIME_CUDA_INTERNAL_H_
