// The GPU sampler (codegen/kernels/sample.cc) compiled as host C++ and run on
// emulated CUDA threads, against the CPU sampler (runtime/sampler.h): the
// kernels' selection, windows, cuts and draw must pick SampleToken's token,
// and their Philox must be the CPU's number for number. CI has no GPU; on
// the GPU the same text runs for real (runtime/cuda/executor_test.cc:
// Sample*), where expf may differ from the host's by an ulp.
//
// The emulator (codegen/simt_emulator.h): the threads of a block are
// cooperative contexts that switch only at __syncthreads and warp shuffles,
// in a seeded random order (each draw below runs under another schedule), so
// a missing barrier shows as a wrong token; `__shared__` variables are
// statics shared by the block's threads.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "codegen/simt_emulator.h"
#include "gtest/gtest.h"
#include "runtime/sampler.h"

namespace vibrant::codegen::host {

typedef unsigned char u8;
typedef unsigned int u32;
typedef long long i64;

#define threadIdx (::vibrant::codegen::simt::ThreadIdx())
#define blockIdx (::vibrant::codegen::simt::BlockIdx())
#define blockDim (::vibrant::codegen::simt::BlockDim())
#define gridDim (::vibrant::codegen::simt::GridDim())

inline void __syncthreads() { simt::SyncThreads(); }
template <class T>
T __shfl_xor_sync(unsigned, T v, int o) {
  T all[32];
  simt::WarpExchange(&v, sizeof(T), all);
  return all[simt::LaneId() ^ o];
}
template <class T>
T __shfl_up_sync(unsigned, T v, int o) {
  T all[32];
  simt::WarpExchange(&v, sizeof(T), all);
  const int lane = simt::LaneId();
  return all[lane >= o ? lane - o : lane];
}

// One OS thread runs every emulated thread: plain read-modify-writes.
inline u32 atomicAdd(u32* p, u32 v) {
  const u32 old = *p;
  *p = old + v;
  return old;
}
inline int atomicAdd(int* p, int v) {
  const int old = *p;
  *p = old + v;
  return old;
}

// Single correctly rounded operations, as on the GPU (volatile: no contraction).
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
inline double __dadd_rn(double a, double b) { volatile double r = a + b; return r; }
inline double __dmul_rn(double a, double b) { volatile double r = a * b; return r; }
inline double __ddiv_rn(double a, double b) { volatile double r = a / b; return r; }
inline float __int_as_float(int i) { return std::bit_cast<float>(i); }
inline float __uint_as_float(u32 u) { return std::bit_cast<float>(u); }
inline u32 __float_as_uint(float f) { return std::bit_cast<u32>(f); }
inline u32 __umulhi(u32 a, u32 b) { return static_cast<u32>((static_cast<uint64_t>(a) * b) >> 32); }
using std::isfinite;

#define VB_INLINE inline
#define __global__
#define __launch_bounds__(n)
#define __shared__ static
#define __restrict__

#include "sample.inc"

#undef threadIdx
#undef blockIdx
#undef blockDim
#undef gridDim

namespace {

// Mirrors the launch rules of codegen/cuda_target.cc (sample), with a
// chunk the test may shrink to get several gather blocks from a short row.
struct Run {
  int32_t token = -2;
  bool ok = false;
};

Run RunSampler(const std::vector<float>& logits, const SampleDraw& d, int chunk = 4096) {
  const uint32_t schedule = static_cast<uint32_t>(d.n) + 1;
  const int V = static_cast<int>(logits.size());
  const int blocks = (V + chunk - 1) / chunk;
  const std::array<int32_t, kSampleParamWords> params = PackSampleParams(d);
  std::vector<vb_u64> part(2 * blocks + static_cast<size_t>(blocks) * VB_SAMPLE_CAP, 0xdeadbeefull);
  Run r;
  int token = -2;
  absl::Status s = simt::Launch(
      {static_cast<unsigned>(blocks), 1, 1}, {256, 1, 1},
      [&] { vb_sample_gather(logits.data(), params.data(), part.data(), V, chunk); }, schedule);
  if (!s.ok()) {
    ADD_FAILURE() << "vb_sample_gather: " << s;
    return r;
  }
  s = simt::Launch({1, 1, 1}, {1024, 1, 1},
                   [&] { vb_sample_pick(logits.data(), params.data(), part.data(), &token, V, blocks); }, schedule);
  if (!s.ok()) {
    ADD_FAILURE() << "vb_sample_pick: " << s;
    return r;
  }
  r.token = token;
  r.ok = true;
  return r;
}

SampleDraw Draw(float temp, int top_k, float top_p, float min_p, uint32_t seed, uint64_t n) {
  SampleDraw d;
  d.temp = temp;
  d.top_k = top_k;
  d.top_p = top_p;
  d.min_p = min_p;
  d.seed = seed;
  d.n = n;
  return d;
}

// The CPU's token, or -1 for a row without a finite logit (the op's value).
int32_t Expected(const std::vector<float>& logits, const SampleDraw& d) {
  absl::StatusOr<int32_t> id = SampleToken(logits, d);
  return id.ok() ? *id : -1;
}

std::vector<float> Normal(int n, float sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Checks `draws` draws (n = 0, 1, ...) of the GPU code against the CPU.
void ExpectSameDraws(const std::vector<float>& logits, SampleDraw d, int draws, int chunk = 4096) {
  for (int i = 0; i < draws; ++i) {
    d.n = static_cast<uint64_t>(i) * 7919u;
    const Run r = RunSampler(logits, d, chunk);
    ASSERT_TRUE(r.ok);
    ASSERT_EQ(r.token, Expected(logits, d))
        << "draw " << d.n << " temp " << d.temp << " top_k " << d.top_k << " top_p " << d.top_p << " min_p "
        << d.min_p << " V " << logits.size() << " chunk " << chunk;
  }
}

TEST(SampleKernelHost, PhiloxIsTheCpusGenerator) {
  std::mt19937 rng(5);
  for (int i = 0; i < 2000; ++i) {
    const uint32_t seed = rng();
    const uint64_t n = (static_cast<uint64_t>(rng()) << 32) | rng();
    ASSERT_EQ(vb_sample_uniform(seed, n), SampleUniform(seed, n)) << seed << " " << n;
  }
}

TEST(SampleKernelHost, KeysOrderAsTheCpuDoes) {
  // Descending logit, then ascending id; -0 equals +0; NaN and inf are no candidates.
  EXPECT_GT(vb_sample_key(1.0f, 5), vb_sample_key(0.5f, 0));
  EXPECT_GT(vb_sample_key(-1.0f, 5), vb_sample_key(-2.0f, 0));
  EXPECT_GT(vb_sample_key(0.0f, 5), vb_sample_key(-1e-30f, 0));
  EXPECT_GT(vb_sample_key(2.0f, 3), vb_sample_key(2.0f, 4));
  EXPECT_GT(vb_sample_key(-0.0f, 3), vb_sample_key(0.0f, 4));
  EXPECT_EQ(vb_sample_key(std::numeric_limits<float>::quiet_NaN(), 1), 0ull);
  EXPECT_EQ(vb_sample_key(std::numeric_limits<float>::infinity(), 1), 0ull);
  EXPECT_EQ(vb_sample_key(-std::numeric_limits<float>::infinity(), 1), 0ull);
  for (float x : {-3.5f, -1e-20f, 0.0f, 1.25f, 3e30f, -std::numeric_limits<float>::max()}) {
    EXPECT_EQ(vb_sample_logit(vb_sample_key(x, 77)), x);
    EXPECT_EQ(vb_sample_id(vb_sample_key(x, 77)), 77);
  }
}

TEST(SampleKernelHost, GreedyIsTheArgmaxWithTheLowestIdOnTies) {
  std::vector<float> logits = Normal(3000, 2.0f, 1);
  logits[2500] = 9.0f;
  logits[700] = 9.0f;  // a tie in another gather block: the lower id wins
  logits[10] = std::numeric_limits<float>::infinity();  // never a candidate
  logits[11] = std::numeric_limits<float>::quiet_NaN();
  const SampleDraw d = Draw(0.0f, 40, 0.95f, 0.05f, 1, 0);
  EXPECT_EQ(RunSampler(logits, d, 512).token, 700);
  EXPECT_EQ(RunSampler(logits, d).token, 700);
  logits[700] = -0.0f;
  logits[2500] = 0.0f;
  for (float& x : logits) x = x > 0.0f ? -x : x;
  logits[10] = 0.0f;
  logits[2500] = -0.0f;
  // 0 and -0 are equal: the lowest id of {10, 700, 2500}.
  EXPECT_EQ(RunSampler(logits, d, 512).token, 10);
}

TEST(SampleKernelHost, NoFiniteLogitGivesMinusOne) {
  std::vector<float> logits(100, std::numeric_limits<float>::quiet_NaN());
  logits[3] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(RunSampler(logits, Draw(0.0f, 0, 1.0f, 0.0f, 1, 0)).token, -1);
  EXPECT_EQ(RunSampler(logits, Draw(0.8f, 40, 0.95f, 0.05f, 1, 0)).token, -1);
}

// llama.cpp's defaults on a row spread over several gather blocks.
TEST(SampleKernelHost, DefaultChainMatchesTheCpu) {
  const std::vector<float> logits = Normal(3000, 2.5f, 2);
  ExpectSameDraws(logits, Draw(0.8f, 40, 0.95f, 0.05f, 1234, 0), 12, 500);
  ExpectSameDraws(logits, Draw(0.8f, 40, 0.95f, 0.05f, 99, 0), 6);
}

TEST(SampleKernelHost, EachFilterAloneMatchesTheCpu) {
  const std::vector<float> logits = Normal(2000, 1.5f, 3);
  ExpectSameDraws(logits, Draw(1.0f, 1, 1.0f, 0.0f, 5, 0), 3, 300);     // top-k 1
  ExpectSameDraws(logits, Draw(1.3f, 7, 1.0f, 0.0f, 5, 0), 8, 300);     // top-k
  ExpectSameDraws(logits, Draw(0.7f, 300, 0.5f, 0.0f, 6, 0), 8, 300);   // top-k, top-p
  ExpectSameDraws(logits, Draw(1.0f, 1024, 1.0f, 0.2f, 7, 0), 6, 300);  // top-k = the window, min-p
  ExpectSameDraws(logits, Draw(2.0f, 50, 0.9f, 0.1f, 8, 0), 8, 300);    // all, hot
}

// Rows whose top-k set is not among the gathered keys: top_k 0 (with more
// than a window of finite logits) or larger than a window. Windows over the
// whole row, several of them where the cut is past the first.
TEST(SampleKernelHost, LongCandidateListsMatchTheCpu) {
  const std::vector<float> flat = Normal(2600, 0.3f, 4);  // flat: thousands survive
  ExpectSameDraws(flat, Draw(1.0f, 0, 1.0f, 0.0f, 9, 0), 3, 700);      // every token
  ExpectSameDraws(flat, Draw(0.9f, 0, 0.9f, 0.0f, 10, 0), 3, 700);     // top-p cut in window 3
  ExpectSameDraws(flat, Draw(0.9f, 0, 1.0f, 0.3f, 11, 0), 3, 700);     // min-p cut past a window
  ExpectSameDraws(flat, Draw(1.1f, 1500, 0.95f, 0.0f, 12, 0), 3, 700); // top-k > a window
  const std::vector<float> peaked = Normal(2600, 4.0f, 5);
  ExpectSameDraws(peaked, Draw(0.8f, 0, 0.95f, 0.05f, 13, 0), 4, 700);  // llama.cpp with top-k off
}

TEST(SampleKernelHost, ShortRowsAndTies) {
  // Fewer logits than a window, top-k 0: everything is gathered.
  std::vector<float> logits = Normal(80, 1.0f, 6);
  ExpectSameDraws(logits, Draw(1.0f, 0, 0.8f, 0.0f, 14, 0), 10);
  // Many equal logits: the order among them is by id, as on the CPU.
  std::vector<float> ties(600, 1.0f);
  for (int i = 0; i < 600; i += 7) ties[i] = 0.5f;
  ties[599] = std::numeric_limits<float>::quiet_NaN();
  ExpectSameDraws(ties, Draw(1.0f, 30, 0.5f, 0.0f, 15, 0), 10, 200);
  ExpectSameDraws(ties, Draw(1.0f, 0, 0.3f, 0.0f, 16, 0), 10, 200);
}

}  // namespace
}  // namespace vibrant::codegen::host
