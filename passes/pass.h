// Passes over the IR and the ordered pipeline that runs them.
//
// A pass is one function over the graph, in one file under passes/, exposed
// as a named Pass by a factory (e.g. `Pass DeadCodeElimination()`), like
// TVM's passes. The pipeline verifies the graph after every pass (in tests and
// debug builds, or when asked), can print the IR after any pass
// ("IR after <pass>") and time each pass.
#ifndef VIBRANT_PASSES_PASS_H_
#define VIBRANT_PASSES_PASS_H_

#include <functional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace vibrant::passes {

enum class DevicePolicy { kCpu, kCuda, kAuto };

// What a device with generated kernels offers the passes that choose them
// (combine-matmuls, quantize-activations, select-kernels). The CUDA target is
// codegen's (codegen/cuda_target.h); passes see only this interface.
class KernelTarget {
 public:
  virtual ~KernelTarget() = default;
  // The device whose ops this target's kernels run.
  virtual ir::Device device() const = 0;
  // Whether a matmul over weights of type `t` has kernels on 8-bit
  // activations (q8a, made by quantize_q8).
  virtual bool MatvecQ8Supports(DType t) const = 0;
  // Whether the kernel of fused op `fused` of `g` can also write its row
  // `body_output` rounded to 8 bits (a quantize_q8 appended to its body).
  virtual bool FusesQuantize(const ir::Graph& g, const ir::Op& fused, ir::ValueId body_output) const {
    return false;
  }
  // The kernel variants of op `index` of `g` (on this device), covering
  // T = 1..g.max_tokens in order, each with the launches it makes.
  // Unimplemented: no kernel for the op as it is (a fused body the generator
  // does not handle; select-kernels then inlines the body).
  virtual absl::StatusOr<std::vector<ir::KernelVariant>> SelectKernels(const ir::Graph& g,
                                                                        int index) const = 0;
};

// What passes may consult besides the graph.
struct PassContext {
  DevicePolicy device = DevicePolicy::kCpu;
  // Whether the CUDA backend implements an op (set by the driver when the
  // CUDA backend is built; null means "no CUDA backend").
  std::function<bool(const ir::Op&)> cuda_supports;
  // The CUDA kernels' target (null: no CUDA backend, or a cpu plan): the
  // passes that pick kernels consult it.
  const KernelTarget* cuda_kernels = nullptr;
  // The CPU kernels' target (codegen/cpu_target.h; null: cpu ops get no
  // kernel variants and run the exact reference kernels).
  const KernelTarget* cpu_kernels = nullptr;
  // The targets set above, CUDA first.
  std::vector<const KernelTarget*> kernel_targets() const {
    std::vector<const KernelTarget*> out;
    if (cuda_kernels != nullptr) out.push_back(cuda_kernels);
    if (cpu_kernels != nullptr) out.push_back(cpu_kernels);
    return out;
  }
  // Human-readable notes passes want to report (e.g. --explain-devices).
  std::vector<std::string> notes;
  bool explain_devices = false;
  // assign-devices: llama.cpp's -ngl. With N in [1, n_layer] (meta
  // n_layer), only the last N repeating layers run on the GPU; the input
  // layer (the token embedding), the first n_layer - N layers and the output
  // head run on the CPU, as llama.cpp places them. N > n_layer or -1: no
  // split (every op the CUDA backend has goes to the GPU; llama.cpp would
  // keep the embedding on the CPU). Ignored with policy cpu.
  int64_t gpu_layers = -1;
  // schedule-decode: blocks per multiprocessor of the persistent decode
  // kernel (0: one launch per op at T = 1).
  int decode_blocks_per_sm = 0;
};

struct Pass {
  std::string name;  // e.g. "dce", "assign-devices", "fuse-elementwise", "plan-memory"
  bool optional = false;  // may be turned off with --disable-pass
  std::function<absl::Status(ir::Graph&, PassContext&)> run;
};

struct PipelineOptions {
  bool verify_each = true;
  bool print_after_all = false;
  std::set<std::string> print_after;  // pass names
  bool time_passes = false;
  std::set<std::string> disabled;  // optional passes to skip
};

class Pipeline {
 public:
  explicit Pipeline(std::vector<Pass> passes) : passes_(std::move(passes)) {}
  // Runs the passes in order. IR dumps and timings go to `log`. Disabling a
  // pass that does not exist or is not optional is an error.
  absl::Status Run(ir::Graph& graph, PassContext& ctx, const PipelineOptions& opts,
                   std::ostream& log) const;
  const std::vector<Pass>& passes() const { return passes_; }

 private:
  std::vector<Pass> passes_;
};

// What a compile adds to the default pipeline.
struct PipelineConfig {
  // append-sample first (passes/append_sample.h): the step draws its next
  // token itself. `sample_required`: a graph it cannot sample is an error
  // (else it is left as it is).
  bool append_sample = false;
  bool sample_required = false;
  // shard-tensor-parallel first when > 1 (passes/shard_tensor_parallel.h):
  // the graph becomes each of `tp` ranks' program.
  int64_t tp = 1;
};

// The default compilation pipeline, in order.
Pipeline DefaultPipeline(const PipelineConfig& config = {});

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_PASS_H_
