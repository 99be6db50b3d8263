// Token sampling, compatible with llama.cpp's default sampler chain.
//
// First, on the whole row (llama.cpp's logit-bias and penalties samplers):
//   bias       logit_bias[id] is added to the logit (-inf bans a token; this is
//              how --ignore-eos works)
//   penalties  over the last repeat_last_n accepted tokens (Accept), each token
//              seen `count` times there gets
//                logit <= 0 ? logit * repeat_penalty : logit / repeat_penalty
//                logit -= count * frequency_penalty + presence_penalty
//              exactly as llama.cpp's llama_sampler_penalties applies them
//              (skipped entirely when repeat_last_n == 0 or all three are off)
// Then temp <= 0: greedy (the highest logit; the lowest id among ties).
// Otherwise, in llama.cpp's order:
//   top-k   keep the k highest logits (k <= 0: keep all)
//   top-p   keep the smallest prefix, by descending probability, whose
//           probability mass reaches p (p >= 1: keep all)
//   min-p   keep tokens whose probability is at least min_p times the top
//           one's (min_p <= 0: keep all)
//   temp    divide the remaining logits by the temperature
//   draw    softmax, then one draw from std::mt19937 seeded with `seed`
// At least one token always survives each filter (llama.cpp's min_keep = 1).
// Defaults are llama.cpp's: temp 0.8, top_k 40, top_p 0.95, min_p 0.05,
// repeat_last_n 64 with every penalty off (repeat 1, frequency 0, presence 0),
// and a random seed (llama.cpp's LLAMA_DEFAULT_SEED, 0xFFFFFFFF, means
// "random").
//
// Which tokens are accepted is the caller's choice; the generation loop
// (runtime/generate.h) accepts the prompt and every generated token, as
// llama-cli does, so a prompt's words count towards the penalties.
#ifndef VIBRANT_RUNTIME_SAMPLER_H_
#define VIBRANT_RUNTIME_SAMPLER_H_

#include <cstdint>
#include <deque>
#include <random>
#include <unordered_map>
#include <utility>
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
  // Penalties over the last repeat_last_n accepted tokens (0: off; -1: every
  // accepted token, which llama.cpp calls "the context size").
  int32_t repeat_last_n = 64;
  float repeat_penalty = 1.0f;     // 1: off
  float frequency_penalty = 0.0f;  // 0: off
  float presence_penalty = 0.0f;   // 0: off
  // Added to the logits of these ids before anything else; -inf bans a token.
  std::vector<std::pair<int32_t, float>> logit_bias;
};

struct TokenProb {
  int32_t id;
  float prob;
};

class Sampler {
 public:
  // Fails on parameters outside their ranges (top_p in (0, 1], min_p in
  // [0, 1], finite temp, top_k >= 0, repeat_last_n >= -1, repeat_penalty > 0
  // and finite, finite frequency/presence penalties and biases, bias ids >= 0).
  // Messages name the parameter as the command-line flag does (--top-k ...).
  static absl::StatusOr<Sampler> Create(const SamplerParams& params);

  // Picks the next token from one row of logits. Fails on an empty row or a
  // row with no finite logit (NaN logits are never picked). Sample does not
  // accept the token it returns: call Accept for that.
  absl::StatusOr<int32_t> Sample(absl::Span<const float> logits);

  // Records a token in the penalty history (the prompt's and the generated
  // ones). Cheap when every penalty is off.
  void Accept(int32_t token);
  // Forgets the penalty history (a new sequence).
  void ResetHistory();
  // Replaces params().logit_bias (ids < 0 and NaN/+inf biases are dropped).
  void SetLogitBias(std::vector<std::pair<int32_t, float>> bias);
  // The penalty history, oldest first (at most repeat_last_n tokens).
  std::vector<int32_t> History() const { return {history_.begin(), history_.end()}; }

  // The logits after the bias and the penalties (a copy of `logits` when
  // there is nothing to apply).
  std::vector<float> Penalized(absl::Span<const float> logits) const;

  // The candidates that survive the filters and their probabilities after the
  // temperature, highest first: the distribution Sample draws from. Greedy
  // gives one candidate with probability 1.
  absl::StatusOr<std::vector<TokenProb>> Distribution(absl::Span<const float> logits) const;

  const SamplerParams& params() const { return params_; }
  // The seed in use (the random one drawn when params.seed was kRandomSeed).
  uint32_t seed() const { return seed_; }
  bool greedy() const { return params_.temp <= 0.0f; }
  // Whether the bias or any penalty changes logits.
  bool modifies_logits() const { return penalties_on() || !params_.logit_bias.empty(); }

 private:
  Sampler(const SamplerParams& params, uint32_t seed);
  bool penalties_on() const;
  absl::StatusOr<std::vector<TokenProb>> Filter(absl::Span<const float> logits) const;

  SamplerParams params_;
  uint32_t seed_;
  std::mt19937 rng_;
  std::deque<int32_t> history_;
  std::unordered_map<int32_t, int32_t> counts_;  // occurrences in history_
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_SAMPLER_H_
