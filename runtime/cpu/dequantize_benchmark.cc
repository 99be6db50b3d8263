// DotRow and Quantize throughput per type.
//
// BM_DotRow: a 2048 x 2048 weight matrix times one vector (2048 DotRow calls
// of 2048 elements). "bytes_per_second" counts the bytes of the quantized
// matrix read; "items_per_second" counts weights.
// BM_Quantize: reference quantization of 2048 x 256 weights.
#include <cstdint>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/quantize.h"

namespace vibrant {
namespace {

constexpr int64_t kCols = 2048;
constexpr int64_t kRows = 2048;

std::vector<float> RandomFloats(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = normal(rng);
  return v;
}

void BM_DotRow(benchmark::State& state) {
  const DType t = static_cast<DType>(state.range(0));
  const int64_t row_bytes = *DTypeBytes(t, kCols);
  std::vector<uint8_t> w(row_bytes * kRows);
  {
    // Quantize one random row block at a time (the K-quant searches are slow).
    const std::vector<float> src = RandomFloats(kCols * 16, 1);
    for (int64_t r = 0; r < kRows; r += 16) {
      if (!Quantize(t, src.data(), kCols * 16, w.data() + r * row_bytes).ok()) {
        state.SkipWithError("Quantize failed");
        return;
      }
    }
  }
  const std::vector<float> x = RandomFloats(kCols, 2);
  std::vector<float> y(kRows);
  for (auto _ : state) {
    for (int64_t r = 0; r < kRows; ++r) {
      y[r] = DotRow(t, w.data() + r * row_bytes, x.data(), kCols);
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * row_bytes * kRows);
  state.SetItemsProcessed(state.iterations() * kCols * kRows);
  state.SetLabel(std::string(DTypeName(t)));
}

void BM_Quantize(benchmark::State& state) {
  const DType t = static_cast<DType>(state.range(0));
  const int64_t n = 256 * 2048;
  const std::vector<float> src = RandomFloats(n, 3);
  std::vector<uint8_t> out(*DTypeBytes(t, n));
  for (auto _ : state) {
    if (!Quantize(t, src.data(), n, out.data()).ok()) {
      state.SkipWithError("Quantize failed");
      return;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetLabel(std::string(DTypeName(t)));
}

void AllTypes(benchmark::internal::Benchmark* b) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ4_0, DType::kQ4_1,
                  DType::kQ5_0, DType::kQ5_1, DType::kQ8_0, DType::kQ2_K, DType::kQ3_K,
                  DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kQ8_K}) {
    b->Arg(static_cast<int64_t>(t));
  }
}

BENCHMARK(BM_DotRow)->Apply(AllTypes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Quantize)->Apply(AllTypes)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace vibrant
