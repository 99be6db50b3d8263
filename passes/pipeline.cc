// Pipeline::Run and DefaultPipeline (passes/pass.h).
#include <chrono>
#include <cstdio>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/append_sample.h"
#include "passes/shard_tensor_parallel.h"
#include "passes/assign_devices.h"
#include "passes/combine_matmuls.h"
#include "passes/dce.h"
#include "passes/fold_bias.h"
#include "passes/fuse_elementwise.h"
#include "passes/pass.h"
#include "passes/plan_memory.h"
#include "passes/quantize_activations.h"
#include "passes/repack_weights.h"
#include "passes/schedule_decode.h"
#include "passes/select_kernels.h"

namespace vibrant::passes {
namespace {

// "dce, assign-devices, ..." in pipeline order, each name once.
std::string NameList(const std::vector<Pass>& passes, bool optional_only) {
  std::vector<std::string> names;
  std::set<std::string> seen;
  for (const Pass& p : passes) {
    if (optional_only && !p.optional) continue;
    if (seen.insert(p.name).second) names.push_back(p.name);
  }
  return names.empty() ? "(none)" : absl::StrJoin(names, ", ");
}

}  // namespace

absl::Status Pipeline::Run(ir::Graph& graph, PassContext& ctx, const PipelineOptions& opts,
                           std::ostream& log) const {
  std::set<std::string> names, optional;
  for (const Pass& p : passes_) {
    names.insert(p.name);
    // A name is optional only when every pass of that name is.
    if (p.optional) optional.insert(p.name);
  }
  for (const Pass& p : passes_) {
    if (!p.optional) optional.erase(p.name);
  }
  for (const std::string& d : opts.disabled) {
    if (names.count(d) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--disable-pass=", d, ": no such pass (passes: ",
                                                     NameList(passes_, false), ")"));
    }
    if (optional.count(d) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--disable-pass=", d, ": pass ", d,
                       " is required and cannot be disabled (optional passes: ", NameList(passes_, true), ")"));
    }
  }
  for (const std::string& p : opts.print_after) {
    if (names.count(p) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--print-ir-after=", p, ": no such pass (passes: ",
                                                     NameList(passes_, false), ")"));
    }
  }
  if (opts.verify_each) {
    if (absl::Status s = ir::Verify(graph); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the graph given to the pipeline does not verify: ", s.message()));
    }
  }

  struct Row {
    std::string name;
    bool ran = false;
    double ms = 0;
    size_t ops_before = 0, ops_after = 0;
  };
  std::vector<Row> rows;
  using Clock = std::chrono::steady_clock;
  for (size_t i = 0; i < passes_.size(); ++i) {
    const Pass& pass = passes_[i];
    Row row;
    row.name = pass.name;
    row.ops_before = row.ops_after = graph.ops().size();
    if (opts.disabled.count(pass.name) != 0) {
      rows.push_back(row);
      continue;
    }
    const Clock::time_point t0 = Clock::now();
    absl::Status s = pass.run ? pass.run(graph, ctx) : absl::InternalError("pass has no function");
    row.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("pass ", pass.name, ": ", s.message()));
    if (opts.verify_each) {
      if (absl::Status v = ir::Verify(graph); !v.ok()) {
        return absl::InternalError(
            absl::StrCat("pass ", pass.name, " produced a graph that does not verify: ", v.message()));
      }
    }
    row.ran = true;
    row.ops_after = graph.ops().size();
    rows.push_back(row);
    if (opts.print_after_all || opts.print_after.count(pass.name) != 0) {
      log << "// IR after " << pass.name << " (pass " << i + 1 << " of " << passes_.size() << ")\n"
          << ir::PrintGraph(graph);
    }
  }
  if (opts.time_passes) {
    double total = 0;
    for (const Row& r : rows) total += r.ms;
    log << "// pass timing\n";
    log << absl::StrFormat("//   %-20s %10s %6s %18s\n", "pass", "ms", "%", "ops before -> after");
    for (const Row& r : rows) {
      if (!r.ran) {
        log << absl::StrFormat("//   %-20s %10s %6s %18s\n", r.name, "disabled", "", "");
        continue;
      }
      log << absl::StrFormat("//   %-20s %10.3f %6.1f %8d -> %-7d\n", r.name, r.ms,
                             total > 0 ? 100.0 * r.ms / total : 0.0, static_cast<int>(r.ops_before),
                             static_cast<int>(r.ops_after));
    }
    log << absl::StrFormat("//   %-20s %10.3f\n", "total", total);
  }
  return absl::OkStatus();
}

Pipeline DefaultPipeline(const PipelineConfig& config) {
  std::vector<Pass> passes;
  // Tensor parallelism: the rest of the pipeline compiles one rank's program.
  if (config.tp > 1) passes.push_back(ShardTensorParallel(config.tp));
  // The step's own sampler, before devices are assigned (the op goes where
  // the logits are made).
  if (config.append_sample) passes.push_back(AppendSample(config.sample_required));
  passes.push_back(DeadCodeElimination());
  passes.push_back(AssignDevices());
  // Biases into the matmuls' epilogues (devices with generated kernels).
  passes.push_back(FoldBias());
  passes.push_back(FuseElementwise());
  // Kernel choice for devices with generated kernels (no-ops for the cpu):
  // one kernel per group of matmuls sharing an input, explicit 8-bit
  // activations where the kernels multiply codes.
  passes.push_back(CombineMatmuls());
  passes.push_back(QuantizeActivations());
  // Whatever device assignment and fusion left unused.
  passes.push_back(DeadCodeElimination());
  // The slot for weight re-layout: after devices and fusion are final (a
  // repacked layout depends on the device and the kernel that reads it),
  // before memory planning (weights are not in the arena).
  passes.push_back(RepackWeights());
  // Every op's kernels by token count (the launches of a step), then memory
  // for the values those kernels read and write.
  passes.push_back(SelectKernels());
  passes.push_back(PlanMemory());
  // How a step of one token runs: one persistent kernel, or op by op.
  passes.push_back(ScheduleDecode());
  return Pipeline(std::move(passes));
}

}  // namespace vibrant::passes
