// What a backend executes: a compiled plan's graph and, for the cuda device,
// its dispatch table and kernels. Made from a plan file (LoadProgram) or
// directly by the compiler (compiler::ToProgram), so that a GGUF compiled in
// memory and a plan read from disk run through the same code.
#ifndef VIBRANT_RUNTIME_PROGRAM_H_
#define VIBRANT_RUNTIME_PROGRAM_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "runtime/dispatch.h"
#include "runtime/kernel_bundle.h"
#include "runtime/plan.h"

namespace vibrant {

struct Program {
  ir::Graph graph;
  std::string device = "cpu";  // "cpu" or "cuda"
  std::optional<dispatch::Table> dispatch;  // cuda
  std::optional<KernelBundle> kernels;      // cuda
};

// The GRAPH (verified), the device from OPTIONS, and for cuda plans the
// DISPATCH and KERNELS sections (both required: a cuda plan without them is
// from an older Vibrant; recompile). Errors name the plan and the section.
absl::StatusOr<Program> LoadProgram(const PlanFile& plan);

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_PROGRAM_H_
