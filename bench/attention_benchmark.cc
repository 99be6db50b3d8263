// Attention micro-benchmark on the GPU, standalone (NVRTC + cudaLibrary +
// cudaLaunchKernel, as codegen/attention_gpu_test.cc; no executor): the
// tensor-core kernels (codegen/kernels/attention_mma.h) against the scalar
// split kernels the executor runs today (vb_attn_split_* + vb_attn_combine,
// launched as runtime/cuda/executor.cc does), at Qwen2.5-3B's shape (16 query
// heads, 2 KV heads, head_dim 128).
//
//   attention_benchmark [--json FILE] [--quick]
//
// Decode (T = 1), context 16 / 1k / 4k / 16k / 32k on a 32,768-row cache,
// f16 and q8_0 (new kernels), f16 (old): R layers, each its own cache (so a
// step reads R x the context's K/V rows, >= 256 MiB, beyond L2), attention +
// combine per layer, captured once as a CUDA graph and replayed (as decode
// runs); time per layer = replay time / R (events), median of 5 replays.
//   GB/s = K + V bytes of the context read per layer / time; %d2d against
//   the device-to-device copy bandwidth measured at start (1 GiB, read +
//   written); tok/s = 1 / (36 x time): a decode step of only attention.
// Prompt (causal from position 0): N = 512, 4096, 16384 tokens as vibrant
// runs them, in chunks of 512 (chunk c at positions 512c ..), and for the new
// kernel also as one launch of N tokens; one layer, median of 5.
//   TFLOP/s = 4 * hd * H * sum_t (pos_t + 1) / time (the useful, unmasked
//   multiply-adds of QK^T and PV, 2 flops each), against the mma.sync peak
//   measured at start (a kernel of independent m16n8k16 f16/f32 mma chains)
//   and the card's dense f16 tensor peak (H100 SXM: 989 TFLOP/s, NVIDIA's
//   datasheet; wgmma reaches it, mma.sync does not).
// Without a GPU it prints why and exits 0.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codegen/attention_cuda_harness.h"
#include "codegen/kernels/attention_mma.h"
#include "codegen/kernels/families.h"
#include "ir/dtype.h"
#include "runtime/cpu/quantize.h"

namespace vibrant {
namespace {

using codegen::AttnConfig;
using codegen::AttnLaunch;
using codegen::AttnShape;
using codegen::harness::Cuda;
using codegen::harness::DeviceBuffer;
using codegen::harness::Module;

constexpr int kH = 16, kKVH = 2, kHd = 128, kLayers = 36;
constexpr int kCapacity = 32768;

#define CHECK_OK(expr)                                                         \
  do {                                                                         \
    absl::Status _s = (expr);                                                  \
    if (!_s.ok()) {                                                            \
      std::fprintf(stderr, "attention_benchmark: %s\n", _s.ToString().c_str()); \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

const char kPeakKernel[] = R"CUDA(
// Independent chains of m16n8k16 f16 -> f32 mma per warp, no memory traffic.
extern "C" __global__ void vb_bench_mma_peak(float* out, int iters) {
  const u32 a[4] = {0x3c003c00u, 0x3c003c00u, 0x3c003c00u, 0x3c003c00u};
  const u32 b0 = 0x3c003c00u, b1 = 0x3c003c00u;
  float c[8][4];
  for (int j = 0; j < 8; ++j) c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.0f;
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int j = 0; j < 8; ++j) vb_mma16816(c[j], a, b0, b1);
  }
  float s = 0.0f;
  for (int j = 0; j < 8; ++j) s += c[j][0] + c[j][1] + c[j][2] + c[j][3];
  if (s == 1234.5f) out[threadIdx.x] = s;  // keeps the chains live
}
)CUDA";

struct Timer {
  cudaEvent_t a = nullptr, b = nullptr;
  Timer() {
    cudaEventCreate(&a);
    cudaEventCreate(&b);
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
};

// Median milliseconds of `reps` runs of `fn` on `stream`.
template <class Fn>
double MedianMs(cudaStream_t stream, int reps, Fn fn) {
  Timer t;
  std::vector<double> ms;
  fn();  // warm-up
  CHECK_OK(Cuda(cudaStreamSynchronize(stream), "warm-up"));
  for (int r = 0; r < reps; ++r) {
    cudaEventRecord(t.a, stream);
    fn();
    cudaEventRecord(t.b, stream);
    CHECK_OK(Cuda(cudaEventSynchronize(t.b), "timing"));
    float x = 0;
    cudaEventElapsedTime(&x, t.a, t.b);
    ms.push_back(x);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double D2dGbps(cudaStream_t stream) {
  const size_t n = size_t{1} << 30;
  DeviceBuffer src(n), dst(n);
  if (!src.ok() || !dst.ok()) return 0;
  cudaMemset(src.get(), 1, n);
  const double ms = MedianMs(stream, 5, [&] {
    cudaMemcpyAsync(dst.get(), src.get(), n, cudaMemcpyDeviceToDevice, stream);
  });
  return 2.0 * static_cast<double>(n) / (ms * 1e-3) / 1e9;
}

double MmaPeakTflops(Module& m, cudaStream_t stream) {
  DeviceBuffer out(4096);
  const int iters = 4096;
  AttnLaunch l;
  l.kernel = "vb_bench_mma_peak";
  l.grid[0] = 4 * m.sm_count();
  l.block[0] = 256;
  float* op = out.as<float>();
  int it = iters;
  const double ms = MedianMs(stream, 5, [&] { CHECK_OK(m.Launch(l, {&op, &it}, stream)); });
  const double flops = 2.0 * 16 * 8 * 16 * 8.0 * iters * (l.grid[0] * 8.0);
  return flops / (ms * 1e-3) / 1e12;
}

// A [rows, KVH, hd] cache of `t` with random values (bytes uploaded as is).
DeviceBuffer RandomCache(DType t, int64_t rows, uint32_t seed) {
  const int64_t row = int64_t{kKVH} * kHd;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(row * 64);
  for (float& f : x) f = dist(rng);
  const int64_t chunk_bytes = *DTypeBytes(t, row * 64);
  std::vector<uint8_t> chunk(chunk_bytes);
  CHECK_OK(Quantize(t, x.data(), row * 64, chunk.data()));
  DeviceBuffer b(static_cast<size_t>(rows / 64 * chunk_bytes));
  if (!b.ok()) {
    std::fprintf(stderr, "attention_benchmark: cudaMalloc of %lld rows failed\n",
                 static_cast<long long>(rows));
    std::exit(1);
  }
  for (int64_t r = 0; r < rows / 64; ++r) {  // the same 64 rows repeated
    cudaMemcpy(b.as<uint8_t>() + r * chunk_bytes, chunk.data(), chunk_bytes, cudaMemcpyHostToDevice);
  }
  return b;
}

struct Row {
  std::string name;
  double us = 0;
  double gbps = 0, pct_d2d = 0, tok_s = 0;  // decode
  double tflops = 0, pct_mma = 0, pct_dense = 0;  // prompt
};

std::string g_json;
void JsonRow(const std::string& kind, const Row& r) {
  absl::StrAppend(&g_json, g_json.empty() ? "" : ",\n",
                  absl::StrFormat("  {\"kind\": \"%s\", \"name\": \"%s\", \"us\": %.3f, \"gbps\": "
                                  "%.1f, \"pct_d2d\": %.1f, \"tok_s\": %.0f, \"tflops\": %.2f, "
                                  "\"pct_mma_peak\": %.1f, \"pct_dense_peak\": %.1f}",
                                  kind, r.name, r.us, r.gbps, r.pct_d2d, r.tok_s, r.tflops,
                                  r.pct_mma, r.pct_dense));
}

// ---- decode -----------------------------------------------------------------------

// R layers of attention + combine at one position, as one CUDA graph.
Row Decode(Module& m, cudaStream_t stream, DType kv, bool old_kernel, int ctx, double d2d) {
  const int64_t kv_bytes_per_pos = 2 * *DTypeBytes(kv, int64_t{kKVH} * kHd);  // K and V
  const double used = static_cast<double>(ctx) * kv_bytes_per_pos;
  const int64_t cache_bytes = kCapacity * kv_bytes_per_pos;
  int R = std::max<int>(kLayers, static_cast<int>(std::ceil(256.0 * (1 << 20) / used)));
  R = std::min<int>(R, static_cast<int>((16.0 * (1LL << 30)) / cache_bytes));  // <= 16 GiB of caches
  R = std::max(R, 1);
  std::vector<DeviceBuffer> k, v;
  for (int i = 0; i < R; ++i) {
    // Only the first ctx rows are read: fill those, allocate the capacity.
    k.emplace_back(static_cast<size_t>(cache_bytes / 2));
    v.emplace_back(static_cast<size_t>(cache_bytes / 2));
    if (!k.back().ok() || !v.back().ok()) {
      std::fprintf(stderr, "attention_benchmark: out of device memory at %d layers\n", i);
      std::exit(1);
    }
  }
  {
    DeviceBuffer src = RandomCache(kv, std::max(64, (ctx + 63) / 64 * 64), 5);
    const size_t nb = std::min(src.bytes(), static_cast<size_t>(cache_bytes / 2));
    for (int i = 0; i < R; ++i) {
      cudaMemcpy(k[i].get(), src.get(), nb, cudaMemcpyDeviceToDevice);
      cudaMemcpy(v[i].get(), src.get(), nb, cudaMemcpyDeviceToDevice);
    }
  }
  DeviceBuffer q(kH * kHd * sizeof(float)), out(kH * kHd * sizeof(float)), pos(sizeof(int));
  std::vector<float> hq(kH * kHd, 0.01f);
  cudaMemcpy(q.get(), hq.data(), hq.size() * 4, cudaMemcpyHostToDevice);
  const int p = ctx - 1;
  cudaMemcpy(pos.get(), &p, sizeof(int), cudaMemcpyHostToDevice);
  const float* qp = q.as<float>();
  const int* pp = pos.as<int>();
  float* op = out.as<float>();
  float scale = 1.0f / std::sqrt(static_cast<float>(kHd));
  int T = 1, H = kH, KVH = kKVH, hd = kHd, C = kCapacity;
  std::vector<const void*> kp(R), vp(R);
  for (int i = 0; i < R; ++i) kp[i] = k[i].get(), vp[i] = v[i].get();

  AttnLaunch attn, combine;
  int n_split = 0, chunk = codegen::kAttnDecodeChunk;
  int64_t part_floats = 0;
  if (old_kernel) {
    n_split = (C + chunk - 1) / chunk;
    attn.kernel = kv == DType::kF16 ? "vb_attn_split_f16" : "vb_attn_split_f32";
    attn.grid[0] = T * kH;
    attn.grid[1] = n_split;
    attn.block[0] = codegen::kAttnThreads;
    combine.kernel = "vb_attn_combine";
    combine.grid[0] = T * kH;
    combine.block[0] = codegen::kAttnThreads;
    part_floats = int64_t{T} * kH * n_split * (kHd + 2);
  } else {
    auto plan = codegen::PlanAttentionDecode(AttnShape{1, kH, kKVH, kHd, kCapacity, kv, kv},
                                             m.sm_count());
    CHECK_OK(plan.status());
    attn = plan->attn;
    combine = plan->combine;
    n_split = plan->n_split;
    part_floats = plan->partial_floats;
  }
  DeviceBuffer part(part_floats * sizeof(float));
  float* partp = part.as<float>();
  auto layer = [&](int i) {
    if (old_kernel) {
      CHECK_OK(m.Launch(attn, {&qp, &kp[i], &vp[i], &pp, &partp, &H, &KVH, &hd, &C, &scale,
                               &n_split, &chunk},
                        stream));
      CHECK_OK(m.Launch(combine, {&partp, &op, &hd, &n_split}, stream));
    } else {
      CHECK_OK(m.Launch(attn, {&qp, &kp[i], &vp[i], &pp, &partp, &T, &H, &KVH, &C, &scale,
                               &n_split},
                        stream));
      CHECK_OK(m.Launch(combine, {&partp, &pp, &op, &T, &H, &hd, &C, &n_split}, stream));
    }
  };
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK_OK(Cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture"));
  for (int i = 0; i < R; ++i) layer(i);
  CHECK_OK(Cuda(cudaStreamEndCapture(stream, &graph), "end capture"));
  CHECK_OK(Cuda(cudaGraphInstantiate(&exec, graph, 0), "instantiate"));
  const double ms = MedianMs(stream, 5, [&] { cudaGraphLaunch(exec, stream); });
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  Row r;
  r.name = absl::StrCat(old_kernel ? "old " : "new ", std::string(DTypeName(kv)), " ctx ", ctx,
                        " (", R, " layers)");
  r.us = ms * 1e3 / R;
  r.gbps = used / (r.us * 1e-6) / 1e9;
  r.pct_d2d = d2d > 0 ? 100.0 * r.gbps / d2d : 0;
  r.tok_s = 1.0 / (kLayers * r.us * 1e-6);
  return r;
}

// ---- prompt -------------------------------------------------------------------------

// One layer's attention over a prompt of n tokens from position 0: in chunks
// of `chunk` tokens (one launch, or attn + combine, per chunk), timed whole.
Row Prompt(Module& m, cudaStream_t stream, DType kv, bool old_kernel, int n, int chunk,
           double mma_peak) {
  const int cap = std::max(n, 512);
  DeviceBuffer k = RandomCache(kv, (cap + 63) / 64 * 64, 7);
  DeviceBuffer v = RandomCache(kv, (cap + 63) / 64 * 64, 8);
  std::vector<float> hq(static_cast<size_t>(n) * kH * kHd);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& f : hq) f = dist(rng);
  DeviceBuffer q(hq.size() * 4), out(hq.size() * 4), pos(n * sizeof(int));
  cudaMemcpy(q.get(), hq.data(), hq.size() * 4, cudaMemcpyHostToDevice);
  std::vector<int> hp(n);
  for (int t = 0; t < n; ++t) hp[t] = t;
  cudaMemcpy(pos.get(), hp.data(), n * sizeof(int), cudaMemcpyHostToDevice);
  const void* kp = k.get();
  const void* vp = v.get();
  float scale = 1.0f / std::sqrt(static_cast<float>(kHd));
  int H = kH, KVH = kKVH, hd = kHd, C = (cap + 63) / 64 * 64;
  DeviceBuffer part;
  int n_split = 0, old_chunk = codegen::kAttnChunk;
  if (old_kernel) {
    n_split = (C + old_chunk - 1) / old_chunk;
    part = DeviceBuffer(static_cast<size_t>(chunk) * kH * n_split * (kHd + 2) * sizeof(float));
    if (!part.ok()) {
      std::fprintf(stderr, "attention_benchmark: partials for the old kernel do not fit\n");
      std::exit(1);
    }
  }
  auto run = [&] {
    for (int t0 = 0; t0 < n; t0 += chunk) {
      int T = std::min(chunk, n - t0);
      const float* qp = q.as<float>() + static_cast<size_t>(t0) * kH * kHd;
      float* op = out.as<float>() + static_cast<size_t>(t0) * kH * kHd;
      const int* pp = pos.as<int>() + t0;
      if (old_kernel) {
        AttnLaunch a, c;
        a.kernel = kv == DType::kF16 ? "vb_attn_split_f16" : "vb_attn_split_f32";
        a.grid[0] = T * kH;
        a.grid[1] = n_split;
        a.block[0] = codegen::kAttnThreads;
        c.kernel = "vb_attn_combine";
        c.grid[0] = T * kH;
        c.block[0] = codegen::kAttnThreads;
        float* partp = part.as<float>();
        CHECK_OK(m.Launch(a, {&qp, &kp, &vp, &pp, &partp, &H, &KVH, &hd, &C, &scale, &n_split,
                              &old_chunk},
                          stream));
        CHECK_OK(m.Launch(c, {&partp, &op, &hd, &n_split}, stream));
      } else {
        auto l = codegen::PlanAttentionPrefill(AttnShape{T, kH, kKVH, kHd, C, kv, kv},
                                               m.sm_count());
        CHECK_OK(l.status());
        CHECK_OK(m.Launch(*l, {&qp, &kp, &vp, &pp, &op, &T, &H, &KVH, &C, &scale}, stream));
      }
    }
  };
  const double ms = MedianMs(stream, old_kernel && n > 4096 ? 1 : 5, run);
  double macs = 0;
  for (int t = 0; t < n; ++t) macs += 2.0 * kHd * kH * (t + 1);
  Row r;
  r.name = absl::StrCat(old_kernel ? "old " : "new ", std::string(DTypeName(kv)), " prompt ", n,
                        chunk < n ? absl::StrCat(" in chunks of ", chunk) : " in one launch");
  r.us = ms * 1e3;
  r.tflops = 2.0 * macs / (ms * 1e-3) / 1e12;
  r.pct_mma = mma_peak > 0 ? 100.0 * r.tflops / mma_peak : 0;
  r.pct_dense = 100.0 * r.tflops / 989.0;
  return r;
}

int Main(int argc, char** argv) {
  std::string json_path;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (a == "--quick") {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: attention_benchmark [--json FILE] [--quick]\n");
      return 2;
    }
  }
  if (absl::Status s = codegen::harness::GpuAvailable(); !s.ok()) {
    std::printf("attention_benchmark: no GPU (%s); nothing measured\n", s.ToString().c_str());
    return 0;
  }
  std::vector<AttnConfig> configs = {{DType::kF16, DType::kF16, kHd},
                                     {DType::kQ8_0, DType::kQ8_0, kHd}};
  auto m = Module::Load(codegen::harness::AttentionModuleSource(configs) +
                        codegen::WithGridDependency(kPeakKernel));
  CHECK_OK(m.status());
  cudaStream_t stream;
  CHECK_OK(Cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream"));
  const double d2d = D2dGbps(stream);
  const double peak = MmaPeakTflops(**m, stream);
  std::printf("%s (%s, %d SMs): d2d copy %.0f GB/s (read + written); mma.sync f16 peak %.0f "
              "TFLOP/s; dense f16 datasheet 989 TFLOP/s (H100 SXM)\n\n",
              (*m)->name().c_str(), (*m)->arch().c_str(), (*m)->sm_count(), d2d, peak);
  absl::StrAppend(&g_json, absl::StrFormat("  {\"kind\": \"device\", \"name\": \"%s\", \"sm\": %d, "
                                           "\"d2d_gbps\": %.1f, \"mma_peak_tflops\": %.1f}",
                                           (*m)->name(), (*m)->sm_count(), d2d, peak));

  std::printf("| decode (Qwen2.5-3B attention, cache of %d rows) | us / layer | GB/s | %% of d2d | "
              "tok/s (36 layers) |\n| --- | ---: | ---: | ---: | ---: |\n",
              kCapacity);
  std::vector<int> ctxs = {16, 1024, 4096, 16384, 32768};
  if (quick) ctxs = {16, 4096};
  for (int ctx : ctxs) {
    for (auto [kv, old] : {std::pair{DType::kF16, true}, std::pair{DType::kF16, false},
                           std::pair{DType::kQ8_0, false}}) {
      const Row r = Decode(**m, stream, kv, old, ctx, d2d);
      std::printf("| %s | %.2f | %.0f | %.1f | %.0f |\n", r.name.c_str(), r.us, r.gbps, r.pct_d2d,
                  r.tok_s);
      std::fflush(stdout);
      JsonRow("decode", r);
    }
  }
  std::printf("\n| prompt attention (one layer, causal from 0) | ms | TFLOP/s | %% of mma.sync "
              "peak | %% of dense peak |\n| --- | ---: | ---: | ---: | ---: |\n");
  std::vector<int> ns = {512, 4096, 16384};
  if (quick) ns = {512, 4096};
  for (int n : ns) {
    std::vector<Row> rows;
    rows.push_back(Prompt(**m, stream, DType::kF16, true, n, 512, peak));
    rows.push_back(Prompt(**m, stream, DType::kF16, false, n, 512, peak));
    rows.push_back(Prompt(**m, stream, DType::kQ8_0, false, n, 512, peak));
    if (n > 512) rows.push_back(Prompt(**m, stream, DType::kF16, false, n, n, peak));
    for (const Row& r : rows) {
      std::printf("| %s | %.3f | %.1f | %.1f | %.1f |\n", r.name.c_str(), r.us / 1e3, r.tflops,
                  r.pct_mma, r.pct_dense);
      std::fflush(stdout);
      JsonRow("prompt", r);
    }
  }
  cudaStreamDestroy(stream);
  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "attention_benchmark: cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::fprintf(f, "[\n%s\n]\n", g_json.c_str());
    std::fclose(f);
  }
  return 0;
}

}  // namespace
}  // namespace vibrant

int main(int argc, char** argv) { return vibrant::Main(argc, argv); }
