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
//   draw    softmax, then one draw (below)
// At least one token always survives each filter (llama.cpp's min_keep = 1).
// Candidates are ordered by descending logit, the lower id first among equal
// logits. Defaults are llama.cpp's: temp 0.8, top_k 40, top_p 0.95, min_p
// 0.05, repeat_last_n 64 with every penalty off (repeat 1, frequency 0,
// presence 0), and a random seed (llama.cpp's LLAMA_DEFAULT_SEED, 0xFFFFFFFF,
// means "random").
//
// Which tokens are accepted is the caller's choice; the generation loop
// (runtime/generate.h) accepts the prompt and every generated token, as
// llama-cli does, so a prompt's words count towards the penalties.
//
// The draw is counter-based, so that any device draws the same number for the
// same (seed, draw index) without sharing a generator's state: draw n of a
// sampler seeded with s uses u = SampleUniform(s, n) in [0, 1), and picks the
// first candidate i (in the order above) with u * P < p_0 + ... + p_i, where
// p are the candidates' probabilities and P their sum (the last candidate if
// rounding leaves none). The sum is taken in double, in candidate order.
// The `sample` op (ir/ops.h) is this chain (without the bias and penalties,
// which need the host's history: a caller with those samples on the host)
// with its parameters packed as PackSampleParams; its CPU reference is
// SampleToken, which Sampler uses too, and the CUDA kernel
// (codegen/kernels/sample.cc) computes the same thing.
#ifndef VIBRANT_RUNTIME_SAMPLER_H_
#define VIBRANT_RUNTIME_SAMPLER_H_

#include <array>
#include <cstdint>
#include <deque>
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

// ---- the counter-based generator --------------------------------------------------

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC'11), as Random123 and cuRAND define it: 10 rounds over a 128-bit counter
// with a 64-bit key. Pure: the same (counter, key) gives the same 4 words.
std::array<uint32_t, 4> Philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// The uniform number of draw `n` of seed `seed`: Philox4x32-10 with key
// {seed, 0} and counter {n mod 2^32, n / 2^32, 0, 0}; the first two output
// words give 53 bits: u = ((x0 << 21) | (x1 >> 11)) / 2^53, in [0, 1).
double SampleUniform(uint32_t seed, uint64_t n);

// ---- one draw's parameters, as the sample op reads them ---------------------------

// Everything one draw depends on besides the logits. Values outside the
// ranges Sampler::Create accepts are rejected by SampleToken.
struct SampleDraw {
  float temp = 0.0f;  // <= 0: greedy
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  uint32_t seed = 0;  // a concrete seed (kRandomSeed is just a number here)
  uint64_t n = 0;     // which draw of this seed
};

// The `sample` op's parameter input (ir/ops.h), i32[kSampleParamWords]:
//   [0] temp (f32 bits)  [1] top_k  [2] top_p (f32 bits)  [3] min_p (f32 bits)
//   [4] seed  [5] n mod 2^32  [6] n / 2^32  [7] 0
inline constexpr int kSampleParamWords = 8;
std::array<int32_t, kSampleParamWords> PackSampleParams(const SampleDraw& d);
SampleDraw UnpackSampleParams(absl::Span<const int32_t> words);  // words.size() >= 8

// Checks the ranges (finite temp, top_p in (0, 1], min_p in [0, 1]).
absl::Status CheckSampleDraw(const SampleDraw& d);

// The chain above on one row of logits: the surviving candidates and their
// probabilities after the temperature, highest first (greedy: one candidate
// with probability 1). Fails on an empty row or one without a finite logit
// (NaN and infinite logits are never candidates).
absl::StatusOr<std::vector<TokenProb>> SampleDistribution(absl::Span<const float> logits,
                                                          const SampleDraw& d);
// The candidate a uniform number u in [0, 1) picks from a distribution (the
// rule in the header comment).
int32_t PickCandidate(const std::vector<TokenProb>& dist, double u);
// One draw: greedy is the argmax; otherwise PickCandidate of
// SampleDistribution with u = SampleUniform(d.seed, d.n). The CPU reference
// of the sample op.
absl::StatusOr<int32_t> SampleToken(absl::Span<const float> logits, const SampleDraw& d);

// ---- a sequence of draws -------------------------------------------------------------

class Sampler {
 public:
  // Fails on parameters outside their ranges (top_p in (0, 1], min_p in
  // [0, 1], finite temp, top_k >= 0, repeat_last_n >= -1, repeat_penalty > 0
  // and finite, finite frequency/presence penalties and biases, bias ids >= 0).
  // Messages name the parameter as the command-line flag does (--top-k ...).
  static absl::StatusOr<Sampler> Create(const SamplerParams& params);

  // Picks the next token from one row of logits (the bias and penalties,
  // then SampleToken with the next draw). Fails on an empty row or a row with
  // no finite logit (NaN logits are never picked). Sample does not accept the
  // token it returns: call Accept for that.
  absl::StatusOr<int32_t> Sample(absl::Span<const float> logits);

  // The parameters of the next draw, and advances the draw counter: what a
  // device that samples (Executor::StepSample) gets, so that it draws what
  // Sample would have drawn. Only when !modifies_logits(): the device sees
  // the logits without the bias and penalties.
  SampleDraw NextDraw();

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
  // Draws made so far (Sample and NextDraw).
  uint64_t draws() const { return draws_; }
  bool greedy() const { return params_.temp <= 0.0f; }
  // Whether the bias or any penalty changes logits.
  bool modifies_logits() const { return penalties_on() || !params_.logit_bias.empty(); }

 private:
  Sampler(const SamplerParams& params, uint32_t seed);
  SampleDraw Draw(uint64_t n) const;
  bool penalties_on() const;

  SamplerParams params_;
  uint32_t seed_;
  uint64_t draws_ = 0;
  std::deque<int32_t> history_;
  std::unordered_map<int32_t, int32_t> counts_;  // occurrences in history_
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_SAMPLER_H_
