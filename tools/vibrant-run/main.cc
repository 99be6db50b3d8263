// vibrant-run: runs a compiled plan: tokenizes a prompt, prefills it, and
// generates text, streaming each token to stdout as it is produced.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "frontends/gguf/gguf.h"
#include "frontends/io/text.h"
#include "frontends/tokenizer/tokenizer.h"
#include "ir/graph.h"
#include "nlohmann/json.hpp"
#include "runtime/backend.h"
#include "runtime/cpu/executor.h"
#include "runtime/plan.h"
#include "runtime/sampler.h"
#ifdef VIBRANT_WITH_CUDA
#include "runtime/kernel_bundle.h"
#include "runtime/cuda/executor.h"
#endif

namespace vibrant {
namespace {

constexpr char kUsage[] =
    "usage: vibrant-run PLAN (-p PROMPT | -f FILE) [options]\n"
    "\n"
    "Generates a continuation of the prompt with a plan compiled by `vibrantc compile`.\n"
    "stdout carries only the generated text, streamed token by token: the prompt is\n"
    "not echoed (llama.cpp's tools print it first). Timings go to stderr.\n"
    "\n"
    "  -p, --prompt TEXT   the prompt (BOS added as the model's metadata says; special\n"
    "                      tokens such as <|im_start|> in the text are recognized)\n"
    "  -f, --file FILE     read the prompt from FILE (one trailing newline dropped)\n"
    "  -n, --n-predict N   tokens to generate; -1 (default) = until an end-of-generation\n"
    "                      token or the context is full\n"
    "  --temp T            temperature (default 0.8); <= 0 means greedy\n"
    "  --top-k N           keep the N most likely tokens (default 40; 0 = off)\n"
    "  --top-p P           nucleus sampling threshold (default 0.95; 1 = off)\n"
    "  --min-p P           drop tokens below P times the top probability (default 0.05;\n"
    "                      0 = off)\n"
    "  --seed S            random seed (default -1 = random)\n"
    "  -t, --threads N     CPU threads (default: all cores)\n"
    "  --verify[=TOL]      cuda plans: run the prompt and the first generated token op by\n"
    "                      op, compare every op's GPU output with the CPU reference kernels\n"
    "                      on the same inputs, report the ops to stderr and name the first\n"
    "                      one whose relative error exceeds TOL (default 1e-3); exit 3 if any\n"
    "  --json              one JSON object per line instead of text:\n"
    "                      {\"prompt_tokens\":[...]}, then {\"id\":N,\"piece\":\"...\"} per\n"
    "                      generated token, then {\"summary\":{...}}\n";

struct RunArgs {
  std::string plan;
  std::string prompt;
  bool have_prompt = false;
  std::string prompt_file;
  int64_t n_predict = -1;
  SamplerParams sampling;
  int threads = 0;
  bool json = false;
  bool help = false;
  bool verify = false;
  double verify_tol = 1e-3;
};

bool UsageError(const std::string& msg) {
  std::fprintf(stderr, "vibrant-run: %s\n%s", msg.c_str(), kUsage);
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
    if (a == "-h" || a == "--help") {
      out->help = true;
      return true;
    } else if (a == "-p" || a == "--prompt") {
      if (!value()) return false;
      out->prompt = v;
      out->have_prompt = true;
    } else if (a == "-f" || a == "--file") {
      if (!value()) return false;
      out->prompt_file = v;
    } else if (a == "-n" || a == "--n-predict") {
      if (!value()) return false;
      if (!absl::SimpleAtoi(v, &out->n_predict) || out->n_predict < -1) {
        return bad_value("an integer >= -1");
      }
    } else if (a == "--temp") {
      if (!value()) return false;
      if (!absl::SimpleAtof(v, &out->sampling.temp)) return bad_value("a number");
    } else if (a == "--top-k") {
      if (!value()) return false;
      if (!absl::SimpleAtoi(v, &out->sampling.top_k)) return bad_value("an integer");
    } else if (a == "--top-p") {
      if (!value()) return false;
      if (!absl::SimpleAtof(v, &out->sampling.top_p)) return bad_value("a number");
    } else if (a == "--min-p") {
      if (!value()) return false;
      if (!absl::SimpleAtof(v, &out->sampling.min_p)) return bad_value("a number");
    } else if (a == "--seed") {
      if (!value()) return false;
      int64_t seed;
      if (!absl::SimpleAtoi(v, &seed) || seed < -1 || seed > 0xFFFFFFFFll) {
        return bad_value("a seed in [-1, 4294967295]");
      }
      out->sampling.seed = seed == -1 ? kRandomSeed : static_cast<uint32_t>(seed);
    } else if (a == "-t" || a == "--threads") {
      if (!value()) return false;
      if (!absl::SimpleAtoi(v, &out->threads) || out->threads < 1) {
        return bad_value("an integer >= 1");
      }
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
    } else if (!a.empty() && a[0] == '-') {
      return UsageError("unknown option '" + a + "'");
    } else if (out->plan.empty()) {
      out->plan = a;
    } else {
      return UsageError("unexpected argument '" + a + "'");
    }
  }
  if (out->plan.empty()) return UsageError("no plan given");
  if (out->have_prompt == !out->prompt_file.empty()) {
    return UsageError("give the prompt with exactly one of -p and -f");
  }
  return true;
}

int64_t MetaInt(const ir::Graph& g, const std::string& key) {
  auto it = g.meta.find(key);
  if (it == g.meta.end()) return -1;
  if (const int64_t* v = std::get_if<int64_t>(&it->second)) return *v;
  return -1;
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

double Rate(int64_t n, double seconds) { return seconds > 0 ? n / seconds : 0.0; }

void WriteJsonLine(const nlohmann::json& j) {
  // Pieces that end inside a multi-byte UTF-8 character are not valid UTF-8
  // on their own; JSON cannot carry them, so such bytes become U+FFFD.
  std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

absl::Status Run(const RunArgs& args, bool* verify_failed) {
  std::string prompt = args.prompt;
  if (!args.prompt_file.empty()) {
    std::ifstream in(args.prompt_file, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat(args.prompt_file, ": cannot open"));
    std::stringstream ss;
    ss << in.rdbuf();
    prompt = ss.str();
    if (!prompt.empty() && prompt.back() == '\n') prompt.pop_back();
  }

  absl::StatusOr<std::unique_ptr<PlanFile>> plan = PlanFile::Open(args.plan);
  if (!plan.ok()) return plan.status();
  const std::string device = (*plan)->Option("device", "cpu");
  if (device != "cpu" && device != "cuda") {
    return absl::UnimplementedError(
        absl::StrCat(args.plan, ": compiled for device '", device, "', which this build does not know"));
  }
#ifndef VIBRANT_WITH_CUDA
  if (device == "cuda") {
    return absl::UnimplementedError(absl::StrCat(
        args.plan, ": compiled for device 'cuda', but this build of vibrant-run has no CUDA "
        "backend (recompile the plan with --device cpu)"));
  }
#endif
  if (args.verify && device != "cuda") {
    return absl::InvalidArgumentError("--verify compares the GPU with the CPU: it needs a cuda plan");
  }
  absl::StatusOr<ir::Graph> graph = (*plan)->LoadGraph();
  if (!graph.ok()) return graph.status();
  absl::StatusOr<std::unique_ptr<GgufFile>> model = (*plan)->OpenModel();
  if (!model.ok()) return model.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromGguf(**model);
  if (!tokenizer.ok()) return tokenizer.status();
  absl::StatusOr<Sampler> sampler = Sampler::Create(args.sampling);
  if (!sampler.ok()) return sampler.status();

  const int64_t n_ctx = MetaInt(*graph, "n_ctx");
  const int64_t n_vocab = MetaInt(*graph, "n_vocab");
  const int64_t max_tokens = graph->max_tokens;
  if (n_ctx < 1 || n_vocab < 1 || max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        args.plan, ": section GRAPH: the graph lacks n_ctx/n_vocab/max_tokens (n_ctx ", n_ctx,
        ", n_vocab ", n_vocab, ", max_tokens ", max_tokens, ")"));
  }

  // Tokenize and check the length before any compute.
  absl::StatusOr<std::vector<int32_t>> tokens =
      (*tokenizer)->Encode(prompt, /*add_special=*/true, /*parse_special=*/true);
  if (!tokens.ok()) return tokens.status();
  if (tokens->empty()) {
    return absl::InvalidArgumentError(
        "the prompt is empty (and the model adds no BOS token): nothing to continue");
  }
  if (static_cast<int64_t>(tokens->size()) > n_ctx) {
    return absl::OutOfRangeError(absl::StrCat(
        "the prompt is ", tokens->size(), " tokens, longer than the plan's context of ", n_ctx,
        " tokens (compile with a larger --ctx-size, or shorten the prompt)"));
  }

  const GgufFile* gguf = model->get();
  WeightResolver weights =
      [gguf](const std::string& source) -> absl::StatusOr<absl::Span<const uint8_t>> {
    const GgufTensorInfo* t = gguf->FindTensor(source);
    if (t == nullptr) {
      return absl::NotFoundError(absl::StrCat(
          gguf->path(), ": no tensor '", source, "', which the plan's graph reads"));
    }
    return gguf->TensorData(*t);
  };
  absl::StatusOr<std::unique_ptr<Executor>> exec;
  // Set for --verify: steps that run op by op against the CPU reference.
  std::function<absl::StatusOr<absl::Span<const float>>(absl::Span<const int32_t>, int32_t)>
      verify_step;
  int verify_failures = 0;
  if (device == "cpu") {
    CpuExecutorOptions exec_opts;
    exec_opts.threads = args.threads;
    exec = CreateCpuBackend(*graph, std::move(weights), exec_opts);
  }
#ifdef VIBRANT_WITH_CUDA
  std::optional<KernelBundle> bundle;
  if (device == "cuda") {
    CudaExecutorOptions cuda_opts;
    if (!(*plan)->kernels().empty()) {
      absl::StatusOr<KernelBundle> b =
          ParseKernelBundle((*plan)->kernels(), args.plan + ": section KERNELS");
      if (!b.ok()) return b.status();
      bundle = *std::move(b);
      cuda_opts.kernels = &*bundle;
    }
    absl::StatusOr<std::unique_ptr<CudaExecutor>> cuda =
        CudaExecutor::Create(*graph, std::move(weights), cuda_opts);
    if (!cuda.ok()) return cuda.status();
    std::fprintf(stderr, "vibrant-run: %s\n", (*cuda)->Describe().c_str());
    if (args.verify) {
      CudaExecutor* c = cuda->get();
      verify_step = [c, &args, &verify_failures](absl::Span<const int32_t> ids, int32_t pos0)
          -> absl::StatusOr<absl::Span<const float>> {
        absl::StatusOr<VerifyReport> r = c->VerifyStep(ids, pos0, args.verify_tol);
        if (!r.ok()) return r.status();
        double worst = 0;
        for (const VerifyOpResult& o : r->ops) {
          worst = std::max(worst, o.rel_err);
          if (!o.ok) {
            ++verify_failures;
            std::fprintf(stderr, "verify: MISMATCH %s: rel err %.3g (max |diff| %.3g, max |cpu| %.3g)\n",
                         o.desc.c_str(), o.rel_err, o.max_abs, o.ref_max);
          }
        }
        std::fprintf(stderr, "verify: step of %zu tokens at position %d: %zu op outputs, worst rel err %.3g%s%s\n",
                     ids.size(), pos0, r->ops.size(), worst,
                     r->first_bad >= 0 ? "; first mismatch: " : "",
                     r->first_bad >= 0 ? r->ops[r->first_bad].desc.c_str() : "");
        return r->logits;
      };
    }
    exec = std::unique_ptr<Executor>(std::move(*cuda));
  }
#endif
  if (!exec.ok()) return exec.status();
  // With --verify, the prompt and the first generated token run op by op.
  int verify_steps_left = args.verify ? -1 : 0;  // -1: every prefill step, then one decode
  auto step = [&](absl::Span<const int32_t> ids, int32_t pos0, bool decode)
      -> absl::StatusOr<absl::Span<const float>> {
    if (verify_step && verify_steps_left != 0) {
      if (decode) verify_steps_left = 0;
      return verify_step(ids, pos0);
    }
    return (*exec)->Step(ids, pos0);
  };

  if (args.json) WriteJsonLine({{"prompt_tokens", *tokens}});

  // The logits row of the last token of a step's output.
  auto last_row = [&](absl::Span<const float> logits) -> absl::StatusOr<absl::Span<const float>> {
    if (logits.empty() || logits.size() % n_vocab != 0) {
      return absl::InternalError(absl::StrCat("the step returned ", logits.size(),
                                              " logits, not a multiple of n_vocab ", n_vocab));
    }
    return logits.subspan(logits.size() - n_vocab);
  };

  // Prefill in chunks of max_tokens.
  const auto t0 = std::chrono::steady_clock::now();
  absl::Span<const int32_t> prompt_ids(*tokens);
  absl::Span<const float> logits;
  for (size_t done = 0; done < prompt_ids.size();) {
    size_t n = std::min<size_t>(prompt_ids.size() - done, static_cast<size_t>(max_tokens));
    absl::StatusOr<absl::Span<const float>> out =
        step(prompt_ids.subspan(done, n), static_cast<int32_t>(done), /*decode=*/false);
    if (!out.ok()) return out.status();
    logits = *out;
    done += n;
  }
  const auto t1 = std::chrono::steady_clock::now();

  // Generate.
  int64_t pos = static_cast<int64_t>(prompt_ids.size());
  int64_t generated = 0;
  std::string stop = "n_predict";
  while (args.n_predict < 0 || generated < args.n_predict) {
    absl::StatusOr<absl::Span<const float>> row = last_row(logits);
    if (!row.ok()) return row.status();
    absl::StatusOr<int32_t> id = sampler->Sample(*row);
    if (!id.ok()) return id.status();
    if ((*tokenizer)->IsEndOfGeneration(*id)) {
      stop = "eog";
      break;
    }
    ++generated;
    const std::string piece = (*tokenizer)->TokenToPiece(*id);
    if (args.json) {
      WriteJsonLine({{"id", *id}, {"piece", piece}});
    } else {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    if (args.n_predict >= 0 && generated >= args.n_predict) break;
    if (pos >= n_ctx) {
      stop = "context_full";
      break;
    }
    const int32_t next[1] = {*id};
    absl::StatusOr<absl::Span<const float>> out =
        step(absl::Span<const int32_t>(next, 1), static_cast<int32_t>(pos), /*decode=*/true);
    if (!out.ok()) return out.status();
    logits = *out;
    ++pos;
  }
  const auto t2 = std::chrono::steady_clock::now();

  const int64_t n_prompt = static_cast<int64_t>(prompt_ids.size());
  const double prompt_s = Seconds(t1 - t0);
  const double gen_s = Seconds(t2 - t1);
  if (args.json) {
    nlohmann::json summary = {{"prompt_tokens", n_prompt},
                              {"prompt_tok_s", Rate(n_prompt, prompt_s)},
                              {"generated_tokens", generated},
                              {"gen_tok_s", Rate(generated, gen_s)},
                              {"stop", stop}};
    if (!sampler->greedy()) summary["seed"] = sampler->seed();
    WriteJsonLine({{"summary", summary}});
  } else {
    // stdout carries exactly the generated text; on a terminal, end its line
    // (through stderr) so that the summary starts on a line of its own.
    if (generated > 0 && ::isatty(STDOUT_FILENO) && ::isatty(STDERR_FILENO)) {
      std::fputc('\n', stderr);
    }
    std::string line =
        absl::StrFormat("prompt: %d tokens, %.1f tok/s | generation: %d tokens, %.1f tok/s",
                        n_prompt, Rate(n_prompt, prompt_s), generated, Rate(generated, gen_s));
    if (!sampler->greedy()) absl::StrAppend(&line, " | seed ", sampler->seed());
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  if (verify_failures > 0) {
    *verify_failed = true;
    return absl::Status(absl::StatusCode::kDataLoss,
                        absl::StrCat("--verify: ", verify_failures,
                                     " op outputs differ from the CPU reference beyond ",
                                     args.verify_tol));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace vibrant

int main(int argc, char** argv) {
  vibrant::RunArgs args;
  if (!vibrant::ParseArgs(argc, argv, &args)) return 2;
  if (args.help) {
    std::fputs(vibrant::kUsage, stdout);
    return 0;
  }
  bool verify_failed = false;
  absl::Status st = vibrant::Run(args, &verify_failed);
  if (!st.ok()) {
    std::fflush(stdout);
    std::fprintf(stderr, "vibrant-run: %s\n", vibrant::io::EscapeForTerminal(st.message(), true).c_str());
    return verify_failed ? 3 : 1;
  }
  return 0;
}
