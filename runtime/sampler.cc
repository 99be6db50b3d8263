#include "runtime/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"

namespace vibrant {
namespace {

struct Candidate {
  int32_t id;
  float logit;
};

// Descending logit; the lower id first among equal logits.
bool Before(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// Softmax of the (sorted, non-empty) candidates' logits: exp in float, the
// sum in double, each probability rounded to float.
std::vector<float> Softmax(const std::vector<Candidate>& c) {
  std::vector<float> p(c.size());
  const float max = c[0].logit;
  double sum = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    p[i] = std::exp(c[i].logit - max);
    sum += p[i];
  }
  for (float& x : p) x = static_cast<float>(x / sum);
  return p;
}

absl::Status NoFiniteLogit(size_t n) {
  return absl::InvalidArgumentError(
      absl::StrCat("sampler: no finite logit among ", n, " (the model produced NaN or inf)"));
}

absl::StatusOr<int32_t> Argmax(absl::Span<const float> logits) {
  int32_t best = -1;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!std::isfinite(logits[i])) continue;
    if (best < 0 || logits[i] > logits[best]) best = static_cast<int32_t>(i);
  }
  if (best < 0) return NoFiniteLogit(logits.size());
  return best;
}

uint32_t MulHiLo(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

}  // namespace

std::array<uint32_t, 4> Philox4x32_10(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k[0] += 0x9E3779B9u;
      k[1] += 0xBB67AE85u;
    }
    uint32_t hi0, hi1;
    const uint32_t lo0 = MulHiLo(0xD2511F53u, c[0], &hi0);
    const uint32_t lo1 = MulHiLo(0xCD9E8D57u, c[2], &hi1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
  }
  return c;
}

double SampleUniform(uint32_t seed, uint64_t n) {
  const std::array<uint32_t, 4> x =
      Philox4x32_10({static_cast<uint32_t>(n), static_cast<uint32_t>(n >> 32), 0u, 0u}, {seed, 0u});
  const uint64_t bits = (static_cast<uint64_t>(x[0]) << 21) | (x[1] >> 11);
  return static_cast<double>(bits) * 0x1p-53;
}

std::array<int32_t, kSampleParamWords> PackSampleParams(const SampleDraw& d) {
  return {std::bit_cast<int32_t>(d.temp),
          d.top_k,
          std::bit_cast<int32_t>(d.top_p),
          std::bit_cast<int32_t>(d.min_p),
          std::bit_cast<int32_t>(d.seed),
          static_cast<int32_t>(static_cast<uint32_t>(d.n)),
          static_cast<int32_t>(static_cast<uint32_t>(d.n >> 32)),
          0};
}

SampleDraw UnpackSampleParams(absl::Span<const int32_t> w) {
  SampleDraw d;
  d.temp = std::bit_cast<float>(w[0]);
  d.top_k = w[1];
  d.top_p = std::bit_cast<float>(w[2]);
  d.min_p = std::bit_cast<float>(w[3]);
  d.seed = static_cast<uint32_t>(w[4]);
  d.n = static_cast<uint64_t>(static_cast<uint32_t>(w[5])) |
        (static_cast<uint64_t>(static_cast<uint32_t>(w[6])) << 32);
  return d;
}

absl::Status CheckSampleDraw(const SampleDraw& d) {
  if (!std::isfinite(d.temp)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature ", d.temp, " is not finite"));
  }
  if (!(d.top_p > 0.0f && d.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top-p ", d.top_p, " is outside (0, 1]"));
  }
  if (!(d.min_p >= 0.0f && d.min_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("min-p ", d.min_p, " is outside [0, 1]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TokenProb>> SampleDistribution(absl::Span<const float> logits,
                                                          const SampleDraw& d) {
  if (logits.empty()) return absl::InvalidArgumentError("sampler: empty logits");
  if (absl::Status s = CheckSampleDraw(d); !s.ok()) return s;
  if (d.temp <= 0.0f) {
    absl::StatusOr<int32_t> best = Argmax(logits);
    if (!best.ok()) return best.status();
    return std::vector<TokenProb>{{*best, 1.0f}};
  }

  std::vector<Candidate> c;
  c.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isfinite(logits[i])) c.push_back({static_cast<int32_t>(i), logits[i]});
  }
  if (c.empty()) return NoFiniteLogit(logits.size());

  // top-k (and the sort every later filter relies on).
  size_t k = c.size();
  if (d.top_k > 0) k = std::min<size_t>(k, static_cast<size_t>(d.top_k));
  std::partial_sort(c.begin(), c.begin() + k, c.end(), Before);
  c.resize(k);

  // top-p over the probabilities of what is left.
  if (d.top_p < 1.0f) {
    std::vector<float> p = Softmax(c);
    double cum = 0;
    size_t keep = c.size();
    for (size_t i = 0; i < c.size(); ++i) {
      cum += p[i];
      if (cum >= d.top_p) {
        keep = i + 1;
        break;
      }
    }
    c.resize(keep);
  }

  // min-p: p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p).
  if (d.min_p > 0.0f) {
    const float threshold = c[0].logit + std::log(d.min_p);
    size_t keep = 1;
    while (keep < c.size() && c[keep].logit >= threshold) ++keep;
    c.resize(keep);
  }

  for (Candidate& x : c) x.logit /= d.temp;
  std::vector<float> p = Softmax(c);
  std::vector<TokenProb> out(c.size());
  for (size_t i = 0; i < c.size(); ++i) out[i] = {c[i].id, p[i]};
  return out;
}

int32_t PickCandidate(const std::vector<TokenProb>& dist, double u) {
  double total = 0;
  for (const TokenProb& t : dist) total += t.prob;
  const double target = u * total;
  double cum = 0;
  for (const TokenProb& t : dist) {
    cum += t.prob;
    if (target < cum) return t.id;
  }
  return dist.back().id;
}

absl::StatusOr<int32_t> SampleToken(absl::Span<const float> logits, const SampleDraw& d) {
  if (logits.empty()) return absl::InvalidArgumentError("sampler: empty logits");
  if (absl::Status s = CheckSampleDraw(d); !s.ok()) return s;
  if (d.temp <= 0.0f) return Argmax(logits);
  absl::StatusOr<std::vector<TokenProb>> dist = SampleDistribution(logits, d);
  if (!dist.ok()) return dist.status();
  return PickCandidate(*dist, SampleUniform(d.seed, d.n));
}

absl::StatusOr<Sampler> Sampler::Create(const SamplerParams& params) {
  if (params.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top-k ", params.top_k, " is negative (0 turns top-k off)"));
  }
  if (params.repeat_last_n < -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "repeat-last-n ", params.repeat_last_n, " is below -1 (0 = off, -1 = the whole context)"));
  }
  if (!(params.repeat_penalty > 0.0f) || !std::isfinite(params.repeat_penalty)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "repeat-penalty ", params.repeat_penalty, " is not a finite number > 0 (1 = off)"));
  }
  if (!std::isfinite(params.frequency_penalty)) {
    return absl::InvalidArgumentError(
        absl::StrCat("frequency-penalty ", params.frequency_penalty, " is not finite"));
  }
  if (!std::isfinite(params.presence_penalty)) {
    return absl::InvalidArgumentError(
        absl::StrCat("presence-penalty ", params.presence_penalty, " is not finite"));
  }
  for (const auto& [id, bias] : params.logit_bias) {
    if (id < 0 || std::isnan(bias) || bias == std::numeric_limits<float>::infinity()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "logit bias ", bias, " for token ", id, ": needs an id >= 0 and a bias < +inf"));
    }
  }
  SampleDraw check;
  check.temp = params.temp;
  check.top_p = params.top_p;
  check.min_p = params.min_p;
  if (absl::Status s = CheckSampleDraw(check); !s.ok()) return s;
  uint32_t seed = params.seed;
  if (seed == kRandomSeed) seed = std::random_device{}();
  return Sampler(params, seed);
}

Sampler::Sampler(const SamplerParams& params, uint32_t seed) : params_(params), seed_(seed) {}

SampleDraw Sampler::Draw(uint64_t n) const {
  SampleDraw d;
  d.temp = params_.temp;
  d.top_k = params_.top_k;
  d.top_p = params_.top_p;
  d.min_p = params_.min_p;
  d.seed = seed_;
  d.n = n;
  return d;
}

SampleDraw Sampler::NextDraw() { return Draw(draws_++); }

bool Sampler::penalties_on() const {
  return params_.repeat_last_n != 0 &&
         (params_.repeat_penalty != 1.0f || params_.frequency_penalty != 0.0f ||
          params_.presence_penalty != 0.0f);
}

void Sampler::Accept(int32_t token) {
  if (!penalties_on()) return;
  history_.push_back(token);
  ++counts_[token];
  if (params_.repeat_last_n > 0 && history_.size() > static_cast<size_t>(params_.repeat_last_n)) {
    const int32_t old = history_.front();
    history_.pop_front();
    if (--counts_[old] == 0) counts_.erase(old);
  }
}

void Sampler::SetLogitBias(std::vector<std::pair<int32_t, float>> bias) {
  std::erase_if(bias, [](const std::pair<int32_t, float>& b) {
    return b.first < 0 || std::isnan(b.second) || b.second == std::numeric_limits<float>::infinity();
  });
  params_.logit_bias = std::move(bias);
}

void Sampler::ResetHistory() {
  history_.clear();
  counts_.clear();
}

std::vector<float> Sampler::Penalized(absl::Span<const float> logits) const {
  std::vector<float> out(logits.begin(), logits.end());
  for (const auto& [id, bias] : params_.logit_bias) {
    if (static_cast<size_t>(id) < out.size()) out[id] += bias;
  }
  if (!penalties_on()) return out;
  for (const auto& [id, count] : counts_) {
    if (id < 0 || static_cast<size_t>(id) >= out.size()) continue;
    float& l = out[id];
    // A smaller positive logit, a more negative negative one: dividing a
    // negative logit would make the token more likely.
    l = l <= 0.0f ? l * params_.repeat_penalty : l / params_.repeat_penalty;
    l -= static_cast<float>(count) * params_.frequency_penalty + params_.presence_penalty;
  }
  return out;
}

absl::StatusOr<std::vector<TokenProb>> Sampler::Distribution(absl::Span<const float> logits) const {
  if (!modifies_logits()) return SampleDistribution(logits, Draw(draws_));
  const std::vector<float> penalized = Penalized(logits);
  return SampleDistribution(penalized, Draw(draws_));
}

absl::StatusOr<int32_t> Sampler::Sample(absl::Span<const float> logits) {
  if (logits.empty()) return absl::InvalidArgumentError("sampler: empty logits");
  std::vector<float> penalized;
  if (modifies_logits()) {
    penalized = Penalized(logits);
    logits = penalized;
  }
  absl::StatusOr<int32_t> id = SampleToken(logits, Draw(draws_));
  if (id.ok()) ++draws_;
  return id;
}

}  // namespace vibrant
