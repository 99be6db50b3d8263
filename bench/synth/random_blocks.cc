#include "bench/synth/random_blocks.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/dequantize.h"

namespace vibrant::synth {
namespace {

// wyrand: one 64x64->128 multiply per 64 random bits.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    s += 0xa0761d6478bd642full;
    const __uint128_t m = static_cast<__uint128_t>(s) * (s ^ 0xe7037ed1a0b428dbull);
    return static_cast<uint64_t>(m >> 64) ^ static_cast<uint64_t>(m);
  }
  void Bytes(uint8_t* p, int n) {  // n a multiple of 4
    int i = 0;
    for (; i + 8 <= n; i += 8) {
      const uint64_t v = Next();
      std::memcpy(p + i, &v, 8);
    }
    if (i < n) {
      const uint32_t v = static_cast<uint32_t>(Next());
      std::memcpy(p + i, &v, 4);
    }
  }
};

inline void Store16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// Elements per independently seeded chunk (a multiple of every block size).
constexpr int64_t kChunkElems = int64_t{1} << 20;

// Standard deviation of a uniform integer on [0, levels).
double UniformStd(int levels) { return std::sqrt((levels * double(levels) - 1) / 12.0); }

// Scales of the sub-blocks of K-quants: uniform on [32, 63]; their RMS.
constexpr int kScaleLo = 32;
const double kScaleRms = std::sqrt(47.5 * 47.5 + (32.0 * 32.0 - 1) / 12.0);
// Block scales vary uniformly by +-25% around the base; their RMS factor.
const double kJitterRms = std::sqrt(1.0 + 0.25 / 12.0);

// Per-fill tables: 256 jittered block scales d (and the matching offsets m =
// m_ratio * d, for the types with a minimum), as f16, picked by 8 random bits.
struct ScaleTable {
  uint16_t d[256];
  uint16_t m[256];
  ScaleTable(double d_base, double m_ratio) {
    for (int i = 0; i < 256; ++i) {
      const double d_i = d_base * (0.75 + 0.5 * (i + 0.5) / 256.0);
      d[i] = FloatToHalf(static_cast<float>(d_i));
      m[i] = FloatToHalf(static_cast<float>(m_ratio * d_i));
    }
  }
};

// Packs eight 6-bit scales and mins into the 12 bytes of Q4_K/Q5_K
// (the inverse of ggml's get_scale_min_k4).
void PackScalesMinsK4(const uint8_t sc[8], const uint8_t mn[8], uint8_t q[12]) {
  for (int j = 0; j < 4; ++j) {
    q[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    q[j + 4] = static_cast<uint8_t>((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    q[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
}

struct Filler {
  DType type;
  float sigma;
  float mean;
  int64_t block_size;
  int64_t block_bytes;
  // f16/f32: values indexed by an Irwin-Hall sum of four random bytes
  // (0..1020), an approximately normal variable.
  std::vector<float> f32_table;
  std::vector<uint16_t> f16_table;
  ScaleTable scales{0, 0};

  void Chunk(Rng& r, uint8_t* p, int64_t n_blocks) const {
    switch (type) {
      case DType::kF32:
      case DType::kF16: {
        const bool half = type == DType::kF16;
        for (int64_t i = 0; i < n_blocks; i += 2) {
          const uint64_t v = r.Next();
          for (int k = 0; k < 2 && i + k < n_blocks; ++k) {
            const uint32_t w = static_cast<uint32_t>(v >> (32 * k));
            const int s = (w & 255) + ((w >> 8) & 255) + ((w >> 16) & 255) + (w >> 24);
            if (half) {
              Store16(p + 2 * (i + k), f16_table[s]);
            } else {
              std::memcpy(p + 4 * (i + k), &f32_table[s], 4);
            }
          }
        }
        return;
      }
      case DType::kQ4_0:
      case DType::kQ8_0:
        for (int64_t b = 0; b < n_blocks; ++b, p += block_bytes) {
          Store16(p, scales.d[r.Next() & 255]);
          r.Bytes(p + 2, static_cast<int>(block_bytes - 2));
        }
        return;
      case DType::kQ4_1:
        for (int64_t b = 0; b < n_blocks; ++b, p += block_bytes) {
          const int i = r.Next() & 255;
          Store16(p, scales.d[i]);
          Store16(p + 2, scales.m[i]);
          r.Bytes(p + 4, 16);
        }
        return;
      case DType::kQ5_0:
        for (int64_t b = 0; b < n_blocks; ++b, p += block_bytes) {
          Store16(p, scales.d[r.Next() & 255]);
          r.Bytes(p + 2, 20);  // qh[4] | qs[16]
        }
        return;
      case DType::kQ5_1:
        for (int64_t b = 0; b < n_blocks; ++b, p += block_bytes) {
          const int i = r.Next() & 255;
          Store16(p, scales.d[i]);
          Store16(p + 2, scales.m[i]);
          r.Bytes(p + 4, 20);  // qh[4] | qs[16]
        }
        return;
      case DType::kQ4_K:
      case DType::kQ5_K:
        for (int64_t b = 0; b < n_blocks; ++b, p += block_bytes) {
          uint64_t v = r.Next();
          const int i = v & 255;
          v >>= 8;
          // Sub-block scale s and min m = s: with dmin = c * d the values
          // are d * s * (q - c), centred on zero.
          uint8_t sc[8];
          for (int j = 0; j < 8; ++j, v >>= 5) sc[j] = static_cast<uint8_t>(kScaleLo + (v & 31));
          Store16(p, scales.d[i]);
          Store16(p + 2, scales.m[i]);
          PackScalesMinsK4(sc, sc, p + 4);
          r.Bytes(p + 16, static_cast<int>(block_bytes - 16));  // [qh[32] |] qs[128]
        }
        return;
      case DType::kQ6_K:
        for (int64_t b = 0; b < n_blocks; ++b, p += block_bytes) {
          r.Bytes(p, 192);  // ql[128] | qh[64]
          uint64_t v = r.Next();
          const int i = v & 255;
          v >>= 8;
          for (int j = 0; j < 16; ++j, v >>= 3) {
            // 16 scales from the remaining bits: 3 each, plus 2 more from a
            // second draw so that all of [32, 63] is reached.
            p[192 + j] = static_cast<uint8_t>(kScaleLo + ((v & 7) << 2));
          }
          uint64_t w = r.Next();
          for (int j = 0; j < 16; ++j, w >>= 2) p[192 + j] = static_cast<uint8_t>(p[192 + j] + (w & 3));
          Store16(p + 208, scales.d[i]);
        }
        return;
      default:
        return;
    }
  }
};

}  // namespace

uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

absl::Status FillRandom(DType t, uint64_t seed, float sigma, float mean,
                        absl::Span<uint8_t> out, int threads) {
  Filler f;
  f.type = t;
  f.sigma = sigma;
  f.mean = mean;
  const DTypeInfo& info = GetDTypeInfo(t);
  f.block_size = info.block_size;
  f.block_bytes = info.block_bytes;
  if (!std::isfinite(sigma) || sigma < 0 || !std::isfinite(mean)) {
    return absl::InvalidArgumentError(
        absl::StrCat("FillRandom: sigma ", sigma, " / mean ", mean, " must be finite, sigma >= 0"));
  }
  if (out.size() % info.block_bytes != 0) {
    return absl::InvalidArgumentError(absl::StrCat("FillRandom: ", out.size(),
                                                   " bytes is not a whole number of ",
                                                   std::string(info.name), " blocks"));
  }
  switch (t) {
    case DType::kF32:
    case DType::kF16: {
      // Irwin-Hall: the sum of four uniform bytes has mean 510 and standard
      // deviation sqrt(4 * (256^2 - 1) / 12).
      const double sd = std::sqrt(4.0 * (256.0 * 256.0 - 1.0) / 12.0);
      f.f32_table.resize(1021);
      f.f16_table.resize(1021);
      for (int s = 0; s <= 1020; ++s) {
        f.f32_table[s] = static_cast<float>(mean + sigma * (s - 510) / sd);
        f.f16_table[s] = FloatToHalf(f.f32_table[s]);
      }
      break;
    }
    case DType::kQ4_0:
      f.scales = ScaleTable(sigma / (UniformStd(16) * kJitterRms), 0);
      break;
    case DType::kQ4_1:
      f.scales = ScaleTable(sigma / (UniformStd(16) * kJitterRms), -7.5);
      break;
    case DType::kQ5_0:
      f.scales = ScaleTable(sigma / (UniformStd(32) * kJitterRms), 0);
      break;
    case DType::kQ5_1:
      f.scales = ScaleTable(sigma / (UniformStd(32) * kJitterRms), -15.5);
      break;
    case DType::kQ8_0:
      f.scales = ScaleTable(sigma / (UniformStd(256) * kJitterRms), 0);
      break;
    case DType::kQ4_K:
      f.scales = ScaleTable(sigma / (UniformStd(16) * kScaleRms * kJitterRms), 7.5);
      break;
    case DType::kQ5_K:
      f.scales = ScaleTable(sigma / (UniformStd(32) * kScaleRms * kJitterRms), 15.5);
      break;
    case DType::kQ6_K:
      f.scales = ScaleTable(sigma / (UniformStd(64) * kScaleRms * kJitterRms), 0);
      break;
    default:
      return absl::UnimplementedError(
          absl::StrCat("FillRandom: type ", std::string(info.name), " is not supported"));
  }
  if (IsQuantized(t) && mean != 0) {
    return absl::InvalidArgumentError("FillRandom: a non-zero mean needs type f32 or f16");
  }

  const int64_t n_blocks = static_cast<int64_t>(out.size()) / info.block_bytes;
  const int64_t chunk_blocks = kChunkElems / info.block_size;
  const int64_t n_chunks = (n_blocks + chunk_blocks - 1) / chunk_blocks;
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = static_cast<int>(std::min<int64_t>(threads, n_chunks));
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    for (int64_t c = next.fetch_add(1); c < n_chunks; c = next.fetch_add(1)) {
      Rng r{Mix64(seed ^ Mix64(static_cast<uint64_t>(c) + 1))};
      const int64_t b0 = c * chunk_blocks;
      const int64_t nb = std::min(chunk_blocks, n_blocks - b0);
      f.Chunk(r, out.data() + b0 * info.block_bytes, nb);
    }
  };
  if (threads <= 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) pool.emplace_back(work);
    work();
    for (std::thread& th : pool) th.join();
  }
  return absl::OkStatus();
}

}  // namespace vibrant::synth
