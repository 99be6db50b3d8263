// vibrant-bench: prefill and decode throughput of a model, after llama-bench.
//
// For each model (a GGUF, compiled here, or a plan from `vibrantc compile`)
// and thread count: compile (GGUF only, timed), load (timed), then for each
// depth D (-d, as llama-bench's: D random tokens already in the KV cache,
// prefilled untimed; 0 = an empty cache) and each test, r repetitions:
//   ppN  one prompt of N random tokens at positions D.. (in steps of at most
//        max_tokens); t/s = N / time
//   tgN  N single-token decode steps at positions D..D+N-1; t/s = N / time.
//        A plan that samples (the sample op, default for cuda plans) returns
//        the token id of each step, greedily, as vibrant-run's generation
//        does (--tg-logits: the logits, as before GPU sampling)
// The depth is prefilled once per test: every position a repetition writes
// is written before it is read (causal attention reads rows <= its own), so
// repetitions at the same positions see the same cache contents.
// --roofline (cuda): per kernel, the bytes a decode step moves at each depth
// (codegen/launch_traffic.h), its GPU time (events around each launch,
// CudaExecutor::ProfileStep), GB/s and % of the device-to-device copy
// bandwidth measured in the same run, and the step's totals. Where the plan
// runs a decode step as one persistent kernel, the kernels are its tasks'
// op-by-op launches, and the step as run (the persistent kernel timed whole,
// plus the launches outside it) is shown too.
// Reported: mean ± sample standard deviation of t/s over the repetitions (as
// llama-bench), compile and load time, the peak resident memory of the
// process (host RSS, which includes the pages of the memory-mapped weights
// that were read) and, for GPU backends, peak device memory.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "api/version.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "compiler/compiler.h"
#include "runtime/backends.h"
#include "runtime/program.h"
#include "frontends/gguf/gguf.h"
#include "frontends/io/file.h"
#include "frontends/io/text.h"
#include "frontends/lower/lower.h"
#include "ir/graph.h"
#include "ir/serialize.h"
#include "ir/verifier.h"
#include "nlohmann/json.hpp"
#include "passes/pass.h"
#include "passes/stats.h"
#include "runtime/backend.h"
#include "runtime/cpu/executor.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/plan.h"

#include "runtime/sampler.h"

#ifdef VIBRANT_WITH_CUDA
#include "codegen/launch_traffic.h"
#include "runtime/dispatch.h"
#include "runtime/kernel_bundle.h"
#include "codegen/kernel_source.h"
#include "codegen/nvrtc.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/executor.h"
#endif

namespace vibrant {
namespace {

using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

constexpr char kUsage[] =
    "usage: vibrant-bench -m MODEL [-m MODEL ...] [options]\n"
    "\n"
    "Measures prompt processing (ppN) and generation (tgN) throughput, as llama-bench.\n"
    "\n"
    "  -m, --model FILE       a GGUF model (compiled here; compile time is reported) or a\n"
    "                         plan from `vibrantc compile`; repeat for several models\n"
    "  -p, --n-prompt N,...   prompt lengths to test (default 512; 0 = no pp test)\n"
    "  -n, --n-gen N,...      generation lengths to test (default 128; 0 = no tg test)\n"
    "  -r, --repetitions N    repetitions of each test (default 5)\n"
    "  -d, --n-depth N,...    tokens of context already in the KV cache (random, prefilled\n"
    "                         untimed) before each test (default 0), as llama-bench\n"
    "  -t, --threads N,...    CPU threads (default: the physical cores)\n"
    "  --device cpu|cuda      backend (default: cpu for a GGUF, the plan's device for a plan)\n"
    "  --ctx-size N           GGUF only: KV cache length (default: the longest test)\n"
    "  --max-tokens N         GGUF only: tokens per step (default: the longest prompt, and\n"
    "                         with -d at least min(512, depth)); longer prompts and the\n"
    "                         depth's context are processed in steps of N\n"
    "  --exact                GGUF only: CPU ops run the exact reference kernels, not the\n"
    "                         fast ones (vibrantc compile --exact)\n"
    "  --no-fusion            GGUF only: compile without elementwise fusion\n"
    "                         (--disable-pass=fuse-elementwise)\n"
    "  --no-graphs            CUDA: launch kernels one by one, not as CUDA graphs\n"
    "  --mmq-max-rows N       GGUF only, CUDA: matmuls of 32 .. N token rows on q4_0/q8_0/\n"
    "                         q4_K/q5_K/q6_K weights on the quantized tensor-core GEMM\n"
    "                         (vibrantc compile's flag; default 0 = cuBLASLt)\n"
    "  --mmq-tile 0|64|128    GGUF only, CUDA: its token rows per block (0: the rule)\n"
    "  -ngl, --n-gpu-layers N GGUF only, CUDA: the last N layers on the GPU, the rest of\n"
    "                         the model on the CPU (llama-bench's -ngl; default: all)\n"
    "  --decode-blocks-per-sm N  GGUF only, CUDA: decode steps as one persistent kernel\n"
    "                         with N blocks per multiprocessor (default 0 = one launch\n"
    "                         per op; vibrantc compile --decode-schedule)\n"
    "  --no-warmup            skip the warm-up run before each test\n"
    "  --tg-logits            tg steps copy the logits back (the host would sample) even\n"
    "                         when the plan samples on the device (default: the token id)\n"
    "  --roofline             cuda: per kernel of a decode step at each depth: bytes moved,\n"
    "                         GPU time, GB/s and % of the device-to-device copy bandwidth\n"
    "                         measured in the same run; and the step's totals (a\n"
    "                         persistent decode kernel: per task kernel, and as run)\n"
    "  --mem-bw               CPU: also measure the host's read bandwidth with the same\n"
    "                         thread count (1 GiB, best of 5) and report each tg figure\n"
    "                         against it (weight bytes per token / bandwidth = the bound)\n"
    "  --seed S               seed of the random prompt tokens (default 42)\n"
    "  --json                 one JSON document on stdout instead of a markdown table\n"
    "  --json-out FILE        also write the JSON document to FILE\n"
    "  --version              print the version and exit\n"
    "  -h, --help             this text\n";

struct Args {
  std::vector<std::string> models;
  std::vector<int64_t> n_prompt = {512};
  std::vector<int64_t> n_gen = {128};
  std::vector<int64_t> n_depth = {0};
  bool tg_logits = false;
  bool roofline = false;
  int reps = 5;
  std::vector<int> threads;
  std::string device;  // "" = default
  int64_t ctx_size = 0;
  int64_t max_tokens = 0;
  bool fusion = true;
  bool exact = false;
  bool graphs = true;
  int64_t mmq_max_rows = 0;
  int64_t mmq_tile = 0;
  int64_t decode_blocks_per_sm = 0;
  int64_t gpu_layers = -1;
  bool warmup = true;
  bool mem_bw = false;
  uint32_t seed = 42;
  bool json = false;
  std::string json_out;
  bool help = false;
};

bool UsageError(const std::string& msg) {
  std::fprintf(stderr, "vibrant-bench: %s\n%s", msg.c_str(), kUsage);
  return false;
}

template <typename T>
bool ParseList(const std::string& flag, const std::string& v, int64_t min, std::vector<T>* out) {
  out->clear();
  for (absl::string_view part : absl::StrSplit(absl::string_view(v.data(), v.size()), ',')) {
    int64_t x;
    if (!absl::SimpleAtoi(part, &x) || x < min) {
      return UsageError(absl::StrCat(flag, ": '", v, "' is not a list of integers >= ", min));
    }
    out->push_back(static_cast<T>(x));
  }
  return true;
}

bool ParseArgs(int argc, char** argv, Args* a) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& f = args[i];
    std::string v;
    auto value = [&]() {
      if (i + 1 >= args.size()) return UsageError(f + " needs a value");
      v = args[++i];
      return true;
    };
    auto int_value = [&](int64_t min, int64_t* out) {
      if (!value()) return false;
      if (!absl::SimpleAtoi(v, out) || *out < min) {
        return UsageError(absl::StrCat(f, ": '", v, "' is not an integer >= ", min));
      }
      return true;
    };
    if (f == "-h" || f == "--help") {
      a->help = true;
      return true;
    } else if (f == "-m" || f == "--model") {
      if (!value()) return false;
      a->models.push_back(v);
    } else if (f == "-p" || f == "--n-prompt") {
      if (!value() || !ParseList(f, v, 0, &a->n_prompt)) return false;
    } else if (f == "-n" || f == "--n-gen") {
      if (!value() || !ParseList(f, v, 0, &a->n_gen)) return false;
    } else if (f == "-d" || f == "--n-depth") {
      if (!value() || !ParseList(f, v, 0, &a->n_depth)) return false;
    } else if (f == "--tg-logits") {
      a->tg_logits = true;
    } else if (f == "--roofline") {
      a->roofline = true;
    } else if (f == "-r" || f == "--repetitions") {
      int64_t r;
      if (!int_value(1, &r)) return false;
      a->reps = static_cast<int>(r);
    } else if (f == "-t" || f == "--threads") {
      if (!value() || !ParseList(f, v, 1, &a->threads)) return false;
    } else if (f == "--device") {
      if (!value()) return false;
      if (v != "cpu" && v != "cuda") return UsageError("--device must be cpu or cuda, not '" + v + "'");
      a->device = v;
    } else if (f == "--ctx-size" || f == "-c") {
      if (!int_value(1, &a->ctx_size)) return false;
    } else if (f == "--max-tokens" || f == "-ub") {
      if (!int_value(1, &a->max_tokens)) return false;
    } else if (f == "--no-fusion") {
      a->fusion = false;
    } else if (f == "--exact") {
      a->exact = true;
    } else if (f == "--no-graphs") {
      a->graphs = false;
    } else if (f == "--mmq-max-rows") {
      if (!int_value(0, &a->mmq_max_rows)) return false;
    } else if (f == "--mmq-tile") {
      if (!int_value(0, &a->mmq_tile)) return false;
      if (a->mmq_tile != 0 && a->mmq_tile != 64 && a->mmq_tile != 128) {
        return UsageError("--mmq-tile must be 0, 64 or 128");
      }
    } else if (f == "--decode-blocks-per-sm") {
      if (!int_value(0, &a->decode_blocks_per_sm)) return false;
      if (a->decode_blocks_per_sm > 32) return UsageError("--decode-blocks-per-sm: at most 32");
    } else if (f == "-ngl" || f == "--n-gpu-layers") {
      if (!int_value(1, &a->gpu_layers)) return false;
    } else if (f == "--no-warmup") {
      a->warmup = false;
    } else if (f == "--mem-bw") {
      a->mem_bw = true;
    } else if (f == "--seed") {
      int64_t s;
      if (!int_value(0, &s)) return false;
      if (s > 0xFFFFFFFFll) return UsageError("--seed: '" + v + "' is larger than 4294967295");
      a->seed = static_cast<uint32_t>(s);
    } else if (f == "--json") {
      a->json = true;
    } else if (f == "--json-out") {
      if (!value()) return false;
      a->json_out = v;
    } else if (!f.empty() && f[0] == '-') {
      return UsageError("unknown option '" + f + "'");
    } else {
      return UsageError("unexpected argument '" + f + "' (models are given with -m)");
    }
  }
  if (a->models.empty()) return UsageError("no model given (-m MODEL)");
  if (a->roofline && a->device == "cpu") return UsageError("--roofline measures GPU kernels: it needs --device cuda");
  if (a->threads.empty()) {
    a->threads = {cpu::DefaultThreadCount()};
  }
  return true;
}

// ---- measurements -----------------------------------------------------------

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Peak resident set size of this process (VmHWM), in bytes; -1 if unknown.
int64_t PeakRssBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream ss(line.substr(6));
      int64_t kb = -1;
      ss >> kb;
      return kb < 0 ? -1 : kb * 1024;
    }
  }
  return -1;
}

// Starts a new peak-RSS measurement (Linux: writing 5 to clear_refs resets
// VmHWM to the current RSS). Best effort.
void ResetPeakRss() {
  std::ofstream out("/proc/self/clear_refs");
  if (out) out << "5";
}

struct Stats {
  double mean = 0, stddev = 0;
};
Stats MeanStd(const std::vector<double>& v) {
  Stats s;
  if (v.empty()) return s;
  for (double x : v) s.mean += x;
  s.mean /= v.size();
  if (v.size() > 1) {
    double ss = 0;
    for (double x : v) ss += (x - s.mean) * (x - s.mean);
    s.stddev = std::sqrt(ss / (v.size() - 1));  // sample stddev, as llama-bench
  }
  return s;
}

// ---- the model and its compilation -------------------------------------------

struct ModelInfo {
  std::string path;
  std::string kind;  // "gguf" or "plan"
  std::string arch;
  std::string ftype;  // "Q4_K - Medium", ...
  uint64_t size_bytes = 0;      // tensor data
  int64_t n_params = 0;
  uint64_t decode_weight_bytes = 0;  // weight bytes one decode step reads
  std::string desc;  // "qwen2 3.1B Q4_K - Medium"
};

std::string FtypeName(int64_t ftype) {
  switch (ftype) {
    case 0: return "all F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 7: return "Q8_0";
    case 8: return "Q5_0";
    case 9: return "Q5_1";
    case 10: return "Q2_K - Medium";
    case 11: return "Q3_K - Small";
    case 12: return "Q3_K - Medium";
    case 13: return "Q3_K - Large";
    case 14: return "Q4_K - Small";
    case 15: return "Q4_K - Medium";
    case 16: return "Q5_K - Small";
    case 17: return "Q5_K - Medium";
    case 18: return "Q6_K";
    case 32: return "BF16";
    default: return absl::StrCat("ftype ", ftype);
  }
}

// "0.5B", "3.1B", "8.0B"; "42M" below 100M parameters.
std::string ParamsLabel(int64_t n) {
  if (n >= 100000000) return absl::StrFormat("%.1fB", n / 1e9);
  return absl::StrFormat("%.0fM", n / 1e6);
}

ModelInfo DescribeModel(const GgufFile& f, const std::string& path, const std::string& kind) {
  ModelInfo m;
  m.path = path;
  m.kind = kind;
  m.arch = f.Architecture().value_or("?");
  absl::StatusOr<int64_t> ft = f.GetInt("general.file_type");
  m.ftype = ft.ok() ? FtypeName(*ft) : "?";
  const bool tied = f.FindTensor("output.weight") == nullptr;
  for (const GgufTensorInfo& t : f.tensors()) {
    m.size_bytes += t.bytes;
    m.n_params += t.elements();
    // A decode step reads every weight once, except the embedding table, of
    // which it reads one row, unless it is also the output projection.
    if (t.name == "token_embd.weight" && !tied) {
      m.decode_weight_bytes += t.dims.size() == 2 && t.dims[1] > 0 ? t.bytes / t.dims[1] : 0;
    } else {
      m.decode_weight_bytes += t.bytes;
    }
  }
  m.desc = absl::StrCat(m.arch, " ", ParamsLabel(m.n_params), " ", m.ftype);
  return m;
}

// ---- backends -----------------------------------------------------------------

struct Backend {
  std::string name;  // "CPU", "CUDA"
  std::unique_ptr<Executor> exec;
  std::string describe;  // Executor::Describe()
  // Device memory the backend allocated (weights, KV caches, arena, scratch:
  // all of it is allocated at creation, so this is also the peak); empty on
  // the host.
  std::optional<int64_t> device_bytes;
};

absl::StatusOr<Backend> MakeBackend(const Program& program, const GgufFile& weights_file, int threads) {
  Backend b;
  BackendOptions o;
  o.threads = threads;
  absl::StatusOr<std::unique_ptr<Executor>> exec = CreateBackend(program, GgufWeights(weights_file), o);
  if (!exec.ok()) return exec.status();
  b.name = program.device == "cuda" ? "CUDA" : "CPU";
  b.exec = *std::move(exec);
#ifdef VIBRANT_WITH_CUDA
  if (auto* c = dynamic_cast<CudaExecutor*>(b.exec.get()); c != nullptr) b.device_bytes = c->device_bytes();
#endif
  b.describe = b.exec->Describe();
  return b;
}

// ---- running the tests ----------------------------------------------------------

struct TestResult {
  std::string name;  // "pp512", "tg128", "tg128 @ d4096"
  int64_t n_prompt = 0, n_gen = 0, n_depth = 0;
  std::vector<double> seconds;
  Stats ts;  // tokens per second
  std::string tg_output;  // tg: what each step returns ("token" or "logits")
};

// One kernel (by name) of a decode step in the roofline.
struct RooflineRow {
  std::string name;
  int64_t launches = 0;   // per step
  int64_t bytes = 0;      // per step
  double us = 0;          // GPU time per step
};

struct Roofline {
  int64_t depth = 0;
  int steps = 0;             // decode steps profiled (their mean is shown)
  double d2d_gbps = 0;       // the copy bandwidth measured in this run (100 %)
  std::vector<RooflineRow> kernels;  // by time, descending
  RooflineRow step;          // the sums
  // A plan whose decode step is one persistent kernel: the launches a plain
  // step runs (the kernel timed whole, the sampler's after it) and their sum.
  std::optional<std::vector<RooflineRow>> as_run_kernels;
  std::optional<RooflineRow> as_run;
  std::optional<double> tg_ts;  // the tg rate at this depth (CUDA graph), when a tg test ran
};

struct RunResult {
  ModelInfo model;
  std::string backend;
  std::string describe;  // the backend's own one-line description
  std::string device;
  int threads = 0;
  std::optional<double> compile_s;
  double load_s = 0;
  int64_t n_ctx = 0, max_tokens = 0;
  passes::GraphStats graph;  // of the compiled step graph
  int64_t peak_rss = -1;
  std::optional<int64_t> peak_device;
  std::vector<TestResult> tests;
  std::vector<Roofline> roofline;
  std::optional<double> read_gbps;  // --mem-bw: host read bandwidth, GB/s
};

std::vector<int32_t> RandomTokens(int64_t n, int64_t n_vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(n_vocab - 1));
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = d(rng);
  return t;
}

// `tokens` at positions pos0.., in steps of at most max_tokens.
absl::Status Prefill(Backend& b, absl::Span<const int32_t> tokens, int64_t max_tokens, int64_t pos0 = 0) {
  for (size_t done = 0; done < tokens.size();) {
    const size_t n = std::min<size_t>(tokens.size() - done, static_cast<size_t>(max_tokens));
    absl::StatusOr<absl::Span<const float>> out =
        b.exec->Step(tokens.subspan(done, n), static_cast<int32_t>(pos0 + static_cast<int64_t>(done)));
    if (!out.ok()) return out.status();
    done += n;
  }
  return absl::OkStatus();
}

// One decode step per token at positions pos0..: the sampled token id comes
// back when the plan samples (greedy; what generation copies), else the logits.
absl::Status Generate(Backend& b, absl::Span<const int32_t> tokens, int64_t pos0, bool logits) {
  const bool sample = !logits && b.exec->samples();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t pos = static_cast<int32_t>(pos0 + static_cast<int64_t>(i));
    if (sample) {
      absl::StatusOr<int32_t> id = b.exec->StepSample(tokens.subspan(i, 1), pos, SampleDraw{});
      if (!id.ok()) return id.status();
    } else {
      absl::StatusOr<absl::Span<const float>> out = b.exec->Step(tokens.subspan(i, 1), pos);
      if (!out.ok()) return out.status();
    }
  }
  return absl::OkStatus();
}

std::string TestName(bool prompt, int64_t n, int64_t depth) {
  std::string name = absl::StrCat(prompt ? "pp" : "tg", n);
  if (depth > 0) absl::StrAppend(&name, " @ d", depth);
  return name;
}

absl::Status RunTests(const Args& a, Backend& b, int64_t n_vocab, int64_t max_tokens,
                      RunResult* r) {
  struct Test {
    bool prompt;
    int64_t n;
  };
  std::vector<Test> tests;
  for (int64_t p : a.n_prompt) {
    if (p > 0) tests.push_back({true, p});
  }
  for (int64_t n : a.n_gen) {
    if (n > 0) tests.push_back({false, n});
  }
  for (int64_t depth : a.n_depth) {
    for (const Test& t : tests) {
      // The context, then the test's own tokens (another seed: a prompt is
      // not its own context).
      const std::vector<int32_t> context = RandomTokens(depth, n_vocab, a.seed + 1);
      const std::vector<int32_t> tokens = RandomTokens(t.n, n_vocab, a.seed);
      b.exec->Reset();
      if (absl::Status s = Prefill(b, context, max_tokens); !s.ok()) return s;
      auto once = [&](int64_t n) {
        absl::Span<const int32_t> s = absl::Span<const int32_t>(tokens).subspan(0, n);
        return t.prompt ? Prefill(b, s, max_tokens, depth) : Generate(b, s, depth, a.tg_logits);
      };
      if (a.warmup) {
        if (absl::Status s = once(t.prompt ? std::min(t.n, max_tokens) : 1); !s.ok()) return s;
      }
      TestResult tr;
      tr.name = TestName(t.prompt, t.n, depth);
      (t.prompt ? tr.n_prompt : tr.n_gen) = t.n;
      tr.n_depth = depth;
      if (!t.prompt) tr.tg_output = !a.tg_logits && b.exec->samples() ? "token" : "logits";
      std::vector<double> ts;
      for (int rep = 0; rep < a.reps; ++rep) {
        const auto t0 = Clock::now();
        if (absl::Status s = once(t.n); !s.ok()) return s;
        const double sec = Seconds(Clock::now() - t0);
        tr.seconds.push_back(sec);
        ts.push_back(sec > 0 ? t.n / sec : 0.0);
      }
      tr.ts = MeanStd(ts);
      r->tests.push_back(std::move(tr));
    }
  }
  return absl::OkStatus();
}

#ifdef VIBRANT_WITH_CUDA
// --roofline: per kernel name, a decode step's bytes (launch_traffic.h) and
// GPU time (events around each launch) at each depth, against the copy
// bandwidth measured now.
constexpr int kRooflineSteps = 8;

absl::Status RunRoofline(const Args& a, Backend& b, const Program& program, int64_t n_vocab, int64_t max_tokens,
                         RunResult* r) {
  auto* cuda = dynamic_cast<CudaExecutor*>(b.exec.get());
  if (cuda == nullptr) return absl::InvalidArgumentError("--roofline needs the CUDA backend");
  absl::StatusOr<double> d2d = MeasureCopyBandwidth(0);
  if (!d2d.ok()) return d2d.status();
  const dispatch::Table& table = cuda->table();
  // Per kernel: the op-by-op launches (where the plan runs a decode step as
  // one persistent kernel, those of its tasks, run as launches of their own).
  // As run: the launches of a plain step (the persistent kernel timed whole).
  const std::vector<const dispatch::Launch*> launches = dispatch::LaunchesFor(table, 1, /*per_op=*/true);
  const std::vector<const dispatch::Launch*> plain = dispatch::LaunchesFor(table, 1);
  const bool scheduled = std::any_of(plain.begin(), plain.end(), [](const dispatch::Launch* l) {
    return l->runs_in == dispatch::RunsIn::kScheduledOnly;
  });
  for (int64_t depth : a.n_depth) {
    const std::vector<int32_t> context = RandomTokens(depth, n_vocab, a.seed + 1);
    const std::vector<int32_t> tokens = RandomTokens(kRooflineSteps + 1, n_vocab, a.seed);
    b.exec->Reset();
    if (absl::Status s = Prefill(b, context, max_tokens); !s.ok()) return s;
    // A warm-up step (its launches' first run), then the measured ones.
    if (absl::Status s = Generate(b, absl::Span<const int32_t>(tokens).subspan(0, 1), depth, true); !s.ok()) return s;
    std::map<std::string, RooflineRow> by_name, as_run;
    auto add = [](std::map<std::string, RooflineRow>& rows, const std::vector<const dispatch::Launch*>& ls,
                  const std::vector<float>& ms, const std::vector<codegen::LaunchBytes>& bytes) {
      for (size_t k = 0; k < ls.size(); ++k) {
        RooflineRow& row = rows[ls[k]->name];
        row.name = ls[k]->name;
        row.launches += 1;
        row.bytes += bytes[k].total();
        row.us += 1000.0 * ms[k];
      }
    };
    for (int i = 0; i < kRooflineSteps; ++i) {
      const int64_t pos = depth + i;  // rewrites the warm-up's row first
      const int32_t* token = &tokens[i + 1];
      codegen::TrafficOptions to;
      to.pos0 = pos;
      to.per_op = true;
      absl::StatusOr<std::vector<float>> ms = cuda->ProfileStep({token, 1}, static_cast<int32_t>(pos), true);
      if (!ms.ok()) return ms.status();
      const std::vector<codegen::LaunchBytes> bytes = codegen::StepTraffic(program.graph, table, 1, to);
      if (ms->size() != launches.size() || bytes.size() != launches.size()) {
        return absl::InternalError("--roofline: the profiled launches are not the table's");
      }
      add(by_name, launches, *ms, bytes);
      if (scheduled) {
        // The same token at the same position again: the same KV row.
        to.per_op = false;
        ms = cuda->ProfileStep({token, 1}, static_cast<int32_t>(pos), false);
        if (!ms.ok()) return ms.status();
        const std::vector<codegen::LaunchBytes> run_bytes = codegen::StepTraffic(program.graph, table, 1, to);
        if (ms->size() != plain.size() || run_bytes.size() != plain.size()) {
          return absl::InternalError("--roofline: the profiled launches are not the table's");
        }
        add(as_run, plain, *ms, run_bytes);
      }
    }
    Roofline rl;
    rl.depth = depth;
    rl.steps = kRooflineSteps;
    rl.d2d_gbps = *d2d;
    auto finish = [](std::map<std::string, RooflineRow>& rows, std::vector<RooflineRow>* out, RooflineRow* sum) {
      for (auto& [name, row] : rows) {
        row.launches /= kRooflineSteps;
        row.bytes /= kRooflineSteps;
        row.us /= kRooflineSteps;
        sum->launches += row.launches;
        sum->bytes += row.bytes;
        sum->us += row.us;
        out->push_back(row);
      }
      std::sort(out->begin(), out->end(), [](const RooflineRow& x, const RooflineRow& y) { return x.us > y.us; });
    };
    rl.step.name = scheduled ? "step (sum of op-by-op launches)" : "step (sum of launches)";
    finish(by_name, &rl.kernels, &rl.step);
    if (scheduled) {
      RooflineRow sum;
      sum.name = "step as run (persistent kernel + launches)";
      rl.as_run_kernels.emplace();
      finish(as_run, &*rl.as_run_kernels, &sum);
      rl.as_run = sum;
    }
    for (const TestResult& t : r->tests) {
      if (t.n_gen > 0 && t.n_depth == depth) rl.tg_ts = t.ts.mean;
    }
    r->roofline.push_back(std::move(rl));
  }
  return absl::OkStatus();
}
#endif

int64_t MetaInt(const ir::Graph& g, const std::string& key) {
  auto it = g.meta.find(key);
  if (it == g.meta.end()) return -1;
  if (const int64_t* v = std::get_if<int64_t>(&it->second)) return *v;
  return -1;
}

bool IsPlan(const std::string& path) {
  // Never blocks (a FIFO is not a plan; opening it as a GGUF then says why).
  absl::StatusOr<std::string> magic = io::ReadFileHead(path, 8);
  return magic.ok() && magic->size() == 8 && std::equal(magic->begin(), magic->end(), kPlanMagic);
}

// Host memory read bandwidth with `threads` threads, GB/s: each thread sums
// its slice of a 1 GiB buffer (8-byte loads, four independent sums); best of
// 5 passes after one that faults the pages in.
double MeasureReadBandwidth(int threads) {
  const size_t bytes = size_t{1} << 30;
  std::vector<uint64_t> buf(bytes / 8, 1);
  std::vector<uint64_t> sums(threads);
  double best = 0;
  for (int pass = 0; pass < 6; ++pass) {
    const auto t0 = Clock::now();
    std::vector<std::thread> th;
    for (int t = 0; t < threads; ++t) {
      th.emplace_back([&, t] {
        const size_t per = buf.size() / threads;
        const uint64_t* p = buf.data() + t * per;
        uint64_t a = 0, b = 0, c = 0, d = 0;
        for (size_t i = 0; i + 4 <= per; i += 4) {
          a += p[i];
          b += p[i + 1];
          c += p[i + 2];
          d += p[i + 3];
        }
        sums[t] = a + b + c + d;
      });
    }
    for (std::thread& t : th) t.join();
    const double sec = Seconds(Clock::now() - t0);
    if (pass > 0 && sec > 0) best = std::max(best, static_cast<double>(bytes) / sec / 1e9);
  }
  volatile uint64_t sink = 0;
  for (uint64_t v : sums) sink = sink + v;
  return best;
}

// Benchmarks one model at every thread count, appending to `out`.
absl::Status BenchModel(const Args& a, const std::string& path, std::vector<RunResult>* out) {
  int64_t longest_prompt = 0, longest = 1, deepest = 0;
  for (int64_t p : a.n_prompt) longest_prompt = std::max(longest_prompt, p);
  for (int64_t n : a.n_prompt) longest = std::max(longest, n);
  for (int64_t n : a.n_gen) longest = std::max(longest, n);
#ifdef VIBRANT_WITH_CUDA
  if (a.roofline) longest = std::max<int64_t>(longest, kRooflineSteps + 1);
#endif
  for (int64_t d : a.n_depth) deepest = std::max(deepest, d);
  // The context every test needs: its depth and its own tokens.
  longest += deepest;

  ResetPeakRss();
  std::unique_ptr<PlanFile> plan;
  std::unique_ptr<GgufFile> gguf;
  std::optional<Program> program;  // what the backends run
  std::optional<double> compile_s;
  std::string device = a.device.empty() ? "cpu" : a.device;
  ModelInfo info;

  const auto t_load0 = Clock::now();
  if (IsPlan(path)) {
    absl::StatusOr<std::unique_ptr<PlanFile>> p = PlanFile::Open(path);
    if (!p.ok()) return p.status();
    plan = *std::move(p);
    const std::string plan_device = plan->Option("device", "cpu");
    if (!a.device.empty() && a.device != plan_device) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": the plan is compiled for device '",
                                                     plan_device, "', not '", a.device, "'"));
    }
    device = plan_device;
    if (a.ctx_size > 0 || a.max_tokens > 0 || !a.fusion || !a.graphs || a.mmq_max_rows > 0 || a.mmq_tile > 0 ||
        a.exact) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": --ctx-size, --max-tokens, --no-fusion, --no-graphs, --mmq-* and --exact apply when "
                "compiling a GGUF; "
                "a plan is already compiled (recompile it with vibrantc compile)"));
    }
    absl::StatusOr<std::unique_ptr<GgufFile>> m = plan->OpenModel();
    if (!m.ok()) return m.status();
    gguf = *std::move(m);
    info = DescribeModel(*gguf, path, "plan");
    absl::StatusOr<Program> prog = LoadProgram(*plan);
    if (!prog.ok()) return prog.status();
    program = *std::move(prog);
  } else {
    const auto t0 = Clock::now();
    absl::StatusOr<std::unique_ptr<GgufFile>> m = GgufFile::Open(path);
    if (!m.ok()) return m.status();
    gguf = *std::move(m);
    compiler::CompileOptions co;
    co.device = device;
    co.lower.n_ctx = a.ctx_size > 0 ? a.ctx_size : longest;
    // Tokens per step: the longest prompt, and at least llama-bench's batch
    // (512, or the depth if smaller) when a depth is prefilled, which would
    // otherwise run one token per step with -p 0.
    co.lower.max_tokens = a.max_tokens > 0 ? a.max_tokens
                                           : std::max<int64_t>({1, longest_prompt, std::min<int64_t>(deepest, 512)});
    if (!a.fusion) co.pipeline.disabled.insert("fuse-elementwise");
    co.cuda_graphs = a.graphs;
    co.mmq_max_rows = static_cast<int>(std::min<int64_t>(a.mmq_max_rows, INT32_MAX));
    co.mmq_tile = static_cast<int>(a.mmq_tile);
    co.cpu_exact = a.exact;
    co.decode_blocks_per_sm = static_cast<int>(a.decode_blocks_per_sm);
    co.gpu_layers = device == "cuda" ? a.gpu_layers : -1;
    absl::StatusOr<compiler::Compiled> c = compiler::CompileGguf(*gguf, co);
    if (!c.ok()) return c.status();
    for (const std::string& note : c->notes) std::fprintf(stderr, "%s\n", note.c_str());
    program = compiler::ToProgram(*c);
    compile_s = Seconds(Clock::now() - t0);
    info = DescribeModel(*gguf, path, "gguf");
  }
  const double open_s = Seconds(Clock::now() - t_load0) - compile_s.value_or(0.0);
  // Before any test runs: the roofline profiles GPU launches.
  if (a.roofline && device != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": --roofline measures GPU kernels; this model runs on '", device, "'",
        plan ? " (compile the plan with --device cuda)" : " (add --device cuda)"));
  }
#ifndef VIBRANT_WITH_CUDA
  if (a.roofline) return absl::UnimplementedError("--roofline: this build has no CUDA backend");
#endif

  for (int threads : a.threads) {
    RunResult r;
    r.model = info;
    r.device = device;
    r.threads = threads;
    r.compile_s = compile_s;
    const auto t0 = Clock::now();
    const ir::Graph* graph = &program->graph;
    absl::StatusOr<Backend> backend = MakeBackend(*program, *gguf, threads);
    if (!backend.ok()) return backend.status();
    r.load_s = Seconds(Clock::now() - t0) + open_s;
    r.backend = backend->name;
    r.describe = backend->describe;
    r.n_ctx = MetaInt(*graph, "n_ctx");
    r.graph = passes::ComputeGraphStats(*graph);
    r.max_tokens = graph->max_tokens;
    const int64_t n_vocab = MetaInt(*graph, "n_vocab");
    if (n_vocab < 1 || r.max_tokens < 1) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": the graph lacks n_vocab/max_tokens"));
    }
    if (r.n_ctx < longest) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": the longest test needs ", longest, " tokens of context", deepest > 0 ? " (with its depth)" : "",
          ", the plan has ", r.n_ctx, " (compile it with a larger --ctx-size)"));
    }
    if (absl::Status s = RunTests(a, *backend, n_vocab, r.max_tokens, &r); !s.ok()) return s;
    if (a.roofline) {
#ifdef VIBRANT_WITH_CUDA
      if (absl::Status s = RunRoofline(a, *backend, *program, n_vocab, r.max_tokens, &r); !s.ok()) return s;
#else
      return absl::UnimplementedError("--roofline: this build has no CUDA backend");
#endif
    }
    r.peak_rss = PeakRssBytes();
    if (a.mem_bw && device == "cpu") r.read_gbps = MeasureReadBandwidth(threads);
    r.peak_device = backend->device_bytes;
    out->push_back(std::move(r));
  }
  return absl::OkStatus();
}

// ---- output ----------------------------------------------------------------------

std::string SizeString(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 30)) return absl::StrFormat("%.2f GiB", bytes / 1073741824.0);
  return absl::StrFormat("%.2f MiB", bytes / 1048576.0);
}

std::string ParamsString(int64_t n) {
  if (n >= 1000000000) return absl::StrFormat("%.2f B", n / 1e9);
  return absl::StrFormat("%.2f M", n / 1e6);
}

std::string CpuName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t c = line.find(':');
      if (c != std::string::npos) return line.substr(c + 2);
    }
  }
  return "unknown";
}

void PrintMarkdown(const std::vector<RunResult>& runs) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"model", "size", "params", "backend", "threads", "test", "t/s"});
  for (const RunResult& r : runs) {
    for (const TestResult& t : r.tests) {
      rows.push_back({r.model.desc, SizeString(r.model.size_bytes), ParamsString(r.model.n_params),
                      r.backend, absl::StrCat(r.threads), t.name,
                      absl::StrFormat("%.2f ± %.2f", t.ts.mean, t.ts.stddev)});
    }
  }
  const bool right[] = {false, true, true, false, true, true, true};
  std::vector<size_t> w(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) {
      // Display width: count UTF-8 lead bytes ("±" is one column).
      size_t n = 0;
      for (char ch : row[c]) n += (static_cast<unsigned char>(ch) & 0xC0) != 0x80;
      w[c] = std::max(w[c], n);
    }
  }
  auto cell = [&](const std::string& s, size_t c) {
    size_t n = 0;
    for (char ch : s) n += (static_cast<unsigned char>(ch) & 0xC0) != 0x80;
    const std::string pad(w[c] - n, ' ');
    return right[c] ? pad + s : s + pad;
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    std::string line = "|";
    for (size_t c = 0; c < rows[i].size(); ++c) absl::StrAppend(&line, " ", cell(rows[i][c], c), " |");
    std::printf("%s\n", line.c_str());
    if (i == 0) {
      std::string rule("|");
      for (size_t c = 0; c < w.size(); ++c) {
        std::string dashes(w[c], '-');
        if (right[c] && !dashes.empty()) dashes.back() = ':';
        absl::StrAppend(&rule, " ", dashes, " |");
      }
      std::printf("%s\n", rule.c_str());
    }
  }
  std::printf("\n");
  for (const RunResult& r : runs) {
    std::string line = absl::StrCat(r.model.path, " (", r.describe, "): ");
    if (r.compile_s) absl::StrAppend(&line, absl::StrFormat("compile %.3f s, ", *r.compile_s));
    absl::StrAppend(&line, absl::StrFormat("load %.3f s, ", r.load_s));
    absl::StrAppend(&line, "peak host RSS ",
                    r.peak_rss >= 0 ? SizeString(static_cast<uint64_t>(r.peak_rss)) : "?");
    if (r.peak_device) absl::StrAppend(&line, ", peak device memory ", SizeString(*r.peak_device));
    for (const TestResult& t : r.tests) {
      if (t.n_gen > 0) {
        const double gbps = r.model.decode_weight_bytes * t.ts.mean / 1e9;
        absl::StrAppend(&line, absl::StrFormat("; %s reads %s of weights per token = %.1f GB/s",
                                               t.name, SizeString(r.model.decode_weight_bytes), gbps));
        if (r.read_gbps && *r.read_gbps > 0) {
          absl::StrAppend(&line, absl::StrFormat(
                                     " = %.0f%% of the read bandwidth measured after it (%.1f GB/s, "
                                     "%d threads: bound %.1f t/s)",
                                     100.0 * gbps / *r.read_gbps, *r.read_gbps, r.threads,
                                     *r.read_gbps * 1e9 / r.model.decode_weight_bytes));
        }
      }
    }
    std::printf("%s\n", line.c_str());
  }
  for (const RunResult& r : runs) {
    for (const Roofline& rl : r.roofline) {
      std::printf("\nroofline: %s, decode step (T = 1) at depth %lld, mean of %d profiled steps (events around "
                  "each launch, no CUDA graph); 100%% = device-to-device copy %.0f GB/s (read + written, this run)\n\n",
                  r.model.path.c_str(), static_cast<long long>(rl.depth), rl.steps, rl.d2d_gbps);
      std::printf("| kernel | launches | MB moved | us | GB/s | %% of copy |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
      auto row = [&](const RooflineRow& k) {
        const double gbps = k.us > 0 ? k.bytes / (k.us * 1e3) : 0.0;
        std::printf("| %s | %lld | %.3f | %.1f | %.0f | %.1f |\n", k.name.c_str(), static_cast<long long>(k.launches),
                    k.bytes / 1e6, k.us, gbps, rl.d2d_gbps > 0 ? 100.0 * gbps / rl.d2d_gbps : 0.0);
      };
      for (const RooflineRow& k : rl.kernels) row(k);
      row(rl.step);
      if (rl.as_run) {
        for (const RooflineRow& k : *rl.as_run_kernels) {
          RooflineRow named = k;
          named.name = absl::StrCat("as run: ", k.name);
          row(named);
        }
        row(*rl.as_run);
      }
      if (rl.tg_ts) {
        RooflineRow graph = rl.step;
        graph.name = absl::StrFormat("step at the tg rate (%.1f t/s, CUDA graph)", *rl.tg_ts);
        graph.us = 1e6 / *rl.tg_ts;
        graph.launches = rl.step.launches;
        row(graph);
      }
    }
  }
}

std::string JsonDocument(const Args& a, const std::vector<RunResult>& runs) {
  Json doc = Json::object();
  doc["vibrant_bench_version"] = 1;
  doc["host"] = {{"cpu", CpuName()},
                 {"hardware_threads", std::thread::hardware_concurrency()}};
  doc["params"] = {{"n_prompt", a.n_prompt}, {"n_gen", a.n_gen},       {"n_depth", a.n_depth},
                   {"tg_logits", a.tg_logits}, {"roofline", a.roofline}, {"repetitions", a.reps},
                   {"fusion", a.fusion},     {"cuda_graphs", a.graphs}, {"warmup", a.warmup},
                   {"seed", a.seed}};
  Json jr = Json::array();
  for (const RunResult& r : runs) {
    Json j = Json::object();
    j["model"] = {{"path", r.model.path},
                  {"kind", r.model.kind},
                  {"arch", r.model.arch},
                  {"ftype", r.model.ftype},
                  {"desc", r.model.desc},
                  {"size_bytes", r.model.size_bytes},
                  {"n_params", r.model.n_params},
                  {"decode_weight_bytes", r.model.decode_weight_bytes}};
    j["backend"] = r.backend;
    j["backend_describe"] = r.describe;
    j["device"] = r.device;
    j["threads"] = r.threads;
    j["n_ctx"] = r.n_ctx;
    j["max_tokens"] = r.max_tokens;
    j["graph"] = {{"ops", r.graph.ops},
                  {"kernels", r.graph.kernels},
                  {"fused", r.graph.fused},
                  {"copies", r.graph.copies},
                  {"arena_bytes", r.graph.arena_bytes},
                  {"kv_bytes", r.graph.kv_bytes}};
    j["compile_s"] = r.compile_s ? Json(*r.compile_s) : Json(nullptr);
    j["load_s"] = r.load_s;
    j["peak_host_rss_bytes"] = r.peak_rss >= 0 ? Json(r.peak_rss) : Json(nullptr);
    j["peak_device_bytes"] = r.peak_device ? Json(*r.peak_device) : Json(nullptr);
    j["host_read_gbps"] = r.read_gbps ? Json(*r.read_gbps) : Json(nullptr);
    Json tests = Json::array();
    for (const TestResult& t : r.tests) {
      std::vector<int64_t> ns;
      std::vector<double> ts;
      for (double s : t.seconds) {
        ns.push_back(static_cast<int64_t>(std::llround(s * 1e9)));
        ts.push_back(s > 0 ? (t.n_prompt + t.n_gen) / s : 0.0);
      }
      std::vector<double> secs = t.seconds;
      Stats sec = MeanStd(secs);
      Json jt = {{"test", t.name},
                 {"n_prompt", t.n_prompt},
                 {"n_gen", t.n_gen},
                 {"avg_ts", t.ts.mean},
                 {"stddev_ts", t.ts.stddev},
                 {"avg_ns", static_cast<int64_t>(std::llround(sec.mean * 1e9))},
                 {"stddev_ns", static_cast<int64_t>(std::llround(sec.stddev * 1e9))},
                 {"samples_ns", ns},
                 {"samples_ts", ts}};
      jt["n_depth"] = t.n_depth;
      if (t.n_gen > 0) {
        jt["decode_weight_gbps"] = r.model.decode_weight_bytes * t.ts.mean / 1e9;
        jt["tg_output"] = t.tg_output;
      }
      tests.push_back(std::move(jt));
    }
    j["tests"] = std::move(tests);
    if (!r.roofline.empty()) {
      Json rls = Json::array();
      for (const Roofline& rl : r.roofline) {
        Json kernels = Json::array();
        auto row = [&](const RooflineRow& k) {
          const double gbps = k.us > 0 ? k.bytes / (k.us * 1e3) : 0.0;
          return Json{{"name", k.name},
                      {"launches", k.launches},
                      {"bytes", k.bytes},
                      {"us", k.us},
                      {"gbps", gbps},
                      {"pct_of_copy", rl.d2d_gbps > 0 ? 100.0 * gbps / rl.d2d_gbps : 0.0}};
        };
        for (const RooflineRow& k : rl.kernels) kernels.push_back(row(k));
        Json jr = {{"depth", rl.depth}, {"steps", rl.steps}, {"d2d_gbps", rl.d2d_gbps},
                   {"kernels", kernels}, {"step", row(rl.step)}};
        if (rl.as_run) {
          Json run_kernels = Json::array();
          for (const RooflineRow& k : *rl.as_run_kernels) run_kernels.push_back(row(k));
          jr["as_run"] = {{"kernels", run_kernels}, {"step", row(*rl.as_run)}};
        }
        if (rl.tg_ts) {
          jr["tg_ts"] = *rl.tg_ts;
          jr["tg_step_gbps"] = rl.step.bytes * *rl.tg_ts / 1e9;
        }
        rls.push_back(std::move(jr));
      }
      j["roofline"] = std::move(rls);
    }
    jr.push_back(std::move(j));
  }
  doc["runs"] = std::move(jr);
  return doc.dump(2) + "\n";
}

}  // namespace
}  // namespace vibrant

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--version") {
      std::printf("%s\n", vibrant::VersionLine("vibrant-bench").c_str());
      return 0;
    }
  }
  vibrant::Args args;
  if (!vibrant::ParseArgs(argc, argv, &args)) return 2;
  if (args.help) {
    std::fputs(vibrant::kUsage, stdout);
    return 0;
  }
  std::vector<vibrant::RunResult> runs;
  for (const std::string& m : args.models) {
    if (!args.json) std::fprintf(stderr, "vibrant-bench: %s ...\n", m.c_str());
    absl::Status s = vibrant::BenchModel(args, m, &runs);
    if (!s.ok()) {
      std::fprintf(stderr, "vibrant-bench: %s\n", vibrant::io::EscapeForTerminal(s.message(), true).c_str());
      return 1;
    }
  }
  const std::string json = vibrant::JsonDocument(args, runs);
  if (args.json) {
    std::fputs(json.c_str(), stdout);
  } else {
    vibrant::PrintMarkdown(runs);
  }
  if (!args.json_out.empty()) {
    std::ofstream out(args.json_out, std::ios::binary);
    out << json;
    if (!out.flush()) {
      std::fprintf(stderr, "vibrant-bench: %s: cannot write\n", args.json_out.c_str());
      return 1;
    }
  }
  return 0;
}
