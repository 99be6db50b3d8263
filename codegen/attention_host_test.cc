// The tensor-core attention kernels (codegen/kernels/attention_mma.h) and
// vb_kv_store_q8_0, run on the host: their device code is compiled as C++
// (codegen_dump_attention writes it) and executed by a SIMT emulator
// (simt_emulator.h) in which mma.sync, ldmatrix, cvt.f16x2 and the warp
// shuffles have their PTX semantics, written here from the PTX ISA's fragment
// tables. This checks in CI, without a GPU, everything but the hardware
// itself: the fragment orders (the permuted K/V loads of the decode kernel,
// ldmatrix of the prefill kernel), masking, the online softmax, the warp merge,
// the context split and the combine, causal prefill blocks, the q8_0 paths,
// and that cache rows past the last position are never read (they hold NaN).
// Each launch is run under two thread schedules and must give the same bits.
//
// Tolerances (max |out - cpu::Attention| / max |v|): the kernels round q and
// the softmax weights to f16 (and q8_0 / f32 K, V values), so they differ from
// the f32/f64 reference by f16 rounding. Bound, for |q|, |k|, |v| <= 1:
// a weight's relative error is at most 2^-11 (its rounding) plus the score
// error, scale * sum_d |q_d k_d| * 2^-11 <= 2^-11 * sqrt(hd) (q's rounding;
// another 2^-11 * sqrt(hd) when K is rounded too); a convex combination of V
// rows moves by at most 2 * max|v| times the largest relative weight error,
// plus max|v| * 2^-11 when V is rounded. For hd = 128 that is 1.2e-2 (f16 K)
// and 2.4e-2 (rounded K), far above what random data gives; the asserted
// tolerance is 4e-3 (f16 K/V) and 8e-3 (q8_0 or f32 K/V), and the measured
// errors are printed ([ MEASURED ]; on this emulator 7e-6 .. 2.5e-4). The
// GPU test (attention_gpu_test.cc) uses the same tolerances.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "codegen/kernels/attention_mma.h"
#include "codegen/simt_cuda.h"
#include "codegen/simt_emulator.h"
#include "gtest/gtest.h"
#include "ir/dtype.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu/quantize.h"

// ---- the device code, on the emulator ------------------------------------------------
namespace vibrant::codegen::attn_host {

// The CUDA names (codegen/simt_cuda.h), under the kernels' names for them.
using namespace simt_cuda;
inline u32 vb_h2x(float lo, float hi) { return PackHalves(lo, hi); }
inline void vb_mma16816(float c[4], const u32 a[4], u32 b0, u32 b1) { Mma16816(c, a, b0, b1); }
inline void vb_ldsm_x4(u32 r[4], const void* p) { LdsmX4(r, p); }
inline void vb_ldsm_x4_t(u32 r[4], const void* p) { LdsmX4Trans(r, p); }

#define VB_INLINE inline
#define VB_NEG_INF (-std::numeric_limits<float>::infinity())
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __global__
#define threadIdx (::vibrant::codegen::simt::ThreadIdx())
#define blockIdx (::vibrant::codegen::simt::BlockIdx())
#define blockDim (::vibrant::codegen::simt::BlockDim())
#define gridDim (::vibrant::codegen::simt::GridDim())

// The prelude's block reductions (codegen/kernels/prelude.cc), as there.
inline float vb_warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
inline float vb_warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
inline float vb_block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  v = vb_warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.0f;
  return vb_warp_sum(v);
}
inline float vb_block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  v = vb_warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : VB_NEG_INF;
  return vb_warp_max(v);
}

#include "attention_host.inc"

#undef threadIdx
#undef blockIdx
#undef blockDim
#undef gridDim
#undef __shared__
#undef __align__
#undef __global__

}  // namespace vibrant::codegen::attn_host

namespace vibrant::codegen {
namespace {

using simt::Dim3;

int KvCode(DType t) { return t == DType::kF32 ? 0 : t == DType::kF16 ? 1 : 2; }

// The kernel templates for the configs these tests use.
using DecodeFn = void (*)(const float*, const uint8_t*, const uint8_t*, const int*, float*, int,
                          int, int, int, float, int);
using PrefillFn = void (*)(const float*, const uint8_t*, const uint8_t*, const int*, float*, int,
                           int, int, int, float);
template <int K, int V, int HD>
void Dec(const float* q, const uint8_t* k, const uint8_t* v, const int* pos, float* part, int T,
         int H, int KVH, int n_ctx, float scale, int n_split) {
  attn_host::vb_attn_dec_impl<K, V, HD>(q, k, v, pos, part, T, H, KVH, n_ctx, scale, n_split);
}
template <int K, int V, int HD>
void Pre(const float* q, const uint8_t* k, const uint8_t* v, const int* pos, float* out, int T,
         int H, int KVH, int n_ctx, float scale) {
  attn_host::vb_attn_pre_impl<K, V, HD>(q, k, v, pos, out, T, H, KVH, n_ctx, scale);
}
struct Kernels {
  DecodeFn dec;
  PrefillFn pre;
};
Kernels For(DType k, DType v, int hd) {
  const int key = KvCode(k) * 100 + KvCode(v) * 10 + (hd == 128 ? 1 : 0);
  switch (key) {
    case 110: return {Dec<1, 1, 64>, Pre<1, 1, 64>};
    case 111: return {Dec<1, 1, 128>, Pre<1, 1, 128>};
    case 221: return {Dec<2, 2, 128>, Pre<2, 2, 128>};
    case 220: return {Dec<2, 2, 64>, Pre<2, 2, 64>};
    case 211: return {Dec<2, 1, 128>, Pre<2, 1, 128>};
    case 10: return {Dec<0, 1, 64>, Pre<0, 1, 64>};
    case 1: return {Dec<0, 0, 128>, Pre<0, 0, 128>};
    default: return {nullptr, nullptr};
  }
}

// A cache of `type` with C rows of [KVH, hd]: rows < n random in [-1, 1],
// the rest poison (NaN values: f16/f32 NaN, q8_0 d = NaN).
std::vector<uint8_t> MakeCache(DType type, int64_t C, int64_t KVH, int64_t hd, int64_t n,
                               uint32_t seed, float* max_abs) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int64_t row = KVH * hd;
  std::vector<float> x(C * row);
  for (float& f : x) f = dist(rng);
  const int64_t row_bytes = *DTypeBytes(type, row);
  std::vector<uint8_t> bytes(C * row_bytes);
  EXPECT_TRUE(Quantize(type, x.data(), C * row, bytes.data()).ok());
  std::vector<float> back(n * row);
  EXPECT_TRUE(Dequantize(type, bytes.data(), n * row, back.data()).ok());
  *max_abs = 0.0f;
  for (float f : back) *max_abs = std::max(*max_abs, std::fabs(f));
  for (int64_t j = n; j < C; ++j) {
    uint8_t* r = bytes.data() + j * row_bytes;
    if (type == DType::kF32) {
      for (int64_t i = 0; i < row; ++i) {
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::memcpy(r + 4 * i, &nan, 4);
      }
    } else if (type == DType::kF16) {
      for (int64_t i = 0; i < row; ++i) r[2 * i] = 0x00, r[2 * i + 1] = 0x7e;
    } else {
      for (int64_t b = 0; b < row / 32; ++b) r[34 * b] = 0x00, r[34 * b + 1] = 0x7e;
    }
  }
  return bytes;
}

struct Case {
  DType k = DType::kF16, v = DType::kF16;
  int hd = 128, H = 16, KVH = 2, C = 256;
  std::vector<int> pos;  // one per token
  int sm_count = 4;      // for the decode split count
};

std::string Name(const Case& c) {
  std::string s = std::string(DTypeName(c.k)) + "/" + std::string(DTypeName(c.v)) +
                  " hd=" + std::to_string(c.hd) + " H=" + std::to_string(c.H) +
                  " KVH=" + std::to_string(c.KVH) + " T=" + std::to_string(c.pos.size()) +
                  " pos=" + std::to_string(c.pos.front());
  if (c.pos.size() > 1) s += ".." + std::to_string(c.pos.back());
  return s;
}

double Tolerance(const Case& c) { return c.k == DType::kF16 && c.v == DType::kF16 ? 4e-3 : 8e-3; }

// Runs the decode (prefill = false) or prefill kernel on the emulator and
// compares with cpu::Attention; returns the output of the first schedule.
void Check(const Case& c, bool prefill) {
  SCOPED_TRACE(std::string(prefill ? "prefill " : "decode ") + Name(c));
  const int T = static_cast<int>(c.pos.size());
  int max_pos = 0;
  for (int p : c.pos) max_pos = std::max(max_pos, p);
  float kmax = 0, vmax = 0;
  const std::vector<uint8_t> k = MakeCache(c.k, c.C, c.KVH, c.hd, max_pos + 1, 11, &kmax);
  const std::vector<uint8_t> v = MakeCache(c.v, c.C, c.KVH, c.hd, max_pos + 1, 12, &vmax);
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(T) * c.H * c.hd);
  for (float& f : q) f = dist(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));

  std::vector<float> ref(q.size());
  cpu::AttentionShape shape{T, c.H, c.KVH, c.hd, c.C};
  ASSERT_TRUE(cpu::Attention(nullptr, q.data(), k.data(), v.data(), c.k, c.v, c.pos.data(), shape,
                             scale, ref.data())
                  .ok());
  const Kernels fn = For(c.k, c.v, c.hd);
  ASSERT_NE(fn.dec, nullptr) << "config not instantiated in this test";
  const AttnShape s{T, c.H, c.KVH, c.hd, c.C, c.k, c.v};
  std::vector<float> first;
  for (uint32_t seed : {1u, 2u}) {
    std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
    if (prefill) {
      absl::StatusOr<AttnLaunch> l = PlanAttentionPrefill(s, c.sm_count);
      ASSERT_TRUE(l.ok()) << l.status();
      ASSERT_TRUE(simt::Launch(Dim3{l->grid[0], l->grid[1], l->grid[2]}, Dim3{l->block[0], 1, 1},
                               [&] {
                                 fn.pre(q.data(), k.data(), v.data(), c.pos.data(), out.data(), T,
                                        c.H, c.KVH, c.C, scale);
                               },
                               seed)
                      .ok());
    } else {
      absl::StatusOr<AttnDecodePlan> p = PlanAttentionDecode(s, c.sm_count);
      ASSERT_TRUE(p.ok()) << p.status();
      std::vector<float> part(p->partial_floats, std::numeric_limits<float>::quiet_NaN());
      const AttnLaunch& a = p->attn;
      ASSERT_TRUE(simt::Launch(Dim3{a.grid[0], a.grid[1], a.grid[2]}, Dim3{a.block[0], 1, 1},
                               [&] {
                                 fn.dec(q.data(), k.data(), v.data(), c.pos.data(), part.data(), T,
                                        c.H, c.KVH, c.C, scale, p->n_split);
                               },
                               seed)
                      .ok());
      const AttnLaunch& b = p->combine;
      ASSERT_TRUE(simt::Launch(Dim3{b.grid[0], b.grid[1], b.grid[2]}, Dim3{b.block[0], 1, 1},
                               [&] {
                                 attn_host::vb_attn_dec_combine(part.data(), c.pos.data(),
                                                                out.data(), T, c.H, c.hd, c.C,
                                                                p->n_split);
                               },
                               seed)
                      .ok());
    }
    double err = 0;
    int64_t bad = -1;
    for (size_t i = 0; i < out.size(); ++i) {
      const double e = std::fabs(static_cast<double>(out[i]) - ref[i]);
      if (!(e <= err)) {  // NaN counts as worst
        err = std::isnan(e) ? INFINITY : e;
        bad = static_cast<int64_t>(i);
      }
    }
    err /= vmax;
    if (seed == 1) {
      std::printf("[ MEASURED ] emulated %s %s: max |out - cpu| / max|v| = %.3g\n",
                  prefill ? "prefill" : "decode", Name(c).c_str(), err);
      EXPECT_LE(err, Tolerance(c)) << "worst element " << bad << ": " << out[bad] << " vs "
                                   << ref[bad];
      first = out;
    } else {
      EXPECT_EQ(0, std::memcmp(first.data(), out.data(), out.size() * sizeof(float)))
          << "the result depends on the thread schedule (a race)";
    }
  }
}

TEST(AttentionEmulated, DecodeLengthsAroundTheStep) {
  // GQA 8 (Qwen2.5-3B's 16 / 2), f16: 1, 16, 17 keys and a multi-split length.
  for (int p : {0, 15, 16, 200}) {
    Case c;
    c.H = 16;
    c.KVH = 2;
    c.pos = {p};
    Check(c, false);
  }
  // Many splits (40, of which 24 used, 2 steps per warp): the combine's warps
  // each add several splits.
  Case many;
  many.C = 4096;
  many.sm_count = 40;
  many.pos = {2999};
  Check(many, false);
}

TEST(AttentionEmulated, DecodeGqaRatiosAndHeadDims) {
  Case mha;  // G = 1 (MHA), hd 64: a block per KV head with 1 of its 16 rows in use
  mha.hd = 64;
  mha.H = 4;
  mha.KVH = 4;
  mha.pos = {70};
  Check(mha, false);
  Case g4;  // G = 4, 3 tokens: 12 rows in one block, each token its own position
  g4.H = 8;
  g4.KVH = 2;
  g4.pos = {90, 91, 92};
  Check(g4, false);
  Case g16;  // G = 16 over 2 tokens: two row blocks
  g16.hd = 64;
  g16.H = 16;
  g16.KVH = 1;
  g16.pos = {40, 41};
  Check(g16, false);
}

TEST(AttentionEmulated, DecodeQ8_0AndF32Caches) {
  Case q8;
  q8.k = q8.v = DType::kQ8_0;
  q8.pos = {150};
  Check(q8, false);
  Case mixed;
  mixed.k = DType::kQ8_0;
  mixed.H = 8;
  mixed.pos = {33};
  Check(mixed, false);
  Case f32;
  f32.k = f32.v = DType::kF32;
  f32.H = 4;
  f32.KVH = 4;
  f32.pos = {64};
  Check(f32, false);
}

TEST(AttentionEmulated, PrefillCausalBlocks) {
  Case a;  // from position 0, GQA 2, hd 64: 40 tokens = 80 rows, 2 blocks
  a.hd = 64;
  a.H = 4;
  a.KVH = 2;
  for (int t = 0; t < 40; ++t) a.pos.push_back(t);
  Check(a, true);
  Case b;  // a chunk at offset 37 (chunked prefill), GQA 8, q8_0
  b.k = b.v = DType::kQ8_0;
  b.H = 8;
  b.KVH = 1;
  for (int t = 0; t < 9; ++t) b.pos.push_back(37 + t);
  Check(b, true);
  Case c;  // MHA, f32 K and V
  c.k = c.v = DType::kF32;
  c.H = 2;
  c.KVH = 2;
  for (int t = 0; t < 20; ++t) c.pos.push_back(5 + t);
  Check(c, true);
}

TEST(AttentionEmulated, KvStoreQ8_0MatchesTheCpuBitForBit) {
  const int T = 3, row = 2 * 64, C = 5;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> src(T * row);
  for (float& f : src) f = dist(rng);
  src[7] = 0.0f;
  for (int i = 32; i < 64; ++i) src[i] = 0.0f;  // an all-zero block: d = 0
  // A block with d = 1 and ties: codes round half away from zero (2.5 -> 3).
  const float ties[] = {127.0f, -2.5f, 2.5f, 0.5f, -0.5f, 1.5f, -126.5f};
  for (int i = 0; i < 7; ++i) src[row + i] = ties[i];
  for (int i = 7; i < 32; ++i) src[row + i] = 0.25f * (i - 16);
  src[row + 40] = std::numeric_limits<float>::infinity();
  src[2 * row + 3] = std::numeric_limits<float>::quiet_NaN();
  std::vector<int> pos = {4, 0, 2};
  const int64_t bytes = C * row / 32 * 34;
  std::vector<uint8_t> want(bytes, 0x55), got(bytes, 0x55);
  ASSERT_TRUE(cpu::KvStore(src.data(), T, row, pos.data(), DType::kQ8_0, want.data(), C).ok());
  // One block of 256 threads (8 warps) over the 12 q8_0 blocks: grid-stride.
  ASSERT_TRUE(simt::Launch(Dim3{1, 1, 1}, Dim3{256, 1, 1}, [&] {
                attn_host::vb_kv_store_q8_0(src.data(), pos.data(), got.data(), T, row, C);
              }).ok());
  EXPECT_EQ(0, std::memcmp(want.data(), got.data(), bytes));
}

}  // namespace
}  // namespace vibrant::codegen

// ---- paged attention and kv_store (continuous batching) ----------------------------
namespace vibrant::codegen {
namespace {

using simt::Dim3;

using PagedFn = void (*)(const float*, const uint8_t*, const uint8_t*, const int*, const int*,
                         const int*, float*, int, int, int, int, float, int, int, int, int);
template <int K, int V, int HD>
void Paged(const float* q, const uint8_t* k, const uint8_t* v, const int* pos, const int* seq,
           const int* table, float* part, int T, int H, int KVH, int n_rows, float scale,
           int n_split, int n_seq, int max_blocks, int block_size) {
  attn_host::vb_attn_paged_impl<K, V, HD>(q, k, v, pos, seq, table, part, T, H, KVH, n_rows, scale,
                                          n_split, n_seq, max_blocks, block_size);
}

struct PagedCase {
  DType k = DType::kF16, v = DType::kF16;
  int hd = 128, H = 16, KVH = 2;
  int block_size = 16, n_blocks = 24, n_seq = 3, max_blocks = 6;
  std::vector<int> table;  // n_seq * max_blocks; -1: unused
  std::vector<int> seq, pos;  // per token
  int sm_count = 4;
};

// The paged decode kernel and its combine on the emulator against
// cpu::PagedAttention (and the same tolerance as the contiguous kernels).
// Rows of blocks no sequence owns hold NaN: a read of another sequence's
// or a free block would show.
void CheckPaged(const PagedCase& c) {
  SCOPED_TRACE(std::string(DTypeName(c.k)) + " hd=" + std::to_string(c.hd) + " H=" +
               std::to_string(c.H) + " KVH=" + std::to_string(c.KVH) + " T=" +
               std::to_string(c.pos.size()));
  const int T = static_cast<int>(c.pos.size());
  const int n_rows = c.n_blocks * c.block_size;
  // Random rows everywhere, then NaN in every block no table entry names.
  float kmax = 0, vmax = 0;
  std::vector<uint8_t> k = MakeCache(c.k, n_rows, c.KVH, c.hd, n_rows, 21, &kmax);
  std::vector<uint8_t> v = MakeCache(c.v, n_rows, c.KVH, c.hd, n_rows, 22, &vmax);
  std::vector<bool> owned(c.n_blocks, false);
  for (int b : c.table) {
    if (b >= 0) owned[b] = true;
  }
  const std::vector<uint8_t> poison_k = MakeCache(c.k, c.block_size, c.KVH, c.hd, 0, 1, &kmax);
  const std::vector<uint8_t> poison_v = MakeCache(c.v, c.block_size, c.KVH, c.hd, 0, 1, &vmax);
  kmax = vmax = 1.0f;
  for (int b = 0; b < c.n_blocks; ++b) {
    if (owned[b]) continue;
    std::memcpy(k.data() + b * poison_k.size(), poison_k.data(), poison_k.size());
    std::memcpy(v.data() + b * poison_v.size(), poison_v.data(), poison_v.size());
  }
  std::mt19937 rng(23);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(T) * c.H * c.hd);
  for (float& f : q) f = dist(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  std::vector<float> ref(q.size());
  cpu::PagedKv pk{c.seq.data(), c.table.data(), c.n_seq, c.max_blocks, c.block_size};
  cpu::AttentionShape shape{T, c.H, c.KVH, c.hd, n_rows};
  ASSERT_TRUE(cpu::PagedAttention(nullptr, q.data(), k.data(), v.data(), c.k, c.v, c.pos.data(), pk,
                                  shape, scale, ref.data())
                  .ok());
  PagedFn fn = nullptr;
  if (c.k == DType::kF16 && c.v == DType::kF16 && c.hd == 128) fn = Paged<1, 1, 128>;
  if (c.k == DType::kF16 && c.v == DType::kF16 && c.hd == 64) fn = Paged<1, 1, 64>;
  if (c.k == DType::kQ8_0 && c.v == DType::kQ8_0 && c.hd == 128) fn = Paged<2, 2, 128>;
  ASSERT_NE(fn, nullptr);
  const AttnShape s{T, c.H, c.KVH, c.hd, n_rows, c.k, c.v};
  absl::StatusOr<AttnPagedPlan> p =
      PlanAttentionPaged(s, int64_t{c.max_blocks} * c.block_size, c.sm_count);
  ASSERT_TRUE(p.ok()) << p.status();
  std::vector<float> first;
  for (uint32_t seed : {1u, 2u}) {
    std::vector<float> part(p->partial_floats, std::numeric_limits<float>::quiet_NaN());
    std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
    const AttnLaunch& a = p->attn;
    ASSERT_TRUE(simt::Launch(Dim3{a.grid[0], a.grid[1], a.grid[2]}, Dim3{a.block[0], 1, 1},
                             [&] {
                               fn(q.data(), k.data(), v.data(), c.pos.data(), c.seq.data(),
                                  c.table.data(), part.data(), T, c.H, c.KVH, n_rows, scale,
                                  p->n_split, c.n_seq, c.max_blocks, c.block_size);
                             },
                             seed)
                    .ok());
    const AttnLaunch& b = p->combine;
    ASSERT_TRUE(simt::Launch(Dim3{b.grid[0], b.grid[1], b.grid[2]}, Dim3{b.block[0], 1, 1},
                             [&] {
                               attn_host::vb_attn_paged_combine(part.data(), c.pos.data(), out.data(),
                                                                T, c.H, c.hd,
                                                                c.max_blocks * c.block_size,
                                                                p->n_split);
                             },
                             seed)
                    .ok());
    double err = 0;
    int64_t bad = -1;
    for (size_t i = 0; i < out.size(); ++i) {
      const double e = std::fabs(static_cast<double>(out[i]) - ref[i]);
      if (!(e <= err)) {
        err = std::isnan(e) ? INFINITY : e;
        bad = static_cast<int64_t>(i);
      }
    }
    if (seed == 1) {
      std::printf("[ MEASURED ] emulated paged decode %s hd=%d T=%d: max |out - cpu| = %.3g\n",
                  std::string(DTypeName(c.k)).c_str(), c.hd, T, err);
      EXPECT_LE(err, c.k == DType::kF16 ? 4e-3 : 8e-3)
          << "worst element " << bad << ": " << out[bad] << " vs " << ref[bad];
      first = out;
    } else {
      EXPECT_EQ(0, std::memcmp(first.data(), out.data(), out.size() * sizeof(float)))
          << "the result depends on the thread schedule (a race)";
    }
  }
}

TEST(AttentionEmulated, PagedDecodeOfSeveralSequences) {
  // Three sequences in scattered blocks of 16: sequence 0 holds 5 blocks
  // (positions up to 79), 1 holds 1, 2 holds 3; a step with decode tokens of
  // all three and a 3-token chunk of sequence 2, in mixed order.
  PagedCase c;
  c.table = {7, 2, 19, 11, 4, -1,  //
             0, -1, -1, -1, -1, -1,  //
             23, 5, 16, -1, -1, -1};
  c.seq = {1, 0, 2, 2, 2, 0};
  c.pos = {9, 79, 30, 31, 32, 16};
  CheckPaged(c);
  // G = 16 (one full row block), hd 64, blocks of 32 keys (two steps each).
  PagedCase d;
  d.hd = 64;
  d.H = 16;
  d.KVH = 1;
  d.block_size = 32;
  d.n_blocks = 6;
  d.n_seq = 2;
  d.max_blocks = 3;
  d.table = {3, 0, 5, 1, -1, -1};
  d.seq = {0, 1};
  d.pos = {70, 31};
  CheckPaged(d);
  // q8_0 caches, G = 8 over blocks of 8 keys (a 16-key step spans two blocks).
  PagedCase e;
  e.k = e.v = DType::kQ8_0;
  e.H = 8;
  e.KVH = 1;
  e.block_size = 8;
  e.n_blocks = 12;
  e.n_seq = 2;
  e.max_blocks = 6;
  e.table = {11, 3, 8, 0, 6, -1, 2, 9, -1, -1, -1, -1};
  e.seq = {0, 1};
  e.pos = {37, 12};
  CheckPaged(e);
}

TEST(AttentionEmulated, PagedKvStoreMatchesTheCpuBitForBit) {
  const int T = 4, row = 64, BS = 4, NB = 6, S = 2, MB = 3;
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> src(T * row);
  for (float& f : src) f = dist(rng);
  const std::vector<int> table = {4, 1, -1, 5, 0, 2};
  const std::vector<int> seq = {0, 1, 1, 0}, pos = {5, 0, 9, 2};
  for (DType t : {DType::kF16, DType::kF32, DType::kQ8_0}) {
    SCOPED_TRACE(std::string(DTypeName(t)));
    const int64_t bytes = *DTypeBytes(t, int64_t{NB} * BS * row);
    std::vector<uint8_t> want(bytes, 0x55), got(bytes, 0x55);
    cpu::PagedKv pk{seq.data(), table.data(), S, MB, BS};
    ASSERT_TRUE(cpu::PagedKvStore(src.data(), T, row, pos.data(), pk, t, want.data(), NB * BS).ok());
    ASSERT_TRUE(simt::Launch(Dim3{2, 1, 1}, Dim3{128, 1, 1}, [&] {
                  if (t == DType::kF16) {
                    attn_host::vb_kv_store_paged_f16(src.data(), pos.data(), seq.data(), table.data(),
                                                     reinterpret_cast<attn_host::u16*>(got.data()), T,
                                                     row, NB * BS, S, MB, BS);
                  } else if (t == DType::kF32) {
                    attn_host::vb_kv_store_paged_f32(src.data(), pos.data(), seq.data(), table.data(),
                                                     reinterpret_cast<float*>(got.data()), T, row,
                                                     NB * BS, S, MB, BS);
                  } else {
                    attn_host::vb_kv_store_paged_q8_0(src.data(), pos.data(), seq.data(), table.data(),
                                                      got.data(), T, row, NB * BS, S, MB, BS);
                  }
                }).ok());
    EXPECT_EQ(0, std::memcmp(want.data(), got.data(), bytes));
  }
}

}  // namespace
}  // namespace vibrant::codegen
