#include "api/model.h"

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "api/gpu_fit.h"
#include "api/plan_cache.h"
#include "compiler/compiler.h"
#include "frontends/io/file.h"
#include "frontends/lower/lower.h"
#include "ir/serialize.h"
#include "runtime/cpu/executor.h"
#include "runtime/backends.h"
#ifdef VIBRANT_WITH_CUDA
#include "codegen/nvrtc.h"
#include "runtime/cuda/device.h"
#endif

namespace vibrant {

namespace {

int64_t MetaInt(const ir::Graph& g, const std::string& key) {
  auto it = g.meta.find(key);
  if (it == g.meta.end()) return -1;
  if (const int64_t* v = std::get_if<int64_t>(&it->second)) return *v;
  return -1;
}

std::string Bytes(int64_t b) {
  if (b >= (int64_t{1} << 30)) return absl::StrFormat("%.1f GiB", b / double(int64_t{1} << 30));
  if (b >= (int64_t{1} << 20)) return absl::StrFormat("%.1f MiB", b / double(int64_t{1} << 20));
  return absl::StrCat(b, " B");
}

// Bytes of the distinct GGUF tensors a graph reads, and of its KV caches.
// The one place this library compiles (the compile library of every tool).
absl::StatusOr<compiler::Compiled> CompileForRun(const GgufFile& gguf, const std::string& device,
                                                 const std::string& arch, const LowerOptions& lower, int64_t tp,
                                                 int64_t gpu_layers) {
  compiler::CompileOptions co;
  co.device = device;
  co.arch = arch;
  co.lower = lower;
  co.tp = static_cast<int>(std::max<int64_t>(tp, 1));
  co.gpu_layers = device == "cuda" ? gpu_layers : -1;
  return compiler::CompileGguf(gguf, co);
}

// The GPU architecture the compiler targets on this machine ("" for cpu).
std::string LocalArch(const std::string& device) {
#ifdef VIBRANT_WITH_CUDA
  if (device == "cuda") {
    absl::StatusOr<CudaDeviceInfo> dev = QueryCudaDevice(0);
    return dev.ok() ? dev->arch : std::string(codegen::kDefaultCudaArch);
  }
#endif
  return "";
}

// How much of the model the GPU(s) take for --device auto: -1 the whole
// model (as many GPUs as tensor-parallel ranks, each with room for its
// share), N >= 1 the last N layers (a split with the CPU, one GPU), 0
// nothing; `why` says what it found. 0 without the CUDA backend.
int64_t GpuFit(const GgufFile& gguf, const LowerOptions& lower, int tp, std::string* why) {
#ifndef VIBRANT_WITH_CUDA
  *why = "this build has no CUDA backend";
  return 0;
#else
  absl::StatusOr<CudaDeviceInfo> dev = QueryCudaDevice(0);
  if (!dev.ok()) {
    std::string msg(dev.status().message());
    const size_t hint = msg.find("; use --device cpu");
    if (hint != std::string::npos) msg.erase(hint);
    *why = msg;
    return 0;
  }
  if (tp > 1) {
    const int count = CudaDeviceCount();
    if (count < tp) {
      *why = absl::StrCat("--tp ", tp, " needs ", tp, " GPUs, this machine has ", count);
      return 0;
    }
  }
  absl::StatusOr<ir::Graph> g = LowerGguf(gguf, lower);
  if (!g.ok()) {
    *why = std::string(g.status().message());
    return 0;
  }
  ModelBytes bytes = CountModelBytes(*g);
  // Activations, the prefill GEMM scratch and CUDA's own needs: a margin.
  constexpr int64_t kMargin = int64_t{512} << 20;
  if (tp > 1) {  // each rank its share; no split of a sharded plan
    const int64_t need = bytes.total() / tp + kMargin;
    *why = absl::StrCat(dev->name, ": each of ", tp, " ranks needs about ", Bytes(need), ", ",
                        Bytes(dev->free_bytes), " free");
    return need <= dev->free_bytes ? -1 : 0;
  }
  const int64_t fit = FitGpuLayers(bytes, dev->free_bytes, kMargin, why);
  *why = absl::StrCat(dev->name, ": ", *why);
  return fit;
#endif
}

// The model's repeating layers (<arch>.block_count), or -1.
int64_t GgufLayers(const GgufFile& gguf) {
  absl::StatusOr<std::string> arch = gguf.GetString("general.architecture");
  if (!arch.ok()) return -1;
  absl::StatusOr<int64_t> n = gguf.GetInt(absl::StrCat(*arch, ".block_count"));
  return n.ok() ? *n : -1;
}

}  // namespace

absl::StatusOr<std::string> SniffModelFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return absl::NotFoundError(absl::StrCat(path, ": cannot open (", std::strerror(err), ")"));
  }
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, not a model"));
  }
  // Regular files only: opening a FIFO for reading blocks until a writer
  // comes (issue #16); frontends/io/file.h refuses it with a named error.
  absl::StatusOr<std::string> head = io::ReadFileHead(path, 8);
  if (!head.ok()) return head.status();
  char magic[8] = {};
  std::memcpy(magic, head->data(), head->size());
  const size_t got = head->size();
  if (got >= 4 && std::memcmp(magic, "GGUF", 4) == 0) return std::string("GGUF");
  if (got == 8 && std::memcmp(magic, kPlanMagic, 8) == 0) return std::string("plan");
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": neither a GGUF model nor a Vibrant plan (it starts with neither "
                         "\"GGUF\" nor \"VBRNTPLN\")"));
}

Model::~Model() = default;

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& path, const ModelOptions& opts) {
  if (opts.device != "auto" && opts.device != "cpu" && opts.device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("device must be auto, cpu or cuda, not '", opts.device, "'"));
  }
  if (opts.n_seq < 0 || (opts.n_seq > 0 && opts.block_size <= 0)) {
    return absl::InvalidArgumentError("the sequence count must be >= 0 and the block size > 0");
  }
  if (opts.tp < 0 || opts.tp > ir::kMaxTpRanks) {
    return absl::InvalidArgumentError(absl::StrCat("--tp must be 1..", ir::kMaxTpRanks, " ranks"));
  }
  if (opts.n_ctx < 0 || opts.max_tokens < 0) {
    return absl::InvalidArgumentError("the context and step sizes must be >= 0 (0 = default)");
  }
#ifndef VIBRANT_WITH_CUDA
  if (opts.device == "cuda") {
    return absl::UnimplementedError(
        "this build has no CUDA backend (no CUDA toolkit was found when it was configured); use "
        "--device cpu");
  }
#endif
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Model> m(new Model());
  m->path_ = path;
  m->log_ = opts.log;
  if (absl::Status s = m->Init(path, opts); !s.ok()) return s;
  m->load_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return m;
}

absl::Status Model::Init(const std::string& path, const ModelOptions& opts) {
  absl::StatusOr<std::string> kind = SniffModelFile(path);
  if (!kind.ok()) return kind.status();
  if (*kind == "plan") {
    bool redo = false;
    if (absl::Status s = LoadPlanFile(path, opts, &redo); !s.ok() || !redo) return s;
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Open(path);
  if (!gguf.ok()) return gguf.status();
  return CompileFromGguf(*std::move(gguf), opts, KvTypes{}, /*gguf_is_embedded=*/false);
}

absl::Status Model::LoadPlanFile(const std::string& plan_path, const ModelOptions& opts, bool* redo) {
  absl::StatusOr<std::unique_ptr<PlanFile>> plan = PlanFile::Open(plan_path);
  if (!plan.ok()) return plan.status();
  const std::string plan_device = (*plan)->Option("device", "cpu");
  if (plan_device != "cpu" && plan_device != "cuda") {
    return absl::UnimplementedError(absl::StrCat(
        plan_path, ": compiled for device '", plan_device, "', which this build does not know"));
  }
  int64_t plan_ctx = 0, plan_max = 0;
  (void)absl::SimpleAtoi((*plan)->Option("n_ctx", "0"), &plan_ctx);
  (void)absl::SimpleAtoi((*plan)->Option("max_tokens", "0"), &plan_max);
  // The KV cache types (older plans: one "kv_type" for both).
  const std::string kv_both = (*plan)->Option("kv_type", "f16");
  absl::StatusOr<DType> kv_k = DTypeFromName((*plan)->Option("cache_type_k", kv_both));
  absl::StatusOr<DType> kv_v = DTypeFromName((*plan)->Option("cache_type_v", kv_both));
  const KvTypes kv_type = {kv_k.ok() ? *kv_k : DType::kF16, kv_v.ok() ? *kv_v : DType::kF16};

  // What the options ask for that the plan is not.
  std::string device = opts.device == "auto" ? plan_device : opts.device;
  std::string reason;
  if (device != plan_device) {
    reason = absl::StrCat("it is compiled for ", plan_device, ", --device asks for ", device);
  }
#ifdef VIBRANT_WITH_CUDA
  if (opts.device == "auto" && plan_device == "cuda") {
    absl::StatusOr<CudaDeviceInfo> dev = QueryCudaDevice(0);
    if (!dev.ok()) {
      device = "cpu";
      reason = absl::StrCat("it is compiled for cuda and there is no usable GPU (",
                            dev.status().message(), ")");
    }
  }
#else
  if (opts.device == "auto" && plan_device == "cuda") {
    device = "cpu";
    reason = "it is compiled for cuda and this build has no CUDA backend";
  }
#endif
  if (opts.n_ctx != 0 && opts.n_ctx != plan_ctx) {
    absl::StrAppend(&reason, reason.empty() ? "" : "; ", "its context is ", plan_ctx,
                    " tokens, -c asks for ", opts.n_ctx);
  }
  int64_t plan_seq = 0, plan_block = 0;
  (void)absl::SimpleAtoi((*plan)->Option("n_seq", "0"), &plan_seq);
  (void)absl::SimpleAtoi((*plan)->Option("block_size", "0"), &plan_block);
  if (opts.n_seq != plan_seq || (opts.n_seq > 0 && opts.block_size != plan_block)) {
    absl::StrAppend(&reason, reason.empty() ? "" : "; ",
                    plan_seq > 0 ? absl::StrCat("it batches ", plan_seq, " sequences in blocks of ",
                                                plan_block)
                                 : std::string("it runs one sequence"),
                    ", ", opts.n_seq > 0 ? absl::StrCat(opts.n_seq, " sequences in blocks of ",
                                                         opts.block_size, " are asked for")
                                         : std::string("one sequence is asked for"));
  }
  int64_t plan_tp = 1;
  (void)absl::SimpleAtoi((*plan)->Option("tp", "1"), &plan_tp);
  if (opts.tp != 0 && std::max<int64_t>(opts.tp, 1) != plan_tp) {
    absl::StrAppend(&reason, reason.empty() ? "" : "; ", "it is sharded for ", plan_tp, " ranks, --tp asks for ",
                    opts.tp);
  }
  int64_t plan_ngl = -1;
  (void)absl::SimpleAtoi((*plan)->Option("gpu_layers", "-1"), &plan_ngl);
  if (device == "cuda" && opts.gpu_layers != plan_ngl && (opts.gpu_layers >= 0 || plan_ngl >= 0)) {
    // -ngl of at least every layer is the unsplit plan: the layer count decides.
    int64_t n_layer = -1;
    if (absl::StatusOr<ir::Graph> g = (*plan)->LoadGraph(); g.ok()) {
      auto it = g->meta.find("n_layer");
      if (it != g->meta.end() && std::holds_alternative<int64_t>(it->second)) n_layer = std::get<int64_t>(it->second);
    }
    const int64_t asked = n_layer >= 0 && opts.gpu_layers > n_layer ? -1 : opts.gpu_layers;
    if (asked != plan_ngl) {
      absl::StrAppend(&reason, reason.empty() ? "" : "; ",
                      plan_ngl >= 0 ? absl::StrCat("it keeps all but ", plan_ngl, " layers on the CPU")
                                    : std::string("it runs every layer on the GPU"),
                      ", -ngl asks for ", asked >= 0 ? absl::StrCat(asked, " on the GPU") : std::string("all"));
    }
  }
  if (opts.max_tokens != 0 && opts.max_tokens != plan_max) {
    absl::StrAppend(&reason, reason.empty() ? "" : "; ", "its step size is ", plan_max,
                    " tokens, -b asks for ", opts.max_tokens);
  }
  if (reason.empty()) {
    device_ = plan_device;
    plan_path_ = plan_path;
    return UsePlan(*std::move(plan));
  }
  // Compile the plan's model again with what was asked.
  *redo = true;
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = (*plan)->OpenModel();
  if (!gguf.ok()) return gguf.status();
  const bool embedded = (*plan)->embedded_gguf().has_value();
  if (log_) log_(absl::StrCat(plan_path, ": ", reason, "; compiling its model again"));
  ModelOptions o = opts;
  o.device = device;
  if (o.n_ctx == 0) o.n_ctx = plan_ctx;
  if (o.max_tokens == 0) o.max_tokens = plan_max;
  if (o.tp == 0) o.tp = plan_tp;  // a recompiled plan stays sharded as it was
  if (embedded) outer_plan_ = *std::move(plan);  // the GGUF lives in its mapping
  return CompileFromGguf(*std::move(gguf), o, kv_type, embedded);
}

absl::Status Model::CompileFromGguf(std::unique_ptr<GgufFile> gguf, const ModelOptions& opts,
                                    KvTypes kv_type, bool gguf_is_embedded) {
  LowerOptions lower;
  lower.n_ctx = opts.n_ctx;
  if (opts.max_tokens > 0) lower.max_tokens = opts.max_tokens;
  lower.cache_type_k = kv_type.k;
  lower.cache_type_v = kv_type.v;
  lower.n_seq = opts.n_seq;
  lower.block_size = opts.block_size;

  std::string device = opts.device;
  // -ngl: a split asks for the GPU; one of at least every layer is none.
  int64_t gpu_layers = opts.gpu_layers;
  if (gpu_layers >= 0) {
    const int64_t n_layer = GgufLayers(*gguf);
    if (n_layer >= 0 && gpu_layers > n_layer) gpu_layers = -1;
  }
  if (gpu_layers >= 0 && device == "auto") device = "cuda";
  if (device == "auto") {
    std::string why;
    const int64_t fit = GpuFit(*gguf, lower, static_cast<int>(opts.tp), &why);
    device = fit == 0 ? "cpu" : "cuda";
    if (fit > 0) gpu_layers = fit;  // larger than the GPU: split
    if (log_) log_(absl::StrCat("device auto: ", device, " (", why, ")"));
  }
  if (device != "cuda") gpu_layers = -1;
  if (gpu_layers >= 0 && log_) {
    const int64_t n_layer = GgufLayers(*gguf);
    log_(absl::StrCat("-ngl ", gpu_layers, ": a split between the GPU and the CPU, ",
                      gpu_layers == 0 ? std::string("no layer")
                                      : absl::StrCat("layers ", n_layer - gpu_layers, "..", n_layer - 1),
                      " on the GPU, the embedding, the other layers and the output head on the CPU"));
  }
  const std::string arch = LocalArch(device);

  // The plan cache (not for a GGUF embedded in a plan: it has no path to refer to).
  std::string cache_file;
  if (opts.use_plan_cache && !gguf_is_embedded) {
    absl::StatusOr<std::string> dir =
        opts.plan_cache_dir.empty() ? DefaultPlanCacheDir() : absl::StatusOr<std::string>(opts.plan_cache_dir);
    std::error_code ec;
    if (dir.ok()) std::filesystem::create_directories(*dir, ec);
    absl::StatusOr<ModelRef> ref = MakeModelRef(*gguf);
    if (!dir.ok() || ec || !ref.ok()) {
      if (log_) {
        log_(absl::StrCat("plan cache: not used (",
                          !dir.ok() ? std::string(dir.status().message())
                          : ec      ? absl::StrCat(*dir, ": ", ec.message())
                                    : std::string(ref.status().message()),
                          "); compiling in memory"));
      }
    } else {
      PlanCacheKey key;
      key.gguf_path = ref->path;
      key.gguf_size = ref->size;
      key.gguf_fingerprint = ref->fingerprint;
      key.device = device;
      key.arch = arch;
      key.n_ctx = lower.n_ctx;
      key.max_tokens = lower.max_tokens;
      key.kv_type = absl::StrCat(std::string(DTypeName(kv_type.k)), "/", std::string(DTypeName(kv_type.v)));
      key.n_seq = lower.n_seq;
      key.block_size = lower.n_seq > 0 ? lower.block_size : 0;
      key.tp = std::max<int64_t>(opts.tp, 1);
      key.gpu_layers = gpu_layers;
      cache_file = (std::filesystem::path(*dir) / PlanCacheFileName(key)).string();
    }
  }

  if (!cache_file.empty() && std::filesystem::exists(cache_file)) {
    absl::StatusOr<std::unique_ptr<PlanFile>> plan = PlanFile::Open(cache_file);
    absl::Status used = plan.ok() ? UsePlan(*std::move(plan)) : plan.status();
    if (used.ok()) {
      device_ = device;
      plan_path_ = cache_file;
      from_cache_ = true;
      if (log_) log_(absl::StrCat("plan cache: using ", cache_file));
      return absl::OkStatus();
    }
    if (log_) log_(absl::StrCat("plan cache: ", used.message(), "; compiling again"));
  }

  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<compiler::Compiled> compiled = CompileForRun(*gguf, device, arch, lower, opts.tp, gpu_layers);
  if (!compiled.ok()) return compiled.status();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  compiled_now_ = true;
  device_ = device;
  if (!cache_file.empty()) {
    absl::Status w = compiler::WritePlanFile(cache_file, *compiled, *gguf, /*embed_weights=*/false);
    if (w.ok()) {
      absl::StatusOr<std::unique_ptr<PlanFile>> plan = PlanFile::Open(cache_file);
      if (!plan.ok()) return plan.status();
      if (log_) {
        log_(absl::StrCat("compiled ", gguf->path(), " for ", device, " in ",
                          absl::StrFormat("%.0f", ms), " ms into the plan cache: ", cache_file));
      }
      plan_path_ = cache_file;
      return UsePlan(*std::move(plan));
    }
    if (log_) log_(absl::StrCat("plan cache: cannot write (", w.message(), "); running in memory"));
  } else if (log_) {
    log_(absl::StrCat("compiled ", gguf->path(), " for ", device, " in ",
                      absl::StrFormat("%.0f", ms), " ms (in memory, not cached)"));
  }
  program_ = compiler::ToProgram(*compiled);
  gguf_ = std::move(gguf);
  return Finish();
}

absl::Status Model::UsePlan(std::unique_ptr<PlanFile> plan) {
  absl::StatusOr<Program> program = LoadProgram(*plan);
  if (!program.ok()) return program.status();
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = plan->OpenModel();
  if (!gguf.ok()) return gguf.status();
  program_ = *std::move(program);
  gguf_ = *std::move(gguf);
  plan_ = std::move(plan);
  return Finish();
}

absl::Status Model::Finish() {
  const ir::Graph& graph = program_.graph;
  n_ctx_ = MetaInt(graph, "n_ctx");
  n_vocab_ = MetaInt(graph, "n_vocab");
  if (MetaInt(graph, "paged") > 0) {
    n_seq_ = MetaInt(graph, "n_seq");
    block_size_ = MetaInt(graph, "block_size");
    max_blocks_ = MetaInt(graph, "max_blocks");
    if (n_seq_ < 1 || block_size_ < 1 || max_blocks_ < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          plan_path_.empty() ? path_ : plan_path_,
          ": section GRAPH: a paged graph lacks n_seq/block_size/max_blocks"));
    }
  }
  if (n_ctx_ < 1 || n_vocab_ < 1 || graph.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        plan_path_.empty() ? path_ : plan_path_,
        ": section GRAPH: the graph lacks n_ctx/n_vocab/max_tokens (n_ctx ", n_ctx_,
        ", n_vocab ", n_vocab_, ", max_tokens ", graph.max_tokens, ")"));
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromGguf(*gguf_);
  if (!tok.ok()) return tok.status();
  tokenizer_ = *std::move(tok);
  return absl::OkStatus();
}

std::string Model::chat_template_text() const {
  const GgufValue* v = gguf_->Find("tokenizer.chat_template");
  if (v == nullptr) return "";
  absl::StatusOr<std::string_view> s = v->AsString();
  return s.ok() ? std::string(*s) : "";
}

absl::StatusOr<std::unique_ptr<Executor>> Model::CreateExecutor(int threads) const {
  BackendOptions o;
  o.threads = threads;
  return CreateBackend(program_, GgufWeights(*gguf_), o);
}

}  // namespace vibrant
