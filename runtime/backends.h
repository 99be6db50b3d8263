// Choosing a backend for a program (runtime/program.h) and resolving its
// weights from a GGUF: what every tool that runs a model needs, in one place.
#ifndef VIBRANT_RUNTIME_BACKENDS_H_
#define VIBRANT_RUNTIME_BACKENDS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "frontends/gguf/gguf.h"
#include "runtime/backend.h"
#include "runtime/program.h"

namespace vibrant {

struct BackendOptions {
  int threads = 0;      // cpu, and a split plan's host ops (-ngl): 0 = hardware concurrency
  int cuda_device = 0;  // cuda: the GPU index
};

// The backend the program was compiled for: the CPU reference, or CUDA
// (an error naming the build when it has no CUDA backend).
absl::StatusOr<std::unique_ptr<Executor>> CreateBackend(const Program& program, WeightResolver weights,
                                                        const BackendOptions& opts = {});

// Resolves a graph's weight sources to the tensors of `file` (which must
// outlive the resolver and the executors using it).
WeightResolver GgufWeights(const GgufFile& file);

// Whether this build has the CUDA backend.
bool HaveCudaBackend();

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_BACKENDS_H_
