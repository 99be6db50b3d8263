// --verify's op-by-op comparison (verify.cc), used by CudaExecutor::VerifyStep.
#ifndef VIBRANT_RUNTIME_CUDA_VERIFY_H_
#define VIBRANT_RUNTIME_CUDA_VERIFY_H_

#include "runtime/cuda/executor.h"
#include "runtime/cuda/internal.h"

namespace vibrant::cuda {

// Runs the launches of a step of T tokens op by op (the step's inputs are
// already on the GPU): before each op its inputs are read back, its launches
// run, and its outputs are compared with the CPU reference on those inputs.
absl::Status VerifyOps(const ir::Graph& g, const dispatch::Table& table, const DeviceMemory& mem,
                       Launcher& launcher, cudaStream_t stream, int64_t T, double tolerance,
                       VerifyReport* report);

}  // namespace vibrant::cuda

#endif  // VIBRANT_RUNTIME_CUDA_VERIFY_H_
