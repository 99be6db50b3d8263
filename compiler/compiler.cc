#include "compiler/compiler.h"

#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ir/serialize.h"
#include "ir/verifier.h"
#include "codegen/cpu_target.h"
#include "codegen/cuda_target.h"
#ifdef VIBRANT_WITH_CUDA
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
  codegen::CudaTargetOptions target_opts;
  target_opts.gemm_min_rows = opts.gemm_min_rows;
  if (opts.mmq_tile != 0 && opts.mmq_tile != 64 && opts.mmq_tile != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("--mmq-tile must be 0 (the rule), 64 or 128, not ", opts.mmq_tile));
  }
  if (opts.mmq_max_rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--mmq-max-rows must be >= 0, not ", opts.mmq_max_rows));
  }
  target_opts.mmq_max_rows = opts.mmq_max_rows;
  target_opts.mmq_tile = opts.mmq_tile;
  target_opts.gemm_weight_chunk_bytes = opts.gemm_weight_chunk_bytes;
  target_opts.cuda_graphs = opts.cuda_graphs;
  target_opts.flash_attention = opts.flash_attention;
  target_opts.pdl = opts.pdl;
  target_opts.sm_count = opts.sm_count > 0 ? opts.sm_count : 132;
  std::string arch = opts.arch;
#ifdef VIBRANT_WITH_CUDA
  const ir::Graph* g = &graph;
  ctx.cuda_supports = [g](const ir::Op& op) { return codegen::CheckCudaSupportsOp(*g, op).ok(); };
  if (out.device == "cuda" && (arch.empty() || opts.sm_count <= 0)) {
    // The local GPU, when there is one, sets the defaults.
    absl::StatusOr<CudaDeviceInfo> dev = QueryCudaDevice(0);
    if (dev.ok()) {
      if (arch.empty()) arch = dev->arch;
      if (opts.sm_count <= 0) target_opts.sm_count = dev->sm_count;
    }
  }
  if (arch.empty()) arch = codegen::kDefaultCudaArch;
#endif
  const codegen::CudaTarget target(target_opts);
  if (out.device == "cuda") ctx.cuda_kernels = &target;
  // A cpu plan's kernels: fast, or the exact reference ones (--exact).
  const codegen::CpuTarget cpu_target({.exact = opts.cpu_exact});
  // Also a cuda plan's: the ops it places on the CPU (-ngl) run them.
  ctx.cpu_kernels = &cpu_target;
  if (opts.gpu_layers >= 0 && out.device != "cuda") {
    return absl::InvalidArgumentError("--gpu-layers splits a model between the GPU and the CPU: it needs --device cuda");
  }
  if (opts.gpu_layers >= 0 && opts.tp > 1) {
    return absl::UnimplementedError("--gpu-layers with --tp: a split between GPU and CPU of a sharded plan is not built");
  }
  ctx.gpu_layers = opts.gpu_layers;
  ctx.explain_devices = opts.explain_devices;
  ctx.decode_blocks_per_sm = opts.decode_blocks_per_sm;
  out.before = passes::ComputeGraphStats(graph);
  std::ostringstream discard;
  std::ostream& log = opts.log != nullptr ? *opts.log : discard;
  // Sampling in the step: on a GPU only a token id then comes back per step
  // instead of the row of logits, and the host sampler's sort of the
  // vocabulary is gone. A cpu plan gains nothing (the host samples either
  // way), so it is off there unless asked for.
  passes::PipelineConfig pipeline_config;
  pipeline_config.append_sample = opts.sample.value_or(out.device == "cuda");
  pipeline_config.sample_required = opts.sample.value_or(false);
  pipeline_config.tp = opts.tp;
  absl::Status s = passes::DefaultPipeline(pipeline_config).Run(graph, ctx, opts.pipeline, log);
  out.notes = std::move(ctx.notes);
  if (!s.ok()) return s;
  if (absl::Status v = ir::Verify(graph); !v.ok()) {
    return absl::InternalError(
        absl::StrCat("internal error: the compiled graph does not verify: ", v.message()));
  }
  out.after = passes::ComputeGraphStats(graph);

  const int64_t n_ctx = MetaInt(graph, "n_ctx", 0);
  // The cache types (lowering names the caches cache_k.<layer> / cache_v.<layer>).
  DType kv_k = DType::kF16, kv_v = DType::kF16;
  for (const ir::Value& v : graph.values()) {
    if (v.storage == ir::Storage::kKvCache && v.producer < 0) {
      (v.name.rfind("cache_v", 0) == 0 ? kv_v : kv_k) = v.dtype;
    }
  }
  out.options = {
      {"device", out.device},
      {"n_ctx", absl::StrCat(n_ctx)},
      {"max_tokens", absl::StrCat(graph.max_tokens)},
      {"cache_type_k", std::string(DTypeName(kv_k))},
      {"cache_type_v", std::string(DTypeName(kv_v))},
      {"all_logits", MetaInt(graph, "all_logits", 0) != 0 ? "1" : "0"},
      {"sample", graph.FindValue("token") >= 0 && graph.FindValue("sampling") >= 0 ? "1" : "0"},
  };
  if (ir::TpRanks(graph) > 1) out.options.push_back({"tp", absl::StrCat(ir::TpRanks(graph))});
  {
    int64_t cpu_ops = 0;
    for (const ir::Op& op : graph.ops()) cpu_ops += op.device == ir::Device::kCpu;
    if (out.device == "cuda" && cpu_ops > 0) {  // a split plan (-ngl)
      out.options.push_back({"gpu_layers", absl::StrCat(opts.gpu_layers)});
      out.options.push_back({"host_ops", absl::StrCat(cpu_ops)});
    }
  }
  if (MetaInt(graph, "paged", 0) != 0) {  // continuous batching (LowerOptions::n_seq)
    out.options.push_back({"n_seq", absl::StrCat(MetaInt(graph, "n_seq", 0))});
    out.options.push_back({"block_size", absl::StrCat(MetaInt(graph, "block_size", 0))});
  }
#ifdef VIBRANT_WITH_CUDA
  if (out.device == "cuda") {
    std::string persistent;
    absl::StatusOr<dispatch::Table> table = codegen::LowerDispatch(graph, target_opts, &persistent);
    if (!table.ok()) return table.status();
    const std::string source = codegen::ModuleSource(codegen::KernelSetForGraph(graph)) + persistent;
    for (const std::string& name : table->kernels) {
      if (source.find(absl::StrCat(" ", name, "(")) == std::string::npos) {
        return absl::InternalError(absl::StrCat("the dispatch table launches kernel ", name,
                                                ", which the generated module does not define"));
      }
    }
    out.kernel_source = source;
    out.dispatch = dispatch::Serialize(*table);
    out.arch = arch;
    out.dispatch_table = *table;
    out.options.push_back({"arch", arch});
    if (!opts.compile_kernels) {
      out.graph = std::move(graph);
      return out;
    }
    codegen::NvrtcOptions nv;
    nv.arch = arch;
    bool hit = false;
    absl::StatusOr<KernelBundle> kernels = codegen::CompileCuda(source, codegen::kModuleName, nv, &hit);
    if (!kernels.ok()) return kernels.status();
    out.kernels = SerializeKernelBundle(*kernels);
    out.kernels_from_cache = hit;
    out.cubin_bytes = static_cast<int64_t>(kernels->cubin.size());
    out.ptx_bytes = static_cast<int64_t>(kernels->ptx.size());
    out.kernel_bundle = *std::move(kernels);
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

Program ToProgram(const Compiled& compiled) {
  Program p;
  p.graph = compiled.graph;
  p.device = compiled.device;
  p.dispatch = compiled.dispatch_table;
  p.kernels = compiled.kernel_bundle;
  return p;
}

absl::Status WritePlanFile(const std::string& path, const Compiled& compiled,
                           const GgufFile& weights, bool embed_weights) {
  PlanContents contents;
  contents.graph = ir::SerializeGraph(compiled.graph);
  contents.options = compiled.options;
  contents.options.push_back({"weights", embed_weights ? "embedded" : "referenced"});
  contents.kernels = compiled.kernels;
  contents.dispatch = compiled.dispatch;
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
