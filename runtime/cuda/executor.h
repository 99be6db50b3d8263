// The CUDA backend: executes a compiled program (runtime/program.h) on one
// NVIDIA GPU. It runs what the plan's dispatch table (runtime/dispatch.h)
// says, launch by launch, with the kernels the plan carries: it generates
// and compiles nothing and decides nothing (kernel choice, grouping, 8-bit
// activations, GEMMs, launch geometry and memory layout are the compiler's,
// visible in the final IR). A plan that does not fit this runtime or this GPU
// (format, architecture, a kernel missing from its module, cuBLASLt absent
// for a plan that uses it) is a named error that says to recompile.
//
// Pieces, one file each: module.cc (the kernels: CUBIN/PTX -> kernel
// handles), memory.cc (the regions: weights, KV, arena, scratch; pinned I/O),
// launch.cc (evaluating and enqueueing launches, CUDA graphs, profiling),
// verify.cc (--verify: op by op against the CPU reference), executor.cc.
#ifndef VIBRANT_RUNTIME_CUDA_EXECUTOR_H_
#define VIBRANT_RUNTIME_CUDA_EXECUTOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/backend.h"
#include "runtime/cpu/executor.h"
#include "runtime/dispatch.h"
#include "runtime/program.h"
#include "runtime/sampler.h"

namespace vibrant {

class CudaCollectives;

// How to run, not what: none of these changes the plan's launches.
struct CudaExecutorOptions {
  int device = 0;
  // Debugging: synchronize after every launch and name the op that failed
  // (no CUDA graphs). Also VIBRANT_CUDA_SYNC=1.
  bool sync_each_op = false;
  // The cuBLASLt files to try (tests); empty: DefaultCublasLtNames().
  std::vector<std::string> cublaslt_names;
  // A tensor-parallel plan (dispatch tp_ranks > 1) is run by one executor per
  // rank, each with its rank and the ranks' collectives
  // (runtime/cuda/tp_executor.h makes them); a plan of one rank ignores both.
  int rank = 0;
  CudaCollectives* collectives = nullptr;
  // A plan split between the GPU and the CPU (-ngl; dispatch kHost
  // launches): the threads of the CPU backend that runs the host's ops
  // (0: its default).
  int host_threads = 0;
  // (Environment only) VIBRANT_CUDA_PROFILE=1: time every launch with events
  // (no CUDA graphs) and print the time per kernel to stderr at destruction.
};

// One op's comparison in CudaExecutor::VerifyStep.
struct VerifyOpResult {
  int op_index = 0;
  std::string desc;       // "#12 matmul -> 'q.0' f32[T, 256]"
  double max_abs = 0;     // max |gpu - cpu| over the op's output
  double ref_max = 0;     // max |cpu|
  double rel_err = 0;     // max_abs / ref_max (inf on NaN or a size mismatch)
  bool ok = true;
};

struct VerifyReport {
  std::vector<VerifyOpResult> ops;
  int first_bad = -1;  // index into ops, -1 when all passed
  // The step's logits, as Step returns them (valid until the next step).
  absl::Span<const float> logits;
  // A plan that samples: the token its sample op drew (with VerifyStep's
  // draw, greedy without one), after the op was compared with the CPU's
  // (-1: no finite logit).
  int32_t token = -1;
};

class CudaExecutor : public Executor {
 public:
  // Fails cleanly when there is no driver or GPU, when the program is not a
  // cuda program or does not fit this GPU, or when VRAM runs out.
  static absl::StatusOr<std::unique_ptr<CudaExecutor>> Create(const Program& program,
                                                              WeightResolver weights,
                                                              CudaExecutorOptions opts = {});
  ~CudaExecutor() override;

  absl::StatusOr<absl::Span<const float>> Step(absl::Span<const int32_t> tokens,
                                               int32_t pos0) override;
  // A step of a paged plan (continuous batching): the inputs are checked
  // (token ids, positions within a sequence's blocks, sequence slots, every
  // block id a token reads) before anything runs.
  absl::StatusOr<absl::Span<const float>> StepBatch(const BatchInputs& in) override;
  void Reset() override;
  std::string Describe() const override;
  // A plan with a sample op: the step copies back the token id (4 bytes)
  // instead of the logits, in a CUDA graph of its own for decode steps.
  bool samples() const override;
  absl::StatusOr<int32_t> StepSample(absl::Span<const int32_t> tokens, int32_t pos0,
                                     const SampleDraw& draw) override;

  // Runs one step like Step (the same effect on the KV cache) with a pair of
  // CUDA events around every launch, as VIBRANT_CUDA_PROFILE=1 does (no CUDA
  // graph, so launch gaps are not hidden), and returns each launch's GPU time
  // in milliseconds, in the order of dispatch::LaunchesFor(table, T, per_op):
  // what vibrant-bench --roofline divides bytes by. launch.cc takes the times.
  // `per_op`: one launch per op even where the plan runs the step as one
  // persistent kernel (its tasks' op-by-op launches); else the launches a
  // plain step runs (the persistent kernel, timed as one).
  absl::StatusOr<std::vector<float>> ProfileStep(absl::Span<const int32_t> tokens, int32_t pos0, bool per_op = true);
  // The checks Step makes of its inputs before anything runs (token ids,
  // step size, positions within the KV cache), alone.
  absl::Status CheckStepInputs(absl::Span<const int32_t> tokens, int32_t pos0) const;
  // The program's dispatch table (what ProfileStep's times are indexed by).
  const dispatch::Table& table() const;

  // Debugging (vibrant-run --verify): runs one step op by op. Before each op
  // its inputs are copied back from the GPU; the op's launches run on the GPU
  // and the op runs with the CPU reference kernels on those same inputs; the
  // outputs are compared (max |diff| relative to max |cpu|). The step's
  // effect on the KV cache is the same as Step's. Slow (copies every operand).
  // A plan that samples draws with `draw` (greedy when null) and reports
  // the token.
  absl::StatusOr<VerifyReport> VerifyStep(absl::Span<const int32_t> tokens, int32_t pos0,
                                          double tolerance, const SampleDraw* draw = nullptr);

  // Where the kernels came from: "plan (CUBIN sm_90)" or "plan (PTX for sm_90, JIT-compiled by the driver)".
  std::string kernel_origin() const;
  // Bytes of VRAM in each region.
  int64_t weight_bytes() const;
  int64_t kv_bytes() const;
  int64_t arena_bytes() const;
  // Kernel scratch plus the cuBLASLt workspace.
  int64_t scratch_bytes() const;
  // Every allocation of the executor on the GPU.
  int64_t device_bytes() const;
  // The IR's launches for a step of `tokens` tokens (kernels and GEMMs; not
  // counting device copies), whether launched one by one or run as tasks of
  // a persistent decode kernel.
  absl::StatusOr<int> KernelLaunchesPerStep(int64_t tokens = 1) const;
  // What a plain run of such a step enqueues (a persistent decode step: its
  // one kernel, plus the sampler's launches after it).
  absl::StatusOr<int> LaunchesEnqueuedPerStep(int64_t tokens = 1) const;
  // Launches actually enqueued so far (kernels and GEMMs; a replayed CUDA
  // graph counts the launches it holds), and the GEMMs among them.
  int64_t launches_enqueued() const;
  int64_t gemm_calls() const;

 private:
  struct Impl;
  explicit CudaExecutor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CUDA_EXECUTOR_H_
