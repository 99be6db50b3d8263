// The tensor-core GEMM on quantized weights (codegen/kernels/mmq.cc), run on
// the host: its device code is compiled as C++ (codegen_dump_mmq writes it)
// and executed by the SIMT emulator (simt_emulator.h), with mma.sync,
// ldmatrix, cvt.f16x2 and cp.async given their PTX semantics here. cp.async
// is emulated as PTX allows it to behave at worst: a copy happens only when a
// cp.async.wait_group retires its group, so a read of a stage before its wait
// sees the previous contents (shared memory starts as NaN), and every launch
// runs under two thread schedules that must give the same bits. This checks,
// without a GPU, the per-type decoders (bit for bit against FloatToHalf of
// the CPU dequantizer, every group of q4_0, q8_0, q4_K, q5_K, q6_K rows), the fragment orders, the pipeline's barriers and waits, the
// tails (T, N and K not multiples of the tiles), the bias and the three
// members of one launch.
//
// Reference: out[t][n] = sum_k f16(x[t][k]) * f16(w[n][k]) (+ bias[n]) in
// double, w from the CPU dequantizer (runtime/cpu/dequantize.h), i.e. the
// operands the kernel must see. The kernel multiplies the same f16 values
// exactly and adds in f32 in another order, so |out - ref| <= (K + 16) *
// 2^-24 * sum_k |x w| (+ |bias| * 2^-24): the standard bound for a float sum
// of K terms in any order, asserted per element. A wrong decoded value, a
// wrong fragment or a missed tile misses it by orders of magnitude. Against
// the unrounded f32 operands (what the CPU backend computes) the relative
// error is ~1e-3 (f16 rounding), checked against 4e-3 of max |ref|.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "codegen/kernels/families.h"
#include "codegen/simt_cuda.h"
#include "codegen/simt_emulator.h"
#include "gtest/gtest.h"
#include "ir/dtype.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/quantize.h"

// ---- the device code, on the emulator ------------------------------------------------
namespace vibrant::codegen::mmq_host {

// The CUDA names (codegen/simt_cuda.h), under the kernels' names for them.
using namespace simt_cuda;
inline u32 vb_mmq_pack(float lo, float hi) { return PackHalves(lo, hi); }
inline void vb_mmq_mma(float c[4], const u32 a[4], u32 b0, u32 b1) { Mma16816(c, a, b0, b1); }
inline void vb_mmq_ldsm(u32 r[4], const void* p) { LdsmX4(r, p); }

// cp.async, deferred: each thread's copies wait in its open group until
// commit_group closes it; wait_group N performs (retires) all but the N most
// recent closed groups.
struct PendingCopy {
  void* dst;
  const void* src;
  bool valid;
};
struct CopyQueue {
  std::vector<PendingCopy> open;
  std::vector<std::vector<PendingCopy>> closed;
};
inline std::vector<CopyQueue>& Queues() {
  static std::vector<CopyQueue> q(1024);
  return q;
}
inline CopyQueue& MyQueue() { return Queues()[simt::ThreadIdx().x]; }
inline void vb_mmq_cp16(void* dst, const void* src, bool valid) { MyQueue().open.push_back({dst, src, valid}); }
inline void vb_mmq_cp_commit() {
  CopyQueue& q = MyQueue();
  q.closed.push_back(std::move(q.open));
  q.open.clear();
}
template <int N>
inline void vb_mmq_cp_wait() {
  CopyQueue& q = MyQueue();
  while (static_cast<int>(q.closed.size()) > N) {
    for (const PendingCopy& c : q.closed.front()) {
      if (c.valid) {
        std::memcpy(c.dst, c.src, 16);
      } else {
        std::memset(c.dst, 0, 16);
      }
    }
    q.closed.erase(q.closed.begin());
  }
}

#define VB_INLINE inline
#define threadIdx (::vibrant::codegen::simt::ThreadIdx())
#define blockIdx (::vibrant::codegen::simt::BlockIdx())
#define blockDim (::vibrant::codegen::simt::BlockDim())
#define gridDim (::vibrant::codegen::simt::GridDim())

#include "mmq_host.inc"

#undef threadIdx
#undef blockIdx
#undef blockDim
#undef gridDim

}  // namespace vibrant::codegen::mmq_host

namespace vibrant::codegen {
namespace {

using simt::Dim3;

using KernelFn = void (*)(uint8_t*, const uint16_t*, int, int, int64_t, const uint8_t*, const float*, float*,
                          int, const uint8_t*, const float*, float*, int, const uint8_t*, const float*,
                          float*, int);

template <class M, int BM>
void Run(uint8_t* smem, const uint16_t* x, int T, int K, int64_t row_bytes, const uint8_t* w0,
         const float* b0, float* o0, int n0, const uint8_t* w1, const float* b1, float* o1, int n1,
         const uint8_t* w2, const float* b2, float* o2, int n2) {
  mmq_host::vb_mmq_impl<M, BM>(smem, x, T, K, row_bytes, w0, b0, o0, n0, w1, b1, o1, n1, w2, b2, o2, n2);
}

KernelFn For(DType t, int bm) {
  using namespace mmq_host;
  switch (t) {
    case DType::kQ4_0: return bm == 64 ? Run<MQ_q4_0, 64> : Run<MQ_q4_0, 128>;
    case DType::kQ8_0: return bm == 64 ? Run<MQ_q8_0, 64> : Run<MQ_q8_0, 128>;
    case DType::kQ4_K: return bm == 64 ? Run<MQ_q4_K, 64> : Run<MQ_q4_K, 128>;
    case DType::kQ5_K: return bm == 64 ? Run<MQ_q5_K, 64> : Run<MQ_q5_K, 128>;
    case DType::kQ6_K: return bm == 64 ? Run<MQ_q6_K, 64> : Run<MQ_q6_K, 128>;
    default: return nullptr;
  }
}

struct Member {
  int64_t N = 0;
  bool bias = false;
  std::vector<uint8_t> w;   // [N, K] as stored
  std::vector<float> deq;   // its dequantized values (CPU)
  std::vector<float> b;
  std::vector<float> out;   // [T, N] + guard
};

constexpr int kGuard = 64;  // floats after each output, must stay untouched

struct Case {
  DType type;
  int bm;
  int T;
  int64_t K;
  std::vector<int64_t> n;   // members' rows (1 to 3)
  bool bias;
};

std::string Name(const Case& c) {
  std::string s = std::string(DTypeName(c.type)) + " BM=" + std::to_string(c.bm) + " T=" + std::to_string(c.T) +
                  " K=" + std::to_string(c.K) + " N=";
  for (size_t i = 0; i < c.n.size(); ++i) s += (i ? "+" : "") + std::to_string(c.n[i]);
  return s + (c.bias ? " bias" : "");
}

void Check(const Case& c) {
  SCOPED_TRACE(Name(c));
  const KernelFn fn = For(c.type, c.bm);
  ASSERT_NE(fn, nullptr);
  ASSERT_TRUE(MmqSupports(c.type));
  const int64_t K = c.K;
  const int64_t row_bytes = *DTypeBytes(c.type, K);
  std::mt19937 rng(1000 + c.T + static_cast<int>(K));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  // Activations: f32 in [-1, 1), given to the kernel as f16.
  std::vector<float> x32(static_cast<size_t>(c.T) * K);
  for (float& f : x32) f = dist(rng);
  std::vector<uint16_t> x16(x32.size());
  for (size_t i = 0; i < x32.size(); ++i) x16[i] = FloatToHalf(x32[i]);
  std::vector<Member> ms(c.n.size());
  for (size_t m = 0; m < ms.size(); ++m) {
    Member& mb = ms[m];
    mb.N = c.n[m];
    mb.bias = c.bias && m != 1;  // member 1 never has one: mixed launches
    std::vector<float> wf(mb.N * K);
    // Weights with a spread of magnitudes per row, so that scales and mins
    // of every sub-block differ.
    for (int64_t r = 0; r < mb.N; ++r) {
      for (int64_t k = 0; k < K; ++k) {
        wf[r * K + k] = dist(rng) * (0.05f + 0.5f * static_cast<float>((r * 7 + k / 16) % 11) / 11.0f) +
                        (k % 64 < 32 ? 0.02f : -0.01f);
      }
    }
    mb.w.resize(mb.N * row_bytes + 16);  // the kernel may read 2 bytes past the last block
    ASSERT_TRUE(Quantize(c.type, wf.data(), mb.N * K, mb.w.data()).ok());
    mb.deq.resize(mb.N * K);
    ASSERT_TRUE(Dequantize(c.type, mb.w.data(), mb.N * K, mb.deq.data()).ok());
    mb.b.resize(mb.N);
    for (float& f : mb.b) f = dist(rng);
    mb.out.assign(static_cast<size_t>(c.T) * mb.N + kGuard, std::numeric_limits<float>::quiet_NaN());
  }
  int64_t tiles = 0;
  for (const Member& m : ms) tiles += (m.N + kMmqBn - 1) / kMmqBn;
  const Dim3 grid{static_cast<unsigned>((c.T + c.bm - 1) / c.bm), static_cast<unsigned>(tiles), 1};
  std::vector<uint8_t> smem(MmqSharedBytes(c.bm));
  std::vector<std::vector<float>> first;
  for (uint32_t seed : {1u, 2u}) {
    std::memset(smem.data(), 0xff, smem.size());  // f16 NaN everywhere
    for (Member& m : ms) std::fill(m.out.begin(), m.out.end(), std::numeric_limits<float>::quiet_NaN());
    auto arg = [&](size_t m, int what) -> const void* {
      if (m >= ms.size()) return nullptr;
      if (what == 0) return ms[m].w.data();
      if (what == 1) return ms[m].bias ? ms[m].b.data() : nullptr;
      return ms[m].out.data();
    };
    auto n_of = [&](size_t m) { return m < ms.size() ? static_cast<int>(ms[m].N) : 0; };
    for (mmq_host::CopyQueue& q : mmq_host::Queues()) q = mmq_host::CopyQueue();
    absl::Status st = simt::Launch(
        grid, Dim3{kMmqThreads, 1, 1},
        [&] {
          mmq_host::Queues()[simt::ThreadIdx().x] = mmq_host::CopyQueue();
          fn(smem.data(), x16.data(), c.T, static_cast<int>(K), row_bytes,
             static_cast<const uint8_t*>(arg(0, 0)), static_cast<const float*>(arg(0, 1)),
             static_cast<float*>(const_cast<void*>(arg(0, 2))), n_of(0), static_cast<const uint8_t*>(arg(1, 0)),
             static_cast<const float*>(arg(1, 1)), static_cast<float*>(const_cast<void*>(arg(1, 2))), n_of(1),
             static_cast<const uint8_t*>(arg(2, 0)), static_cast<const float*>(arg(2, 1)),
             static_cast<float*>(const_cast<void*>(arg(2, 2))), n_of(2));
        },
        seed);
    ASSERT_TRUE(st.ok()) << st;
    std::vector<std::vector<float>> outs;
    for (const Member& m : ms) outs.push_back(m.out);
    if (first.empty()) {
      first = outs;
    } else {
      for (size_t m = 0; m < ms.size(); ++m) {
        ASSERT_EQ(std::memcmp(first[m].data(), outs[m].data(), outs[m].size() * sizeof(float)), 0)
            << "member " << m << ": the two schedules differ";
      }
    }
  }
  double worst_ratio = 0, worst_rel32 = 0;
  for (size_t m = 0; m < ms.size(); ++m) {
    const Member& mb = ms[m];
    double ref32_max = 0, err32_max = 0;
    for (int t = 0; t < c.T; ++t) {
      for (int64_t n = 0; n < mb.N; ++n) {
        double ref = 0, mag = 0, ref32 = 0;
        for (int64_t k = 0; k < K; ++k) {
          const double xv = HalfToFloat(x16[t * K + k]);
          const double wv = HalfToFloat(FloatToHalf(mb.deq[n * K + k]));
          ref += xv * wv;
          mag += std::fabs(xv * wv);
          ref32 += static_cast<double>(x32[t * K + k]) * mb.deq[n * K + k];
        }
        if (mb.bias) {
          ref += mb.b[n];
          ref32 += mb.b[n];
          mag += std::fabs(mb.b[n]);
        }
        const float got = mb.out[t * mb.N + n];
        ASSERT_FALSE(std::isnan(got)) << "member " << m << " t=" << t << " n=" << n << " not written";
        const double bound = (K + 16) * std::ldexp(1.0, -24) * mag + 1e-30;
        const double err = std::fabs(got - ref);
        worst_ratio = std::max(worst_ratio, err / bound);
        ASSERT_LE(err, bound) << "member " << m << " t=" << t << " n=" << n << ": " << got << " vs " << ref;
        ref32_max = std::max(ref32_max, std::fabs(ref32));
        err32_max = std::max(err32_max, std::fabs(got - ref32));
      }
    }
    for (int i = 0; i < kGuard; ++i) {
      ASSERT_TRUE(std::isnan(mb.out[c.T * mb.N + i])) << "member " << m << " wrote past its output";
    }
    worst_rel32 = std::max(worst_rel32, err32_max / ref32_max);
  }
  std::printf("[ MEASURED ] mmq %s: error / f32-sum bound %.3g; vs f32 operands rel err %.3g\n", Name(c).c_str(),
              worst_ratio, worst_rel32);
  EXPECT_LE(worst_rel32, 4e-3);
}

// The decoders alone, bit for bit: every group of rows of each type decodes
// to FloatToHalf of the CPU dequantizer's value (what vb_dequant_f16 writes).
template <class M>
void CheckDecoder(DType t) {
  SCOPED_TRACE(DTypeName(t));
  // K = 1280: q6_K rows of 1050 bytes, q8_0 of 1360, q4_0 of 720: rows and
  // blocks start at both 4-byte and 2-byte (not 4) aligned addresses.
  const int64_t K = 1280, rows = 16;
  std::mt19937 rng(77);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> wf(rows * K);
  for (int64_t i = 0; i < rows * K; ++i) wf[i] = dist(rng) * (0.01f + static_cast<float>(i / 32 % 13)) + 0.3f * (i / 16 % 3);
  const int64_t row_bytes = *DTypeBytes(t, K);
  std::vector<uint8_t> w(rows * row_bytes + 16);
  ASSERT_TRUE(Quantize(t, wf.data(), rows * K, w.data()).ok());
  std::vector<float> deq(rows * K);
  ASSERT_TRUE(Dequantize(t, w.data(), rows * K, deq.data()).ok());
  for (int64_t r = 0; r < rows; ++r) {
    for (int kq = 0; kq < K / 32; ++kq) {
      typename M::Raw raw;
      M::fetch(w.data() + r * row_bytes, kq, raw);
      uint32_t h[16];
      M::decode(raw, kq, h);
      for (int e = 0; e < 32; ++e) {
        const uint16_t got = static_cast<uint16_t>(h[e / 2] >> (16 * (e % 2)));
        ASSERT_EQ(got, FloatToHalf(deq[r * K + 32 * kq + e])) << "row " << r << " element " << 32 * kq + e;
      }
    }
  }
}

TEST(MmqHost, DecodersAreBitExact) {
  CheckDecoder<mmq_host::MQ_q4_0>(DType::kQ4_0);
  CheckDecoder<mmq_host::MQ_q8_0>(DType::kQ8_0);
  CheckDecoder<mmq_host::MQ_q4_K>(DType::kQ4_K);
  CheckDecoder<mmq_host::MQ_q5_K>(DType::kQ5_K);
  CheckDecoder<mmq_host::MQ_q6_K>(DType::kQ6_K);
}

TEST(MmqHost, Q4KTilesTailsAndBias) {
  // 2 m-blocks of 64 (the second partial), 2 weight tiles (the second 3 rows).
  Check({DType::kQ4_K, 64, 70, 256, {131}, true});
  // One token; K of three super-blocks (12 steps).
  Check({DType::kQ4_K, 128, 1, 768, {40}, false});
}

TEST(MmqHost, Q4KThreeMembersInOneLaunch) {
  Check({DType::kQ4_K, 128, 130, 256, {130, 64, 7}, true});
}

TEST(MmqHost, Q6K) {
  Check({DType::kQ6_K, 64, 33, 512, {129}, true});
  Check({DType::kQ6_K, 128, 5, 256, {17, 9}, false});
}

TEST(MmqHost, Q5K) { Check({DType::kQ5_K, 64, 65, 512, {75}, true}); }

// 32-element blocks: K = 96 and 160 end in a half step (K % 64 = 32).
TEST(MmqHost, Q8_0) {
  Check({DType::kQ8_0, 64, 40, 96, {130}, true});
  Check({DType::kQ8_0, 128, 129, 160, {33}, false});
}

TEST(MmqHost, Q4_0) {
  Check({DType::kQ4_0, 64, 64, 160, {128}, false});
  Check({DType::kQ4_0, 128, 3, 64, {1, 200}, true});
}

}  // namespace
}  // namespace vibrant::codegen
