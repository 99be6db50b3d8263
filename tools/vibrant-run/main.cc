// vibrant-run: runs a model: a GGUF (compiled on first use into the plan
// cache) or a plan.bin. Completes a prompt, streaming each token to stdout,
// or chats with the model's template (-cnv). The generation loop, the plan
// cache and the chat templates are the library's (api/, runtime/generate.h);
// this file is the command line.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "api/conversation.h"
#include "api/model.h"
#include "api/version.h"
#include "frontends/io/text.h"
#include "nlohmann/json.hpp"
#include "runtime/generate.h"
#include "runtime/sampler.h"
#ifdef VIBRANT_WITH_CUDA
#include "runtime/cuda/executor.h"
#endif
#ifdef VIBRANT_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

namespace vibrant {
namespace {

constexpr char kUsage[] =
    "usage: vibrant-run [-m] MODEL (-p PROMPT | -f FILE | -cnv) [options]\n"
    "\n"
    "MODEL is a GGUF file, compiled for the device on first use into the plan cache\n"
    "and reused afterwards, or a plan compiled by `vibrantc compile`.\n"
    "Without -cnv, stdout carries only the generated text, streamed token by token\n"
    "(the prompt is not echoed unless --echo); notes and timings go to stderr.\n"
    "\n"
    "input:\n"
    "  -m, --model FILE        the model (or give it as the first argument)\n"
    "  -p, --prompt TEXT       the prompt (BOS added as the model's metadata says; special\n"
    "                          tokens such as <|im_start|> in the text are recognized);\n"
    "                          with -cnv, the first user message\n"
    "  -f, --file FILE         read the prompt from FILE (one trailing newline dropped)\n"
    "  --echo                  print the prompt before the generated text\n"
    "chat:\n"
    "  -cnv, --conversation    chat interactively, with the model's chat template: each\n"
    "                          turn prefills only its new tokens. Line editing and history\n"
    "                          on a terminal; Ctrl-C stops a reply, Ctrl-C at the prompt,\n"
    "                          Ctrl-D or /exit quit; /clear starts over\n"
    "  -sys, --system-prompt TEXT  the system message of the chat\n"
    "  -sysf, --system-prompt-file FILE  the system message, from FILE\n"
    "  -st, --single-turn      -cnv for one turn (the -p/-f message), then exit\n"
    "  --chat-template NAME    a template by name, or a Jinja template's text, instead\n"
    "                          of the model's (tokenizer.chat_template); names: chatml,\n"
    "                          llama2, llama2-sys, mistral-v1, mistral-v3, mistral-v3-tekken,\n"
    "                          mistral-v7, mistral-v7-tekken, llama3, llama3.1, phi3, phi4,\n"
    "                          gemma, deepseek2, deepseek3\n"
    "  --chat-template-file F  a Jinja chat template read from F, recognised as above\n"
    "  --no-perf               -cnv: no timing line after each reply\n"
    "generation:\n"
    "  -n, --n-predict N       tokens to generate (per reply with -cnv); -1 (default) or -2:\n"
    "                          until an end-of-generation token or the context is full\n"
    "  --tp N                  tensor parallelism over N ranks (vibrantc compile --tp): on\n"
    "                          cuda one GPU per rank over NCCL (with one GPU, every rank\n"
    "                          shares it: a test, not a speed-up); on the CPU N simulated ranks\n"
    "  --no-context-shift      -cnv: a conversation that outgrows the context is an error;\n"
    "                          by default (--context-shift) its oldest turns are dropped\n"
    "                          (the system prompt stays) to make room for the next reply\n"
    "  --ignore-eos            end-of-generation tokens are banned and do not stop\n"
    "  -r, --reverse-prompt S  stop after S (S is printed; with -cnv the user's turn\n"
    "                          comes next); repeatable\n"
    "  --stop S                stop before S (S is not printed); repeatable\n"
    "sampling (llama.cpp's names and defaults):\n"
    "  --temp T                temperature (default 0.8); <= 0 means greedy\n"
    "  --top-k N               keep the N most likely tokens (default 40; 0 = off)\n"
    "  --top-p P               nucleus sampling threshold in (0, 1] (default 0.95; 1 = off)\n"
    "  --min-p P               drop tokens below P times the top probability, P in [0, 1]\n"
    "                          (default 0.05; 0 = off)\n"
    "  --repeat-penalty X      penalize repeated tokens (default 1.0 = off)\n"
    "  --repeat-last-n N       tokens the penalties look back on (default 64; 0 = off,\n"
    "                          -1 = the context size)\n"
    "  --presence-penalty X    subtract X from seen tokens' logits (default 0 = off)\n"
    "  --frequency-penalty X   subtract X times the count (default 0 = off)\n"
    "  --seed S                random seed (default -1 = random)\n"
    "model and runtime:\n"
    "  -c, --ctx-size N        KV cache length (default: a plan's, else min(the model's, 4096))\n"
    "  -b, --batch-size N      tokens per step, the prefill chunk (also --max-tokens;\n"
    "                          default: a plan's, else 512)\n"
    "  --device auto|cpu|cuda  where to run (default auto: a plan's device; for a GGUF the\n"
    "                          GPU when there is one and the model fits, else the CPU);\n"
    "                          a plan asked to run elsewhere, or with another -c/-b, has its\n"
    "                          GGUF compiled again\n"
    "  -ngl, --n-gpu-layers N  llama.cpp's layer split: 0 = --device cpu; N < the layer\n"
    "                          count: the last N layers on the GPU, the embedding, the\n"
    "                          other layers and the output head on the CPU (one plan; a\n"
    "                          model larger than VRAM still runs); all layers or more\n"
    "                          (e.g. 99, all) = the whole model on the GPU\n"
    "  -t, --threads N         CPU threads (default: the physical cores)\n"
    "  --plan-cache DIR        where compiled plans are kept (default $VIBRANT_PLAN_CACHE,\n"
    "                          $XDG_CACHE_HOME/vibrant/plans or ~/.cache/vibrant/plans)\n"
    "  --no-plan-cache         compile a GGUF in memory at every run\n"
    "  --verify[=TOL]          cuda: run the prompt and the first generated token op by\n"
    "                          op, compare every op's GPU output with the CPU reference\n"
    "                          kernels on the same inputs, report the ops to stderr and name\n"
    "                          the first one whose relative error exceeds TOL (default\n"
    "                          1e-3); exit 3 if any\n"
    "output:\n"
    "  --json                  one JSON object per line instead of text:\n"
    "                          {\"prompt_tokens\":[...]}, then {\"id\":N,\"piece\":\"...\"} per\n"
    "                          generated token, then {\"summary\":{...}} (with -cnv: per turn)\n"
    "  --version               print the version and exit\n"
    "  -h, --help              this text\n"
    "\n"
    "The timing summary is one line on stderr: load, prompt (tokens, ms, tok/s),\n"
    "generation (tokens, ms, ms/token, tok/s), total and the stop reason (eog,\n"
    "stop_string, n_predict, context_full or interrupted). Exit status: 0, 1 on an\n"
    "error, 2 on a usage error, 3 when --verify found a mismatch, 130 when interrupted.\n";

struct RunArgs {
  std::string model;
  std::string prompt;
  bool have_prompt = false;
  std::string prompt_file;
  bool echo = false;
  bool conversation = false;
  bool single_turn = false;
  std::string system_prompt;
  bool have_system = false;
  std::string system_prompt_file;
  std::string chat_template_file;
  std::string chat_template;
  bool no_perf = false;
  int64_t n_predict = -1;
  bool ignore_eos = false;
  bool context_shift = true;
  int64_t tp = 0;  // --tp: 0 = the plan's  // -cnv: the oldest turns leave when the context is full
  std::vector<StopString> stops;
  SamplerParams sampling;
  int64_t n_ctx = 0;
  int64_t max_tokens = 0;
  std::string device = "auto";
  std::optional<int64_t> n_gpu_layers;
  int threads = 0;
  std::string plan_cache;
  bool no_plan_cache = false;
  bool json = false;
  bool help = false;
  bool version = false;
  bool verify = false;
  double verify_tol = 1e-3;
};

bool UsageError(const std::string& msg) {
  std::fprintf(stderr, "vibrant-run: %s\n(vibrant-run --help lists the options)\n",
               io::EscapeForTerminal(msg, true).c_str());
  return false;
}

bool ParseArgs(int argc, char** argv, RunArgs* out) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    std::string v;
    auto value = [&]() {
      if (i + 1 >= args.size()) return UsageError(a + " needs a value");
      v = args[++i];
      return true;
    };
    auto bad_value = [&](const std::string& what) {
      return UsageError(absl::StrCat(a, ": '", v, "' is not ", what));
    };
    auto number = [&](float* f, const std::string& what, auto ok) {
      if (!value()) return false;
      double d;
      if (!absl::SimpleAtod(v, &d) || !std::isfinite(d) || !ok(d)) return bad_value(what);
      *f = static_cast<float>(d);
      return true;
    };
    auto any = [](double) { return true; };
    if (a == "-h" || a == "--help") {
      out->help = true;
      return true;
    } else if (a == "--version") {
      out->version = true;
      return true;
    } else if (a == "-m" || a == "--model") {
      if (!value()) return false;
      if (!out->model.empty()) return UsageError("more than one model given");
      out->model = v;
    } else if (a == "-p" || a == "--prompt") {
      if (!value()) return false;
      out->prompt = v;
      out->have_prompt = true;
    } else if (a == "-f" || a == "--file") {
      if (!value()) return false;
      out->prompt_file = v;
    } else if (a == "--echo") {
      out->echo = true;
    } else if (a == "-cnv" || a == "--conversation") {
      out->conversation = true;
    } else if (a == "-no-cnv" || a == "--no-conversation") {
      out->conversation = false;
    } else if (a == "-st" || a == "--single-turn") {
      out->single_turn = true;
      out->conversation = true;
    } else if (a == "-sys" || a == "--system-prompt") {
      if (!value()) return false;
      out->system_prompt = v;
      out->have_system = true;
    } else if (a == "-sysf" || a == "--system-prompt-file") {
      if (!value()) return false;
      out->system_prompt_file = v;
      out->have_system = true;
    } else if (a == "--chat-template-file") {
      if (!value()) return false;
      out->chat_template_file = v;
    } else if (a == "--chat-template") {
      if (!value()) return false;
      if (v.empty()) return bad_value("a template name");
      out->chat_template = v;
    } else if (a == "--no-perf") {
      out->no_perf = true;
    } else if (a == "-n" || a == "--n-predict") {
      if (!value()) return false;
      if (!absl::SimpleAtoi(v, &out->n_predict) || out->n_predict < -2) {
        return bad_value("an integer >= -2 (-1 or -2: until the end)");
      }
      if (out->n_predict == -2) out->n_predict = -1;
    } else if (a == "--ignore-eos") {
      out->ignore_eos = true;
    } else if (a == "--tp") {
      if (!value()) return false;
      if (!absl::SimpleAtoi(v, &out->tp) || out->tp < 1 || out->tp > 64) return bad_value("an integer in 1..64");
    } else if (a == "--no-context-shift") {
      out->context_shift = false;
    } else if (a == "--context-shift") {
      out->context_shift = true;
    } else if (a == "-r" || a == "--reverse-prompt" || a == "--stop") {
      if (!value()) return false;
      if (v.empty()) return bad_value("a non-empty string");
      out->stops.push_back({v, a != "--stop"});
    } else if (a == "--temp") {
      if (!number(&out->sampling.temp, "a number", any)) return false;
    } else if (a == "--top-k") {
      if (!value()) return false;
      if (!absl::SimpleAtoi(v, &out->sampling.top_k) || out->sampling.top_k < 0) {
        return bad_value("an integer >= 0 (0 turns top-k off)");
      }
    } else if (a == "--top-p") {
      if (!number(&out->sampling.top_p, "a number in (0, 1]", [](double d) { return d > 0 && d <= 1; })) {
        return false;
      }
    } else if (a == "--min-p") {
      if (!number(&out->sampling.min_p, "a number in [0, 1]", [](double d) { return d >= 0 && d <= 1; })) {
        return false;
      }
    } else if (a == "--repeat-penalty") {
      if (!number(&out->sampling.repeat_penalty, "a number > 0 (1 = off)", [](double d) { return d > 0; })) {
        return false;
      }
    } else if (a == "--repeat-last-n") {
      if (!value()) return false;
      if (!absl::SimpleAtoi(v, &out->sampling.repeat_last_n) || out->sampling.repeat_last_n < -1) {
        return bad_value("an integer >= -1 (0 = off, -1 = the context size)");
      }
    } else if (a == "--presence-penalty") {
      if (!number(&out->sampling.presence_penalty, "a number", any)) return false;
    } else if (a == "--frequency-penalty") {
      if (!number(&out->sampling.frequency_penalty, "a number", any)) return false;
    } else if (a == "--seed" || a == "-s") {
      if (!value()) return false;
      int64_t seed;
      if (!absl::SimpleAtoi(v, &seed) || seed < -1 || seed > 0xFFFFFFFFll) {
        return bad_value("a seed in [-1, 4294967295]");
      }
      out->sampling.seed = seed == -1 ? kRandomSeed : static_cast<uint32_t>(seed);
    } else if (a == "-c" || a == "--ctx-size") {
      if (!value()) return false;
      if (!absl::SimpleAtoi(v, &out->n_ctx) || out->n_ctx < 0) {
        return bad_value("an integer >= 0 (0 = the default)");
      }
    } else if (a == "-b" || a == "--batch-size" || a == "--max-tokens" || a == "-ub" ||
               a == "--ubatch-size") {
      if (!value()) return false;
      if (!absl::SimpleAtoi(v, &out->max_tokens) || out->max_tokens < 1) {
        return bad_value("an integer >= 1");
      }
    } else if (a == "--device" || a == "-dev") {
      if (!value()) return false;
      if (v != "auto" && v != "cpu" && v != "cuda") return bad_value("auto, cpu or cuda");
      out->device = v;
    } else if (a == "-ngl" || a == "--n-gpu-layers" || a == "--gpu-layers") {
      if (!value()) return false;
      int64_t n;
      if (v == "all") {
        n = INT32_MAX;
      } else if (!absl::SimpleAtoi(v, &n) || n < 0) {
        return bad_value("a number of layers >= 0 (or all)");
      }
      out->n_gpu_layers = n;
    } else if (a == "-t" || a == "--threads") {
      if (!value()) return false;
      if (!absl::SimpleAtoi(v, &out->threads) || out->threads < 1) {
        return bad_value("an integer >= 1");
      }
    } else if (a == "--plan-cache") {
      if (!value()) return false;
      if (v.empty()) return bad_value("a directory");
      out->plan_cache = v;
    } else if (a == "--no-plan-cache") {
      out->no_plan_cache = true;
    } else if (a == "--json") {
      out->json = true;
    } else if (a == "--verify" || a.rfind("--verify=", 0) == 0) {
      out->verify = true;
      if (a.size() > 9) {
        v = a.substr(9);
        if (!absl::SimpleAtod(v, &out->verify_tol) || !(out->verify_tol >= 0)) {
          return bad_value("a tolerance >= 0");
        }
      }
    } else if (a.size() > 1 && a[0] == '-') {
      return UsageError("unknown option '" + a + "'");
    } else if (out->model.empty()) {
      out->model = a;
    } else {
      return UsageError("unexpected argument '" + a + "'");
    }
  }
  if (out->model.empty()) return UsageError("no model given (a GGUF or a plan: -m FILE)");
  if (out->have_prompt && !out->prompt_file.empty()) {
    return UsageError("give the prompt with one of -p and -f, not both");
  }
  const bool has_input = out->have_prompt || !out->prompt_file.empty();
  if (!out->conversation && !has_input) {
    return UsageError("no prompt: give one with -p or -f, or chat with -cnv");
  }
  if (out->single_turn && !has_input) return UsageError("-st needs the message, with -p or -f");
  if (out->have_system && !out->conversation) {
    return UsageError("-sys is the system message of a chat: add -cnv (or -st)");
  }
  if (out->verify && out->conversation) return UsageError("--verify runs without -cnv");
  return true;
}

// ---- signals: Ctrl-C stops a reply; a second one, or one at the prompt, quits.

std::atomic<bool> g_cancel{false};
std::atomic<bool> g_generating{false};

void OnSigint(int) {
  if (g_generating.load() && !g_cancel.load()) {
    g_cancel.store(true);
    return;
  }
  static const char nl = '\n';
  (void)!::write(STDERR_FILENO, &nl, 1);
  ::_exit(130);
}

void InstallSigint() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnSigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocked read returns
  sigaction(SIGINT, &sa, nullptr);
}

// ---- output

// Tracks whether stdout ends a line, so that the timing summary starts on its
// own line when stdout and stderr are the same file (a terminal, or 2>&1).
bool g_stdout_mid_line = false;

void WriteOut(std::string_view s) {
  if (s.empty()) return;
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
  g_stdout_mid_line = s.back() != '\n';
}

bool StdoutIsStderr() {
  struct stat a, b;
  if (::fstat(STDOUT_FILENO, &a) != 0 || ::fstat(STDERR_FILENO, &b) != 0) return false;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

void EndLineBeforeStderr() {
  if (g_stdout_mid_line && StdoutIsStderr()) {
    std::fputc('\n', stdout);
    std::fflush(stdout);
    g_stdout_mid_line = false;
  }
}

void WriteJsonLine(const nlohmann::json& j) {
  // Pieces that end inside a multi-byte UTF-8 character are not valid UTF-8
  // on their own; JSON cannot carry them, so such bytes become U+FFFD.
  std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line.push_back('\n');
  WriteOut(line);
}

// Notes quote file names and GGUF metadata: escaped, like every error (frontends/io/text.h).
void Note(std::string_view s) { std::fprintf(stderr, "vibrant-run: %s\n", io::EscapeForTerminal(s, true).c_str()); }

double Rate(int64_t n, double seconds) { return seconds > 0 ? n / seconds : 0.0; }

// ---- input

// Reads a text file named by `flag` (-f, -sysf, --chat-template-file):
// absent, a directory or unreadable is an error naming the flag and the file.
absl::StatusOr<std::string> ReadTextFile(const std::string& flag, const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot open (", std::strerror(err), ")"));
  }
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": is a directory, not a file"));
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return absl::PermissionDeniedError(
        absl::StrCat(flag, " ", path, ": cannot read (", std::strerror(err), ")"));
  }
  std::string text;
  char buf[65536];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return absl::DataLossError(absl::StrCat(flag, " ", path, ": read failed (", std::strerror(err), ")"));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

// One line of user input: libedit on a terminal (editing, history), else a
// plain line from stdin. nullopt at the end of input.
std::optional<std::string> ReadUserLine(bool interactive) {
#ifdef VIBRANT_HAVE_LIBEDIT
  if (interactive) {
    char* line = readline("> ");
    if (line == nullptr) return std::nullopt;
    std::string s(line);
    std::free(line);
    if (!s.empty()) add_history(s.c_str());
    return s;
  }
#else
  if (interactive) WriteOut("> ");
#endif
  std::string s;
  if (!std::getline(std::cin, s)) return std::nullopt;
  if (!s.empty() && s.back() == '\r') s.pop_back();
  return s;
}

// ---- the run

struct Loaded {
  double load_seconds = 0;  // from the start of the process to a ready session
  std::unique_ptr<Model> model;
  std::unique_ptr<Executor> exec;
  std::unique_ptr<Session> session;
  int verify_failures = 0;
};

absl::StatusOr<Loaded> Load(const RunArgs& args) {
  ModelOptions mo;
  mo.device = args.device;
  if (args.n_gpu_layers.has_value()) {
    if (*args.n_gpu_layers == 0) {
      mo.device = "cpu";
    } else {
      mo.device = "cuda";
      mo.gpu_layers = *args.n_gpu_layers;
    }
  }
  mo.n_ctx = args.n_ctx;
  mo.tp = args.tp;
  mo.max_tokens = args.max_tokens;
  mo.use_plan_cache = !args.no_plan_cache;
  mo.plan_cache_dir = args.plan_cache;
  mo.log = [](std::string_view line) { Note(line); };
  Loaded l;
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(args.model, mo);
  if (!model.ok()) return model.status();
  l.model = *std::move(model);
  if (args.verify && l.model->device() != "cuda") {
    return absl::InvalidArgumentError(
        "--verify compares the GPU with the CPU: it needs the cuda device (--device cuda)");
  }
  if (args.verify && l.model->program().dispatch && l.model->program().dispatch->has_host_ops()) {
    return absl::InvalidArgumentError(
        "--verify runs the GPU's ops one by one against the CPU; a plan split with -ngl runs part of the model on "
        "the CPU already (verify the model without -ngl)");
  }
  if (args.verify && ir::TpRanks(l.model->graph()) > 1) {
    return absl::InvalidArgumentError(
        "--verify runs one GPU's ops one by one against the CPU; a tensor-parallel plan's ranks meet in "
        "collectives and cannot (compile the model without --tp to verify its kernels)");
  }
  int threads = args.threads;
  const unsigned cores = std::thread::hardware_concurrency();
  if (cores > 0 && threads > static_cast<int>(cores)) {
    Note(absl::StrCat("-t ", threads, ": this machine has ", cores, " cores; using ", cores));
    threads = static_cast<int>(cores);
  }
  absl::StatusOr<std::unique_ptr<Executor>> exec = l.model->CreateExecutor(threads);
  if (!exec.ok()) return exec.status();
  l.exec = *std::move(exec);
  if (l.model->device() == "cuda" || ir::TpRanks(l.model->graph()) > 1) Note(l.exec->Describe());
  SamplerParams sp = args.sampling;
  if (sp.repeat_last_n == -1) sp.repeat_last_n = static_cast<int32_t>(l.model->n_ctx());
  absl::StatusOr<Sampler> sampler = Sampler::Create(sp);
  if (!sampler.ok()) return sampler.status();
  l.session = std::make_unique<Session>(l.exec.get(), &l.model->tokenizer(), l.model->n_ctx(),
                                        l.model->max_tokens(), l.model->n_vocab(), *std::move(sampler));
  return l;
}

#ifdef VIBRANT_WITH_CUDA
// --verify: the prompt's steps and the first decode step run op by op.
void SetUpVerify(const RunArgs& args, Loaded& l) {
  CudaExecutor* c = dynamic_cast<CudaExecutor*>(l.exec.get());
  if (c == nullptr) return;
  auto steps_left = std::make_shared<int>(-1);  // -1: every prefill step, then one decode
  Executor* exec = l.exec.get();
  int* failures = &l.verify_failures;
  const double tol = args.verify_tol;
  l.session->set_step([c, exec, steps_left, failures, tol](absl::Span<const int32_t> ids, int32_t pos0,
                                                           bool decode) -> absl::StatusOr<absl::Span<const float>> {
    if (*steps_left == 0) return exec->Step(ids, pos0);
    if (decode) *steps_left = 0;
    absl::StatusOr<VerifyReport> r = c->VerifyStep(ids, pos0, tol);
    if (!r.ok()) return r.status();
    double worst = 0;
    for (const VerifyOpResult& o : r->ops) {
      worst = std::max(worst, o.rel_err);
      if (!o.ok) {
        ++*failures;
        std::fprintf(stderr, "verify: MISMATCH %s: rel err %.3g (max |diff| %.3g, max |cpu| %.3g)\n",
                     io::EscapeForTerminal(o.desc).c_str(), o.rel_err, o.max_abs, o.ref_max);
      }
    }
    std::fprintf(stderr, "verify: step of %zu tokens at position %d: %zu op outputs, worst rel err %.3g%s%s\n",
                 ids.size(), pos0, r->ops.size(), worst, r->first_bad >= 0 ? "; first mismatch: " : "",
                 r->first_bad >= 0 ? io::EscapeForTerminal(r->ops[r->first_bad].desc).c_str() : "");
    return r->logits;
  });
}
#endif

GenerateOptions Options(const RunArgs& args) {
  GenerateOptions o;
  o.n_predict = args.n_predict;
  o.ignore_eos = args.ignore_eos;
  o.stops = args.stops;
  o.cancel = &g_cancel;
  return o;
}

TokenCallback Printer(const RunArgs& args) {
  if (args.json) {
    return [](const TokenEvent& e) {
      if (e.token >= 0) WriteJsonLine({{"id", e.token}, {"piece", std::string(e.piece)}});
      return true;
    };
  }
  return [](const TokenEvent& e) {
    WriteOut(e.text);
    return true;
  };
}

nlohmann::json Summary(const GenerateResult& r, const Loaded& l, double load_s, double total_s) {
  nlohmann::json s = {
      {"prompt_tokens", r.n_prompt},
      {"reused_tokens", r.n_reused},
      {"prompt_ms", r.prefill_seconds * 1e3},
      {"prompt_tok_s", Rate(r.n_prefilled, r.prefill_seconds)},
      {"generated_tokens", r.n_generated},
      {"gen_ms", r.generate_seconds * 1e3},
      {"gen_ms_per_token", r.n_generated > 0 ? r.generate_seconds * 1e3 / r.n_generated : 0.0},
      {"gen_tok_s", Rate(r.n_generated, r.generate_seconds)},
      {"load_ms", load_s * 1e3},
      {"total_ms", total_s * 1e3},
      {"stop", std::string(StopReasonName(r.stop))},
      {"device", l.model->device()},
  };
  if (!l.session->sampler().greedy()) s["seed"] = l.session->sampler().seed();
  return s;
}

// "prompt: 5 tokens, 1.2 ms, 4166.7 tok/s | generation: 32 tokens, ..."
std::string TimingLine(const GenerateResult& r, const Loaded& l, std::optional<double> load_s,
                       std::optional<double> total_s) {
  std::string line;
  if (load_s) absl::StrAppend(&line, absl::StrFormat("load: %.1f ms | ", *load_s * 1e3));
  if (r.n_reused > 0) {
    absl::StrAppend(&line, absl::StrFormat("prompt: %d new tokens (%d reused), ", r.n_prefilled, r.n_reused));
  } else {
    absl::StrAppend(&line, absl::StrFormat("prompt: %d tokens, ", r.n_prompt));
  }
  absl::StrAppend(&line, absl::StrFormat("%.1f ms, %.1f tok/s | generation: %d tokens, %.1f ms, ",
                                         r.prefill_seconds * 1e3, Rate(r.n_prefilled, r.prefill_seconds),
                                         r.n_generated, r.generate_seconds * 1e3));
  absl::StrAppend(&line, absl::StrFormat("%.2f ms/token, %.1f tok/s",
                                         r.n_generated > 0 ? r.generate_seconds * 1e3 / r.n_generated : 0.0,
                                         Rate(r.n_generated, r.generate_seconds)));
  if (total_s) absl::StrAppend(&line, absl::StrFormat(" | total: %.1f ms", *total_s * 1e3));
  absl::StrAppend(&line, " | stop: ", std::string(StopReasonName(r.stop)));
  if (!l.session->sampler().greedy()) absl::StrAppend(&line, " | seed: ", l.session->sampler().seed());
  return line;
}

absl::Status RunCompletion(const RunArgs& args, const std::string& prompt, Loaded& l,
                           std::chrono::steady_clock::time_point start, bool* interrupted) {
  absl::StatusOr<std::vector<int32_t>> tokens =
      l.model->tokenizer().Encode(prompt, /*add_special=*/true, /*parse_special=*/true);
  if (!tokens.ok()) return tokens.status();
  if (static_cast<int64_t>(tokens->size()) > l.model->n_ctx()) {
    return absl::OutOfRangeError(absl::StrCat(
        "the prompt is ", tokens->size(), " tokens, longer than the context of ", l.model->n_ctx(),
        " tokens (use a larger -c/--ctx-size, or shorten the prompt)"));
  }
  if (args.json) {
    WriteJsonLine({{"prompt_tokens", *tokens}});
  } else if (args.echo) {
    WriteOut(prompt);
  }
  g_generating.store(true);
  absl::StatusOr<GenerateResult> r = l.session->Generate(*tokens, Options(args), Printer(args));
  g_generating.store(false);
  if (!r.ok()) return r.status();
  *interrupted = r->stop == StopReason::kInterrupted;
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (args.json) {
    WriteJsonLine({{"summary", Summary(*r, l, l.load_seconds, total)}});
  } else {
    EndLineBeforeStderr();
    std::fprintf(stderr, "%s\n", TimingLine(*r, l, l.load_seconds, total).c_str());
  }
  return absl::OkStatus();
}

absl::Status RunChat(const RunArgs& args, const std::optional<std::string>& first, Loaded& l) {
  std::string note;
  absl::StatusOr<chat::ChatTemplate> tmpl = ResolveChatTemplate(
      l.model->path(), l.model->chat_template_text(), args.chat_template, l.model->tokenizer(), &note);
  if (!tmpl.ok()) return tmpl.status();
  if (!note.empty()) Note(note);
  Conversation chat(l.session.get(), &l.model->tokenizer(), *tmpl);
  chat.set_context_shift(args.context_shift);
  auto add_system = [&] {
    if (args.have_system) chat.Add({"system", args.system_prompt});
  };
  add_system();
  const bool interactive = ::isatty(STDIN_FILENO) && !args.single_turn;
  if (interactive) {
    Note(absl::StrCat("chat (", std::string(chat::FamilyName(tmpl->family)), " template, ", l.model->device(),
                      "): Ctrl-C stops a reply; Ctrl-D, Ctrl-C at the prompt or /exit quits; /clear "
                      "starts over"));
  }
  int turn = 0;
  std::optional<std::string> pending = first;
  while (true) {
    std::optional<std::string> line;
    if (pending) {
      line = std::move(pending);
      pending.reset();
      if (interactive) WriteOut(absl::StrCat("> ", *line, "\n"));
    } else {
      if (args.single_turn) break;
      line = ReadUserLine(interactive);
      if (!line) {
        if (interactive) WriteOut("\n");
        break;
      }
    }
    if (*line == "/exit" || *line == "/quit") break;
    if (*line == "/clear") {
      chat.Clear();
      add_system();
      Note("the conversation starts over");
      continue;
    }
    if (line->empty()) continue;
    ++turn;
    g_cancel.store(false);
    g_generating.store(true);
    absl::StatusOr<GenerateResult> r = chat.Send(*line, Options(args), Printer(args));
    g_generating.store(false);
    if (!r.ok()) {
      if (args.single_turn) return r.status();
      Note(std::string(r.status().message()));
      continue;
    }
    if (chat.last_dropped() > 0 && !args.json) {
      if (g_stdout_mid_line) WriteOut("\n");
      Note(absl::StrCat("the context is full: the ", chat.last_dropped(),
                        " oldest messages were dropped to make room (--no-context-shift: an error instead)"));
    }
    if (args.json) {
      nlohmann::json s = Summary(*r, l, 0, 0);
      s["turn"] = turn;
      s["dropped_messages"] = chat.last_dropped();
      const std::vector<int32_t>& cached = l.session->cached_tokens();
      s["prompt_ids"] = std::vector<int32_t>(
          cached.begin(), cached.begin() + std::min<size_t>(cached.size(), static_cast<size_t>(r->n_prompt)));
      s.erase("load_ms");
      s.erase("total_ms");
      WriteJsonLine({{"summary", s}});
    } else {
      if (g_stdout_mid_line) WriteOut("\n");
      if (!args.no_perf) {
        std::fprintf(stderr, "[turn %d] %s\n", turn, TimingLine(*r, l, std::nullopt, std::nullopt).c_str());
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace vibrant

int main(int argc, char** argv) {
  using namespace vibrant;
  const auto start = std::chrono::steady_clock::now();
  RunArgs args;
  if (!ParseArgs(argc, argv, &args)) return 2;
  if (args.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (args.version) {
    std::printf("%s\n", VersionLine("vibrant-run").c_str());
    return 0;
  }
  auto read_file = [](const std::string& flag, const std::string& path, std::string* out) {
    absl::StatusOr<std::string> text = ReadTextFile(flag, path);
    if (!text.ok()) {
      std::fprintf(stderr, "vibrant-run: %s\n", io::EscapeForTerminal(text.status().message(), true).c_str());
      return false;
    }
    *out = *std::move(text);
    return true;
  };
  if (!args.chat_template_file.empty()) {
    if (!read_file("--chat-template-file", args.chat_template_file, &args.chat_template)) return 1;
    if (args.chat_template.empty()) {
      std::fprintf(stderr, "vibrant-run: --chat-template-file %s: is empty\n",
                   io::EscapeForTerminal(args.chat_template_file).c_str());
      return 1;
    }
  }
  if (!args.system_prompt_file.empty() &&
      !read_file("-sysf", args.system_prompt_file, &args.system_prompt)) {
    return 1;
  }
  if (!args.chat_template.empty()) {
    absl::StatusOr<chat::ChatTemplate> t = chat::TemplateFromNameOrText(args.chat_template);
    if (!t.ok()) {
      std::fprintf(stderr, "vibrant-run: --chat-template: %s\n", io::EscapeForTerminal(t.status().message(), true).c_str());
      return 2;
    }
  }
  std::optional<std::string> prompt;
  if (args.have_prompt) prompt = args.prompt;
  if (!args.prompt_file.empty()) {
    absl::StatusOr<std::string> p = ReadTextFile("-f", args.prompt_file);
    if (!p.ok()) {
      std::fprintf(stderr, "vibrant-run: %s\n", io::EscapeForTerminal(p.status().message(), true).c_str());
      return 1;
    }
    prompt = *std::move(p);
  }
  InstallSigint();
  absl::StatusOr<Loaded> loaded = Load(args);
  absl::Status st = loaded.status();
  bool interrupted = false;
  if (st.ok()) {
    loaded->load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
#ifdef VIBRANT_WITH_CUDA
    if (args.verify) SetUpVerify(args, *loaded);
#endif
    st = args.conversation ? RunChat(args, prompt, *loaded)
                           : RunCompletion(args, *prompt, *loaded, start, &interrupted);
  }
  if (!st.ok()) {
    EndLineBeforeStderr();
    std::fprintf(stderr, "vibrant-run: %s\n", io::EscapeForTerminal(st.message(), true).c_str());
    return 1;
  }
  if (loaded->verify_failures > 0) {
    std::fprintf(stderr, "vibrant-run: --verify: %d op outputs differ from the CPU reference beyond %g\n",
                 loaded->verify_failures, args.verify_tol);
    return 3;
  }
  return interrupted ? 130 : 0;
}
