// The part of NCCL 2's C ABI that runtime/cuda/nccl.cc calls, declared here
// rather than taken from <nccl.h>: NCCL is not part of the CUDA toolkit (its
// header comes with libnccl-dev, or inside a PyTorch wheel), and the CUDA
// backend must build wherever the toolkit alone is installed. These
// declarations are NCCL 2's stable ABI (unchanged since NCCL 2.4); where
// <nccl.h> is present, nccl_test.cc checks every value and signature here
// against it at compile time. Internal to runtime/cuda.
#ifndef VIBRANT_RUNTIME_CUDA_NCCL_ABI_H_
#define VIBRANT_RUNTIME_CUDA_NCCL_ABI_H_

#include <cuda_runtime_api.h>

#include <cstddef>

namespace vibrant::nccl_abi {

struct Comm;  // NCCL's struct ncclComm (opaque)
using comm_t = Comm*;

// ncclResult_t
enum Result : int {
  kSuccess = 0,
  kUnhandledCudaError = 1,
  kSystemError = 2,
  kInternalError = 3,
  kInvalidArgument = 4,
  kInvalidUsage = 5,
  kRemoteError = 6,
  kInProgress = 7,
};
// ncclDataType_t (the values used here)
enum DataType : int { kFloat32 = 7 };
// ncclRedOp_t (the values used here)
enum RedOp : int { kSum = 0 };

inline constexpr int kUniqueIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES
struct UniqueId {                           // ncclUniqueId
  char internal[kUniqueIdBytes];
};

using GetVersionFn = Result (*)(int* version);
using GetUniqueIdFn = Result (*)(UniqueId* id);
using CommInitRankFn = Result (*)(comm_t* comm, int nranks, UniqueId id, int rank);
using CommDestroyFn = Result (*)(comm_t comm);
using CommAbortFn = Result (*)(comm_t comm);
using CommGetAsyncErrorFn = Result (*)(comm_t comm, Result* async_error);
using GetErrorStringFn = const char* (*)(Result result);
using GetLastErrorFn = const char* (*)(comm_t comm);
using AllReduceFn = Result (*)(const void* send, void* recv, size_t count, DataType type, RedOp op,
                               comm_t comm, cudaStream_t stream);
using AllGatherFn = Result (*)(const void* send, void* recv, size_t send_count, DataType type,
                               comm_t comm, cudaStream_t stream);
using GroupStartFn = Result (*)();
using GroupEndFn = Result (*)();

}  // namespace vibrant::nccl_abi

#endif  // VIBRANT_RUNTIME_CUDA_NCCL_ABI_H_
