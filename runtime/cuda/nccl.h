// NCCL, loaded at run time (dlopen): the collectives of tensor parallelism.
//
// NCCL ships only as a shared library that most machines lack, and Vibrant
// binaries must start without it (and without libcuda), so nothing links it:
// LoadNccl opens $VIBRANT_NCCL_LIBRARY when that is set (and only that file),
// else libnccl.so.2, then libnccl.so, then libnccl.so.2 in the toolkit's lib
// directory this build saw, and resolves the entry points used here. Missing
// library: NotFound; a library without them, or not NCCL 2: FailedPrecondition.
// Loading, ncclGetVersion and ncclGetUniqueId need no GPU (ncclGetUniqueId
// opens NCCL's bootstrap listener on a network interface of this host).
//
// NcclComm is one rank of a communicator: one process (or thread) per GPU,
// each on its own CUDA device, all initialised with the same unique id (rank 0
// makes it with NcclGetUniqueId and hands it to the others: runtime/tp_bootstrap.h).
//
// NVLink multicast (NVLS) stays off: LoadNccl (and NcclComm::Init) set
// NCCL_NVLS_ENABLE=0 before any communicator exists when the variable is unset. The multi-GPU
// machines this project is lent require it: a program using NVLink multicast
// can put a shared host's GPUs out of service for a day or more. An explicit
// NCCL_NVLS_ENABLE in the environment is respected.
#ifndef VIBRANT_RUNTIME_CUDA_NCCL_H_
#define VIBRANT_RUNTIME_CUDA_NCCL_H_

#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vibrant {

// The loaded library's entry points (opaque here; see nccl.cc).
struct NcclLib;

// NCCL's ncclUniqueId: 128 opaque bytes, the same on every rank.
using NcclUniqueId = std::array<uint8_t, 128>;

// The environment variable that names the one NCCL library to load.
inline constexpr char kNcclLibraryEnv[] = "VIBRANT_NCCL_LIBRARY";

// The library names LoadNccl tries, in order ($VIBRANT_NCCL_LIBRARY alone
// when it is set and non-empty).
std::vector<std::string> DefaultNcclNames();

// Loads the first of `names` that dlopen finds and resolves the entry points.
// NotFound when none loads (the message names each file tried and dlerror's
// reason); FailedPrecondition when a symbol is missing (naming the file and
// the symbols) or the library is not NCCL 2. Stays loaded for the life of the
// process. Needs no GPU.
absl::StatusOr<std::shared_ptr<const NcclLib>> LoadNccl(const std::vector<std::string>& names);
// LoadNccl(DefaultNcclNames()), loaded once per process.
absl::StatusOr<std::shared_ptr<const NcclLib>> LoadNccl();
// OK when the default library loads (the reason to print when a test skips).
absl::Status NcclAvailable();

// ncclGetVersion's code (e.g. 22809 for 2.28.9) and its parts.
struct NcclVersion {
  int code = 0;
  int major = 0, minor = 0, patch = 0;
};
NcclVersion GetNcclVersion(const NcclLib& lib);
// Decodes NCCL_VERSION_CODE (X*1000+Y*100+Z before 2.9, X*10000+Y*100+Z since).
NcclVersion DecodeNcclVersion(int code);
// The file that was loaded and the version ("libnccl.so.2, NCCL 2.28.9").
std::string NcclDescribe(const NcclLib& lib);

// ncclGetUniqueId: a fresh id for a new communicator (rank 0 calls it).
absl::StatusOr<NcclUniqueId> NcclGetUniqueId(const NcclLib& lib);

// ncclGroupStart / ncclGroupEnd: collectives (or inits) of several
// communicators driven from one thread, between these two calls, are issued
// as one.
absl::Status NcclGroupStart(const NcclLib& lib);
absl::Status NcclGroupEnd(const NcclLib& lib);

// One rank of an NCCL communicator. Not thread-safe; use it from the thread
// that drives its GPU.
class NcclComm {
 public:
  // ncclCommInitRank on the current CUDA device (the caller's cudaSetDevice).
  // Blocks until all `world_size` ranks have called it with the same id
  // (NCCL's own bootstrap has no deadline of ours), unless called between
  // NcclGroupStart and NcclGroupEnd. InvalidArgument for a rank outside
  // [0, world_size); NCCL's failures name the call, NCCL's error and its last
  // error message.
  static absl::StatusOr<std::unique_ptr<NcclComm>> Init(std::shared_ptr<const NcclLib> lib,
                                                        int rank, int world_size,
                                                        const NcclUniqueId& id);
  // Destroy() unless already destroyed or aborted (errors are dropped here).
  ~NcclComm();
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  // recv[i] = sum over ranks of send[i], i < count, f32, enqueued on `stream`.
  // send == recv (in place) is allowed.
  absl::Status AllReduceSumF32(const float* send, float* recv, size_t count, cudaStream_t stream);
  // recv[r * send_count + i] = rank r's send[i]: recv holds world_size *
  // send_count floats; enqueued on `stream`.
  absl::Status AllGatherF32(const float* send, float* recv, size_t send_count, cudaStream_t stream);
  // ncclCommGetAsyncError: OK, or the error a collective hit on the GPU side
  // (a peer gone, a network failure). Unavailable while NCCL still works on it.
  absl::Status AsyncError() const;
  // ncclCommDestroy (waits for this rank's pending work). Later calls: OK.
  absl::Status Destroy();
  // ncclCommAbort: frees the communicator without waiting (after an error).
  absl::Status Abort();

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  const NcclLib& lib() const { return *lib_; }

 private:
  NcclComm() = default;
  absl::Status Check(int result, const char* call) const;

  std::shared_ptr<const NcclLib> lib_;
  void* comm_ = nullptr;  // ncclComm_t
  int rank_ = 0;
  int world_size_ = 0;
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CUDA_NCCL_H_
