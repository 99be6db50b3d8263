// vibrantc compile: GGUF -> IR -> passes -> verified graph -> plan.bin.
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "frontends/gguf/gguf.h"
#include "frontends/io/file.h"
#include "frontends/io/text.h"
#include "frontends/tokenizer/tokenizer.h"
#include "frontends/lower/lower.h"
#include "passes/pass.h"
#include "passes/stats.h"
#include "ir/graph.h"
#include "ir/serialize.h"
#include "ir/verifier.h"
#include "runtime/plan.h"
#include "tools/vibrantc/commands.h"
#ifdef VIBRANT_WITH_CUDA
#include "codegen/kernel_bundle.h"
#include "codegen/kernel_source.h"
#include "codegen/nvrtc.h"
#include "runtime/cuda/device.h"
#endif

namespace vibrant::cli {
namespace {

constexpr char kCompileUsage[] =
    "usage: vibrantc compile MODEL.gguf -o PLAN [options]\n"
    "  -o, --output PLAN      the plan file to write\n"
    "  --device cpu|cuda|auto backend the plan targets (default auto = cpu for now)\n"
    "  --arch sm_NN           GPU architecture of a cuda plan's kernels (default: the\n"
    "                         local GPU's, or sm_90 without one); the plan also carries\n"
    "                         PTX, which newer GPUs compile at load\n"
    "  --ctx-size N           KV cache length in tokens (default: min(the model's, 4096))\n"
    "  --max-tokens N         tokens per step; longer prompts are prefilled in chunks\n"
    "                         of N (default 512)\n"
    "  --kv-type f16|f32      KV cache element type (default f16, as llama.cpp)\n"
    "  --all-logits           output logits for every token of a step, not just the last\n"
    "  --embed-weights        copy the GGUF into the plan (self-contained); by default\n"
    "                         the plan references the GGUF by absolute path and fingerprint\n"
    "passes (passes/pass.h; the default pipeline is dce, assign-devices,\n"
    "fuse-elementwise, dce, repack-weights, plan-memory):\n"
    "  --print-ir-after-all   print the IR after every pass (to stderr)\n"
    "  --print-ir-after=PASS  print the IR after PASS (repeatable)\n"
    "  --time-passes          print each pass's time (to stderr)\n"
    "  --disable-pass=PASS    skip an optional pass (repeatable)\n"
    "  --explain-devices      say which device runs each op and why (to stderr)\n"
    "  --no-verify-each       do not verify the IR after every pass\n"
    "  --shapes SPEC          compile a model from its shapes alone, without a GGUF or\n"
    "                         weights, and report; writes no plan. SPEC: key=value,...\n"
    "                         with keys arch (llama|qwen2), n_layer, n_embd, n_head,\n"
    "                         n_head_kv, head_dim, n_ff, n_vocab, n_ctx_train, rope_base,\n"
    "                         eps, tied (0|1), qkv_bias (0|1), type (matrix dtype)\n";

struct CompileArgs {
  std::string model;
  std::string output;
  std::string device = "auto";
  std::string arch;  // empty: the local GPU's, else sm_90
  LowerOptions lower;
  bool embed_weights = false;
  bool help = false;
  passes::PipelineOptions pipeline;
  bool explain_devices = false;
  std::string shapes;  // --shapes SPEC
};

// --shapes SPEC: "arch=qwen2,n_layer=36,..." (see the usage).
absl::StatusOr<TransformerSpec> ParseShapesSpec(const std::string& text) {
  TransformerSpec spec;
  spec.name = "--shapes";
  bool bias_given = false;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    const std::vector<std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    if (kv.size() != 2) return absl::InvalidArgumentError(absl::StrCat("--shapes: '", item, "' is not key=value"));
    const std::string& k = kv[0];
    const std::string& v = kv[1];
    int64_t* ints[] = {&spec.n_layer, &spec.n_embd, &spec.n_head, &spec.n_head_kv, &spec.head_dim,
                       &spec.n_ff, &spec.n_vocab, &spec.n_ctx_train};
    const char* int_keys[] = {"n_layer", "n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab", "n_ctx_train"};
    bool done = false;
    for (size_t i = 0; i < std::size(int_keys); ++i) {
      if (k != int_keys[i]) continue;
      if (!absl::SimpleAtoi(v, ints[i]) || *ints[i] < 0) {
        return absl::InvalidArgumentError(absl::StrCat("--shapes: ", k, "='", v, "' is not a count"));
      }
      done = true;
    }
    if (done) continue;
    if (k == "arch") {
      spec.arch = v;
    } else if (k == "rope_base" || k == "eps") {
      if (!absl::SimpleAtod(v, k == "eps" ? &spec.rms_eps : &spec.rope_freq_base)) {
        return absl::InvalidArgumentError(absl::StrCat("--shapes: ", k, "='", v, "' is not a number"));
      }
    } else if (k == "tied" || k == "qkv_bias") {
      if (v != "0" && v != "1") return absl::InvalidArgumentError(absl::StrCat("--shapes: ", k, " must be 0 or 1"));
      (k == "tied" ? spec.tied_embeddings : spec.qkv_bias) = v == "1";
      bias_given = bias_given || k == "qkv_bias";
    } else if (k == "type") {
      absl::StatusOr<DType> t = DTypeFromName(v);
      if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat("--shapes: type: ", t.status().message()));
      spec.matrix_type = *t;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--shapes: unknown key '", k, "'"));
    }
  }
  if (!bias_given) spec.qkv_bias = spec.arch == "qwen2";
  return spec;
}

// Parses the arguments; on a usage error prints it and returns false.
bool ParseCompileArgs(const std::vector<std::string>& args, CompileArgs* out) {
  auto usage_error = [](const std::string& msg) {
    std::fprintf(stderr, "vibrantc compile: %s\n%s", msg.c_str(), kCompileUsage);
    return false;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string* v) {
      if (i + 1 >= args.size()) return false;
      *v = args[++i];
      return true;
    };
    auto int_value = [&](int64_t* v, int64_t min) {
      std::string s;
      if (!value(&s)) return usage_error(a + " needs a value");
      if (!absl::SimpleAtoi(s, v) || *v < min) {
        return usage_error(absl::StrCat(a, ": '", s, "' is not an integer >= ", min));
      }
      return true;
    };
    if (a == "-o" || a == "--output") {
      if (!value(&out->output)) return usage_error(a + " needs a value");
    } else if (a == "--device") {
      if (!value(&out->device)) return usage_error(a + " needs a value");
      if (out->device != "cpu" && out->device != "cuda" && out->device != "auto") {
        return usage_error("--device must be cpu, cuda or auto, not '" + out->device + "'");
      }
    } else if (a == "--arch") {
      if (!value(&out->arch)) return usage_error(a + " needs a value");
    } else if (a == "--ctx-size" || a == "-c") {
      if (!int_value(&out->lower.n_ctx, 0)) return false;
    } else if (a == "--max-tokens") {
      if (!int_value(&out->lower.max_tokens, 1)) return false;
    } else if (a == "--kv-type") {
      std::string t;
      if (!value(&t)) return usage_error(a + " needs a value");
      if (t == "f16") {
        out->lower.kv_dtype = DType::kF16;
      } else if (t == "f32") {
        out->lower.kv_dtype = DType::kF32;
      } else {
        return usage_error("--kv-type must be f16 or f32, not '" + t + "'");
      }
    } else if (a == "--all-logits") {
      out->lower.all_logits = true;
    } else if (a == "--embed-weights") {
      out->embed_weights = true;
    } else if (a == "--print-ir-after-all") {
      out->pipeline.print_after_all = true;
    } else if (a.rfind("--print-ir-after=", 0) == 0) {
      out->pipeline.print_after.insert(a.substr(std::string("--print-ir-after=").size()));
    } else if (a == "--time-passes") {
      out->pipeline.time_passes = true;
    } else if (a.rfind("--disable-pass=", 0) == 0) {
      out->pipeline.disabled.insert(a.substr(std::string("--disable-pass=").size()));
    } else if (a == "--explain-devices") {
      out->explain_devices = true;
    } else if (a == "--no-verify-each") {
      out->pipeline.verify_each = false;
    } else if (a == "--shapes") {
      if (!value(&out->shapes)) return usage_error(a + " needs a value");
    } else if (a == "-h" || a == "--help") {
      out->help = true;
      return true;
    } else if (!a.empty() && a[0] == '-') {
      return usage_error("unknown option '" + a + "'");
    } else if (out->model.empty()) {
      out->model = a;
    } else {
      return usage_error("unexpected argument '" + a + "'");
    }
  }
  if (!out->shapes.empty()) {
    if (!out->model.empty() || !out->output.empty()) {
      return usage_error("--shapes compiles shapes alone: no MODEL.gguf, no -o");
    }
    return true;
  }
  if (out->model.empty()) return usage_error("no model given");
  if (out->output.empty()) return usage_error("no output given (-o PLAN)");
  return true;
}

// What the passes did, for the report.
struct PassReport {
  passes::GraphStats before, after;
};

// The optimization passes (passes/pass.h: DefaultPipeline), between lowering
// and writing the plan. IR dumps, timings and device explanations go to stderr.
// `device` is what the plan targets ("cpu" or "cuda"; --device auto is
// resolved before): the device pass then places each op.
absl::Status RunPasses(ir::Graph& graph, const CompileArgs& args, const std::string& device,
                       PassReport* report) {
  passes::PassContext ctx;
  ctx.device = device == "cuda" ? passes::DevicePolicy::kCuda : passes::DevicePolicy::kCpu;
#ifdef VIBRANT_WITH_CUDA
  ctx.cuda_supports = [&graph](const ir::Op& op) { return codegen::CheckCudaSupportsOp(graph, op).ok(); };
#endif
  ctx.explain_devices = args.explain_devices;
  report->before = passes::ComputeGraphStats(graph);
  absl::Status s = passes::DefaultPipeline().Run(graph, ctx, args.pipeline, std::cerr);
  for (const std::string& note : ctx.notes) std::fprintf(stderr, "%s\n", note.c_str());
  report->after = passes::ComputeGraphStats(graph);
  return s;
}

// "pipeline: 167 ops -> 170 ops, 150 kernels per step (+3 copies)" and the
// memory plan against one slot per activation.
void PrintPassReport(const ir::Graph& g, const PassReport& r) {
  const passes::GraphStats& a = r.after;
  std::printf("pipeline: %d ops -> %d ops (%d fused); %d kernels per step", r.before.ops, a.ops, a.fused,
              a.kernels);
  if (a.copies > 0) std::printf(" (+%d copies)", a.copies);
  std::printf("\n");
  if (g.memory.empty()) return;
  std::string per_device;
  for (const auto& [device, mem] : g.memory) {
    absl::StrAppend(&per_device, per_device.empty() ? "" : ", ", std::string(ir::DeviceName(device)), " ",
                    mem.arena_bytes);
  }
  const double saved = a.activation_bytes > 0 ? 100.0 * (1.0 - double(a.arena_bytes) / a.activation_bytes) : 0;
  std::printf("memory: arena %lld bytes vs %lld bytes of activations (%.1f%% saved) [%s]; "
              "KV caches %lld bytes; at max_tokens %lld\n",
              static_cast<long long>(a.arena_bytes), static_cast<long long>(a.activation_bytes), saved,
              per_device.c_str(), static_cast<long long>(a.kv_bytes), static_cast<long long>(g.max_tokens));
}

// --shapes: lower from hyperparameters alone, run the passes, report.
int CompileShapes(const CompileArgs& a, const std::string& device) {
  absl::StatusOr<TransformerSpec> spec = ParseShapesSpec(a.shapes);
  if (!spec.ok()) {
    std::fprintf(stderr, "vibrantc compile: %s\n", io::EscapeForTerminal(spec.status().message(), true).c_str());
    return 2;
  }
  absl::StatusOr<ir::Graph> graph = LowerShapes(ShapesFromSpec(*spec), a.lower);
  PassReport report;
  absl::Status st = graph.ok() ? RunPasses(*graph, a, device, &report) : graph.status();
  if (!st.ok()) {
    std::fprintf(stderr, "vibrantc compile: %s\n", io::EscapeForTerminal(st.message(), true).c_str());
    return 1;
  }
  std::printf("%s %lld layers, d %lld: %zu ops, %zu values, max_tokens %lld (shapes only, no plan written)\n",
              spec->arch.c_str(), static_cast<long long>(spec->n_layer), static_cast<long long>(spec->n_embd),
              graph->ops().size(), graph->values().size(), static_cast<long long>(graph->max_tokens));
  PrintPassReport(*graph, report);
  return 0;
}

int64_t MetaInt(const ir::Graph& g, const std::string& key, int64_t dflt) {
  auto it = g.meta.find(key);
  if (it == g.meta.end()) return dflt;
  if (const int64_t* v = std::get_if<int64_t>(&it->second)) return *v;
  return dflt;
}

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The architecture's metadata prefix ("llama"), for messages.
std::string ArchKey(const ir::Graph& g) {
  auto it = g.meta.find("arch");
  if (it != g.meta.end()) {
    if (const std::string* s = std::get_if<std::string>(&it->second)) return io::EscapeForTerminal(*s);
  }
  return "ARCH";
}

// Bytes of the distinct GGUF tensors the graph reads.
int64_t WeightBytes(const ir::Graph& g) {
  std::map<std::string, int64_t> by_source;
  for (const ir::Value& v : g.values()) {
    if (v.storage != ir::Storage::kWeight) continue;
    absl::StatusOr<int64_t> bytes = DTypeBytes(v.dtype, ir::NumElements(v.shape, 1));
    by_source[v.source] = bytes.ok() ? *bytes : 0;
  }
  int64_t total = 0;
  for (const auto& [source, bytes] : by_source) total += bytes;
  return total;
}

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "vibrantc compile: %s\n", io::EscapeForTerminal(st.message(), true).c_str());
  return 1;
}

}  // namespace

int RunCompile(const std::vector<std::string>& args) {
  CompileArgs a;
  if (!ParseCompileArgs(args, &a)) return 2;
  if (a.help) {
    std::fputs(kCompileUsage, stdout);
    return 0;
  }
#ifndef VIBRANT_WITH_CUDA
  if (a.device == "cuda") {
    std::fprintf(stderr,
                 "vibrantc compile: this build has no CUDA backend (no CUDA toolkit was found "
                 "when it was configured); use --device cpu\n");
    return 1;
  }
#endif
  // auto resolves to cpu until the device pass chooses per op.
  const std::string device = a.device == "cuda" ? "cuda" : "cpu";

  if (!a.shapes.empty()) return CompileShapes(a, device);

  // The plan is renamed over -o at the end: never over the model it reads.
  if (absl::Status st = io::CheckOutputIsNotInput("-o", a.output, {a.model}); !st.ok()) {
    return Fail(st);
  }
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(a.model);
  if (!file.ok()) return Fail(file.status());
  absl::StatusOr<ir::Graph> graph = LowerGguf(**file, a.lower);
  if (!graph.ok()) return Fail(graph.status());
  // A context longer than the model was trained for: positions it never saw,
  // and a KV cache sized by whatever the flag said.
  if (const int64_t train = MetaInt(*graph, "n_ctx_train", 0), n_ctx = MetaInt(*graph, "n_ctx", 0);
      train > 0 && n_ctx > train) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--ctx-size ", n_ctx, " exceeds the context the model was trained for (", train,
        " tokens, ", AV(ArchKey(*graph)), ".context_length in ", a.model, ")")));
  }
  // The vocabulary vibrant-run will tokenize with: caught here, not as a
  // run that prints nothing.
  if (absl::Status st = ValidateVocabulary(**file, MetaInt(*graph, "n_vocab", -1)); !st.ok()) {
    return Fail(st);
  }
  PassReport pass_report;
  if (absl::Status st = RunPasses(*graph, a, device, &pass_report); !st.ok()) return Fail(st);
  if (absl::Status st = ir::Verify(*graph); !st.ok()) {
    return Fail(absl::InternalError(absl::StrCat(
        a.model, ": internal error: the compiled graph does not verify: ", st.message())));
  }

  PlanContents contents;
  contents.graph = ir::SerializeGraph(*graph);
  const int64_t n_ctx = MetaInt(*graph, "n_ctx", a.lower.n_ctx);
  contents.options = {
      {"device", device},
      {"n_ctx", absl::StrCat(n_ctx)},
      {"max_tokens", absl::StrCat(graph->max_tokens)},
      {"kv_type", std::string(DTypeName(a.lower.kv_dtype))},
      {"all_logits", a.lower.all_logits ? "1" : "0"},
      {"weights", a.embed_weights ? "embedded" : "referenced"},
  };
#ifdef VIBRANT_WITH_CUDA
  // The CUDA kernels for this graph, compiled now (NVRTC needs no GPU) and
  // carried in the plan; the runtime recompiles only if they do not fit.
  std::string kernel_note;
  if (device == "cuda") {
    for (const ir::Op& op : graph->ops()) {
      if (absl::Status st = codegen::CheckCudaSupportsOp(*graph, op); !st.ok()) return Fail(st);
    }
    std::string arch = a.arch;
    if (arch.empty()) {
      absl::StatusOr<CudaDeviceInfo> dev = QueryCudaDevice(0);
      arch = dev.ok() ? dev->arch : codegen::kDefaultCudaArch;
    }
    codegen::NvrtcOptions nv;
    nv.arch = arch;
    bool hit = false;
    absl::StatusOr<codegen::KernelBundle> kernels = codegen::CompileCuda(
        codegen::ModuleSource(codegen::KernelSetForGraph(*graph)), codegen::kModuleName, nv, &hit);
    if (!kernels.ok()) return Fail(kernels.status());
    contents.kernels = codegen::SerializeKernelBundle(*kernels);
    contents.options.push_back({"arch", arch});
    kernel_note = absl::StrCat(", kernels for ", arch, " (", kernels->cubin.size(), " B CUBIN + ",
                               kernels->ptx.size(), " B PTX", hit ? ", from the kernel cache" : "",
                               ")");
  }
#else
  const std::string kernel_note;
#endif
  std::string weights_where;
  if (a.embed_weights) {
    contents.embedded_gguf = (*file)->bytes();
    weights_where = "embedded";
  } else {
    absl::StatusOr<ModelRef> ref = MakeModelRef(**file);
    if (!ref.ok()) return Fail(ref.status());
    weights_where = "referenced from " + ref->path;
    contents.model_ref = *std::move(ref);
  }
  if (absl::Status st = WritePlan(a.output, contents); !st.ok()) return Fail(st);

  std::printf("%s: %zu ops, %zu values, %lld weight bytes (%s), device %s, n_ctx %lld, "
              "max_tokens %lld%s\n",
              a.output.c_str(), graph->ops().size(), graph->values().size(),
              static_cast<long long>(WeightBytes(*graph)), weights_where.c_str(), device.c_str(),
              static_cast<long long>(n_ctx), static_cast<long long>(graph->max_tokens),
              kernel_note.c_str());
  PrintPassReport(*graph, pass_report);
  return 0;
}

}  // namespace vibrant::cli
