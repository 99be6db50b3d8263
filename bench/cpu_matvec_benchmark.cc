// CPU mat-vec (decode) throughput at the real matrix shapes of the synth
// presets: one weight matrix times one vector, on one thread: row by row with
// DotRow (the exact reference kernel), and through the fast matmul
// (fast_matmul.h) at 1 token (BM_MatVecFast) and at 64 tokens (BM_GemmFast64,
// the prefill path: items_per_second = multiply-adds per second).
//
// Names: BM_MatVec/<preset>/<matrix>/<type>, e.g.
//   BM_MatVec/qwen2.5-3b/ffn_down/q4_K
// matrix: attn_q, attn_kv (attn_k and attn_v), attn_output, ffn_up (ffn_gate
// and ffn_up), ffn_down, output (the output projection, = token_embd when
// tied). Types: f16, q8_0, q4_0, q5_0, q5_1, q4_K, q5_K, q6_K, where the row
// length is a multiple of the type's block (so Qwen2.5-0.5B, rows of 896, has
// no K-quant rows except ffn_down, as in its real Q4_K_M files).
//
// Counters: bytes_per_second = quantized weight bytes read per second (the
// decode roofline quantity), items_per_second = weights per second.
// Everything is registered; select with --benchmark_filter, e.g.
//   cpu_matvec_benchmark --benchmark_filter='qwen2.5-3b/.*/q4_K'
// runtime/cpu/dequantize_benchmark covers every type at one 2048 x 2048 shape
// and the quantizers; this file adds the real shapes.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/synth/presets.h"
#include "bench/synth/random_blocks.h"
#include "benchmark/benchmark.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/fast_matmul.h"

namespace vibrant {
namespace {

struct Matrix {
  std::string name;
  int64_t rows;  // output features (N)
  int64_t cols;  // row length (K)
};

std::vector<Matrix> Matrices(const synth::ModelPreset& p) {
  return {
      {"attn_q", p.n_head * p.head_dim, p.n_embd},
      {"attn_kv", p.n_head_kv * p.head_dim, p.n_embd},
      {"attn_output", p.n_embd, p.n_head * p.head_dim},
      {"ffn_up", p.n_ff, p.n_embd},
      {"ffn_down", p.n_embd, p.n_ff},
      {"output", p.n_vocab, p.n_embd},
  };
}

// kind: "exact" = DotRow per row (the reference MatMul's inner loop), "fast" =
// the fast matmul (runtime/cpu/fast_matmul.h) at T tokens, one thread, the
// activation rounding included.
void MatVec(benchmark::State& state, DType t, Matrix m, const std::string& kind, int64_t T) {
  const int64_t row_bytes = *DTypeBytes(t, m.cols);
  std::vector<uint8_t> w(static_cast<size_t>(row_bytes * m.rows));
  if (!synth::FillRandom(t, 1, 0.02f, 0.0f, absl::MakeSpan(w)).ok()) {
    state.SkipWithError("FillRandom failed");
    return;
  }
  std::vector<float> x(m.cols * T);
  if (!synth::FillRandom(DType::kF32, 2, 1.0f, 0.0f,
                         absl::MakeSpan(reinterpret_cast<uint8_t*>(x.data()), x.size() * 4))
           .ok()) {
    state.SkipWithError("FillRandom failed");
    return;
  }
  std::vector<float> y(m.rows * T);
  std::vector<uint8_t> scratch;
  for (auto _ : state) {
    if (kind == "fast") {
      absl::Status s = cpu::MatMulFast(nullptr, x.data(), T, m.cols, t, w.data(), m.rows, nullptr,
                                       y.data(), &scratch);
      if (!s.ok()) {
        state.SkipWithError(std::string(s.message()).c_str());
        return;
      }
    } else {
      for (int64_t r = 0; r < m.rows; ++r) {
        y[r] = DotRow(t, w.data() + r * row_bytes, x.data(), m.cols);
      }
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * row_bytes * m.rows);
  state.SetItemsProcessed(state.iterations() * m.cols * m.rows * T);
  state.counters["MiB"] = static_cast<double>(row_bytes * m.rows) / (1 << 20);
}

const bool kRegistered = [] {
  const DType kTypes[] = {DType::kF16,  DType::kQ8_0, DType::kQ4_0, DType::kQ5_0,
                          DType::kQ5_1, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};
  for (const synth::ModelPreset& p : synth::AllPresets()) {
    for (const Matrix& m : Matrices(p)) {
      for (DType t : kTypes) {
        if (m.cols % GetDTypeInfo(t).block_size != 0) continue;
        benchmark::RegisterBenchmark(
            absl::StrCat("BM_MatVec/", std::string(p.name), "/", m.name, "/",
                         std::string(DTypeName(t)))
                .c_str(),
            [t, m](benchmark::State& s) { MatVec(s, t, m, "exact", 1); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark(
            absl::StrCat("BM_MatVecFast/", std::string(p.name), "/", m.name, "/",
                         std::string(DTypeName(t)))
                .c_str(),
            [t, m](benchmark::State& s) { MatVec(s, t, m, "fast", 1); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark(
            absl::StrCat("BM_GemmFast64/", std::string(p.name), "/", m.name, "/",
                         std::string(DTypeName(t)))
                .c_str(),
            [t, m](benchmark::State& s) { MatVec(s, t, m, "fast", 64); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
    }
  }
  return true;
}();

}  // namespace
}  // namespace vibrant
