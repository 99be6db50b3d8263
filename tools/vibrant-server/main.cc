// vibrant-server: an OpenAI-compatible HTTP server with continuous batching.
//
//   vibrant-server -m model.gguf|plan.bin [--host 127.0.0.1] [--port 8080]
//                  [--parallel 4] [--ctx-size N] [--batch-size 512] ...
//
// The model is compiled (through the plan cache) into a paged step graph for
// --parallel sequences (frontends/lower/lower.h, LowerOptions::n_seq) whose KV
// cache of --ctx-size tokens is shared by all sequences in blocks; requests
// are scheduled by runtime/batch.h and served by server.h.
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "api/conversation.h"
#include "api/model.h"
#include "api/version.h"
#include "runtime/batch.h"
#include "tools/vibrant-server/server.h"

namespace vibrant {
namespace {

constexpr char kUsage[] =
    "usage: vibrant-server -m MODEL [options]\n"
    "\n"
    "An OpenAI-compatible HTTP server: POST /v1/chat/completions, /v1/completions\n"
    "(streamed as server-sent events or whole), GET /v1/models, /health, /metrics,\n"
    "and a chat page at /. Concurrent requests are batched into one model step.\n"
    "\n"
    "  -m, --model PATH        a GGUF model or a plan.bin compiled for serving\n"
    "  --host ADDR             address to listen on (default 127.0.0.1)\n"
    "  --port N                port (default 8080; 0: any free port, printed)\n"
    "  -np, --parallel N       sequences decoded together in one step (default 4)\n"
    "  -c, --ctx-size N        total KV cache in tokens, shared by all sequences\n"
    "                          (default 4096 x parallel); one sequence holds at most\n"
    "                          min(this, the model's training context) tokens\n"
    "  -b, --batch-size N      tokens per step: decode tokens plus prefill chunks (default 512)\n"
    "  --block-size N          tokens per KV cache block (default 16)\n"
    "  --device auto|cpu|cuda  where to run (default auto: the GPU when there is one\n"
    "                          that holds the model and has kernels for its paged\n"
    "                          step, a split with the CPU when it is larger than the\n"
    "                          GPU, else the CPU)\n"
    "  -ngl, --n-gpu-layers N  0: the CPU; N below the layer count: the last N layers on\n"
    "                          the GPU, the rest of the model on the CPU; more: the GPU\n"
    "  -t, --threads N         CPU threads (default: all cores)\n"
    "  --api-key KEY           require 'Authorization: Bearer KEY' on /v1/* (or $VIBRANT_API_KEY)\n"
    "  --timeout S             a request's time limit in seconds (default 600)\n"
    "  --max-queue N           requests waiting beyond the running ones before 503 (default 64)\n"
    "  --max-body BYTES        largest request body (default 1048576)\n"
    "  --alias NAME            the model's id in the API (default: the file's name)\n"
    "  --chat-template NAME|JINJA  override the model's chat template\n"
    "  --no-plan-cache         compile in memory instead of using the plan cache\n"
    "  -v, --verbose           log every request to stderr\n"
    "  --version               print the version and exit\n";

struct Args {
  std::string model, host = "127.0.0.1", device = "auto", api_key, alias, chat_template;
  int64_t port = 8080, parallel = 4, ctx = 0, batch = 512, block = 16, threads = 0;
  int64_t max_queue = 64, max_body = 1 << 20;
  int64_t gpu_layers = -1;  // -ngl
  double timeout = 600;
  bool plan_cache = true, verbose = false, version = false, help = false;
};

bool ParseArgs(int argc, char** argv, Args* a, std::string* err) {
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) {
        *err = absl::StrCat(f, " needs a value");
        return false;
      }
      *out = argv[++i];
      return true;
    };
    auto integer = [&](int64_t* out, int64_t lo, int64_t hi) {
      std::string v;
      if (!value(&v)) return false;
      if (!absl::SimpleAtoi(v, out) || *out < lo || *out > hi) {
        *err = absl::StrCat(f, " ", v, ": expected an integer in [", lo, ", ", hi, "]");
        return false;
      }
      return true;
    };
    bool ok = true;
    if (f == "-m" || f == "--model") ok = value(&a->model);
    else if (f == "--host") ok = value(&a->host);
    else if (f == "--port") ok = integer(&a->port, 0, 65535);
    else if (f == "-np" || f == "--parallel") ok = integer(&a->parallel, 1, 1024);
    else if (f == "-c" || f == "--ctx-size") ok = integer(&a->ctx, 0, int64_t{1} << 24);
    else if (f == "-b" || f == "--batch-size") ok = integer(&a->batch, 1, 65536);
    else if (f == "--block-size") ok = integer(&a->block, 1, 4096);
    else if (f == "--device") ok = value(&a->device);
    else if (f == "-ngl" || f == "--n-gpu-layers" || f == "--gpu-layers") ok = integer(&a->gpu_layers, 0, int64_t{1} << 30);
    else if (f == "-t" || f == "--threads") ok = integer(&a->threads, 0, 4096);
    else if (f == "--api-key") ok = value(&a->api_key);
    else if (f == "--max-queue") ok = integer(&a->max_queue, 0, 1 << 20);
    else if (f == "--max-body") ok = integer(&a->max_body, 1024, int64_t{1} << 30);
    else if (f == "--alias") ok = value(&a->alias);
    else if (f == "--chat-template") ok = value(&a->chat_template);
    else if (f == "--timeout") {
      std::string v;
      ok = value(&v);
      if (ok && (!absl::SimpleAtod(v, &a->timeout) || !(a->timeout > 0) || a->timeout > 1e7)) {
        *err = absl::StrCat("--timeout ", v, ": expected seconds > 0");
        ok = false;
      }
    } else if (f == "--no-plan-cache") a->plan_cache = false;
    else if (f == "-v" || f == "--verbose") a->verbose = true;
    else if (f == "--version") a->version = true;
    else if (f == "-h" || f == "--help") a->help = true;
    else {
      *err = absl::StrCat("unknown flag '", f, "' (see --help)");
      ok = false;
    }
    if (!ok) return false;
  }
  if (a->help || a->version) return true;
  if (a->model.empty()) {
    *err = "-m MODEL is required (a GGUF or a plan.bin)";
    return false;
  }
  if (a->device != "auto" && a->device != "cpu" && a->device != "cuda") {
    *err = absl::StrCat("--device ", a->device, ": expected auto, cpu or cuda");
    return false;
  }
  if (a->api_key.empty()) {
    if (const char* k = std::getenv("VIBRANT_API_KEY"); k != nullptr) a->api_key = k;
  }
  return true;
}

std::mutex g_log_mu;
void Log(const std::string& line) {
  std::lock_guard<std::mutex> lock(g_log_mu);
  std::fprintf(stderr, "vibrant-server: %s\n", line.c_str());
}

int Main(int argc, char** argv) {
  Args args;
  std::string err;
  if (!ParseArgs(argc, argv, &args, &err)) {
    std::fprintf(stderr, "vibrant-server: %s\n", err.c_str());
    return 2;
  }
  if (args.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (args.version) {
    std::printf("%s\n", VersionLine("vibrant-server").c_str());
    return 0;
  }

  // SIGINT/SIGTERM are taken by a thread of their own (sigwait): blocked here,
  // before any other thread starts, so that every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that left is a failed write, not a signal

  ModelOptions mo;
  mo.device = args.device;
  mo.n_seq = args.parallel;
  mo.block_size = args.block;
  mo.max_tokens = args.batch;
  mo.use_plan_cache = args.plan_cache;
  if (args.gpu_layers == 0) {
    mo.device = "cpu";
  } else if (args.gpu_layers > 0) {
    mo.device = "cuda";
    mo.gpu_layers = args.gpu_layers;
  }
  mo.log = [](std::string_view line) { Log(std::string(line)); };
  // Default budget: 4096 tokens for each of --parallel sequences.
  mo.n_ctx = args.ctx > 0 ? args.ctx : 4096 * args.parallel;
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(args.model, mo);
  if (!model.ok() && args.device == "auto" && model.status().code() == absl::StatusCode::kUnimplemented) {
    // auto chose the GPU, whose kernels do not serve this model's paged step
    // (paged attention runs on the tensor-core kernels: head_dim 64 or 128,
    // no sliding window yet): the CPU serves it.
    Log(absl::StrCat("device auto: ", model.status().message(), "; serving on the CPU"));
    mo.device = "cpu";
    model = Model::Load(args.model, mo);
  }
  if (!model.ok()) {
    std::fprintf(stderr, "vibrant-server: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  Model& m = **model;
  if (m.n_seq() < 1) {
    std::fprintf(stderr, "vibrant-server: %s: the plan is not compiled for serving (no sequence slots)\n",
                 args.model.c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<Executor>> exec = m.CreateExecutor(static_cast<int>(args.threads));
  if (!exec.ok()) {
    std::fprintf(stderr, "vibrant-server: %s\n", std::string(exec.status().message()).c_str());
    return 1;
  }
  std::string note;
  absl::StatusOr<chat::ChatTemplate> tmpl =
      ResolveChatTemplate(args.model, m.chat_template_text(), args.chat_template, m.tokenizer(), &note);
  if (!tmpl.ok()) {
    std::fprintf(stderr, "vibrant-server: %s\n", std::string(tmpl.status().message()).c_str());
    return 1;
  }
  if (!note.empty()) Log(note);

  BatchEngine::Shape shape;
  shape.n_seq = m.n_seq();
  shape.block_size = m.block_size();
  shape.max_blocks = m.max_blocks();
  shape.n_blocks = m.n_ctx() / m.block_size();
  shape.max_tokens = m.max_tokens();
  shape.n_vocab = m.n_vocab();
  BatchEngineOptions eo;
  eo.max_queue = args.max_queue;
  absl::StatusOr<std::unique_ptr<BatchEngine>> engine =
      BatchEngine::Create(exec->get(), &m.tokenizer(), shape, eo);
  if (!engine.ok()) {
    std::fprintf(stderr, "vibrant-server: %s\n", std::string(engine.status().message()).c_str());
    return 1;
  }

  server::ServerOptions so;
  so.host = args.host;
  so.port = static_cast<int>(args.port);
  so.api_key = args.api_key;
  so.model_id = args.alias.empty() ? std::filesystem::path(args.model).filename().string() : args.alias;
  so.timeout_seconds = args.timeout;
  so.max_body_bytes = static_cast<size_t>(args.max_body);
  so.chat_template = *tmpl;
  if (args.verbose) so.log = Log;
  server::HttpServer http(&m.tokenizer(), engine->get(), so);
  if (absl::Status s = http.Bind(); !s.ok()) {
    std::fprintf(stderr, "vibrant-server: %s\n", std::string(s.message()).c_str());
    return 1;
  }

  std::atomic<int> got_signal{0};
  std::thread watcher([&] {
    int sig = 0;
    if (sigwait(&stop_signals, &sig) != 0) return;
    got_signal = sig;
    if (sig == 0) return;  // woken by main at exit
    Log(absl::StrCat(sig == SIGINT ? "SIGINT" : "SIGTERM", ": shutting down"));
    http.set_shutting_down();
    (*engine)->Shutdown();  // every running and queued request ends now
    http.Stop();
  });

  std::printf("vibrant-server: listening on http://%s:%d (model %s on %s; %lld sequences per step, "
              "KV %lld tokens in %lld blocks of %lld, %lld tokens per sequence)\n",
              args.host.c_str(), http.port(), so.model_id.c_str(), m.device().c_str(),
              static_cast<long long>(shape.n_seq), static_cast<long long>(shape.n_blocks * shape.block_size),
              static_cast<long long>(shape.n_blocks), static_cast<long long>(shape.block_size),
              static_cast<long long>((*engine)->context_per_sequence()));
  std::fflush(stdout);
  absl::Status served = http.Serve();
  if (got_signal == 0) {
    // Serve ended by itself: wake the watcher.
    pthread_kill(watcher.native_handle(), SIGTERM);
  }
  watcher.join();
  (*engine)->Shutdown();
  if (!served.ok()) {
    std::fprintf(stderr, "vibrant-server: %s\n", std::string(served.message()).c_str());
    return 1;
  }
  Log("stopped");
  return 0;
}

}  // namespace
}  // namespace vibrant

int main(int argc, char** argv) { return vibrant::Main(argc, argv); }
