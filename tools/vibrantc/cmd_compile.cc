// vibrantc compile: GGUF -> IR -> passes -> verified graph -> plan.bin.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
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
#include "compiler/compiler.h"
#include "ir/graph.h"
#include "passes/stats.h"
#include "runtime/dispatch.h"
#include "runtime/plan.h"
#include "tools/vibrantc/commands.h"

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
    "  --kv-type T            KV cache element type of K and V: f16 (default, as\n"
    "                         llama.cpp), f32 or q8_0 (half of f16's bytes)\n"
    "  --cache-type-k T, -ctk T   the K cache's type alone (as llama.cpp's flag)\n"
    "  --cache-type-v T, -ctv T   the V cache's type alone\n"
    "  --gemm-min-rows N      cuda: matmuls of at least N token rows run as cuBLASLt GEMMs\n"
    "                         (default 32; 0 = never, the plan then needs no libcublasLt)\n"
    "  --mmq-max-rows N       cuda: matmuls of --gemm-min-rows .. N token rows on q4_0, q8_0,\n"
    "                         q4_K, q5_K, q6_K weights run the tensor-core GEMM that decodes\n"
    "                         the weights in shared memory (no f16 copy, no cuBLASLt);\n"
    "                         more rows and other types keep cuBLASLt (default 0 = never)\n"
    "  --mmq-tile 0|64|128    cuda: token rows per block of that GEMM (default 0: the rule)\n"
    "  --no-cuda-graphs       cuda: launch decode steps kernel by kernel, not as a CUDA graph\n"
    "  --gpu-sampling         the step draws its next token itself (the sample op, on the\n"
    "                         plan's device; pass append-sample): only the token id comes\n"
    "                         back per step. Default for cuda plans; on a cpu plan the op\n"
    "                         runs on the CPU\n"
    "  --no-gpu-sampling      the step returns logits and the host samples\n"
    "  --decode-schedule persistent|ops  cuda: a step of one token as one persistent\n"
    "                         kernel running the step's launches as tasks, or one launch\n"
    "                         per op (default: ops; the pass schedule-decode)\n"
    "  --decode-blocks-per-sm N  cuda: the persistent kernel's blocks per multiprocessor\n"
    "                         (default 2; implies --decode-schedule persistent)\n"
    "  -fa, --flash-attn on|off  cuda: attention on tensor cores (f16 operands; default on\n"
    "                         where the kernels serve the head size and caches)\n"
    "  --tp N                 tensor parallelism over N ranks (2..64; pass\n"
    "                         shard-tensor-parallel): the plan is each rank's program,\n"
    "                         weights split by heads, FFN columns and vocabulary, with\n"
    "                         all_reduce / all_gather where the shards meet. A cuda plan\n"
    "                         runs one rank per GPU over NCCL, a cpu plan as N simulated\n"
    "                         ranks in one process\n"
    "  -ngl, --gpu-layers N   cuda: only the last N repeating layers on the GPU (llama.cpp's\n"
    "                         -ngl); the token embedding, the other layers and, unless\n"
    "                         N > the layer count, the output head run on the CPU in the\n"
    "                         same plan (host launches in its dispatch table). Default:\n"
    "                         the whole model on the GPU\n"
    "  --all-logits           output logits for every token of a step, not just the last\n"
    "  --exact                CPU ops run the exact reference kernels (f32 activations),\n"
    "                         not the fast ones (8-bit activations, SIMD; the default);\n"
    "                         select-kernels records the choice per op (cpu.matmul.exact,\n"
    "                         cpu.matmul.q8x256, ...: --print-ir-after=select-kernels)\n"
    "  --embed-weights        copy the GGUF into the plan (self-contained); by default\n"
    "                         the plan references the GGUF by absolute path and fingerprint\n"
    "passes (passes/pass.h; the default pipeline is [append-sample,] dce, assign-devices,\n"
    "fuse-elementwise, combine-matmuls, quantize-activations, dce, repack-weights,\n"
    "select-kernels, plan-memory):\n"
    "  --print-ir-after-all   print the IR after every pass (to stderr)\n"
    "  --print-ir-after=PASS  print the IR after PASS (repeatable)\n"
    "  --time-passes          print each pass's time (to stderr)\n"
    "  --disable-pass=PASS    skip an optional pass (repeatable)\n"
    "  --explain-devices      say which device runs each op and why (to stderr)\n"
    "  --emit-cuda FILE       cuda: also write the generated kernels' CUDA C++ to FILE\n"
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
  bool exact = false;  // --exact: the CPU's exact reference kernels
  bool help = false;
  passes::PipelineOptions pipeline;
  bool explain_devices = false;
  std::string emit_cuda;  // --emit-cuda FILE
  std::string shapes;  // --shapes SPEC
  int64_t gemm_min_rows = 32;
  int64_t mmq_max_rows = 0;
  int64_t mmq_tile = 0;
  bool cuda_graphs = true;
  std::optional<bool> sample;  // --gpu-sampling / --no-gpu-sampling
  bool flash_attention = true;
  bool persistent_decode = false;
  int64_t decode_blocks_per_sm = 2;
  int64_t tp = 1;
  int64_t gpu_layers = -1;
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
    } else if (a == "--gemm-min-rows") {
      if (!int_value(&out->gemm_min_rows, 0)) return false;
    } else if (a == "--mmq-max-rows") {
      if (!int_value(&out->mmq_max_rows, 0)) return false;
    } else if (a == "--mmq-tile") {
      if (!int_value(&out->mmq_tile, 0)) return false;
      if (out->mmq_tile != 0 && out->mmq_tile != 64 && out->mmq_tile != 128) {
        return usage_error("--mmq-tile must be 0, 64 or 128");
      }
    } else if (a == "-ngl" || a == "--gpu-layers" || a == "--n-gpu-layers") {
      if (!int_value(&out->gpu_layers, 0)) return false;
    } else if (a == "--tp") {
      if (!int_value(&out->tp, 1)) return false;
      if (out->tp > 64) return usage_error(a + " must be at most 64 (ranks)");
    } else if (a == "--no-cuda-graphs") {
      out->cuda_graphs = false;
    } else if (a == "--gpu-sampling") {
      out->sample = true;
    } else if (a == "--no-gpu-sampling") {
      out->sample = false;
    } else if (a == "--decode-schedule") {
      std::string v;
      if (!value(&v)) return usage_error(a + " needs persistent or ops");
      if (v != "persistent" && v != "ops") {
        return usage_error(a + " must be persistent or ops, not '" + v + "'");
      }
      out->persistent_decode = v == "persistent";
    } else if (a == "--decode-blocks-per-sm") {
      if (!int_value(&out->decode_blocks_per_sm, 1)) return false;
      out->persistent_decode = true;
      if (out->decode_blocks_per_sm > 32) return usage_error(a + " must be at most 32");
    } else if (a == "-fa" || a == "--flash-attn") {
      std::string v;
      if (!value(&v)) return usage_error(a + " needs on or off");
      if (v != "on" && v != "off") return usage_error(a + " must be on or off, not '" + v + "'");
      out->flash_attention = v == "on";
    } else if (a == "--kv-type" || a == "--cache-type-k" || a == "-ctk" || a == "--cache-type-v" ||
               a == "-ctv") {
      std::string t;
      if (!value(&t)) return usage_error(a + " needs a value");
      DType dt;
      if (t == "f16") {
        dt = DType::kF16;
      } else if (t == "f32") {
        dt = DType::kF32;
      } else if (t == "q8_0") {
        dt = DType::kQ8_0;
      } else {
        return usage_error(a + " must be f16, f32 or q8_0, not '" + t + "'");
      }
      const bool k = a != "--cache-type-v" && a != "-ctv";
      const bool v = a != "--cache-type-k" && a != "-ctk";
      if (k) out->lower.cache_type_k = dt;
      if (v) out->lower.cache_type_v = dt;
    } else if (a == "--all-logits") {
      out->lower.all_logits = true;
    } else if (a == "--embed-weights") {
      out->embed_weights = true;
    } else if (a == "--exact") {
      out->exact = true;
    } else if (a == "--print-ir-after-all") {
      out->pipeline.print_after_all = true;
    } else if (a.rfind("--print-ir-after=", 0) == 0) {
      out->pipeline.print_after.insert(a.substr(std::string("--print-ir-after=").size()));
    } else if (a == "--time-passes") {
      out->pipeline.time_passes = true;
    } else if (a.rfind("--disable-pass=", 0) == 0) {
      out->pipeline.disabled.insert(a.substr(std::string("--disable-pass=").size()));
    } else if (a == "--emit-cuda") {
      if (!value(&out->emit_cuda)) return usage_error(a + " needs a file");
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

// Writes `text` to `path` through a temporary file and a rename (no
// half-written file on failure).
absl::Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot create ", tmp));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat(path, ": write failed"));
  }
  return absl::OkStatus();
}

// The compile options of the library (compiler/compiler.h) for these arguments.
compiler::CompileOptions ToCompileOptions(const CompileArgs& a, const std::string& device) {
  compiler::CompileOptions o;
  o.device = device;
  o.arch = a.arch;
  o.lower = a.lower;
  o.pipeline = a.pipeline;
  o.explain_devices = a.explain_devices;
  o.log = &std::cerr;
  o.cpu_exact = a.exact;
  o.gemm_min_rows = static_cast<int>(std::min<int64_t>(a.gemm_min_rows, INT32_MAX));
  o.mmq_max_rows = static_cast<int>(std::min<int64_t>(a.mmq_max_rows, INT32_MAX));
  o.mmq_tile = static_cast<int>(a.mmq_tile);
  o.cuda_graphs = a.cuda_graphs;
  o.sample = a.sample;
  o.flash_attention = a.flash_attention;
  o.tp = static_cast<int>(a.tp);
  o.gpu_layers = a.gpu_layers;
  o.decode_blocks_per_sm =
      a.persistent_decode ? static_cast<int>(std::min<int64_t>(a.decode_blocks_per_sm, 32)) : 0;
  return o;
}

void PrintNotes(const std::vector<std::string>& notes) {
  for (const std::string& note : notes) std::fprintf(stderr, "%s\n", note.c_str());
}

// "pipeline: 167 ops -> 170 ops, 150 kernels per step (+3 copies)" and the
// memory plan against one slot per activation.
void PrintPassReport(const compiler::Compiled& r) {
  const ir::Graph& g = r.graph;
  const passes::GraphStats& a = r.after;
  std::printf("pipeline: %d ops -> %d ops (%d fused); %d kernels per step", r.before.ops, a.ops, a.fused,
              a.kernels);
  if (a.copies > 0) std::printf(" (+%d copies)", a.copies);
  std::printf("\n");
  if (r.dispatch_table) {
    // The plan's launches (the IR's kernels[...] lists): what a step enqueues.
    // `tasks`: only the op-by-op launches a persistent kernel runs as tasks.
    auto count = [&](int64_t T, bool per_op = false, bool tasks = false) {
      int kernels = 0, gemms = 0, copies = 0, host = 0, transfers = 0;
      for (const dispatch::Launch* l : dispatch::LaunchesFor(*r.dispatch_table, T, per_op)) {
        if (tasks && l->runs_in != dispatch::RunsIn::kPerOpOnly) continue;
        kernels += l->kind == dispatch::LaunchKind::kKernel;
        gemms += l->kind == dispatch::LaunchKind::kGemm;
        copies += l->kind == dispatch::LaunchKind::kCopy;
        host += l->kind == dispatch::LaunchKind::kHost;
        transfers += dispatch::IsHostSide(l->kind) && l->kind != dispatch::LaunchKind::kHost;
      }
      return absl::StrCat(kernels, " kernels", gemms ? absl::StrCat(" + ", gemms, " cuBLASLt GEMMs") : "",
                          copies ? absl::StrCat(" + ", copies, " device copies") : "",
                          host ? absl::StrCat(" + ", host, " host ops and ", transfers, " host<->GPU transfers")
                               : "");
    };
    std::string decode = count(1);
    for (const dispatch::Launch& l : r.dispatch_table->launches) {
      if (l.runs_in == dispatch::RunsIn::kScheduledOnly) {
        decode = absl::StrCat("1 persistent kernel (", l.name, ", ", l.grid[0].Eval(1), " blocks x ", l.block[0],
                              " threads) running ", count(1, true, true), " as tasks");
        // Launches of their own after it (the sampler's).
        std::string after;
        for (const dispatch::Launch* o : dispatch::LaunchesFor(*r.dispatch_table, 1)) {
          if (o->runs_in == dispatch::RunsIn::kAlways) absl::StrAppend(&after, after.empty() ? "" : ", ", o->name);
        }
        if (!after.empty()) absl::StrAppend(&decode, ", then ", after);
      }
    }
    std::printf("launches: decode step (T=1) %s; T=%lld %s\n", decode.c_str(),
                static_cast<long long>(g.max_tokens), count(g.max_tokens).c_str());
  }
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
  absl::StatusOr<compiler::Compiled> c =
      compiler::CompileShapes(ShapesFromSpec(*spec), ToCompileOptions(a, device));
  if (c.ok()) PrintNotes(c->notes);
  if (!c.ok()) {
    std::fprintf(stderr, "vibrantc compile: %s\n", io::EscapeForTerminal(c.status().message(), true).c_str());
    return 1;
  }
  const ir::Graph* graph = &c->graph;
  std::printf("%s %lld layers, d %lld: %zu ops, %zu values, max_tokens %lld (shapes only, no plan written)\n",
              spec->arch.c_str(), static_cast<long long>(spec->n_layer), static_cast<long long>(spec->n_embd),
              graph->ops().size(), graph->values().size(), static_cast<long long>(graph->max_tokens));
  PrintPassReport(*c);
  return 0;
}

int64_t MetaInt(const ir::Graph& g, const std::string& key, int64_t dflt) {
  auto it = g.meta.find(key);
  if (it == g.meta.end()) return dflt;
  if (const int64_t* v = std::get_if<int64_t>(&it->second)) return *v;
  return dflt;
}

// Bytes of the distinct GGUF tensors the graph reads (views of one tensor,
// Value::source_offset, count up to the furthest byte they read).
int64_t WeightBytes(const ir::Graph& g) {
  std::map<std::string, int64_t> by_source;
  for (const ir::Value& v : g.values()) {
    if (v.storage != ir::Storage::kWeight) continue;
    absl::StatusOr<int64_t> bytes = DTypeBytes(v.dtype, ir::NumElements(v.shape, 1));
    absl::StatusOr<int64_t> skip = DTypeBytes(v.dtype, v.source_offset);
    const int64_t end = bytes.ok() && skip.ok() ? *bytes + *skip : 0;
    by_source[v.source] = std::max(by_source[v.source], end);
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
  // A context longer than the model was trained for: positions it never
  // saw, and a KV cache as large as the flag says.
  if (absl::StatusOr<std::string> arch = (*file)->Architecture(); arch.ok() && a.lower.n_ctx > 0) {
    const std::string key = *arch + ".context_length";
    absl::StatusOr<int64_t> train = (*file)->GetInt(key);
    if (train.ok() && *train > 0 && a.lower.n_ctx > *train) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--ctx-size ", a.lower.n_ctx, " exceeds the context the model was trained for (", *train,
          " tokens, ", key, " in ", a.model, ")")));
    }
  }
  absl::StatusOr<compiler::Compiled> c = compiler::CompileGguf(**file, ToCompileOptions(a, device));
  if (c.ok()) PrintNotes(c->notes);
  if (!c.ok()) return Fail(c.status());
  // The vocabulary vibrant-run will tokenize with, against the embedding's
  // rows: caught here, not as a run that prints nothing.
  if (absl::Status st = ValidateVocabulary(**file, MetaInt(c->graph, "n_vocab", -1)); !st.ok()) {
    return Fail(st);
  }
  if (absl::Status st = compiler::WritePlanFile(a.output, *c, **file, a.embed_weights); !st.ok()) {
    return Fail(st);
  }
  if (!a.emit_cuda.empty()) {
    if (c->kernel_source.empty()) return Fail(absl::InvalidArgumentError("--emit-cuda: a cpu plan has no kernels"));
    if (absl::Status st = WriteFileAtomically(a.emit_cuda, c->kernel_source); !st.ok()) return Fail(st);
  }
  std::string kernel_note;
  if (c->kernels) {
    kernel_note = absl::StrCat(", kernels for ", c->arch, " (", c->cubin_bytes, " B CUBIN + ",
                               c->ptx_bytes, " B PTX", c->kernels_from_cache ? ", from the kernel cache" : "",
                               ")");
  }
  std::string weights_where = "embedded";
  if (!a.embed_weights) {
    absl::StatusOr<ModelRef> ref = MakeModelRef(**file);
    weights_where = ref.ok() ? "referenced from " + ref->path : "referenced";
  }
  const ir::Graph& graph = c->graph;
  std::printf("%s: %zu ops, %zu values, %lld weight bytes (%s), device %s, n_ctx %lld, "
              "max_tokens %lld%s\n",
              a.output.c_str(), graph.ops().size(), graph.values().size(),
              static_cast<long long>(WeightBytes(graph)), weights_where.c_str(), device.c_str(),
              static_cast<long long>(MetaInt(graph, "n_ctx", a.lower.n_ctx)),
              static_cast<long long>(graph.max_tokens), kernel_note.c_str());
  PrintPassReport(*c);
  return 0;
}

}  // namespace vibrant::cli
