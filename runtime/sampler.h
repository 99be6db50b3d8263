// Token sampling, compatible with llama.cpp's default sampler chain.
//
// temp <= 0: greedy (the highest logit; the lowest id among ties).
// Otherwise, in llama.cpp's order:
//   top-k   keep the k highest logits (k <= 0: keep all)
//   top-p   keep the smallest prefix, by descending probability, whose
//           probability mass reaches p (p >= 1: keep all)
//   min-p   keep tokens whose probability is at least min_p times the top
//           one's (min_p <= 0: keep all)
//   temp    divide the remaining logits by the temperature
//   draw    softmax, then one draw from std::mt19937 seeded with `seed`
// At least one token always survives each filter (llama.cpp's min_keep = 1).
// Defaults are llama.cpp's: temp 0.8, top_k 40, top_p 0.95, min_p 0.05, and a
// random seed (llama.cpp's LLAMA_DEFAULT_SEED, 0xFFFFFFFF, means "random").
#ifndef VIBRANT_RUNTIME_SAMPLER_H_
#define VIBRANT_RUNTIME_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vibrant {

// A seed value that asks for a random seed.
inline constexpr uint32_t kRandomSeed = 0xFFFFFFFFu;

struct SamplerParams {
  float temp = 0.8f;
  int32_t top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  uint32_t seed = kRandomSeed;
};

struct TokenProb {
  int32_t id;
  float prob;
};

class Sampler {
 public:
  // Fails on parameters outside their ranges (top_p in (0, 1], min_p in
  // [0, 1], finite temp).
  static absl::StatusOr<Sampler> Create(const SamplerParams& params);

  // Picks the next token from one row of logits. Fails on an empty row or a
  // row with no finite logit (NaN logits are never picked).
  absl::StatusOr<int32_t> Sample(absl::Span<const float> logits);

  // The candidates that survive the filters and their probabilities after the
  // temperature, highest first: the distribution Sample draws from. Greedy
  // gives one candidate with probability 1.
  absl::StatusOr<std::vector<TokenProb>> Distribution(absl::Span<const float> logits) const;

  const SamplerParams& params() const { return params_; }
  // The seed in use (the random one drawn when params.seed was kRandomSeed).
  uint32_t seed() const { return seed_; }
  bool greedy() const { return params_.temp <= 0.0f; }

 private:
  Sampler(const SamplerParams& params, uint32_t seed);

  SamplerParams params_;
  uint32_t seed_;
  std::mt19937 rng_;
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_SAMPLER_H_
