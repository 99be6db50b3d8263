// Sampling on the GPU (the sample op, codegen/kernels/sample.cc) against the
// CPU sampler (runtime/sampler.h). Needs a GPU (skips without one); the same
// kernels run on emulated threads in CI (codegen/sample_host_test.cc).
//
// The logits are rows of an f32 table read by an f32 embedding (bit-exact on
// both sides), so the GPU and the CPU sample from the same numbers; token r
// of a step selects row r. What may differ: the GPU's expf is within 2 ulp of
// the host's, and its sums run in another order, so a probability, and the
// cumulative sum a draw walks, can differ by ~1e-7 relative; a draw u that
// falls that close to a boundary between two candidates may pick the
// neighbour. Hence:
//   * greedy: the argmax, always (keys are exact);
//   * the same (seed, draw): the CPU's token, except where u * P lies within
//     1e-5 of a cumulative boundary of the CPU's distribution (counted,
//     printed as [ MEASURED ], and at most 1 % of the draws);
//   * distribution: 20,000 draws of fresh seeds tested with chi-squared
//     against the CPU's probabilities, rejected above the 99.99th percentile
//     (a correct sampler fails with probability 1e-4 per case).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "compiler/compiler.h"
#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/graph.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/executor.h"
#include "runtime/sampler.h"

namespace vibrant {
namespace {

using ir::Graph;
using ir::OpKind;
using ir::ValueId;
using ::testing::HasSubstr;

#define SKIP_WITHOUT_GPU()                                                     \
  do {                                                                         \
    absl::Status _gpu = CudaDeviceAvailable();                                 \
    if (!_gpu.ok()) GTEST_SKIP() << "no usable CUDA GPU: " << _gpu.message(); \
  } while (0)

constexpr int64_t kVocab = 151936;  // Qwen2's: 38 gather blocks of 3998

// Rows of logits, one per token id of the step.
struct LogitRows {
  std::vector<std::vector<float>> rows;
  std::vector<uint8_t> bytes;  // the table, f32
  std::unique_ptr<CudaExecutor> gpu;

  absl::Status Build() {
    const int64_t R = static_cast<int64_t>(rows.size());
    bytes.resize(R * kVocab * 4);
    for (int64_t r = 0; r < R; ++r) std::memcpy(bytes.data() + r * kVocab * 4, rows[r].data(), kVocab * 4);
    Graph g;
    g.max_tokens = 1;
    const ValueId tokens = g.AddInput("tokens", DType::kI32, {ir::kTokens});
    const ValueId table = g.AddWeight("table", DType::kF32, {R, kVocab}, "table");
    absl::StatusOr<ValueId> x = g.AddOp(OpKind::kEmbedding, {table, tokens}, "rows");
    if (!x.ok()) return x.status();
    absl::StatusOr<ValueId> logits = g.AddOp(OpKind::kLastRow, {*x}, "logits");
    if (!logits.ok()) return logits.status();
    g.MarkOutput(*logits);
    compiler::CompileOptions o;
    o.device = "cuda";
    o.sample = true;  // a hand-built graph: asked for explicitly
    absl::StatusOr<compiler::Compiled> c = compiler::CompileGraph(g, o);
    if (!c.ok()) return c.status();
    WeightResolver w = [this](const std::string&) -> absl::StatusOr<absl::Span<const uint8_t>> {
      return absl::Span<const uint8_t>(bytes);
    };
    absl::StatusOr<std::unique_ptr<CudaExecutor>> e = CudaExecutor::Create(compiler::ToProgram(*c), w);
    if (!e.ok()) return e.status();
    gpu = *std::move(e);
    return absl::OkStatus();
  }
  absl::StatusOr<int32_t> Draw(int32_t row, const SampleDraw& d) {
    const int32_t t[1] = {row};
    return gpu->StepSample(t, 0, d);
  }
};

std::vector<float> Normal(float sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, sigma);
  std::vector<float> v(kVocab);
  for (float& x : v) x = n(rng);
  return v;
}

SampleDraw Params(float temp, int top_k, float top_p, float min_p) {
  SampleDraw d;
  d.temp = temp;
  d.top_k = top_k;
  d.top_p = top_p;
  d.min_p = min_p;
  return d;
}

// The rows every test uses: peaked (a real model's spread), flat (thousands
// of near-equal candidates), ties and non-finite values, and a row with
// only 700 finite logits (every candidate gathered even with top-k off).
LogitRows MakeRows() {
  LogitRows l;
  l.rows.push_back(Normal(3.0f, 1));
  l.rows.push_back(Normal(0.4f, 2));
  std::vector<float> ties(kVocab);
  for (int64_t i = 0; i < kVocab; ++i) ties[i] = static_cast<float>((i * 7919) % 5) * 0.5f - 1.0f;
  ties[17] = std::numeric_limits<float>::infinity();
  ties[18] = std::numeric_limits<float>::quiet_NaN();
  l.rows.push_back(ties);
  std::vector<float> few(kVocab, -std::numeric_limits<float>::infinity());
  std::vector<float> n = Normal(1.5f, 3);
  for (int64_t i = 0; i < 700; ++i) few[(i * 211) % kVocab] = n[i];
  l.rows.push_back(few);
  return l;
}

// Whether u lies within `eps` of a cumulative boundary of `dist` (the
// rounding a GPU sum may differ by).
bool NearABoundary(const std::vector<TokenProb>& dist, double u, double eps) {
  double total = 0;
  for (const TokenProb& t : dist) total += t.prob;
  const double target = u * total;
  double cum = 0;
  for (const TokenProb& t : dist) {
    cum += t.prob;
    if (std::fabs(target - cum) < eps) return true;
  }
  return false;
}

TEST(CudaSample, GreedyIsTheArgmaxWithTheLowestIdAmongTies) {
  SKIP_WITHOUT_GPU();
  LogitRows l = MakeRows();
  ASSERT_TRUE(l.Build().ok()) << l.Build();
  EXPECT_TRUE(l.gpu->samples());
  EXPECT_THAT(l.gpu->Describe(), HasSubstr("sampling on the GPU"));
  for (int32_t r = 0; r < static_cast<int32_t>(l.rows.size()); ++r) {
    absl::StatusOr<int32_t> want = SampleToken(l.rows[r], SampleDraw{});
    ASSERT_TRUE(want.ok());
    absl::StatusOr<int32_t> got = l.Draw(r, SampleDraw{});
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, *want) << "row " << r;
  }
  // Ties: row 2's highest value (1.0) first appears at the lowest id with (i * 7919) % 5 == 4.
  int32_t first = -1;
  for (int64_t i = 0; i < kVocab && first < 0; ++i) {
    if (i != 17 && i != 18 && l.rows[2][i] == 1.0f) first = static_cast<int32_t>(i);
  }
  EXPECT_EQ(*l.Draw(2, SampleDraw{}), first);
}

// A step that samples copies back the token id only: the host's logits
// buffer (where a logits step lands) keeps the previous step's row while
// token steps of other rows run; a logits step of the same plan still
// returns the whole row.
TEST(CudaSample, OnlyTheTokenIdComesBack) {
  SKIP_WITHOUT_GPU();
  LogitRows l = MakeRows();
  ASSERT_TRUE(l.Build().ok());
  const int32_t row0[1] = {0};
  absl::StatusOr<absl::Span<const float>> logits = l.gpu->Step(row0, 0);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->size(), static_cast<size_t>(kVocab));
  EXPECT_EQ(std::memcmp(logits->data(), l.rows[0].data(), kVocab * sizeof(float)), 0);
  for (int32_t r = 1; r < static_cast<int32_t>(l.rows.size()); ++r) {
    SampleDraw d = Params(0.8f, 40, 0.95f, 0.05f);
    d.seed = 5;
    ASSERT_TRUE(l.Draw(r, d).ok());
    ASSERT_TRUE(l.Draw(r, SampleDraw{}).ok());
  }
  // The buffer still holds row 0: no token step wrote it.
  EXPECT_EQ(std::memcmp(logits->data(), l.rows[0].data(), kVocab * sizeof(float)), 0);
  const int32_t row1[1] = {1};
  absl::StatusOr<absl::Span<const float>> again = l.gpu->Step(row1, 0);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(std::memcmp(again->data(), l.rows[1].data(), kVocab * sizeof(float)), 0);
}

// The same seed and draw index give the CPU's token (up to boundaries).
TEST(CudaSample, SeededDrawsAreTheCpus) {
  SKIP_WITHOUT_GPU();
  LogitRows l = MakeRows();
  ASSERT_TRUE(l.Build().ok());
  struct Case {
    int32_t row;
    SampleDraw d;
    int draws;
  };
  const Case cases[] = {
      {0, Params(0.8f, 40, 0.95f, 0.05f), 2000},  // llama.cpp's defaults
      {1, Params(0.8f, 40, 0.95f, 0.05f), 2000},
      {1, Params(1.5f, 1000, 0.9f, 0.02f), 1000},  // the largest gathered top-k
      {2, Params(1.0f, 64, 0.7f, 0.0f), 1000},      // ties
      {3, Params(1.0f, 0, 1.0f, 0.0f), 1000},       // top-k off, all 700 gathered
      {0, Params(0.8f, 0, 0.95f, 0.05f), 200},      // top-k off: windows over the row
      {1, Params(1.0f, 2000, 0.9f, 0.0f), 20},      // top-k past a window: several windows
      {1, Params(1.0f, 0, 0.5f, 0.0f), 5},          // top-p cut tens of windows deep
  };
  for (const Case& c : cases) {
    SampleDraw d = c.d;
    d.seed = 4242;
    int mismatches = 0, unexplained = 0;
    for (int i = 0; i < c.draws; ++i) {
      d.n = static_cast<uint64_t>(i);
      absl::StatusOr<int32_t> got = l.Draw(c.row, d);
      ASSERT_TRUE(got.ok()) << got.status();
      absl::StatusOr<int32_t> want = SampleToken(l.rows[c.row], d);
      ASSERT_TRUE(want.ok());
      if (*got == *want) continue;
      ++mismatches;
      const std::vector<TokenProb> dist = *SampleDistribution(l.rows[c.row], d);
      if (!NearABoundary(dist, SampleUniform(d.seed, d.n), 1e-5)) ++unexplained;
    }
    std::printf("[ MEASURED ] GPU vs CPU draws, row %d temp %.2f top_k %d top_p %.2f min_p %.2f: %d of %d differ\n",
                c.row, c.d.temp, c.d.top_k, c.d.top_p, c.d.min_p, mismatches, c.draws);
    EXPECT_EQ(unexplained, 0) << "row " << c.row << " top_k " << c.d.top_k;
    EXPECT_LE(mismatches, c.draws / 100) << "row " << c.row << " top_k " << c.d.top_k;
  }
}

// chi-squared critical value at upper tail 1e-4 for `df` degrees of freedom
// (Wilson-Hilferty; z = 3.719 is the normal's 1e-4 upper quantile; accurate to
// ~1 % for df >= 3).
double ChiSquaredCritical(int df) {
  const double z = 3.719, a = 2.0 / (9.0 * df);
  return df * std::pow(1.0 - a + z * std::sqrt(a), 3);
}

// Draws of fresh seeds against the CPU's probabilities: categories with an
// expected count below 5 are pooled into one.
TEST(CudaSample, DrawFrequenciesMatchTheCpuDistribution) {
  SKIP_WITHOUT_GPU();
  LogitRows l = MakeRows();
  ASSERT_TRUE(l.Build().ok());
  struct Case {
    int32_t row;
    SampleDraw d;
  };
  const Case cases[] = {
      {0, Params(0.8f, 40, 0.95f, 0.05f)},
      {0, Params(2.0f, 40, 1.0f, 0.0f)},
      {1, Params(1.5f, 200, 0.9f, 0.0f)},
      {3, Params(0.7f, 0, 0.98f, 0.01f)},
  };
  constexpr int kDraws = 20000;
  for (const Case& c : cases) {
    SampleDraw d = c.d;
    const std::vector<TokenProb> dist = *SampleDistribution(l.rows[c.row], d);
    std::map<int32_t, int> count;
    for (int i = 0; i < kDraws; ++i) {
      d.seed = 1000003u * static_cast<uint32_t>(i) + 17u;  // a fresh seed per draw
      d.n = static_cast<uint64_t>(i % 7);
      absl::StatusOr<int32_t> got = l.Draw(c.row, d);
      ASSERT_TRUE(got.ok()) << got.status();
      ++count[*got];
    }
    double chi2 = 0, pooled_expect = 0;
    int pooled_count = 0, df = -1, outside = kDraws;
    for (const TokenProb& t : dist) {
      const double e = t.prob * kDraws;
      const int o = count.count(t.id) ? count[t.id] : 0;
      outside -= o;
      if (e < 5) {
        pooled_expect += e;
        pooled_count += o;
        continue;
      }
      chi2 += (o - e) * (o - e) / e;
      ++df;
    }
    if (pooled_expect > 0) {
      chi2 += (pooled_count - pooled_expect) * (pooled_count - pooled_expect) / std::max(pooled_expect, 1e-9);
      ++df;
    }
    std::printf("[ MEASURED ] GPU draw frequencies, row %d temp %.2f top_k %d top_p %.2f min_p %.2f: %zu candidates, "
                "chi2 %.1f with %d df (critical %.1f)\n",
                c.row, c.d.temp, c.d.top_k, c.d.top_p, c.d.min_p, dist.size(), chi2, df,
                ChiSquaredCritical(std::max(df, 1)));
    EXPECT_EQ(outside, 0) << "tokens drawn outside the CPU's candidates";
    ASSERT_GE(df, 1);
    EXPECT_LT(chi2, ChiSquaredCritical(df)) << "row " << c.row;
  }
}

TEST(CudaSample, NonFiniteRowsAndBadParametersAreErrors) {
  SKIP_WITHOUT_GPU();
  LogitRows l;
  l.rows.push_back(std::vector<float>(kVocab, std::numeric_limits<float>::quiet_NaN()));
  ASSERT_TRUE(l.Build().ok());
  EXPECT_THAT(std::string(l.Draw(0, SampleDraw{}).status().message()), HasSubstr("no finite logit"));
  EXPECT_THAT(std::string(l.Draw(0, Params(1.0f, 40, 0.9f, 0.0f)).status().message()), HasSubstr("no finite logit"));
  EXPECT_THAT(std::string(l.Draw(0, Params(1.0f, 40, 0.0f, 0.0f)).status().message()), HasSubstr("top-p"));
}

// A model: a decode step's token is the argmax of the same step's logits
// (two executors of one plan in lockstep: one returns the token, one the
// logits), seeded draws are the host sampler's on those logits, and --verify
// compares the sample op like any other.
TEST(CudaSample, ModelStepsReturnTheTokenOfTheirLogits) {
  SKIP_WITHOUT_GPU();
  auto file = GgufFile::Open(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  LowerOptions lo;
  lo.max_tokens = 16;
  lo.n_ctx = 128;
  auto g = LowerGguf(**file, lo);
  ASSERT_TRUE(g.ok()) << g.status();
  compiler::CompileOptions o;
  o.device = "cuda";  // samples by default
  auto c = compiler::CompileGraph(*g, o);
  ASSERT_TRUE(c.ok()) << c.status();
  const GgufFile* f = file->get();
  WeightResolver w = [f](const std::string& name) -> absl::StatusOr<absl::Span<const uint8_t>> {
    const GgufTensorInfo* t = f->FindTensor(name);
    if (t == nullptr) return absl::NotFoundError(name);
    return f->TensorData(*t);
  };
  auto tok = CudaExecutor::Create(compiler::ToProgram(*c), w);
  auto lgt = CudaExecutor::Create(compiler::ToProgram(*c), w);
  ASSERT_TRUE(tok.ok() && lgt.ok()) << tok.status() << lgt.status();
  ASSERT_TRUE((*tok)->samples());
  SamplerParams greedy, chain;
  greedy.temp = 0.0f;
  greedy.seed = 1;
  chain.seed = 9;  // llama.cpp's defaults: temp 0.8, top-k 40, top-p 0.95, min-p 0.05
  for (const SamplerParams& sp : {greedy, chain}) {
    (*tok)->Reset();
    (*lgt)->Reset();
    Sampler device = *Sampler::Create(sp);
    Sampler host = *Sampler::Create(sp);
    std::vector<int32_t> ids = {1, 403, 407, 261, 378};
    int32_t pos = 0, differ = 0;
    for (int step = 0; step < 60; ++step) {
      const SampleDraw d = device.NextDraw();
      absl::StatusOr<int32_t> a = (*tok)->StepSample(ids, pos, d);
      ASSERT_TRUE(a.ok()) << a.status();
      absl::StatusOr<absl::Span<const float>> logits = (*lgt)->Step(ids, pos);
      ASSERT_TRUE(logits.ok()) << logits.status();
      absl::StatusOr<int32_t> b = host.Sample(*logits);
      ASSERT_TRUE(b.ok());
      if (sp.temp <= 0.0f) {
        ASSERT_EQ(*a, *b) << "step " << step;
      } else if (*a != *b) {
        ++differ;
        ASSERT_TRUE(NearABoundary(*SampleDistribution(*logits, d), SampleUniform(d.seed, d.n), 1e-5)) << "step " << step;
      }
      pos += static_cast<int32_t>(ids.size());
      ids = {*b};
    }
    std::printf("[ MEASURED ] stories260K, 60 steps at temp %.1f: %d tokens differ from the host sampler's\n", sp.temp,
                differ);
  }
  // --verify: the sample op is one of the compared ops.
  (*tok)->Reset();
  SampleDraw d = Params(0.8f, 40, 0.95f, 0.05f);
  d.seed = 3;
  auto r = (*tok)->VerifyStep({1, 403, 407}, 0, 1e-4, &d);
  ASSERT_TRUE(r.ok()) << r.status();
  bool sample_compared = false;
  for (const VerifyOpResult& op : r->ops) sample_compared |= op.desc.find("sample") != std::string::npos;
  EXPECT_TRUE(sample_compared);
  EXPECT_EQ(r->first_bad, -1) << r->ops[std::max(0, r->first_bad)].desc;
  EXPECT_GE(r->token, 0);
  // The token-only and the logits steps of one executor, CUDA graphs of both.
  (*tok)->Reset();
  ASSERT_TRUE((*tok)->StepSample({1, 403}, 0, SampleDraw{}).ok());
  const int32_t one[1] = {407};
  absl::StatusOr<int32_t> via_token = (*tok)->StepSample(one, 2, SampleDraw{});
  (*tok)->Reset();
  ASSERT_TRUE((*tok)->StepSample({1, 403}, 0, SampleDraw{}).ok());
  absl::StatusOr<absl::Span<const float>> via_logits = (*tok)->Step(one, 2);
  ASSERT_TRUE(via_token.ok() && via_logits.ok());
  EXPECT_EQ(*via_token, std::max_element(via_logits->begin(), via_logits->end()) - via_logits->begin());
}

}  // namespace
}  // namespace vibrant
