// GPU kernel micro-benchmarks, through the public CudaExecutor: each case is a
// small step graph built around one op, put through the compiler's default
// pass pipeline for the cuda device (as `vibrantc compile --device cuda` and
// vibrant-bench do), so the numbers follow whatever kernels, fusion and
// memory plan the backend uses, without naming any kernel.
//
// Without a usable GPU the program prints the reason and exits 0 with no
// benchmarks (it is a benchmark, not a test). `--dry_run` needs no GPU: it
// builds every case's graphs, runs the passes and the case's checks, and
// runs the small cases one step on the CPU backend (exit 1 on a failure).
//
// How a case is timed
//   A case's graph holds R repetitions of the measured op (R below), so that
//   the fixed cost of a step is amortized and, where it matters, the data the
//   op reads is larger than the GPU's L2 (every repetition reads its own
//   weights or KV cache, as the layers of a model do). The same graph with
//   R = 0 is the baseline: the step's fixed part (the tokens/positions
//   host-to-device copy, one small embedding kernel, one or two last_row
//   copies, the logits device-to-host copy of at most 256 floats, the launch
//   and the synchronization). Both are run with CudaExecutor::Step, which is
//   synchronous (it returns the logits on the host); each iteration is one
//   step of the R graph, timed on the host clock, minus the baseline's median
//   step time, set with SetIterationTime (UseManualTime). CUDA events would
//   measure the same interval: the executor runs on its own non-blocking
//   stream and Step returns only after it drained.
//   So "Time" is the time R ops take inside a step (decode steps: replayed
//   as a CUDA graph, the launch gaps between the ops included; T = 512:
//   plain launches, as prefill runs), and op_us = Time / R is one op.
//
// Counters (decimal units, 1 GB = 1e9 bytes):
//   reps     R.
//   op_us    time of one op (µs).
//   base_us  the baseline step (µs), subtracted; step_us the raw R step (µs).
//   GB/s     bytes the op must move / op_us: mat-vec: the weight matrix as
//            stored (quantized bytes; the x vector and the bias are not
//            counted); elementwise: activations read + written (+ the norm
//            weight); attention: the K and V rows read (f16).
//   %d2d     GB/s as a percentage of this card's device-to-device copy
//            bandwidth, measured at start-up (cudaMemcpyAsync of 1 GiB,
//            timed with events, counted as bytes read + written, the
//            convention of bench/run_device.sh and BENCHMARKS.md).
//   TFLOP/s  prefill matmul: 2 * T * N * K / op time.
//   tok/s    attention: 1 / (n_layer * op time): tokens per second if a
//            decode step were only the preset's attention ops.
//
// Cases (select with --benchmark_filter):
//   BM_MatVec/<preset>/<matrix>/<type>   T = 1, types f16 q8_0 q4_0 q4_K q5_K
//     q6_K; matrices of qwen2.5-3b (attn_q 2048x2048, attn_kv 256x2048,
//     ffn_up 11008x2048, ffn_down 2048x11008, output 151936x2048) and
//     llama3.1-8b (attn_q 4096x4096, ffn_up 14336x4096, ffn_down 4096x14336),
//     shapes from bench/synth's presets (rows x row length). Graph: x = the
//     last row of an embedding of a 4-row f32 table, then R matmuls of x by R
//     distinct copies of the matrix (R = max(4, 512 MiB / matrix size), at
//     most 1024), chained through the bias (matmul i + 1 adds the output of
//     matmul i as its bias, which keeps every matmul live without an extra
//     kernel; reading N bias floats is noise next to the weights).
//   BM_Prefill/<preset>/<matrix>/q4_K/T:512   one matmul of 512 tokens
//     (R = 1; the baseline holds the 512-row embedding).
//   BM_PrefillGemm/qwen2.5-3b/<matrix>/<type>/T:<T>/<path>   the same one
//     matmul through a chosen GEMM path: cublaslt (dequantized f16 chunks +
//     cuBLASLt), mmq (the quantized tensor-core GEMM, kernels/mmq.cc, with
//     the compiler's tile rule), mmq64 / mmq128 (forced tile); matrices
//     attn_q, attn_kv, ffn_up, ffn_down; q4_K and q6_K at T = 512 and 2048,
//     q8_0, q5_K, q4_0 for ffn_up at T = 512. TFLOP/s = 2 T N K / op time
//     (the op includes quantize_q8 and the f16 copy of x, as in a model).
//   BM_ResidualRmsNorm/D:2048/T:{1,512}   R times s = add(s, n);
//     n = mul(rms_norm(s), w): the fusion pass's residual-norm pattern, one
//     fused op per repetition (checked); bytes 4*T*D*4 + D*4.
//   BM_SwiGLU/F:11008/T:{1,512}   R times y = mul(silu(y), up): the swiglu
//     pattern, one fused op per repetition (checked); bytes 3*T*F*4.
//     Elementwise R = 256 MiB / bytes, within [8, 256] (activations are not
//     made larger than L2: in a model they are as warm as here).
//   BM_DecodeAttention/qwen2.5-3b/ctx:{1024,4096,16384}   the 3B's attention
//     (16 heads, 2 KV heads, head_dim 128, f16 cache of ctx rows), one step
//     at position ctx - 1 (all ctx rows read); R layers, each its own KV
//     cache, the output of layer i the query of layer i + 1 (R = the preset's
//     36 layers, or more to read >= 256 MiB per step; at most 1024). The
//     attention op only: no kv_store, no rope. Cache contents (zeros) do not
//     change speed.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "bench/synth/presets.h"
#include "bench/synth/random_blocks.h"
#include "benchmark/benchmark.h"
#include "codegen/kernel_source.h"
#include "compiler/compiler.h"
#include "ir/graph.h"
#include "passes/pass.h"
#include "runtime/cpu/executor.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/executor.h"

namespace vibrant {
namespace {

using ir::Graph;
using ir::kTokens;
using ir::OpKind;
using ir::ValueId;

constexpr int64_t kMiB = int64_t{1} << 20;

// ---- the card's copy bandwidth --------------------------------------------------------

// Device-to-device copy of 1 GiB on a stream, timed with events: bytes read +
// written per second (GB/s, decimal). 0 with a message when it cannot run.
double MeasureD2dBandwidth() {
  const size_t n = size_t{1} << 30;
  void* src = nullptr;
  void* dst = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  double gbps = 0;
  auto check = [](cudaError_t e, const char* what) {
    if (e == cudaSuccess) return true;
    std::fprintf(stderr, "cuda_kernels_benchmark: D2D bandwidth not measured: %s\n",
                 std::string(CudaStatus(e, what).message()).c_str());
    return false;
  };
  if (check(cudaMalloc(&src, n), "cudaMalloc 1 GiB") &&
      check(cudaMalloc(&dst, n), "cudaMalloc 1 GiB") &&
      check(cudaMemset(src, 1, n), "cudaMemset") &&
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize") &&
      check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate") &&
      check(cudaEventCreate(&start), "cudaEventCreate") &&
      check(cudaEventCreate(&stop), "cudaEventCreate")) {
    bool ok = true;
    for (int i = 0; i < 3 && ok; ++i) {
      ok = check(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream), "warm-up copy");
    }
    const int reps = 20;
    ok = ok && check(cudaEventRecord(start, stream), "cudaEventRecord");
    for (int i = 0; i < reps && ok; ++i) {
      ok = check(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream), "copy");
    }
    ok = ok && check(cudaEventRecord(stop, stream), "cudaEventRecord") &&
         check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    if (ok && check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime") && ms > 0) {
      const double per_copy_ms = ms / reps;
      gbps = 2.0 * static_cast<double>(n) / (per_copy_ms * 1e-3) / 1e9;
      std::fprintf(stderr,
                   "d2d copy of 1 GiB: %.3f ms = %.0f GB/s read+written (%.0f GB/s each way)\n",
                   per_copy_ms, gbps, gbps / 2);
    }
  }
  if (start != nullptr) cudaEventDestroy(start);
  if (stop != nullptr) cudaEventDestroy(stop);
  if (stream != nullptr) cudaStreamDestroy(stream);
  if (src != nullptr) cudaFree(src);
  if (dst != nullptr) cudaFree(dst);
  return gbps;
}

double g_d2d_gbps = 0;

// ---- host weights ---------------------------------------------------------------------

// Weight bytes by GGUF source name; several sources may share one buffer
// (the R copies of a matrix: the executor uploads each source separately).
class HostWeights {
 public:
  absl::Status Add(const std::string& name, DType t, int64_t elements, uint64_t seed, float sigma,
                   float mean = 0) {
    absl::StatusOr<int64_t> nb = DTypeBytes(t, elements);
    if (!nb.ok()) return nb.status();
    auto buf = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(*nb));
    if (absl::Status s = synth::FillRandom(t, seed, sigma, mean, absl::MakeSpan(*buf)); !s.ok()) {
      return s;
    }
    by_source_[name] = std::move(buf);
    return absl::OkStatus();
  }
  // `alias` reads the same bytes as `name`.
  void Alias(const std::string& alias, const std::string& name) {
    by_source_[alias] = by_source_.at(name);
  }
  WeightResolver Resolver() const {
    return [this](const std::string& src) -> absl::StatusOr<absl::Span<const uint8_t>> {
      auto it = by_source_.find(src);
      if (it == by_source_.end()) return absl::NotFoundError("no benchmark weight " + src);
      return absl::Span<const uint8_t>(*it->second);
    };
  }

 private:
  std::map<std::string, std::shared_ptr<std::vector<uint8_t>>> by_source_;
};

// ---- cases ---------------------------------------------------------------------------

struct Case {
  std::string name;
  int64_t tokens = 1;  // T of the measured step (also the graph's max_tokens)
  int32_t pos0 = 0;
  int reps = 1;
  double bytes_per_rep = 0;  // for GB/s (0: no GB/s counter)
  double flops_per_rep = 0;  // for TFLOP/s (0: none)
  int64_t attn_layers = 0;   // for tok/s (0: none)
  // Builds the step graph with `reps` repetitions of the op (0: the baseline).
  std::function<absl::StatusOr<Graph>(int reps)> build;
  // Fills the weights the graphs read.
  std::function<absl::Status(HostWeights&, int reps)> weights;
  // Checks the graph after the pass pipeline (e.g. what fusion formed).
  std::function<absl::Status(const Graph&, int reps)> check;
  // Compile options of the case (compiler::CompileOptions): the quantized
  // tensor-core GEMM up to this many rows (0: cuBLASLt), its tile (0: rule).
  int mmq_max_rows = 0;
  int mmq_tile = 0;
};

// What one case measured, for the summary tables printed at the end.
struct Result {
  double op_us = 0, gbps = 0, pct = 0, tflops = 0, tok_s = 0;
};
std::map<std::string, Result> g_results;

absl::StatusOr<ValueId> Reshape(Graph& g, ValueId x, ir::Shape to, const std::string& name) {
  return g.AddOp(OpKind::kReshape, {x}, name, {{"shape", std::vector<int64_t>(to)}});
}

// The largest power of two <= 256 dividing n (n > 0).
int64_t Chunk(int64_t n) {
  int64_t c = 256;
  while (n % c != 0) c /= 2;
  return c;
}

// logits = last_row(reshape(x[1, W] or [W], [W/c, c])): at most 256 floats
// go back to the host whatever W is.
absl::Status SmallLogits(Graph& g, ValueId x, int64_t width) {
  const int64_t c = Chunk(width);
  absl::StatusOr<ValueId> r = Reshape(g, x, {width / c, c}, "tail");
  if (!r.ok()) return r.status();
  absl::StatusOr<ValueId> l = g.AddOp(OpKind::kLastRow, {*r}, "logits");
  if (!l.ok()) return l.status();
  g.MarkOutput(*l);
  return absl::OkStatus();
}

ValueId Embedding(Graph& g, ValueId tokens, const std::string& table, int64_t width,
                  absl::Status* err) {
  absl::StatusOr<ValueId> x =
      g.AddOp(OpKind::kEmbedding, {g.AddWeight(table, DType::kF32, {4, width}, table), tokens},
              table + ".x");
  if (!x.ok()) {
    *err = x.status();
    return -1;
  }
  return *x;
}

#define BM_ASSIGN(lhs, expr)             \
  do {                                   \
    absl::StatusOr<ValueId> _v = (expr); \
    if (!_v.ok()) return _v.status();    \
    lhs = *_v;                           \
  } while (0)

int RepsFor(double bytes_per_rep, double target_bytes, int min_reps, int max_reps) {
  const double r = std::ceil(target_bytes / std::max(bytes_per_rep, 1.0));
  return static_cast<int>(std::clamp<double>(r, min_reps, max_reps));
}

struct Matrix {
  std::string name;
  int64_t rows;  // N (output features)
  int64_t cols;  // K (row length)
};

Case MatVecCase(const synth::ModelPreset& p, const Matrix& m, DType t) {
  Case c;
  c.name =
      absl::StrCat("BM_MatVec/", std::string(p.name), "/", m.name, "/", std::string(DTypeName(t)));
  const double bytes = static_cast<double>(*DTypeBytes(t, m.rows * m.cols));
  c.bytes_per_rep = bytes;
  c.reps = RepsFor(bytes, 512.0 * kMiB, 4, 1024);
  c.build = [m, t](int reps) -> absl::StatusOr<Graph> {
    Graph g;
    g.max_tokens = 1;
    const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
    absl::Status err;
    const ValueId x = Embedding(g, tokens, "embd", m.cols, &err);
    if (!err.ok()) return err;
    ValueId x1, y = -1;
    BM_ASSIGN(x1, g.AddOp(OpKind::kLastRow, {x}, "x1"));
    for (int i = 0; i < reps; ++i) {
      const std::string w = absl::StrCat("w.", i);
      std::vector<ValueId> in = {x1, g.AddWeight(w, t, {m.rows, m.cols}, w)};
      if (y >= 0) {
        ValueId b;
        BM_ASSIGN(b, Reshape(g, y, {m.rows}, absl::StrCat("b.", i)));
        in.push_back(b);
      }
      BM_ASSIGN(y, g.AddOp(OpKind::kMatMul, in, absl::StrCat("y.", i)));
    }
    if (absl::Status s = SmallLogits(g, reps > 0 ? y : x1, reps > 0 ? m.rows : m.cols); !s.ok()) {
      return s;
    }
    return g;
  };
  c.weights = [m, t](HostWeights& w, int reps) -> absl::Status {
    if (absl::Status s = w.Add("embd", DType::kF32, 4 * m.cols, 1, 1.0f); !s.ok()) return s;
    if (reps == 0) return absl::OkStatus();
    if (absl::Status s = w.Add("w", t, m.rows * m.cols, 2, 0.02f); !s.ok()) return s;
    for (int i = 0; i < reps; ++i) w.Alias(absl::StrCat("w.", i), "w");
    return absl::OkStatus();
  };
  return c;
}

Case PrefillCase(const synth::ModelPreset& p, const Matrix& m, DType t, int64_t T) {
  Case c;
  c.name = absl::StrCat("BM_Prefill/", std::string(p.name), "/", m.name, "/",
                        std::string(DTypeName(t)), "/T:", T);
  c.tokens = T;
  c.reps = 1;
  c.flops_per_rep = 2.0 * static_cast<double>(T) * m.rows * m.cols;
  c.build = [m, t, T](int reps) -> absl::StatusOr<Graph> {
    Graph g;
    g.max_tokens = T;
    const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
    absl::Status err;
    const ValueId x = Embedding(g, tokens, "embd", m.cols, &err);
    if (!err.ok()) return err;
    ValueId y = x;
    if (reps > 0)
      BM_ASSIGN(y, g.AddOp(OpKind::kMatMul, {x, g.AddWeight("w", t, {m.rows, m.cols}, "w")}, "y"));
    ValueId last;
    BM_ASSIGN(last, g.AddOp(OpKind::kLastRow, {y}, "last"));
    if (absl::Status s = SmallLogits(g, last, reps > 0 ? m.rows : m.cols); !s.ok()) return s;
    return g;
  };
  c.weights = [m, t](HostWeights& w, int reps) -> absl::Status {
    if (absl::Status s = w.Add("embd", DType::kF32, 4 * m.cols, 1, 1.0f); !s.ok()) return s;
    if (reps == 0) return absl::OkStatus();
    return w.Add("w", t, m.rows * m.cols, 2, 0.02f);
  };
  return c;
}

// The prefill matmul of PrefillCase through one GEMM path: "cublaslt"
// (dequantized f16 weight chunks + cuBLASLt), "mmq" (the quantized
// tensor-core GEMM with the compiler's tile rule), "mmq64" / "mmq128" (a
// forced tile). The check makes sure the compiler chose that path.
Case PrefillGemmCase(const synth::ModelPreset& p, const Matrix& m, DType t, int64_t T, const std::string& path) {
  Case c = PrefillCase(p, m, t, T);
  c.name = absl::StrCat("BM_PrefillGemm/", std::string(p.name), "/", m.name, "/", std::string(DTypeName(t)),
                        "/T:", T, "/", path);
  if (path != "cublaslt") {
    c.mmq_max_rows = static_cast<int>(T);
    c.mmq_tile = path == "mmq64" ? 64 : path == "mmq128" ? 128 : 0;
  }
  const bool want_mmq = path != "cublaslt";
  c.check = [want_mmq, T](const Graph& g, int reps) -> absl::Status {
    if (reps == 0) return absl::OkStatus();
    for (const ir::Op& op : g.ops()) {
      for (const ir::KernelVariant& v : op.kernels) {
        if (v.t_min <= T && T <= v.t_max && v.name.rfind("gemm.", 0) == 0) {
          if ((v.name == "gemm.mmq") != want_mmq) {
            return absl::InternalError(absl::StrCat("the matmul runs ", v.name, " at T=", T));
          }
          return absl::OkStatus();
        }
      }
    }
    bool any = false;
    for (const ir::Op& op : g.ops()) any |= !op.kernels.empty();
    return any ? absl::InternalError("no GEMM variant at this T") : absl::OkStatus();  // cpu: no kernels
  };
  return c;
}

// The number of fused ops whose body holds an op of `kind`, and whether any
// body holds more than one such op (repetitions merged into one fused op).
absl::Status CheckFusedPerRep(const Graph& g, int reps, OpKind kind, const char* pattern) {
  int fused = 0;
  for (const ir::Op& op : g.ops()) {
    if (op.kind != OpKind::kFused || op.body == nullptr) continue;
    int n = 0;
    for (const ir::Op& b : op.body->ops()) n += b.kind == kind;
    if (n > 1) {
      return absl::FailedPreconditionError(
          absl::StrCat("the fusion pass merged ", n, " repetitions of ", pattern,
                       " into one fused op; this benchmark needs one fused op per repetition"));
    }
    fused += n;
  }
  if (fused != reps) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the fusion pass formed ", fused, " fused ", pattern, " ops for ", reps,
        " repetitions (expected one each): the benchmark would not measure the fused op"));
  }
  return absl::OkStatus();
}

Case ResidualNormCase(int64_t D, int64_t T, double eps) {
  Case c;
  c.name = absl::StrCat("BM_ResidualRmsNorm/D:", D, "/T:", T);
  c.tokens = T;
  c.bytes_per_rep = static_cast<double>(4 * T * D + D) * 4;
  c.reps = RepsFor(c.bytes_per_rep, 256.0 * kMiB, 8, 256);
  c.build = [D, T, eps](int reps) -> absl::StatusOr<Graph> {
    Graph g;
    g.max_tokens = T;
    const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
    absl::Status err;
    ValueId s = Embedding(g, tokens, "a", D, &err);
    ValueId n = Embedding(g, tokens, "b", D, &err);
    if (!err.ok()) return err;
    const ValueId w = reps > 0 ? g.AddWeight("norm", DType::kF32, {D}, "norm") : -1;
    for (int i = 0; i < reps; ++i) {
      ValueId r;
      BM_ASSIGN(s, g.AddOp(OpKind::kAdd, {s, n}, absl::StrCat("s.", i)));
      BM_ASSIGN(r, g.AddOp(OpKind::kRmsNorm, {s}, absl::StrCat("r.", i), {{"eps", eps}}));
      BM_ASSIGN(n, g.AddOp(OpKind::kMul, {r, w}, absl::StrCat("n.", i)));
    }
    // The last residual add reads s too, so every repetition's s is an output
    // of its fused op, as in a model.
    ValueId f, last;
    BM_ASSIGN(f, g.AddOp(OpKind::kAdd, {s, n}, "final"));
    BM_ASSIGN(last, g.AddOp(OpKind::kLastRow, {f}, "last"));
    if (absl::Status st = SmallLogits(g, last, D); !st.ok()) return st;
    return g;
  };
  c.weights = [D](HostWeights& w, int reps) -> absl::Status {
    if (absl::Status s = w.Add("a", DType::kF32, 4 * D, 1, 1.0f); !s.ok()) return s;
    if (absl::Status s = w.Add("b", DType::kF32, 4 * D, 2, 1.0f); !s.ok()) return s;
    return reps > 0 ? w.Add("norm", DType::kF32, D, 3, 0.1f, 1.0f) : absl::OkStatus();
  };
  c.check = [](const Graph& g, int reps) {
    return CheckFusedPerRep(g, reps, OpKind::kRmsNorm, "residual add + rms_norm");
  };
  return c;
}

Case SwigluCase(int64_t F, int64_t T) {
  Case c;
  c.name = absl::StrCat("BM_SwiGLU/F:", F, "/T:", T);
  c.tokens = T;
  c.bytes_per_rep = static_cast<double>(3 * T * F) * 4;
  c.reps = RepsFor(c.bytes_per_rep, 256.0 * kMiB, 8, 256);
  c.build = [F, T](int reps) -> absl::StatusOr<Graph> {
    Graph g;
    g.max_tokens = T;
    const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
    absl::Status err;
    ValueId y = Embedding(g, tokens, "gate", F, &err);
    const ValueId up = reps > 0 ? Embedding(g, tokens, "up", F, &err) : -1;
    if (!err.ok()) return err;
    for (int i = 0; i < reps; ++i) {
      ValueId a;
      BM_ASSIGN(a, g.AddOp(OpKind::kSilu, {y}, absl::StrCat("a.", i)));
      BM_ASSIGN(y, g.AddOp(OpKind::kMul, {a, up}, absl::StrCat("y.", i)));
    }
    ValueId last;
    BM_ASSIGN(last, g.AddOp(OpKind::kLastRow, {y}, "last"));
    if (absl::Status st = SmallLogits(g, last, F); !st.ok()) return st;
    return g;
  };
  c.weights = [F](HostWeights& w, int reps) -> absl::Status {
    if (absl::Status s = w.Add("gate", DType::kF32, 4 * F, 1, 1.0f); !s.ok()) return s;
    return reps > 0 ? w.Add("up", DType::kF32, 4 * F, 2, 1.0f) : absl::OkStatus();
  };
  c.check = [](const Graph& g, int reps) {
    return CheckFusedPerRep(g, reps, OpKind::kSilu, "silu(gate) * up");
  };
  return c;
}

Case AttentionCase(const synth::ModelPreset& p, int64_t ctx) {
  Case c;
  c.name = absl::StrCat("BM_DecodeAttention/", std::string(p.name), "/ctx:", ctx);
  const int64_t H = p.n_head, KVH = p.n_head_kv, hd = p.head_dim;
  c.pos0 = static_cast<int32_t>(ctx - 1);
  c.bytes_per_rep = 2.0 * ctx * KVH * hd * 2;  // K and V, f16
  c.reps = RepsFor(c.bytes_per_rep, 256.0 * kMiB, static_cast<int>(p.n_layer), 1024);
  c.attn_layers = p.n_layer;
  c.build = [H, KVH, hd, ctx](int reps) -> absl::StatusOr<Graph> {
    Graph g;
    g.max_tokens = 1;
    const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
    const ValueId pos = g.AddInput("positions", DType::kI32, {kTokens});
    absl::Status err;
    const ValueId e = Embedding(g, tokens, "q", H * hd, &err);
    if (!err.ok()) return err;
    ValueId q;
    BM_ASSIGN(q, Reshape(g, e, {kTokens, H, hd}, "q.h"));
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (int i = 0; i < reps; ++i) {
      const ValueId k = g.AddKvCache(absl::StrCat("cache_k.", i), DType::kF16, {ctx, KVH, hd});
      const ValueId v = g.AddKvCache(absl::StrCat("cache_v.", i), DType::kF16, {ctx, KVH, hd});
      BM_ASSIGN(q, g.AddOp(OpKind::kAttention, {q, k, v, pos}, absl::StrCat("attn.", i),
                           {{"scale", scale}}));
    }
    ValueId flat, last;
    BM_ASSIGN(flat, Reshape(g, q, {kTokens, H * hd}, "flat"));
    BM_ASSIGN(last, g.AddOp(OpKind::kLastRow, {flat}, "last"));
    if (absl::Status st = SmallLogits(g, last, H * hd); !st.ok()) return st;
    return g;
  };
  c.weights = [H, hd](HostWeights& w, int) { return w.Add("q", DType::kF32, 4 * H * hd, 1, 1.0f); };
  return c;
}

// ---- running a case -----------------------------------------------------------------

// The case's graph through the compiler (compiler/compiler.h), as
// vibrant-bench compiles a model, for the cuda device (then every op must
// have landed on the GPU) or, for --dry_run's CPU execution, the cpu.
// `kernels`: compile the CUDA kernels too (the dry run checks only the IR and
// the dispatch table).
absl::StatusOr<compiler::Compiled> Compile(Graph g, const std::string& device = "cuda", bool kernels = true,
                                           const Case* for_case = nullptr) {
  compiler::CompileOptions o;
  o.device = device;
  o.compile_kernels = kernels;
  if (for_case != nullptr) {
    o.mmq_max_rows = for_case->mmq_max_rows;
    o.mmq_tile = for_case->mmq_tile;
  }
  absl::StatusOr<compiler::Compiled> c = compiler::CompileGraph(std::move(g), o);
  if (!c.ok() || device != "cuda") return c;
  for (const ir::Op& op : c->graph.ops()) {
    if (op.kind != OpKind::kCopy && op.device != ir::Device::kCuda) {
      const std::string out = op.outputs.empty() ? "?" : c->graph.value(op.outputs[0]).name;
      return absl::FailedPreconditionError(
          absl::StrCat("op ", std::string(ir::OpName(op.kind)), " -> ", out,
                       " was not placed on the GPU (the CUDA backend does not support it)"));
    }
  }
  return c;
}

using Clock = std::chrono::steady_clock;

// A case ready to run: its two executors and the baseline. Kept across the
// benchmark function's calls for one case (Google Benchmark calls it several
// times while it picks the iteration count), dropped for the next case.
struct Prepared {
  std::string name;
  HostWeights weights;
  Graph graph, base_graph;
  std::unique_ptr<CudaExecutor> exec, base;
  std::vector<int32_t> tokens;
  double base_s = 0;  // median baseline step
};
std::unique_ptr<Prepared> g_prepared;

absl::StatusOr<double> StepSeconds(CudaExecutor& e, const std::vector<int32_t>& tokens,
                                   int32_t pos0) {
  const Clock::time_point t0 = Clock::now();
  absl::StatusOr<absl::Span<const float>> r = e.Step(tokens, pos0);
  const Clock::time_point t1 = Clock::now();
  if (!r.ok()) return r.status();
  return std::chrono::duration<double>(t1 - t0).count();
}

absl::StatusOr<Prepared*> Prepare(const Case& c) {
  if (g_prepared != nullptr && g_prepared->name == c.name) return g_prepared.get();
  g_prepared.reset();  // frees the previous case's device memory first
  auto p = std::make_unique<Prepared>();
  p->name = c.name;
  if (absl::Status s = c.weights(p->weights, c.reps); !s.ok()) return s;
  for (bool baseline : {false, true}) {
    const int reps = baseline ? 0 : c.reps;
    absl::StatusOr<Graph> g = c.build(reps);
    if (!g.ok()) return g.status();
    absl::StatusOr<compiler::Compiled> compiled = Compile(*std::move(g), "cuda", true, &c);
    if (!compiled.ok()) return compiled.status();
    if (c.check) {
      if (absl::Status s = c.check(compiled->graph, reps); !s.ok()) return s;
    }
    Graph& kept = baseline ? p->base_graph : p->graph;
    kept = compiled->graph;
    absl::StatusOr<std::unique_ptr<CudaExecutor>> e =
        CudaExecutor::Create(compiler::ToProgram(*compiled), p->weights.Resolver());
    if (!e.ok()) return e.status();
    (baseline ? p->base : p->exec) = *std::move(e);
  }
  for (int64_t t = 0; t < c.tokens; ++t) p->tokens.push_back(static_cast<int32_t>(t % 4));
  // Warm-up (the first decode step captures the CUDA graph), then the
  // baseline's median over >= 50 steps and >= 50 ms.
  for (int i = 0; i < 3; ++i) {
    for (CudaExecutor* e : {p->exec.get(), p->base.get()}) {
      absl::StatusOr<double> s = StepSeconds(*e, p->tokens, c.pos0);
      if (!s.ok()) return s.status();
    }
  }
  std::vector<double> times;
  double total = 0;
  while (times.size() < 50 || (total < 0.05 && times.size() < 20000)) {
    absl::StatusOr<double> s = StepSeconds(*p->base, p->tokens, c.pos0);
    if (!s.ok()) return s.status();
    times.push_back(*s);
    total += *s;
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  p->base_s = times[times.size() / 2];
  g_prepared = std::move(p);
  return g_prepared.get();
}

void RunCase(benchmark::State& state, const Case& c) {
  absl::StatusOr<Prepared*> prepared = Prepare(c);
  if (!prepared.ok()) {
    g_prepared.reset();
    state.SkipWithError(std::string(prepared.status().message()).c_str());
    return;
  }
  Prepared& p = **prepared;
  double op_total = 0, step_total = 0;
  for (auto _ : state) {
    absl::StatusOr<double> s = StepSeconds(*p.exec, p.tokens, c.pos0);
    if (!s.ok()) {
      state.SkipWithError(std::string(s.status().message()).c_str());
      break;
    }
    const double t = std::max(*s - p.base_s, 1e-9);
    state.SetIterationTime(t);
    op_total += t;
    step_total += *s;
  }
  const double n = static_cast<double>(state.iterations());
  if (n == 0 || op_total <= 0) return;
  Result r;
  const double op_s = op_total / n / c.reps;
  r.op_us = op_s * 1e6;
  state.counters["reps"] = c.reps;
  state.counters["op_us"] = r.op_us;
  state.counters["step_us"] = step_total / n * 1e6;
  state.counters["base_us"] = p.base_s * 1e6;
  if (c.bytes_per_rep > 0) {
    r.gbps = c.bytes_per_rep / op_s / 1e9;
    state.counters["GB/s"] = r.gbps;
    if (g_d2d_gbps > 0) {
      r.pct = 100.0 * r.gbps / g_d2d_gbps;
      state.counters["%d2d"] = r.pct;
    }
  }
  if (c.flops_per_rep > 0) {
    r.tflops = c.flops_per_rep / op_s / 1e12;
    state.counters["TFLOP/s"] = r.tflops;
  }
  if (c.attn_layers > 0) {
    r.tok_s = 1.0 / (op_s * static_cast<double>(c.attn_layers));
    state.counters["tok/s"] = r.tok_s;
  }
  g_results[c.name] = r;
}

// ---- registration and the summary ---------------------------------------------------

const DType kMatVecTypes[] = {DType::kF16,  DType::kQ8_0, DType::kQ4_0,
                              DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

struct PresetMatrices {
  const char* preset;
  std::vector<std::string> matrices;
};
const PresetMatrices kMatVecShapes[] = {
    {"qwen2.5-3b", {"attn_q", "attn_kv", "ffn_up", "ffn_down", "output"}},
    {"llama3.1-8b", {"attn_q", "ffn_up", "ffn_down"}},
};

absl::StatusOr<Matrix> PresetMatrix(const synth::ModelPreset& p, const std::string& name) {
  const std::vector<Matrix> all = {
      {"attn_q", p.n_head * p.head_dim, p.n_embd},
      {"attn_kv", p.n_head_kv * p.head_dim, p.n_embd},
      {"attn_output", p.n_embd, p.n_head * p.head_dim},
      {"ffn_up", p.n_ff, p.n_embd},
      {"ffn_down", p.n_embd, p.n_ff},
      {"output", p.n_vocab, p.n_embd},
  };
  for (const Matrix& m : all) {
    if (m.name == name) return m;
  }
  return absl::NotFoundError("no matrix " + name);
}

std::vector<Case>& AllCases() {
  static std::vector<Case> cases;
  return cases;
}

absl::Status RegisterAll() {
  std::vector<Case>& cases = AllCases();
  for (const PresetMatrices& pm : kMatVecShapes) {
    absl::StatusOr<synth::ModelPreset> p = synth::FindPreset(pm.preset);
    if (!p.ok()) return p.status();
    for (const std::string& name : pm.matrices) {
      absl::StatusOr<Matrix> m = PresetMatrix(*p, name);
      if (!m.ok()) return m.status();
      for (DType t : kMatVecTypes) {
        if (m->cols % GetDTypeInfo(t).block_size != 0) continue;
        cases.push_back(MatVecCase(*p, *m, t));
      }
    }
  }
  absl::StatusOr<synth::ModelPreset> q3 = synth::FindPreset("qwen2.5-3b");
  if (!q3.ok()) return q3.status();
  for (const char* name : {"ffn_up", "ffn_down"}) {
    absl::StatusOr<Matrix> m = PresetMatrix(*q3, name);
    if (!m.ok()) return m.status();
    cases.push_back(PrefillCase(*q3, *m, DType::kQ4_K, 512));
  }
  // GEMM paths side by side at the 3B's shapes: cuBLASLt on dequantized
  // chunks vs the quantized tensor-core GEMM (rule tile, forced tiles).
  for (const char* name : {"attn_q", "attn_kv", "ffn_up", "ffn_down"}) {
    absl::StatusOr<Matrix> m = PresetMatrix(*q3, name);
    if (!m.ok()) return m.status();
    for (DType t : {DType::kQ4_K, DType::kQ6_K}) {
      for (int64_t T : {512, 2048}) {
        for (const char* path : {"cublaslt", "mmq", "mmq64", "mmq128"}) {
          cases.push_back(PrefillGemmCase(*q3, *m, t, T, path));
        }
      }
    }
  }
  {
    absl::StatusOr<Matrix> m = PresetMatrix(*q3, "ffn_up");
    if (!m.ok()) return m.status();
    for (DType t : {DType::kQ8_0, DType::kQ5_K, DType::kQ4_0}) {
      for (const char* path : {"cublaslt", "mmq"}) cases.push_back(PrefillGemmCase(*q3, *m, t, 512, path));
    }
  }
  for (int64_t T : {1, 512}) cases.push_back(ResidualNormCase(q3->n_embd, T, q3->rms_eps));
  for (int64_t T : {1, 512}) cases.push_back(SwigluCase(q3->n_ff, T));
  for (int64_t ctx : {1024, 4096, 16384}) cases.push_back(AttentionCase(*q3, ctx));
  for (const Case& c : cases) {
    const Case* cp = &c;
    benchmark::RegisterBenchmark(c.name.c_str(), [cp](benchmark::State& s) { RunCase(s, *cp); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  return absl::OkStatus();
}

// --dry_run: what can be checked without a GPU. Every case's graphs (R and
// the baseline) are built and put through the passes for the cuda device,
// with the case's check (fusion); the cases whose data is small (<= 64 MiB
// at R = min(R, 2); not the prefill matmuls, slow on one CPU core) are also
// run for one step on the CPU backend, which checks their semantics (shapes,
// the bias chain, attention over the caches). Returns the number of failures.
int DryRun() {
  int failures = 0;
  for (const Case& c : AllCases()) {
    std::string note;
    absl::Status st = absl::OkStatus();
    for (int reps : {c.reps, 0}) {
      absl::StatusOr<Graph> g = c.build(reps);
      absl::StatusOr<compiler::Compiled> compiled =
          g.ok() ? Compile(*std::move(g), "cuda", /*kernels=*/false, &c) : g.status();
      st = compiled.status();
      if (st.ok() && c.check) st = c.check(compiled->graph, reps);
      if (!st.ok()) break;
      if (reps > 0) {
        int fused = 0;
        for (const ir::Op& op : compiled->graph.ops()) fused += op.kind == OpKind::kFused;
        note = absl::StrCat(reps, " reps: ", compiled->graph.ops().size(), " ops (", fused, " fused), ",
                            compiled->dispatch_table->launches.size(), " launches");
      }
    }
    const int small = std::min(c.reps, 2);
    if (st.ok() && c.flops_per_rep == 0 && c.bytes_per_rep * small <= 64.0 * kMiB) {
      HostWeights w;
      st = c.weights(w, small);
      std::vector<int32_t> tokens;
      for (int64_t t = 0; t < c.tokens; ++t) tokens.push_back(static_cast<int32_t>(t % 4));
      for (int reps : {small, 0}) {
        if (!st.ok()) break;
        absl::StatusOr<Graph> g = c.build(reps);
        if (!g.ok()) {
          st = g.status();
          break;
        }
        absl::StatusOr<compiler::Compiled> compiled = Compile(*std::move(g), "cpu");
        st = compiled.status();
        if (st.ok() && c.check) st = c.check(compiled->graph, reps);
        if (!st.ok()) break;
        absl::StatusOr<std::unique_ptr<CpuExecutor>> e = CpuExecutor::Create(compiled->graph, w.Resolver());
        if (!e.ok()) {
          st = e.status();
          break;
        }
        absl::StatusOr<absl::Span<const float>> out = (*e)->Step(tokens, c.pos0);
        if (!out.ok()) st = out.status();
      }
      if (st.ok()) absl::StrAppend(&note, "; CPU step at ", small, " and 0 reps ok");
    }
    if (st.ok()) {
      std::printf("ok    %s: %s\n", c.name.c_str(), note.c_str());
    } else {
      ++failures;
      std::printf("FAIL  %s: %s\n", c.name.c_str(), std::string(st.message()).c_str());
    }
    std::fflush(stdout);
  }
  return failures;
}

std::string Cell(const std::string& name, bool with_pct) {
  auto it = g_results.find(name);
  if (it == g_results.end()) return "";
  if (!with_pct || it->second.pct <= 0) return absl::StrFormat("%.0f", it->second.gbps);
  return absl::StrFormat("%.0f (%.0f%%)", it->second.gbps, it->second.pct);
}

// The tables of BENCHMARKS.md's "Kernel micro-benchmarks (H100)" section,
// filled with this run's numbers (cases filtered out stay empty).
void PrintSummary(const CudaDeviceInfo& dev) {
  if (g_results.empty()) return;
  std::fprintf(stderr, "\n## summary (markdown, for BENCHMARKS.md): %s, d2d %.0f GB/s\n\n",
               dev.name.c_str(), g_d2d_gbps);
  std::fprintf(stderr, "Mat-vec (T = 1), GB/s of weights (%% of d2d):\n\n");
  std::fprintf(stderr, "| preset | matrix (N x K) |");
  for (DType t : kMatVecTypes) std::fprintf(stderr, " %s |", std::string(DTypeName(t)).c_str());
  std::fprintf(stderr, "\n| --- | --- |");
  for (size_t i = 0; i < std::size(kMatVecTypes); ++i) std::fprintf(stderr, " ---: |");
  std::fprintf(stderr, "\n");
  for (const PresetMatrices& pm : kMatVecShapes) {
    absl::StatusOr<synth::ModelPreset> p = synth::FindPreset(pm.preset);
    if (!p.ok()) continue;
    for (const std::string& name : pm.matrices) {
      absl::StatusOr<Matrix> m = PresetMatrix(*p, name);
      if (!m.ok()) continue;
      std::fprintf(stderr, "| %s | %s (%lld x %lld) |", pm.preset, name.c_str(),
                   static_cast<long long>(m->rows), static_cast<long long>(m->cols));
      for (DType t : kMatVecTypes) {
        std::fprintf(
            stderr, " %s |",
            Cell(absl::StrCat("BM_MatVec/", pm.preset, "/", name, "/", std::string(DTypeName(t))),
                 true)
                .c_str());
      }
      std::fprintf(stderr, "\n");
    }
  }
  std::fprintf(stderr,
               "\nOther kernels:\n\n| case | op µs | GB/s | %% of d2d | other |\n"
               "| --- | ---: | ---: | ---: | --- |\n");
  for (const Case& c : AllCases()) {
    if (c.name.rfind("BM_MatVec/", 0) == 0) continue;
    auto it = g_results.find(c.name);
    if (it == g_results.end()) continue;
    const Result& r = it->second;
    std::string other;
    if (r.tflops > 0) other = absl::StrFormat("%.1f TFLOP/s", r.tflops);
    if (r.tok_s > 0)
      other = absl::StrFormat("%.0f tok/s (%lld layers)", r.tok_s,
                              static_cast<long long>(c.attn_layers));
    std::fprintf(stderr, "| %s | %.2f | %s | %s | %s |\n", c.name.c_str(), r.op_us,
                 r.gbps > 0 ? absl::StrFormat("%.0f", r.gbps).c_str() : "",
                 r.pct > 0 ? absl::StrFormat("%.1f", r.pct).c_str() : "", other.c_str());
  }
}

}  // namespace
}  // namespace vibrant

int main(int argc, char** argv) {
  // Our one flag, taken out before Google Benchmark parses the rest.
  bool dry_run = false;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--dry_run") {
      dry_run = true;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (dry_run) {
    if (absl::Status s = vibrant::RegisterAll(); !s.ok()) {
      std::fprintf(stderr, "cuda_kernels_benchmark: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    const int failures = vibrant::DryRun();
    std::printf("%d of %zu cases failed\n", failures, vibrant::AllCases().size());
    return failures == 0 ? 0 : 1;
  }
  absl::StatusOr<vibrant::CudaDeviceInfo> dev = vibrant::QueryCudaDevice(0);
  if (!dev.ok()) {
    std::printf("cuda_kernels_benchmark: no usable CUDA GPU (%s); no benchmarks run\n",
                std::string(dev.status().message()).c_str());
    return 0;
  }
  std::fprintf(stderr, "GPU: %s (%s, %d SMs, %s), driver %d, runtime %d\n", dev->name.c_str(),
               dev->arch.c_str(), dev->sm_count, vibrant::HumanBytes(dev->total_bytes).c_str(),
               dev->driver_version, dev->runtime_version);
  vibrant::g_d2d_gbps = vibrant::MeasureD2dBandwidth();
  benchmark::AddCustomContext("gpu", dev->name);
  benchmark::AddCustomContext("d2d_GBps", absl::StrFormat("%.1f", vibrant::g_d2d_gbps));
  if (absl::Status s = vibrant::RegisterAll(); !s.ok()) {
    std::fprintf(stderr, "cuda_kernels_benchmark: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::fflush(stdout);
  benchmark::RunSpecifiedBenchmarks();
  vibrant::g_prepared.reset();
  std::fflush(stdout);  // the summary (stderr) comes after the last result
  vibrant::PrintSummary(*dev);
  benchmark::Shutdown();
  return 0;
}
