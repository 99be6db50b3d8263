#include "runtime/sampler.h"

#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant {
namespace {

using ::testing::ElementsAre;

Sampler Make(float temp, int32_t top_k, float top_p, float min_p, uint32_t seed = 1234) {
  SamplerParams p;
  p.temp = temp;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.seed = seed;
  absl::StatusOr<Sampler> s = Sampler::Create(p);
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

std::vector<int32_t> Ids(const std::vector<TokenProb>& d) {
  std::vector<int32_t> ids;
  for (const TokenProb& t : d) ids.push_back(t.id);
  return ids;
}

TEST(SamplerTest, DefaultsAreLlamaCpps) {
  SamplerParams p;
  EXPECT_FLOAT_EQ(p.temp, 0.8f);
  EXPECT_EQ(p.top_k, 40);
  EXPECT_FLOAT_EQ(p.top_p, 0.95f);
  EXPECT_FLOAT_EQ(p.min_p, 0.05f);
  EXPECT_EQ(p.seed, 0xFFFFFFFFu);
}

TEST(SamplerTest, GreedyPicksTheHighestLogitAndTheLowestIdOnTies) {
  Sampler s = Make(0.0f, 40, 0.95f, 0.05f);
  EXPECT_TRUE(s.greedy());
  EXPECT_EQ(*s.Sample({0.1f, 3.0f, -2.0f, 2.9f}), 1);
  EXPECT_EQ(*s.Sample({1.0f, 5.0f, 5.0f, 2.0f}), 1);
  Sampler negative = Make(-1.0f, 40, 0.95f, 0.05f);
  EXPECT_EQ(*negative.Sample({-4.0f, -3.0f, -3.5f}), 1);
}

TEST(SamplerTest, TopKOneEqualsGreedy) {
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  Sampler s = Make(1.5f, 1, 1.0f, 0.0f);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> logits(64);
    for (float& x : logits) x = normal(gen);
    int32_t expected = 0;
    for (int i = 1; i < 64; ++i) {
      if (logits[i] > logits[expected]) expected = i;
    }
    ASSERT_EQ(*s.Sample(logits), expected);
  }
}

TEST(SamplerTest, TopKKeepsTheKHighestThenAppliesTemperature) {
  Sampler s = Make(0.5f, 2, 1.0f, 0.0f);
  absl::StatusOr<std::vector<TokenProb>> d = s.Distribution({1.0f, 2.0f, 3.0f, 4.0f});
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_THAT(Ids(*d), ElementsAre(3, 2));
  // Logits 4 and 3 at temperature 0.5 are 8 and 6: p = 1 / (1 + e^-2).
  EXPECT_NEAR((*d)[0].prob, 0.880797, 1e-5);
  EXPECT_NEAR((*d)[1].prob, 0.119203, 1e-5);
}

TEST(SamplerTest, TopPKeepsTheSmallestPrefixReachingP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 (ids scrambled).
  const std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f),
                                     std::log(0.3f)};
  EXPECT_THAT(Ids(*Make(1.0f, 0, 0.4f, 0.0f).Distribution(logits)), ElementsAre(1));
  EXPECT_THAT(Ids(*Make(1.0f, 0, 0.75f, 0.0f).Distribution(logits)), ElementsAre(1, 3));
  EXPECT_THAT(Ids(*Make(1.0f, 0, 0.9f, 0.0f).Distribution(logits)), ElementsAre(1, 3, 0));
  EXPECT_THAT(Ids(*Make(1.0f, 0, 1.0f, 0.0f).Distribution(logits)), ElementsAre(1, 3, 0, 2));
  // Renormalized over the survivors: 0.5 / 0.8 and 0.3 / 0.8.
  std::vector<TokenProb> d = *Make(1.0f, 0, 0.75f, 0.0f).Distribution(logits);
  EXPECT_NEAR(d[0].prob, 0.625, 1e-6);
  EXPECT_NEAR(d[1].prob, 0.375, 1e-6);
}

TEST(SamplerTest, MinPRemovesExactlyTheTokensBelowTheThreshold) {
  // Relative to the top token (logit 2): e^(l - 2). min_p 0.1 keeps >= 0.1.
  const std::vector<float> logits = {
      2.0f,    // 1       keep
      0.0f,    // 0.1353  keep
      -1.0f,   // 0.0498  drop
      1.0f,    // 0.3679  keep
      -0.30f,  // 0.1003  keep
      -0.31f,  // 0.0993  drop
      -9.0f,   // drop
  };
  std::vector<TokenProb> d = *Make(1.0f, 0, 1.0f, 0.1f).Distribution(logits);
  ASSERT_THAT(Ids(d), ElementsAre(0, 3, 1, 4));
  const double z = std::exp(2.0) + std::exp(1.0) + std::exp(0.0) + std::exp(-0.3);
  EXPECT_NEAR(d[0].prob, std::exp(2.0) / z, 1e-6);
  EXPECT_NEAR(d[1].prob, std::exp(1.0) / z, 1e-6);
  EXPECT_NEAR(d[2].prob, std::exp(0.0) / z, 1e-6);
  EXPECT_NEAR(d[3].prob, std::exp(-0.3) / z, 1e-6);
}

TEST(SamplerTest, FiltersRunInLlamaCppsOrder) {
  // top-k 3 keeps {0, 1, 2}; top-p 0.9 over those keeps the prefix reaching
  // 0.9; min-p then compares against the top survivor.
  // Logits 3, 2, 1, 0.5: top-3 softmax = 0.6652, 0.2447, 0.0900.
  // top-p 0.9: 0.6652 + 0.2447 = 0.9099 >= 0.9 -> {0, 1}.
  // min-p 0.4: 0.2447 / 0.6652 = 0.368 < 0.4 -> {0}.
  const std::vector<float> logits = {3.0f, 2.0f, 1.0f, 0.5f};
  EXPECT_THAT(Ids(*Make(1.0f, 3, 0.9f, 0.0f).Distribution(logits)), ElementsAre(0, 1));
  EXPECT_THAT(Ids(*Make(1.0f, 3, 0.9f, 0.3f).Distribution(logits)), ElementsAre(0, 1));
  EXPECT_THAT(Ids(*Make(1.0f, 3, 0.9f, 0.4f).Distribution(logits)), ElementsAre(0));
  // Temperature comes last: it does not change which tokens survive.
  EXPECT_THAT(Ids(*Make(5.0f, 3, 0.9f, 0.0f).Distribution(logits)), ElementsAre(0, 1));
}

TEST(SamplerTest, AFixedSeedReproducesTheDraws) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 0.7f) * 2.0f;
  auto draws = [&](uint32_t seed) {
    Sampler s = Make(1.0f, 0, 1.0f, 0.0f, seed);
    EXPECT_EQ(s.seed(), seed);
    std::vector<int32_t> out;
    for (int i = 0; i < 300; ++i) out.push_back(*s.Sample(logits));
    return out;
  };
  EXPECT_EQ(draws(42), draws(42));
  EXPECT_NE(draws(42), draws(43));
}

TEST(SamplerTest, RandomSeedIsResolved) {
  SamplerParams p;
  Sampler s = *Sampler::Create(p);
  // The seed actually used is reported, so that a run can be reproduced.
  Sampler again = Make(p.temp, p.top_k, p.top_p, p.min_p, s.seed());
  std::vector<float> logits = {0.0f, 0.1f, 0.2f, 0.3f, 0.25f};
  for (int i = 0; i < 50; ++i) ASSERT_EQ(*s.Sample(logits), *again.Sample(logits));
}

TEST(SamplerTest, DrawFrequenciesMatchTheSoftmax) {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f};
  for (float temp : {1.0f, 2.0f, 0.7f}) {
    Sampler s = Make(temp, 0, 1.0f, 0.0f, 99);
    double z = 0;
    for (float l : logits) z += std::exp(l / temp);
    const int n = 100000;
    std::vector<int> count(logits.size());
    for (int i = 0; i < n; ++i) ++count[*s.Sample(logits)];
    for (size_t i = 0; i < logits.size(); ++i) {
      double expected = std::exp(logits[i] / temp) / z;
      // The standard error is below 0.0016; 0.006 is more than 3.5 of them.
      EXPECT_NEAR(static_cast<double>(count[i]) / n, expected, 0.006)
          << "id " << i << " temp " << temp;
    }
  }
}

TEST(SamplerTest, NonFiniteLogitsAreNeverPicked) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  Sampler greedy = Make(0.0f, 40, 0.95f, 0.05f);
  EXPECT_EQ(*greedy.Sample({nan, 1.0f, nan, 0.5f}), 1);
  Sampler s = Make(1.0f, 0, 1.0f, 0.0f);
  for (int i = 0; i < 100; ++i) {
    int32_t id = *s.Sample({nan, 1.0f, -inf, 0.5f});
    ASSERT_TRUE(id == 1 || id == 3) << id;
  }
  EXPECT_FALSE(s.Sample({nan, nan}).ok());
  EXPECT_FALSE(greedy.Sample({nan, nan}).ok());
  EXPECT_FALSE(s.Sample({}).ok());
}

TEST(SamplerTest, PenaltyDefaultsAreLlamaCppsAndOff) {
  SamplerParams p;
  EXPECT_EQ(p.repeat_last_n, 64);
  EXPECT_FLOAT_EQ(p.repeat_penalty, 1.0f);
  EXPECT_FLOAT_EQ(p.frequency_penalty, 0.0f);
  EXPECT_FLOAT_EQ(p.presence_penalty, 0.0f);
  Sampler s = *Sampler::Create(p);
  EXPECT_FALSE(s.modifies_logits());
  s.Accept(1);
  EXPECT_TRUE(s.History().empty());  // nothing to remember when every penalty is off
}

// Worked by hand from llama.cpp's rule: a seen token's logit is divided by the
// repeat penalty when positive, multiplied when <= 0, then lowered by
// count * frequency + presence.
TEST(SamplerTest, PenaltiesFollowLlamaCppsFormula) {
  SamplerParams p;
  p.temp = 0.0f;
  p.repeat_penalty = 2.0f;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  Sampler s = *Sampler::Create(p);
  for (int32_t t : {1, 2, 2, 3, 3, 3}) s.Accept(t);
  const std::vector<float> logits = {1.0f, 4.0f, -1.0f, 0.0f, 2.0f};
  const std::vector<float> got = s.Penalized(logits);
  ASSERT_EQ(got.size(), 5u);
  EXPECT_FLOAT_EQ(got[0], 1.0f);                       // never seen
  EXPECT_FLOAT_EQ(got[1], 4.0f / 2 - 1 * 0.5f - 0.25f);  // 1.25
  EXPECT_FLOAT_EQ(got[2], -1.0f * 2 - 2 * 0.5f - 0.25f); // -3.25
  EXPECT_FLOAT_EQ(got[3], 0.0f * 2 - 3 * 0.5f - 0.25f);  // -1.75 (0 counts as <= 0)
  EXPECT_FLOAT_EQ(got[4], 2.0f);
  // Greedy picks from the penalized row: 4 (now 2.0) beats 1 (now 1.25).
  EXPECT_EQ(*s.Sample(logits), 4);
}

TEST(SamplerTest, RepeatLastNKeepsOnlyTheNewestTokens) {
  SamplerParams p;
  p.temp = 0.0f;
  p.repeat_last_n = 2;
  p.presence_penalty = 10.0f;
  Sampler s = *Sampler::Create(p);
  for (int32_t t : {0, 1, 2}) s.Accept(t);
  EXPECT_THAT(s.History(), ElementsAre(1, 2));
  const std::vector<float> got = s.Penalized({5.0f, 5.0f, 5.0f});
  EXPECT_FLOAT_EQ(got[0], 5.0f);  // fell out of the window
  EXPECT_FLOAT_EQ(got[1], -5.0f);
  EXPECT_FLOAT_EQ(got[2], -5.0f);
  EXPECT_EQ(*s.Sample({5.0f, 5.0f, 5.0f}), 0);
  s.ResetHistory();
  EXPECT_TRUE(s.History().empty());

  // 0 turns every penalty off; -1 keeps the whole history.
  p.repeat_last_n = 0;
  Sampler off = *Sampler::Create(p);
  off.Accept(0);
  EXPECT_FLOAT_EQ(off.Penalized({5.0f})[0], 5.0f);
  p.repeat_last_n = -1;
  Sampler all = *Sampler::Create(p);
  for (int i = 0; i < 1000; ++i) all.Accept(i % 3);
  EXPECT_EQ(all.History().size(), 1000u);
  // Presence is charged once however often the token was seen.
  EXPECT_FLOAT_EQ(all.Penalized({5.0f, 5.0f, 5.0f, 5.0f})[0], -5.0f);
  EXPECT_FLOAT_EQ(all.Penalized({5.0f, 5.0f, 5.0f, 5.0f})[3], 5.0f);
}

TEST(SamplerTest, PenaltiesApplyBeforeTheFilters) {
  // Token 0 leads by far, but it was seen: with a frequency penalty of 3 it
  // drops below token 1, so top-k 1 keeps token 1.
  SamplerParams p;
  p.temp = 1.0f;
  p.top_k = 1;
  p.frequency_penalty = 3.0f;
  Sampler s = *Sampler::Create(p);
  s.Accept(0);
  EXPECT_THAT(Ids(*s.Distribution({4.0f, 2.0f, 0.0f})), ElementsAre(1));
  for (int i = 0; i < 20; ++i) EXPECT_EQ(*s.Sample({4.0f, 2.0f, 0.0f}), 1);
}

TEST(SamplerTest, LogitBiasBansTokens) {
  const float inf = std::numeric_limits<float>::infinity();
  SamplerParams p;
  p.temp = 0.0f;
  p.logit_bias = {{2, -inf}, {0, 1.5f}};
  Sampler s = *Sampler::Create(p);
  EXPECT_TRUE(s.modifies_logits());
  EXPECT_EQ(*s.Sample({1.0f, 2.0f, 9.0f}), 0);  // 2 banned; 1 + 1.5 = 2.5 > 2
  p.temp = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  Sampler r = *Sampler::Create(p);
  for (int i = 0; i < 200; ++i) ASSERT_NE(*r.Sample({1.0f, 2.0f, 9.0f}), 2);
  // A bias for an id beyond the row is ignored (vocabularies differ).
  p.logit_bias = {{7, -inf}};
  EXPECT_EQ(Sampler::Create(p)->Penalized({1.0f}).size(), 1u);
}

TEST(SamplerTest, RejectsPenaltiesOutOfRange) {
  SamplerParams p;
  p.top_k = -3;
  EXPECT_THAT(std::string(Sampler::Create(p).status().message()), ::testing::HasSubstr("top-k -3"));
  p = {};
  p.repeat_last_n = -2;
  EXPECT_FALSE(Sampler::Create(p).ok());
  p = {};
  p.repeat_penalty = 0.0f;
  EXPECT_FALSE(Sampler::Create(p).ok());
  p = {};
  p.frequency_penalty = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(Sampler::Create(p).ok());
  p = {};
  p.presence_penalty = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(Sampler::Create(p).ok());
  p = {};
  p.logit_bias = {{-1, 0.0f}};
  EXPECT_FALSE(Sampler::Create(p).ok());
}

TEST(SamplerTest, RejectsParametersOutOfRange) {
  SamplerParams p;
  p.top_p = 0.0f;
  EXPECT_FALSE(Sampler::Create(p).ok());
  p = {};
  p.top_p = 1.5f;
  EXPECT_FALSE(Sampler::Create(p).ok());
  p = {};
  p.min_p = -0.1f;
  EXPECT_FALSE(Sampler::Create(p).ok());
  p = {};
  p.temp = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(Sampler::Create(p).ok());
}


// The generator is Philox4x32-10 as published: the known-answer vectors of
// Random123 (tests/kat_vectors, "philox4x32 10" lines), which cuRAND's
// Philox shares.
TEST(SampleGeneratorTest, PhiloxMatchesRandom123KnownAnswers) {
  using W4 = std::array<uint32_t, 4>;
  EXPECT_EQ(Philox4x32_10({0, 0, 0, 0}, {0, 0}), (W4{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(Philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (W4{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(Philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (W4{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(SampleGeneratorTest, UniformIsTheFirst53BitsOfDrawNOfSeed) {
  // Draw 5 of seed 7 is Philox({5, 0, 0, 0}, {7, 0}); draw 2^32 + 3 puts the
  // high word in counter word 1.
  for (auto [seed, n] : {std::pair<uint32_t, uint64_t>{7, 5}, {123456789, (uint64_t{1} << 32) + 3}}) {
    const auto x = Philox4x32_10({static_cast<uint32_t>(n), static_cast<uint32_t>(n >> 32), 0, 0}, {seed, 0});
    const double want = static_cast<double>((static_cast<uint64_t>(x[0]) << 21) | (x[1] >> 11)) / 9007199254740992.0;
    EXPECT_EQ(SampleUniform(seed, n), want);
  }
  EXPECT_NE(SampleUniform(1, 0), SampleUniform(2, 0));
  EXPECT_NE(SampleUniform(1, 0), SampleUniform(1, 1));
}

// 200,000 numbers of one seed in 100 equal bins: chi-squared with 99 degrees
// of freedom has mean 99 and standard deviation 14; 160 is its 99.99th
// percentile (P(chi2 > 160) = 1.01e-4, from the regularized incomplete gamma
// function), so a correct generator fails with p ~ 1e-4. The
// mean of U(0, 1) over n draws has standard deviation 1 / sqrt(12 n) = 6.5e-4.
TEST(SampleGeneratorTest, UniformIsUniform) {
  constexpr int kBins = 100, kN = 200000;
  std::vector<int> bins(kBins);
  double sum = 0;
  std::set<double> distinct;
  for (int i = 0; i < kN; ++i) {
    const double u = SampleUniform(2024, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    ++bins[static_cast<int>(u * kBins)];
    if (i < 1000) distinct.insert(u);
  }
  EXPECT_NEAR(sum / kN, 0.5, 0.003);
  double chi2 = 0;
  const double expected = static_cast<double>(kN) / kBins;
  for (int b : bins) chi2 += (b - expected) * (b - expected) / expected;
  EXPECT_LT(chi2, 160.0);
  EXPECT_EQ(distinct.size(), 1000u);
}

TEST(SampleGeneratorTest, ParamsPackAndUnpack) {
  SampleDraw d;
  d.temp = 0.7f;
  d.top_k = 40;
  d.top_p = 0.95f;
  d.min_p = 0.05f;
  d.seed = 0xFFFFFFFEu;
  d.n = (uint64_t{3} << 32) | 0x89abcdefu;
  const std::array<int32_t, kSampleParamWords> w = PackSampleParams(d);
  EXPECT_EQ(w[1], 40);
  EXPECT_EQ(static_cast<uint32_t>(w[4]), 0xFFFFFFFEu);
  EXPECT_EQ(static_cast<uint32_t>(w[5]), 0x89abcdefu);
  EXPECT_EQ(w[6], 3);
  EXPECT_EQ(w[7], 0);
  const SampleDraw back = UnpackSampleParams(w);
  EXPECT_EQ(back.temp, d.temp);
  EXPECT_EQ(back.top_k, d.top_k);
  EXPECT_EQ(back.top_p, d.top_p);
  EXPECT_EQ(back.min_p, d.min_p);
  EXPECT_EQ(back.seed, d.seed);
  EXPECT_EQ(back.n, d.n);
}

TEST(SampleGeneratorTest, PickTakesTheFirstCandidateWhoseCumulativeMassExceedsU) {
  const std::vector<TokenProb> d = {{7, 0.5f}, {3, 0.25f}, {9, 0.25f}};
  EXPECT_EQ(PickCandidate(d, 0.0), 7);
  EXPECT_EQ(PickCandidate(d, 0.4999), 7);
  EXPECT_EQ(PickCandidate(d, 0.5), 3);  // u * P < 0.5 fails at 0.5 exactly
  EXPECT_EQ(PickCandidate(d, 0.7499), 3);
  EXPECT_EQ(PickCandidate(d, 0.75), 9);
  EXPECT_EQ(PickCandidate(d, 0.9999999), 9);
  // Unnormalized masses are scaled by their sum.
  EXPECT_EQ(PickCandidate({{1, 2.0f}, {2, 2.0f}}, 0.49), 1);
  EXPECT_EQ(PickCandidate({{1, 2.0f}, {2, 2.0f}}, 0.51), 2);
}

// What a device that samples gets (NextDraw) draws exactly what Sample would
// have drawn, step after step.
TEST(SamplerTest, NextDrawDrawsWhatSampleWould) {
  std::vector<float> logits(100);
  for (int i = 0; i < 100; ++i) logits[i] = std::cos(i * 1.3f) * 3.0f;
  Sampler host = Make(0.9f, 20, 0.9f, 0.02f, 77);
  Sampler device = Make(0.9f, 20, 0.9f, 0.02f, 77);
  for (int step = 0; step < 200; ++step) {
    const SampleDraw d = device.NextDraw();
    EXPECT_EQ(d.n, static_cast<uint64_t>(step));
    EXPECT_EQ(d.seed, 77u);
    ASSERT_EQ(*SampleToken(logits, d), *host.Sample(logits)) << "step " << step;
  }
  EXPECT_EQ(host.draws(), 200u);
  EXPECT_EQ(device.draws(), 200u);
}

TEST(SamplerTest, SampleTokenRejectsParametersOutOfRange) {
  const std::vector<float> logits = {1.0f, 2.0f};
  SampleDraw d;
  d.temp = 1.0f;
  d.top_p = 0.0f;
  EXPECT_FALSE(SampleToken(logits, d).ok());
  d.top_p = 1.0f;
  d.min_p = 2.0f;
  EXPECT_FALSE(SampleToken(logits, d).ok());
  d.min_p = 0.0f;
  d.temp = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(SampleToken(logits, d).ok());
}

}  // namespace
}  // namespace vibrant
