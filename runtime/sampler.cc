#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
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

// Softmax of the (sorted, non-empty) candidates' logits.
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

absl::StatusOr<int32_t> Argmax(absl::Span<const float> logits) {
  int32_t best = -1;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!std::isfinite(logits[i])) continue;
    if (best < 0 || logits[i] > logits[best]) best = static_cast<int32_t>(i);
  }
  if (best < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampler: no finite logit among ", logits.size(), " (the model produced NaN or inf)"));
  }
  return best;
}

}  // namespace

absl::StatusOr<Sampler> Sampler::Create(const SamplerParams& params) {
  if (!std::isfinite(params.temp)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature ", params.temp, " is not finite"));
  }
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
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top-p ", params.top_p, " is outside (0, 1]"));
  }
  if (!(params.min_p >= 0.0f && params.min_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min-p ", params.min_p, " is outside [0, 1]"));
  }
  uint32_t seed = params.seed;
  if (seed == kRandomSeed) seed = std::random_device{}();
  return Sampler(params, seed);
}

Sampler::Sampler(const SamplerParams& params, uint32_t seed)
    : params_(params), seed_(seed), rng_(seed) {}

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

absl::StatusOr<std::vector<TokenProb>> Sampler::Distribution(
    absl::Span<const float> logits) const {
  if (!modifies_logits()) return Filter(logits);
  const std::vector<float> penalized = Penalized(logits);
  return Filter(penalized);
}

absl::StatusOr<std::vector<TokenProb>> Sampler::Filter(absl::Span<const float> logits) const {
  if (logits.empty()) return absl::InvalidArgumentError("sampler: empty logits");
  if (greedy()) {
    absl::StatusOr<int32_t> best = Argmax(logits);
    if (!best.ok()) return best.status();
    return std::vector<TokenProb>{{*best, 1.0f}};
  }

  std::vector<Candidate> c;
  c.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isfinite(logits[i])) c.push_back({static_cast<int32_t>(i), logits[i]});
  }
  if (c.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampler: no finite logit among ", logits.size(), " (the model produced NaN or inf)"));
  }

  // top-k (and the sort every later filter relies on).
  size_t k = c.size();
  if (params_.top_k > 0) k = std::min<size_t>(k, static_cast<size_t>(params_.top_k));
  std::partial_sort(c.begin(), c.begin() + k, c.end(), Before);
  c.resize(k);

  // top-p over the probabilities of what is left.
  if (params_.top_p < 1.0f) {
    std::vector<float> p = Softmax(c);
    double cum = 0;
    size_t keep = c.size();
    for (size_t i = 0; i < c.size(); ++i) {
      cum += p[i];
      if (cum >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
    c.resize(keep);
  }

  // min-p: p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p).
  if (params_.min_p > 0.0f) {
    const float threshold = c[0].logit + std::log(params_.min_p);
    size_t keep = 1;
    while (keep < c.size() && c[keep].logit >= threshold) ++keep;
    c.resize(keep);
  }

  for (Candidate& x : c) x.logit /= params_.temp;
  std::vector<float> p = Softmax(c);
  std::vector<TokenProb> out(c.size());
  for (size_t i = 0; i < c.size(); ++i) out[i] = {c[i].id, p[i]};
  return out;
}

absl::StatusOr<int32_t> Sampler::Sample(absl::Span<const float> logits) {
  if (logits.empty()) return absl::InvalidArgumentError("sampler: empty logits");
  std::vector<float> penalized;
  if (modifies_logits()) {
    penalized = Penalized(logits);
    logits = penalized;
  }
  if (greedy()) return Argmax(logits);
  absl::StatusOr<std::vector<TokenProb>> dist = Filter(logits);
  if (!dist.ok()) return dist.status();
  std::vector<double> weights(dist->size());
  for (size_t i = 0; i < dist->size(); ++i) weights[i] = (*dist)[i].prob;
  std::discrete_distribution<size_t> draw(weights.begin(), weights.end());
  return (*dist)[draw(rng_)].id;
}

}  // namespace vibrant
