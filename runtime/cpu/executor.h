// The CPU reference backend: executes an IR graph step by step.
#ifndef VIBRANT_RUNTIME_CPU_EXECUTOR_H_
#define VIBRANT_RUNTIME_CPU_EXECUTOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ir/graph.h"
#include "runtime/cpu/collectives.h"
#include "runtime/plan_validate.h"
#include "runtime/sampler.h"

namespace vibrant {

// Resolves a weight's `source` (GGUF tensor name) to its bytes, laid out as
// the IR value's dtype and shape say. The bytes must outlive the executor.
using WeightResolver =
    std::function<absl::StatusOr<absl::Span<const uint8_t>>(const std::string& source)>;

// The inputs of one step of a paged (continuous-batching) graph
// (LowerOptions::n_seq > 0): T tokens of several sequences, each with its
// position and sequence slot, and the slots' block tables ([n_seq,
// max_blocks] row-major, as the graph's block_table input).
struct BatchInputs {
  absl::Span<const int32_t> tokens;
  absl::Span<const int32_t> positions;
  absl::Span<const int32_t> seq_ids;
  absl::Span<const int32_t> block_table;
};

struct CpuExecutorOptions {
  // 0 = the physical cores this process may use (cpu::DefaultThreadCount). More than cpu::kMaxThreads, or more than the
  // machine lets us create, runs with fewer and says so through `warn`.
  int threads = 0;
  // The most bytes the graph's arenas and KV caches may take together; unset:
  // HostMemoryLimit() (VIBRANT_MAX_MEMORY, else the machine's memory). A
  // larger plan is a ResourceExhausted error at Create.
  std::optional<MemoryLimit> memory_limit;
  // Where warnings go (fewer threads than asked); unset: stderr, prefixed
  // "vibrant: ".
  std::function<void(const std::string&)> warn;
  // A tensor-parallel graph (meta tp = N, passes/shard_tensor_parallel.h):
  // the rank this executor is, which selects its shard of every sharded
  // weight (ir::Value::rank_offsets), and the collectives its all_reduce /
  // all_gather ops call (runtime/cpu/collectives.h; not owned). Required for
  // such a graph (runtime/cpu/tp_executor.h runs the N ranks), unused by others.
  int rank = 0;
  Collectives* collectives = nullptr;
  // The host's part of a plan split between a GPU and the CPU (-ngl;
  // runtime/dispatch.h: LaunchKind::kHost): only ops and values placed on the
  // cpu get memory, weights and kernels; the accelerator's executor
  // (runtime/cuda/executor.h) drives the step with BeginStep and RunOp, and
  // moves values across with ValueData. Step and StepSample are then refused.
  bool host_ops_only = false;
};

class CpuExecutor {
 public:
  static absl::StatusOr<std::unique_ptr<CpuExecutor>> Create(
      const ir::Graph& graph, WeightResolver weights, CpuExecutorOptions opts = {});
  ~CpuExecutor();

  // Runs one step over `tokens` (1..max_tokens of them) at positions
  // pos0, pos0+1, ... and returns the graph output "logits"
  // ([T or 1] x n_vocab, row-major). Fails cleanly on a token id outside the
  // vocabulary or a position past the KV cache.
  absl::StatusOr<absl::Span<const float>> Step(absl::Span<const int32_t> tokens,
                                               int32_t pos0);
  // A step of a paged graph (inputs seq_ids and block_table): returns the
  // logits of every token ([T, n_vocab]). Fails cleanly on a wrong count, an
  // id outside the vocabulary, a sequence slot outside [0, n_seq) or a block
  // table whose rows do not cover a token's positions (the kernels check
  // every block id). On a graph that is not paged: an error.
  absl::StatusOr<absl::Span<const float>> StepBatch(const BatchInputs& in);
  // Whether the graph is paged, and its block table's shape.
  bool paged() const;
  // Forgets the KV cache contents (a new sequence).
  void Reset();
  // The threads steps run on, the caller's included.
  int num_threads() const;

  // Whether the graph has a sample op (passes/append_sample: an input
  // "sampling" and an output "token"). Step then runs it greedily.
  bool samples() const;
  // Runs one step like Step, its sample op drawing with `draw`, and returns
  // the token id it drew. FailedPrecondition when the graph has no sample op.
  absl::StatusOr<int32_t> StepSample(absl::Span<const int32_t> tokens, int32_t pos0,
                                     const SampleDraw& draw);

  // Driving a step op by op (host_ops_only, or any graph): checks the step's
  // inputs as Step does and writes them (and the draw, for a sample op),
  // then RunOp runs op `op` of the graph for the step's T tokens. In
  // host_ops_only mode only ops placed on the cpu run here.
  absl::Status BeginStep(absl::Span<const int32_t> tokens, int32_t pos0, const SampleDraw& draw = SampleDraw{});
  // The same for a step of a paged graph (StepBatch's checks and inputs).
  absl::Status BeginBatch(const BatchInputs& in);
  absl::Status RunOp(int op);
  // The host bytes of value `v` (nullptr: it has none here, e.g. it lives on
  // the GPU), valid for the executor's life; the logits and the drawn token
  // of the step BeginStep began (errors when the host does not make them).
  uint8_t* ValueData(ir::ValueId v) const;
  absl::StatusOr<absl::Span<const float>> StepLogits() const;
  absl::StatusOr<int32_t> StepToken() const;
  // How many of the graph's ops this executor runs (all, or the cpu's).
  int64_t ops_run_here() const;

  // "fast kernels (avx2)", "exact kernels" or "fast and exact kernels (...)":
  // what the plan chose for this graph's ops (kernel_select.h) and the
  // instruction set the fast ones use here.
  std::string KernelSummary() const;

 private:
  absl::StatusOr<absl::Span<const float>> StepWith(absl::Span<const int32_t> tokens, int32_t pos0,
                                                   const SampleDraw& draw);
  struct Impl;
  explicit CpuExecutor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_CPU_EXECUTOR_H_
