// The tensor-core attention kernels (codegen/kernels/attention_mma.h) and
// vb_kv_store_q8_0 on the GPU, standalone: the attention families are
// NVRTC-compiled for the local GPU, loaded with cudaLibraryLoadData and
// launched with cudaLaunchKernel following PlanAttentionDecode/Prefill (no
// CUDA executor involved), and compared with cpu::Attention / cpu::KvStore.
// Skips without a GPU.
//
// Every case: outputs and the decode partials are poisoned (NaN) before each
// launch, so an element the kernels fail to write shows; cache rows past the
// last position hold NaN, so a read past the context shows; each case runs 3
// times and the results must be identical bit for bit (a difference is a
// race). Tolerances: max |gpu - cpu| / max|v| <= 4e-3 (f16 K and V) or 8e-3
// (q8_0 or f32 K or V), derived in attention_host_test.cc from the kernels'
// f16 roundings; the emulator measured 7e-6 .. 2.5e-4 on the same kind of
// data. The measured GPU errors are printed ([ MEASURED ]).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "codegen/attention_cuda_harness.h"
#include "codegen/kernels/attention_mma.h"
#include "gtest/gtest.h"
#include "ir/dtype.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu/quantize.h"
#include "runtime/cpu/thread_pool.h"

namespace vibrant::codegen {
namespace {

using harness::Cuda;
using harness::DeviceBuffer;
using harness::Module;

constexpr int kCapacity = 16448;  // cache rows: more than the longest context used
constexpr int kRuns = 3;

std::vector<AttnConfig> TestConfigs() {
  std::vector<AttnConfig> c;
  for (int hd : {64, 128}) {
    c.push_back({DType::kF16, DType::kF16, hd});
    c.push_back({DType::kQ8_0, DType::kQ8_0, hd});
    c.push_back({DType::kF32, DType::kF32, hd});
    c.push_back({DType::kQ8_0, DType::kF16, hd});
  }
  return c;
}

Module* g_module = nullptr;
std::string* g_skip = nullptr;
cpu::ThreadPool* g_pool = nullptr;

class AttentionGpu : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (g_module != nullptr || g_skip != nullptr) return;
    g_pool = new cpu::ThreadPool(std::max(1u, std::thread::hardware_concurrency()));
    if (absl::Status s = harness::GpuAvailable(); !s.ok()) {
      g_skip = new std::string(s.message());
      return;
    }
    auto m = Module::Load(harness::AttentionModuleSource(TestConfigs()));
    if (!m.ok()) {
      g_skip = new std::string(m.status().ToString());
      return;
    }
    g_module = m->release();
    std::printf("[ INFO ] %s (%s, %d multiprocessors)\n", g_module->name().c_str(),
                g_module->arch().c_str(), g_module->sm_count());
  }
  void SetUp() override {
    if (g_module == nullptr) {
      // A module that does not compile or load is a failure; no GPU is a skip.
      if (g_skip != nullptr && g_skip->find("NVRTC") != std::string::npos) FAIL() << *g_skip;
      GTEST_SKIP() << (g_skip != nullptr ? *g_skip : "no module");
    }
  }
};

// A [capacity, KVH, hd] cache of `type`: rows < n random in [-1, 1] (fixed
// seed per type and shape), rows >= n NaN (f16/f32 NaN; q8_0 d = NaN).
struct HostCache {
  std::vector<uint8_t> bytes;
  float max_abs = 0;  // of the dequantized rows < n
};
HostCache MakeCache(DType type, int KVH, int hd, int n, uint32_t seed) {
  static std::map<std::tuple<int, int, int, uint32_t>, std::vector<uint8_t>> full;
  const int64_t row = int64_t{KVH} * hd;
  const int64_t row_bytes = *DTypeBytes(type, row);
  std::vector<uint8_t>& all = full[{static_cast<int>(type), KVH, hd, seed}];
  if (all.empty()) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> x(kCapacity * row);
    for (float& f : x) f = dist(rng);
    all.resize(kCapacity * row_bytes);
    EXPECT_TRUE(Quantize(type, x.data(), kCapacity * row, all.data()).ok());
  }
  HostCache c;
  c.bytes = all;
  std::vector<float> back(row);
  for (int j = 0; j < n; ++j) {
    EXPECT_TRUE(Dequantize(type, c.bytes.data() + j * row_bytes, row, back.data()).ok());
    for (float f : back) c.max_abs = std::max(c.max_abs, std::fabs(f));
  }
  for (int64_t j = n; j < kCapacity; ++j) {
    uint8_t* r = c.bytes.data() + j * row_bytes;
    if (type == DType::kF32) {
      const float nan = std::numeric_limits<float>::quiet_NaN();
      for (int64_t i = 0; i < row; ++i) std::memcpy(r + 4 * i, &nan, 4);
    } else if (type == DType::kF16) {
      for (int64_t i = 0; i < row; ++i) r[2 * i] = 0x00, r[2 * i + 1] = 0x7e;
    } else {
      for (int64_t b = 0; b < row / 32; ++b) r[34 * b] = 0x00, r[34 * b + 1] = 0x7e;
    }
  }
  return c;
}

template <class T>
absl::StatusOr<DeviceBuffer> Upload(const std::vector<T>& v) {
  DeviceBuffer b(v.size() * sizeof(T));
  if (!b.ok()) return absl::ResourceExhaustedError("cudaMalloc");
  if (absl::Status s = Cuda(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(T),
                                       cudaMemcpyHostToDevice),
                            "upload");
      !s.ok()) {
    return s;
  }
  return b;
}

struct Case {
  DType k = DType::kF16, v = DType::kF16;
  int hd = 128, H = 16, KVH = 2;
  std::vector<int> pos;
};

std::string Name(const Case& c) {
  std::string s = std::string(DTypeName(c.k)) + "/" + std::string(DTypeName(c.v)) +
                  " hd=" + std::to_string(c.hd) + " G=" + std::to_string(c.H / c.KVH) +
                  " H=" + std::to_string(c.H) + " T=" + std::to_string(c.pos.size()) +
                  " pos=" + std::to_string(c.pos.front());
  if (c.pos.size() > 1) s += ".." + std::to_string(c.pos.back());
  return s;
}

double Tolerance(const Case& c) {
  return c.k == DType::kF16 && c.v == DType::kF16 ? 4e-3 : 8e-3;
}

// Runs decode (prefill = false: attn + combine) or prefill on the GPU kRuns
// times and compares with cpu::Attention.
void Check(const Case& c, bool prefill) {
  SCOPED_TRACE(std::string(prefill ? "prefill " : "decode ") + Name(c));
  const int T = static_cast<int>(c.pos.size());
  int max_pos = 0;
  for (int p : c.pos) max_pos = std::max(max_pos, p);
  const HostCache k = MakeCache(c.k, c.KVH, c.hd, max_pos + 1, 100 + c.hd);
  const HostCache v = MakeCache(c.v, c.KVH, c.hd, max_pos + 1, 200 + c.hd);
  std::mt19937 rng(7 + T);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(T) * c.H * c.hd);
  for (float& f : q) f = dist(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  std::vector<float> ref(q.size());
  cpu::AttentionShape shape{T, c.H, c.KVH, c.hd, kCapacity};
  ASSERT_TRUE(cpu::Attention(g_pool, q.data(), k.bytes.data(), v.bytes.data(), c.k, c.v,
                             c.pos.data(), shape, scale, ref.data())
                  .ok());

  auto dq = Upload(q);
  auto dk = Upload(k.bytes);
  auto dv = Upload(v.bytes);
  auto dpos = Upload(c.pos);
  ASSERT_TRUE(dq.ok() && dk.ok() && dv.ok() && dpos.ok());
  DeviceBuffer out(q.size() * sizeof(float));
  ASSERT_TRUE(out.ok());
  const AttnShape s{T, c.H, c.KVH, c.hd, kCapacity, c.k, c.v};
  const float* qp = dq->as<float>();
  const void* kp = dk->get();
  const void* vp = dv->get();
  const int* pp = dpos->as<int>();
  float* op = out.as<float>();
  int T_ = T, H_ = c.H, KVH_ = c.KVH, C_ = kCapacity, hd_ = c.hd;
  float scale_ = scale;
  std::vector<float> first;
  for (int run = 0; run < kRuns; ++run) {
    ASSERT_TRUE(Cuda(cudaMemset(op, 0xff, out.bytes()), "poison out").ok());
    if (prefill) {
      auto l = PlanAttentionPrefill(s, g_module->sm_count());
      ASSERT_TRUE(l.ok()) << l.status();
      ASSERT_TRUE(g_module
                      ->Launch(*l, {&qp, &kp, &vp, &pp, &op, &T_, &H_, &KVH_, &C_, &scale_},
                               nullptr)
                      .ok());
    } else {
      auto p = PlanAttentionDecode(s, g_module->sm_count());
      ASSERT_TRUE(p.ok()) << p.status();
      DeviceBuffer part(p->partial_floats * sizeof(float));
      ASSERT_TRUE(part.ok());
      ASSERT_TRUE(Cuda(cudaMemset(part.get(), 0xff, part.bytes()), "poison partials").ok());
      float* partp = part.as<float>();
      int n_split = p->n_split;
      absl::Status st = g_module->Launch(
          p->attn, {&qp, &kp, &vp, &pp, &partp, &T_, &H_, &KVH_, &C_, &scale_, &n_split}, nullptr);
      ASSERT_TRUE(st.ok()) << st;
      st = g_module->Launch(p->combine, {&partp, &pp, &op, &T_, &H_, &hd_, &C_, &n_split},
                            nullptr);
      ASSERT_TRUE(st.ok()) << st;
      ASSERT_TRUE(Cuda(cudaDeviceSynchronize(), "decode").ok());
    }
    absl::Status st = Cuda(cudaDeviceSynchronize(), "kernels");
    ASSERT_TRUE(st.ok()) << st;
    std::vector<float> got(q.size());
    ASSERT_TRUE(Cuda(cudaMemcpy(got.data(), op, out.bytes(), cudaMemcpyDeviceToHost), "download")
                    .ok());
    if (run == 0) {
      double err = 0;
      size_t worst = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        const double e = std::fabs(static_cast<double>(got[i]) - ref[i]);
        if (!(e <= err)) {
          err = std::isnan(e) ? INFINITY : e;
          worst = i;
        }
      }
      err /= v.max_abs;
      std::printf("[ MEASURED ] gpu %s %s: max |gpu - cpu| / max|v| = %.3g\n",
                  prefill ? "prefill" : "decode", Name(c).c_str(), err);
      EXPECT_LE(err, Tolerance(c)) << "worst element " << worst << ": " << got[worst] << " vs "
                                   << ref[worst];
      first = std::move(got);
    } else {
      ASSERT_EQ(0, std::memcmp(first.data(), got.data(), first.size() * sizeof(float)))
          << "run " << run << " differs from run 0: a race";
    }
  }
}

// ---- decode ---------------------------------------------------------------------

TEST_F(AttentionGpu, DecodeOneToken) {
  for (auto [k, v] : {std::pair{DType::kF16, DType::kF16}, std::pair{DType::kQ8_0, DType::kQ8_0}}) {
    for (int hd : {64, 128}) {
      for (auto [H, KVH] : {std::pair{8, 8}, std::pair{16, 4}, std::pair{16, 2}}) {
        for (int n : {1, 63, 64, 65, 1000, 4096, 16384}) {
          Case c{k, v, hd, H, KVH, {n - 1}};
          Check(c, false);
        }
      }
    }
  }
}

TEST_F(AttentionGpu, DecodeSmallTAndOtherCacheTypes) {
  for (DType t : {DType::kF16, DType::kQ8_0}) {
    for (int T : {2, 5, 8}) {
      for (int n : {64, 1000}) {
        Case c{t, t, 128, 16, 2, {}};
        for (int i = 0; i < T; ++i) c.pos.push_back(n - T + i);
        Check(c, false);
      }
    }
  }
  for (auto [k, v] : {std::pair{DType::kF32, DType::kF32}, std::pair{DType::kQ8_0, DType::kF16}}) {
    for (int n : {65, 4096}) Check(Case{k, v, 128, 16, 2, {n - 1}}, false);
  }
}

// One captured CUDA graph replayed at other positions (the positions are
// device data): the same bits as plain launches at those positions.
TEST_F(AttentionGpu, DecodeGraphReplayFollowsThePositions) {
  const Case c{DType::kF16, DType::kF16, 128, 16, 2, {0}};
  const HostCache k = MakeCache(c.k, c.KVH, c.hd, kCapacity, 300);
  const HostCache v = MakeCache(c.v, c.KVH, c.hd, kCapacity, 301);
  std::vector<float> q(c.H * c.hd);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& f : q) f = dist(rng);
  auto dq = Upload(q);
  auto dk = Upload(k.bytes);
  auto dv = Upload(v.bytes);
  auto dpos = Upload(std::vector<int>{10});
  ASSERT_TRUE(dq.ok() && dk.ok() && dv.ok() && dpos.ok());
  const AttnShape s{1, c.H, c.KVH, c.hd, kCapacity, c.k, c.v};
  auto p = PlanAttentionDecode(s, g_module->sm_count());
  ASSERT_TRUE(p.ok());
  DeviceBuffer part(p->partial_floats * sizeof(float)), out(q.size() * sizeof(float));
  const float* qp = dq->as<float>();
  const void* kp = dk->get();
  const void* vp = dv->get();
  const int* pp = dpos->as<int>();
  float* partp = part.as<float>();
  float* op = out.as<float>();
  int T_ = 1, H_ = c.H, KVH_ = c.KVH, C_ = kCapacity, hd_ = c.hd, n_split = p->n_split;
  float scale_ = 1.0f / std::sqrt(128.0f);
  auto launch = [&](cudaStream_t st) {
    EXPECT_TRUE(g_module
                    ->Launch(p->attn,
                             {&qp, &kp, &vp, &pp, &partp, &T_, &H_, &KVH_, &C_, &scale_, &n_split},
                             st)
                    .ok());
    EXPECT_TRUE(
        g_module->Launch(p->combine, {&partp, &pp, &op, &T_, &H_, &hd_, &C_, &n_split}, st).ok());
  };
  cudaStream_t stream;
  ASSERT_TRUE(Cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream").ok());
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_TRUE(Cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture").ok());
  launch(stream);
  ASSERT_TRUE(Cuda(cudaStreamEndCapture(stream, &graph), "end capture").ok());
  ASSERT_TRUE(Cuda(cudaGraphInstantiate(&exec, graph, 0), "instantiate").ok());
  for (int pos : {10, 1000, 5000, 16383, 3}) {
    std::vector<float> direct(q.size()), replay(q.size());
    ASSERT_TRUE(Cuda(cudaMemcpy(dpos->get(), &pos, sizeof(int), cudaMemcpyHostToDevice), "pos").ok());
    launch(nullptr);
    ASSERT_TRUE(Cuda(cudaDeviceSynchronize(), "direct").ok());
    ASSERT_TRUE(Cuda(cudaMemcpy(direct.data(), op, out.bytes(), cudaMemcpyDeviceToHost), "d").ok());
    ASSERT_TRUE(Cuda(cudaMemset(op, 0xff, out.bytes()), "poison").ok());
    ASSERT_TRUE(Cuda(cudaGraphLaunch(exec, stream), "replay").ok());
    ASSERT_TRUE(Cuda(cudaStreamSynchronize(stream), "replay sync").ok());
    ASSERT_TRUE(Cuda(cudaMemcpy(replay.data(), op, out.bytes(), cudaMemcpyDeviceToHost), "r").ok());
    EXPECT_EQ(0, std::memcmp(direct.data(), replay.data(), direct.size() * sizeof(float)))
        << "position " << pos;
    std::vector<float> ref(q.size());
    cpu::AttentionShape shape{1, c.H, c.KVH, c.hd, kCapacity};
    ASSERT_TRUE(cpu::Attention(g_pool, q.data(), k.bytes.data(), v.bytes.data(), c.k, c.v, &pos,
                               shape, scale_, ref.data())
                    .ok());
    double err = 0;
    for (size_t i = 0; i < ref.size(); ++i) err = std::max(err, std::fabs(double{replay[i]} - ref[i]));
    EXPECT_LE(err / v.max_abs, 4e-3) << "position " << pos;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// ---- prefill --------------------------------------------------------------------

Case Prompt(DType k, DType v, int hd, int H, int KVH, int T, int pos0) {
  Case c{k, v, hd, H, KVH, {}};
  for (int t = 0; t < T; ++t) c.pos.push_back(pos0 + t);
  return c;
}

TEST_F(AttentionGpu, PrefillCausalBlocks) {
  // Qwen2.5-3B's shape (GQA 8, hd 128), f16 and q8_0: prompt blocks from 0
  // and chunks at an offset, as chunked prefill runs them.
  for (DType t : {DType::kF16, DType::kQ8_0}) {
    for (auto [T, pos0] : std::vector<std::pair<int, int>>{{1, 0}, {16, 0}, {63, 0}, {64, 0},
                                                          {65, 0}, {500, 0}, {1000, 0},
                                                          {512, 1000}, {100, 3000}, {64, 16000}}) {
      Check(Prompt(t, t, 128, 16, 2, T, pos0), true);
    }
  }
  Check(Prompt(DType::kF16, DType::kF16, 128, 16, 2, 4096, 0), true);
}

TEST_F(AttentionGpu, PrefillGqaRatiosHeadDimsAndCacheTypes) {
  for (int hd : {64, 128}) {
    for (auto [H, KVH] : {std::pair{8, 8}, std::pair{16, 4}}) {
      for (DType t : {DType::kF16, DType::kQ8_0}) {
        for (auto [T, pos0] : std::vector<std::pair<int, int>>{{65, 0}, {333, 0}, {512, 1000}}) {
          Check(Prompt(t, t, hd, H, KVH, T, pos0), true);
        }
      }
    }
  }
  Check(Prompt(DType::kF32, DType::kF32, 128, 16, 2, 300, 40), true);
  Check(Prompt(DType::kQ8_0, DType::kF16, 64, 8, 2, 300, 40), true);
}

// ---- kv_store q8_0 ------------------------------------------------------------

TEST_F(AttentionGpu, KvStoreQ8_0MatchesTheCpuBitForBit) {
  const int T = 37, row = 2 * 128, C = 64;
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> src(T * row);
  for (float& f : src) f = dist(rng);
  const float ties[] = {127.0f, -2.5f, 2.5f, 0.5f, -0.5f, 1.5f, -126.5f};
  for (int i = 0; i < 7; ++i) src[row + i] = ties[i];
  for (int i = 7; i < 32; ++i) src[row + i] = 0.25f * (i - 16);
  for (int i = 64; i < 96; ++i) src[i] = 0.0f;
  src[5 * row + 70] = std::numeric_limits<float>::infinity();
  src[6 * row + 1] = std::numeric_limits<float>::quiet_NaN();
  std::vector<int> pos(T);
  for (int t = 0; t < T; ++t) pos[t] = (t * 7) % C;  // distinct rows
  const size_t bytes = size_t{C} * row / 32 * 34;
  std::vector<uint8_t> want(bytes, 0x55);
  ASSERT_TRUE(cpu::KvStore(src.data(), T, row, pos.data(), DType::kQ8_0, want.data(), C).ok());
  auto dsrc = Upload(src);
  auto dpos = Upload(pos);
  auto dcache = Upload(std::vector<uint8_t>(bytes, 0x55));
  ASSERT_TRUE(dsrc.ok() && dpos.ok() && dcache.ok());
  const float* sp = dsrc->as<float>();
  const int* pp = dpos->as<int>();
  void* cp = dcache->get();
  long long T_ = T;
  int row_ = row, C_ = C;
  AttnLaunch l;
  l.kernel = "vb_kv_store_q8_0";
  l.grid[0] = (T * row / 32 + kKvStoreThreads / 32 - 1) / (kKvStoreThreads / 32);
  l.block[0] = kKvStoreThreads;
  ASSERT_TRUE(g_module->Launch(l, {&sp, &pp, &cp, &T_, &row_, &C_}, nullptr).ok());
  std::vector<uint8_t> got(bytes);
  ASSERT_TRUE(Cuda(cudaMemcpy(got.data(), cp, bytes, cudaMemcpyDeviceToHost), "download").ok());
  EXPECT_EQ(0, std::memcmp(want.data(), got.data(), bytes));
}

}  // namespace
}  // namespace vibrant::codegen
