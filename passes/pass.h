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
#include "ir/graph.h"

namespace vibrant::passes {

enum class DevicePolicy { kCpu, kCuda, kAuto };

// What passes may consult besides the graph.
struct PassContext {
  DevicePolicy device = DevicePolicy::kCpu;
  // Whether the CUDA backend implements an op (set by the driver when the
  // CUDA backend is built; null means "no CUDA backend").
  std::function<bool(const ir::Op&)> cuda_supports;
  // Human-readable notes passes want to report (e.g. --explain-devices).
  std::vector<std::string> notes;
  bool explain_devices = false;
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

// The default compilation pipeline, in order.
Pipeline DefaultPipeline();

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_PASS_H_
