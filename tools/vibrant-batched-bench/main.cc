// vibrant-batched-bench: aggregate throughput of B sequences decoded together,
// after llama.cpp's llama-batched-bench (same flags, same table), on the paged
// (continuous-batching) step graph vibrant-server runs.
//
// For each (PP, TG, B) of -npp x -ntg x -npl: the KV cache is emptied; B
// sequences of PP prompt tokens are prefilled (packed into steps of at most
// -b tokens, as the server's scheduler packs chunks; with -pps one shared
// prompt: the other sequences' prompts are not computed, as llama-batched-
// bench's), then TG decode steps of B tokens, one per sequence. Reported as
// llama-batched-bench does:
//   N_KV    the cache rows in use at the end: B * (PP + TG) (PP + B * TG with -pps)
//   T_PP s  the prefill's time, S_PP t/s = B * PP / T_PP (PP / T_PP with -pps)
//   T_TG s  the decode's time,  S_TG t/s = B * TG / T_TG
//   T s     their sum,          S t/s    = N_KV / T
// Tokens are random ids (fixed seed); the logits are computed and copied to
// the host as the server's steps do, and not sampled.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "api/version.h"
#include "compiler/compiler.h"
#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "nlohmann/json.hpp"
#include "runtime/backends.h"

namespace vibrant {
namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string model, device = "cpu";
  std::vector<int64_t> npp = {128}, ntg = {128}, npl = {1, 2, 4, 8, 16, 32};
  int64_t ctx = 0, batch = 512, block = 16, gpu_layers = -1, threads = 0;
  bool pps = false, json = false;
};

const char kUsage[] =
    "usage: vibrant-batched-bench -m MODEL.gguf [options]\n"
    "\n"
    "Aggregate prefill and decode throughput of B sequences in one paged step graph\n"
    "(vibrant-server's), after llama-batched-bench: for each PP, TG and B, B prompts of\n"
    "PP tokens, then TG decode steps of one token per sequence.\n"
    "\n"
    "  -npp LIST              prompt tokens per sequence (default 128)\n"
    "  -ntg LIST              generated tokens per sequence (default 128)\n"
    "  -npl LIST              sequences decoded together (default 1,2,4,8,16,32)\n"
    "  -pps                   the sequences share one prompt, computed once\n"
    "  -c, --ctx-size N       the KV budget of all sequences (default: the largest\n"
    "                         B * (PP + TG), in whole blocks)\n"
    "  -b, --batch-size N     tokens per step (default 512)\n"
    "  --block-size N         KV block size (default 16)\n"
    "  --device cpu|cuda      (default cpu)\n"
    "  -ngl N                 cuda: only the last N layers on the GPU, the rest on the CPU\n"
    "  -t, --threads N        CPU threads (default: the physical cores)\n"
    "  --json                 one JSON object per line instead of the table\n"
    "  --version\n";

bool ParseList(const std::string& v, std::vector<int64_t>* out) {
  out->clear();
  for (absl::string_view p : absl::StrSplit(v, ',')) {
    int64_t x;
    if (!absl::SimpleAtoi(p, &x) || x < 0 || x > (int64_t{1} << 24)) return false;
    out->push_back(x);
  }
  return !out->empty();
}

// 0: ok; 1: usage error (message printed); 2: --help/--version done.
int ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&](std::string* v) {
      if (i + 1 >= argc) return false;
      *v = argv[++i];
      return true;
    };
    auto bad = [&](const std::string& what) {
      std::fprintf(stderr, "vibrant-batched-bench: %s: %s\n%s", f.c_str(), what.c_str(), kUsage);
      return 1;
    };
    std::string v;
    int64_t n = 0;
    if (f == "-h" || f == "--help") {
      std::printf("%s", kUsage);
      return 2;
    } else if (f == "--version") {
      std::printf("%s\n", VersionLine("vibrant-batched-bench").c_str());
      return 2;
    } else if (f == "-pps") {
      a->pps = true;
    } else if (f == "--json") {
      a->json = true;
    } else if (!value(&v)) {
      return bad(f.rfind("-", 0) == 0 ? "unknown flag, or it needs a value" : "unexpected argument");
    } else if (f == "-m" || f == "--model") {
      a->model = v;
    } else if (f == "-npp" || f == "-ntg" || f == "-npl") {
      std::vector<int64_t>* l = f == "-npp" ? &a->npp : f == "-ntg" ? &a->ntg : &a->npl;
      if (!ParseList(v, l)) return bad(absl::StrCat("'", v, "' is not a list of integers >= 0"));
      if (f == "-npl" && std::count(l->begin(), l->end(), 0) > 0) return bad("sequence counts are >= 1");
    } else if (f == "--device") {
      if (v != "cpu" && v != "cuda") return bad("cpu or cuda");
      a->device = v;
    } else if (f == "-c" || f == "--ctx-size" || f == "-b" || f == "--batch-size" || f == "--block-size" ||
               f == "-ngl" || f == "--n-gpu-layers" || f == "-t" || f == "--threads") {
      const bool zero_ok = f == "-c" || f == "--ctx-size" || f == "-ngl" || f == "--n-gpu-layers" || f == "-t" ||
                           f == "--threads";
      if (!absl::SimpleAtoi(v, &n) || n < (zero_ok ? 0 : 1) || n > (int64_t{1} << 24)) {
        return bad(absl::StrCat("'", v, "' is not an integer >= ", zero_ok ? 0 : 1));
      }
      if (f == "-c" || f == "--ctx-size") a->ctx = n;
      if (f == "-b" || f == "--batch-size") a->batch = n;
      if (f == "--block-size") a->block = n;
      if (f == "-ngl" || f == "--n-gpu-layers") a->gpu_layers = n;
      if (f == "-t" || f == "--threads") a->threads = n;
    } else {
      return bad("unknown flag");
    }
  }
  if (a->model.empty()) {
    std::fprintf(stderr, "vibrant-batched-bench: -m MODEL.gguf is required\n%s", kUsage);
    return 1;
  }
  return 0;
}

struct Row {
  int64_t pp, tg, b, n_kv;
  double t_pp, t_tg;
};

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

absl::Status Run(const Args& a) {
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Open(a.model);
  if (!gguf.ok()) return gguf.status();
  const int64_t max_b = *std::max_element(a.npl.begin(), a.npl.end());
  int64_t need = 0, longest = 0;  // cache rows of all sequences; of one sequence
  for (int64_t pp : a.npp) {
    for (int64_t tg : a.ntg) {
      for (int64_t b : a.npl) {
        const int64_t per = (pp + tg + a.block - 1) / a.block * a.block;  // whole blocks per sequence
        need = std::max(need, a.pps ? (pp + a.block - 1) / a.block * a.block + b * per : b * per);
        longest = std::max(longest, pp + tg);
      }
    }
  }
  compiler::CompileOptions co;
  co.device = a.device;
  co.gpu_layers = a.device == "cuda" ? a.gpu_layers : -1;
  co.lower.n_seq = max_b;
  co.lower.block_size = a.block;
  co.lower.n_ctx = a.ctx > 0 ? a.ctx : need;
  co.lower.max_tokens = std::max(a.batch, max_b);
  co.sample = false;  // the logits, as the server's steps return them
  const auto t0 = Clock::now();
  absl::StatusOr<compiler::Compiled> c = compiler::CompileGguf(**gguf, co);
  if (!c.ok()) return c.status();
  const double compile_s = Seconds(Clock::now() - t0);
  const Program program = compiler::ToProgram(*c);
  const ir::Graph& g = program.graph;
  auto meta = [&](const char* key) {
    auto it = g.meta.find(key);
    return it == g.meta.end() || !std::holds_alternative<int64_t>(it->second) ? int64_t{0}
                                                                              : std::get<int64_t>(it->second);
  };
  const int64_t n_ctx = meta("n_ctx"), max_blocks = meta("max_blocks"), n_vocab = meta("n_vocab");
  const int64_t pool_blocks = n_ctx / a.block;
  if (longest > max_blocks * a.block) {
    return absl::InvalidArgumentError(absl::StrCat("a sequence of ", longest, " tokens exceeds the ",
                                                   max_blocks * a.block, " a sequence may hold (the model's training "
                                                   "context, or -c)"));
  }
  BackendOptions bo;
  bo.threads = static_cast<int>(a.threads);
  absl::StatusOr<std::unique_ptr<Executor>> exec = CreateBackend(program, GgufWeights(**gguf), bo);
  if (!exec.ok()) return exec.status();
  if (!a.json) {
    std::printf("main: %s, n_ctx %lld (KV budget), n_batch %lld, block %lld, %lld slots; compiled in %.2f s\n%s\n\n",
                a.model.c_str(), static_cast<long long>(n_ctx), static_cast<long long>(co.lower.max_tokens),
                static_cast<long long>(a.block), static_cast<long long>(max_b), compile_s,
                (*exec)->Describe().c_str());
    std::printf("|%6s | %6s | %4s | %6s | %8s | %8s | %8s | %8s | %8s | %8s |\n", "PP", "TG", "B", "N_KV", "T_PP s",
                "S_PP t/s", "T_TG s", "S_TG t/s", "T s", "S t/s");
    std::printf("|%6s-|-%6s-|-%4s-|-%6s-|-%8s-|-%8s-|-%8s-|-%8s-|-%8s-|-%8s-|\n", "------", "------", "----",
                "------", "--------", "--------", "--------", "--------", "--------", "--------");
  }
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> tok(1, static_cast<int32_t>(std::max<int64_t>(n_vocab - 1, 1)));
  for (int64_t pp : a.npp) {
    for (int64_t tg : a.ntg) {
      for (int64_t b : a.npl) {
        const int64_t per = (pp + tg + a.block - 1) / a.block;  // blocks per sequence
        const int64_t shared = a.pps ? (pp + a.block - 1) / a.block : 0;
        if ((a.pps ? shared + b * per : b * per) > pool_blocks) {
          std::fprintf(stderr, "skipping PP %lld TG %lld B %lld: needs more than the %lld-row KV budget (-c)\n",
                       static_cast<long long>(pp), static_cast<long long>(tg), static_cast<long long>(b),
                       static_cast<long long>(n_ctx));
          continue;
        }
        // Sequence s: its own blocks [shared + s * per, ...); with -pps the
        // prompt's blocks are every sequence's first ones (a shared prefix).
        std::vector<int32_t> table(max_b * max_blocks, 0);
        for (int64_t s = 0; s < b; ++s) {
          for (int64_t k = 0; k < max_blocks && k < per; ++k) {
            const bool prompt_block = a.pps && k < shared && (k + 1) * a.block <= pp;
            table[s * max_blocks + k] = static_cast<int32_t>(prompt_block ? k : shared + s * per + k);
          }
        }
        (*exec)->Reset();
        std::vector<int32_t> prompt(pp);
        for (int32_t& t : prompt) t = tok(rng);
        // Prefill: the sequences' prompts packed into steps of up to n_batch
        // tokens (with -pps, sequence 0's alone, and the others' partial last
        // block once each).
        std::vector<int32_t> toks, pos, seq;
        auto flush = [&]() -> absl::Status {
          if (toks.empty()) return absl::OkStatus();
          BatchInputs in{toks, pos, seq, table};
          absl::StatusOr<absl::Span<const float>> l = (*exec)->StepBatch(in);
          toks.clear();
          pos.clear();
          seq.clear();
          return l.status();
        };
        // Sequence s's prompt rows [from, pp), packed into steps as they fill.
        auto prefill = [&](int64_t s, int64_t from) -> absl::Status {
          for (int64_t i = from; i < pp; ++i) {
            toks.push_back(prompt[i]);
            pos.push_back(static_cast<int32_t>(i));
            seq.push_back(static_cast<int32_t>(s));
            if (static_cast<int64_t>(toks.size()) == co.lower.max_tokens) {
              if (absl::Status st = flush(); !st.ok()) return st;
            }
          }
          return absl::OkStatus();
        };
        const auto tp0 = Clock::now();
        for (int64_t s = 0; s < (a.pps ? 1 : b); ++s) {
          if (absl::Status st = prefill(s, 0); !st.ok()) return st;
        }
        // -pps: the rows of the shared prompt's partial block, in each other
        // sequence's own block.
        for (int64_t s = 1; a.pps && s < b; ++s) {
          if (absl::Status st = prefill(s, pp / a.block * a.block); !st.ok()) return st;
        }
        if (absl::Status st = flush(); !st.ok()) return st;
        const double t_pp = Seconds(Clock::now() - tp0);
        const auto tg0 = Clock::now();
        for (int64_t k = 0; k < tg; ++k) {
          for (int64_t s = 0; s < b; ++s) {
            toks.push_back(tok(rng));
            pos.push_back(static_cast<int32_t>(pp + k));
            seq.push_back(static_cast<int32_t>(s));
          }
          if (absl::Status st = flush(); !st.ok()) return st;
        }
        const double t_tg = Seconds(Clock::now() - tg0);
        const int64_t n_kv = a.pps ? pp + b * tg : b * (pp + tg);
        const double s_pp = t_pp > 0 ? (a.pps ? pp : b * pp) / t_pp : 0;
        const double s_tg = t_tg > 0 ? b * tg / t_tg : 0;
        const double s = t_pp + t_tg > 0 ? n_kv / (t_pp + t_tg) : 0;
        if (a.json) {
          nlohmann::json j = {{"n_kv_max", n_ctx}, {"n_batch", co.lower.max_tokens}, {"pp", pp}, {"tg", tg},
                              {"pl", b}, {"n_kv", n_kv}, {"t_pp", t_pp}, {"speed_pp", s_pp}, {"t_tg", t_tg},
                              {"speed_tg", s_tg}, {"t", t_pp + t_tg}, {"speed", s}, {"device", a.device}};
          std::printf("%s\n", j.dump().c_str());
        } else {
          std::printf("|%6lld | %6lld | %4lld | %6lld | %8.3f | %8.2f | %8.3f | %8.2f | %8.3f | %8.2f |\n",
                      static_cast<long long>(pp), static_cast<long long>(tg), static_cast<long long>(b),
                      static_cast<long long>(n_kv), t_pp, s_pp, t_tg, s_tg, t_pp + t_tg, s);
        }
        std::fflush(stdout);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace vibrant

int main(int argc, char** argv) {
  vibrant::Args a;
  const int parsed = vibrant::ParseArgs(argc, argv, &a);
  if (parsed == 2) return 0;
  if (parsed != 0) return 2;
  if (absl::Status s = vibrant::Run(a); !s.ok()) {
    std::fprintf(stderr, "vibrant-batched-bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
