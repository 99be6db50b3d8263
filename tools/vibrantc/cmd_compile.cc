// vibrantc compile: GGUF -> IR -> passes -> verified graph -> plan.bin.
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "ir/graph.h"
#include "ir/serialize.h"
#include "ir/verifier.h"
#include "runtime/plan.h"
#include "tools/vibrantc/commands.h"

namespace vibrant::cli {
namespace {

constexpr char kCompileUsage[] =
    "usage: vibrantc compile MODEL.gguf -o PLAN [options]\n"
    "  -o, --output PLAN      the plan file to write\n"
    "  --device cpu|cuda|auto backend the plan targets (default auto = cpu for now)\n"
    "  --ctx-size N           KV cache length in tokens (default: min(the model's, 4096))\n"
    "  --max-tokens N         tokens per step; longer prompts are prefilled in chunks\n"
    "                         of N (default 512)\n"
    "  --kv-type f16|f32      KV cache element type (default f16, as llama.cpp)\n"
    "  --all-logits           output logits for every token of a step, not just the last\n"
    "  --embed-weights        copy the GGUF into the plan (self-contained); by default\n"
    "                         the plan references the GGUF by absolute path and fingerprint\n";

struct CompileArgs {
  std::string model;
  std::string output;
  std::string device = "auto";
  LowerOptions lower;
  bool embed_weights = false;
  bool help = false;
};

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
  if (out->model.empty()) return usage_error("no model given");
  if (out->output.empty()) return usage_error("no output given (-o PLAN)");
  return true;
}

// The optimization passes (fusion, device placement, memory planning) run
// here, between lowering and verification, once they exist.
absl::Status RunPasses(ir::Graph& graph, const CompileArgs& args) {
  (void)graph;
  (void)args;
  return absl::OkStatus();
}

int64_t MetaInt(const ir::Graph& g, const std::string& key, int64_t dflt) {
  auto it = g.meta.find(key);
  if (it == g.meta.end()) return dflt;
  if (const int64_t* v = std::get_if<int64_t>(&it->second)) return *v;
  return dflt;
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
  std::fprintf(stderr, "vibrantc compile: %s\n", std::string(st.message()).c_str());
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
  if (a.device == "cuda") {
    std::fprintf(stderr,
                 "vibrantc compile: the CUDA backend is not built yet; use --device cpu\n");
    return 1;
  }
  const std::string device = "cpu";  // what auto resolves to while cpu is the only backend

  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(a.model);
  if (!file.ok()) return Fail(file.status());
  absl::StatusOr<ir::Graph> graph = LowerGguf(**file, a.lower);
  if (!graph.ok()) return Fail(graph.status());
  if (absl::Status st = RunPasses(*graph, a); !st.ok()) return Fail(st);
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
              "max_tokens %lld\n",
              a.output.c_str(), graph->ops().size(), graph->values().size(),
              static_cast<long long>(WeightBytes(*graph)), weights_where.c_str(), device.c_str(),
              static_cast<long long>(n_ctx), static_cast<long long>(graph->max_tokens));
  return 0;
}

}  // namespace vibrant::cli
