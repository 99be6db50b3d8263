#include "compiler/compiler.h"

#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ir/serialize.h"
#include "ir/verifier.h"
#ifdef VIBRANT_WITH_CUDA
#include "runtime/kernel_bundle.h"
#include "codegen/kernel_source.h"
#include "codegen/nvrtc.h"
#include "runtime/cuda/device.h"
#endif

namespace vibrant::compiler {
namespace {

int64_t MetaInt(const ir::Graph& g, const std::string& key, int64_t dflt) {
  auto it = g.meta.find(key);
  if (it == g.meta.end()) return dflt;
  if (const int64_t* v = std::get_if<int64_t>(&it->second)) return *v;
  return dflt;
}

absl::StatusOr<std::string> ResolveDevice(const std::string& device) {
  if (device == "cpu" || device == "auto" || device.empty()) return std::string("cpu");
  if (device == "cuda") {
#ifdef VIBRANT_WITH_CUDA
    return std::string("cuda");
#else
    return absl::FailedPreconditionError(
        "this build has no CUDA backend (no CUDA toolkit was found when it was configured); "
        "compile for --device cpu");
#endif
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device must be cpu, cuda or auto, not '", device, "'"));
}

}  // namespace

absl::StatusOr<Compiled> CompileGraph(ir::Graph graph, const CompileOptions& opts) {
  Compiled out;
  absl::StatusOr<std::string> device = ResolveDevice(opts.device);
  if (!device.ok()) return device.status();
  out.device = *device;

  passes::PassContext ctx;
  ctx.device = out.device == "cuda" ? passes::DevicePolicy::kCuda : passes::DevicePolicy::kCpu;
#ifdef VIBRANT_WITH_CUDA
  const ir::Graph* g = &graph;
  ctx.cuda_supports = [g](const ir::Op& op) { return codegen::CheckCudaSupportsOp(*g, op).ok(); };
#endif
  ctx.explain_devices = opts.explain_devices;
  out.before = passes::ComputeGraphStats(graph);
  std::ostringstream discard;
  std::ostream& log = opts.log != nullptr ? *opts.log : discard;
  absl::Status s = passes::DefaultPipeline().Run(graph, ctx, opts.pipeline, log);
  out.notes = std::move(ctx.notes);
  if (!s.ok()) return s;
  if (absl::Status v = ir::Verify(graph); !v.ok()) {
    return absl::InternalError(
        absl::StrCat("internal error: the compiled graph does not verify: ", v.message()));
  }
  out.after = passes::ComputeGraphStats(graph);

  const int64_t n_ctx = MetaInt(graph, "n_ctx", 0);
  DType kv = DType::kF16;
  for (const ir::Value& v : graph.values()) {
    if (v.storage == ir::Storage::kKvCache && v.producer < 0) {
      kv = v.dtype;
      break;
    }
  }
  out.options = {
      {"device", out.device},
      {"n_ctx", absl::StrCat(n_ctx)},
      {"max_tokens", absl::StrCat(graph.max_tokens)},
      {"kv_type", std::string(DTypeName(kv))},
      {"all_logits", MetaInt(graph, "all_logits", 0) != 0 ? "1" : "0"},
  };
#ifdef VIBRANT_WITH_CUDA
  if (out.device == "cuda") {
    for (const ir::Op& op : graph.ops()) {
      if (absl::Status st = codegen::CheckCudaSupportsOp(graph, op); !st.ok()) return st;
    }
    std::string arch = opts.arch;
    if (arch.empty()) {
      absl::StatusOr<CudaDeviceInfo> dev = QueryCudaDevice(0);
      arch = dev.ok() ? dev->arch : codegen::kDefaultCudaArch;
    }
    codegen::NvrtcOptions nv;
    nv.arch = arch;
    bool hit = false;
    absl::StatusOr<KernelBundle> kernels = codegen::CompileCuda(
        codegen::ModuleSource(codegen::KernelSetForGraph(graph)), codegen::kModuleName, nv, &hit);
    if (!kernels.ok()) return kernels.status();
    out.kernels = SerializeKernelBundle(*kernels);
    out.arch = arch;
    out.kernels_from_cache = hit;
    out.cubin_bytes = static_cast<int64_t>(kernels->cubin.size());
    out.ptx_bytes = static_cast<int64_t>(kernels->ptx.size());
    out.options.push_back({"arch", arch});
  }
#endif
  out.graph = std::move(graph);
  return out;
}

absl::StatusOr<Compiled> CompileGguf(const GgufFile& file, const CompileOptions& opts) {
  absl::StatusOr<ir::Graph> graph = LowerGguf(file, opts.lower);
  if (!graph.ok()) return graph.status();
  absl::StatusOr<Compiled> c = CompileGraph(*std::move(graph), opts);
  if (!c.ok()) {
    return absl::Status(c.status().code(), absl::StrCat(file.path(), ": ", c.status().message()));
  }
  return c;
}

absl::StatusOr<Compiled> CompileShapes(const ModelShapes& shapes, const CompileOptions& opts) {
  absl::StatusOr<ir::Graph> graph = LowerShapes(shapes, opts.lower);
  if (!graph.ok()) return graph.status();
  return CompileGraph(*std::move(graph), opts);
}

absl::Status WritePlanFile(const std::string& path, const Compiled& compiled,
                           const GgufFile& weights, bool embed_weights) {
  PlanContents contents;
  contents.graph = ir::SerializeGraph(compiled.graph);
  contents.options = compiled.options;
  contents.options.push_back({"weights", embed_weights ? "embedded" : "referenced"});
  contents.kernels = compiled.kernels;
  if (embed_weights) {
    contents.embedded_gguf = weights.bytes();
  } else {
    absl::StatusOr<ModelRef> ref = MakeModelRef(weights);
    if (!ref.ok()) return ref.status();
    contents.model_ref = *std::move(ref);
  }
  return WritePlan(path, contents);
}

}  // namespace vibrant::compiler
