#include "runtime/generate.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "frontends/gguf/gguf.h"
#include "frontends/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

constexpr int kVocab = 512;  // stories260K's vocabulary (EOS = 2)

// A model whose next token is a hash of the whole sequence in its "KV cache"
// (positions 0..pos), so that stale or misplaced cache rows change the output.
// It writes rows at the positions it is given and reads only 0..pos.
class FakeExecutor : public Executor {
 public:
  absl::StatusOr<absl::Span<const float>> Step(absl::Span<const int32_t> tokens, int32_t pos0) override {
    calls.push_back({pos0, static_cast<int>(tokens.size())});
    if (kv.size() < pos0 + tokens.size()) kv.resize(pos0 + tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) kv[pos0 + i] = tokens[i];
    const int64_t last = pos0 + static_cast<int64_t>(tokens.size()) - 1;
    logits.assign(kVocab, 0.0f);
    logits[Next(kv, last, eos_at)] = 10.0f;
    return absl::Span<const float>(logits);
  }
  void Reset() override { kv.clear(); }
  std::string Describe() const override { return "fake"; }

  // The token after positions 0..last of `seq`: EOS when the sequence is
  // eos_at long, else something in 3..502.
  static int32_t Next(const std::vector<int32_t>& seq, int64_t last, int64_t eos_at) {
    if (last + 1 == eos_at) return 2;
    uint32_t h = 2166136261u;
    for (int64_t i = 0; i <= last; ++i) h = (h ^ static_cast<uint32_t>(seq[i])) * 16777619u;
    return 3 + static_cast<int32_t>(h % 500);
  }

  struct Call {
    int32_t pos0;
    int n;
  };
  std::vector<Call> calls;
  std::vector<int32_t> kv;
  std::vector<float> logits;
  int64_t eos_at = -1;
};

// What a fresh model continues `prompt` with, greedily, for n tokens.
std::vector<int32_t> Expected(std::vector<int32_t> seq, int n, int64_t eos_at = -1) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    const int32_t t = FakeExecutor::Next(seq, static_cast<int64_t>(seq.size()) - 1, eos_at);
    if (t == 2) break;
    out.push_back(t);
    seq.push_back(t);
  }
  return out;
}

class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<GgufFile>> f =
        GgufFile::Open(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf");
    ASSERT_TRUE(f.ok()) << f.status();
    gguf_ = *std::move(f);
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromGguf(*gguf_);
    ASSERT_TRUE(t.ok()) << t.status();
    tok_ = *std::move(t);
  }
  std::unique_ptr<Session> MakeSession(int64_t n_ctx = 64, int64_t max_tokens = 4,
                                       SamplerParams p = Greedy()) {
    return std::make_unique<Session>(&exec_, tok_.get(), n_ctx, max_tokens, kVocab,
                                     *Sampler::Create(p));
  }
  static SamplerParams Greedy() {
    SamplerParams p;
    p.temp = 0.0f;
    return p;
  }
  static SamplerParams Chain(float temp, int32_t top_k, float top_p, float min_p, uint32_t seed) {
    SamplerParams p;
    p.temp = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.seed = seed;
    return p;
  }

  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<Tokenizer> tok_;
  FakeExecutor exec_;
};

TEST_F(GenerateTest, GeneratesGreedilyInChunkedPrefill) {
  auto s = MakeSession(64, 4);
  const std::vector<int32_t> prompt = {1, 10, 20, 30, 40, 50};
  GenerateOptions o;
  o.n_predict = 5;
  std::vector<int32_t> streamed;
  std::string text;
  absl::StatusOr<GenerateResult> r = s->Generate(prompt, o, [&](const TokenEvent& e) {
    if (e.token >= 0) streamed.push_back(e.token);
    text += e.text;
    return true;
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tokens, Expected(prompt, 5));
  EXPECT_EQ(streamed, r->tokens);
  EXPECT_EQ(r->stop, StopReason::kNPredict);
  EXPECT_EQ(r->n_prompt, 6);
  EXPECT_EQ(r->n_reused, 0);
  EXPECT_EQ(r->n_prefilled, 6);
  EXPECT_EQ(text, r->text);
  EXPECT_EQ(text, tok_->Decode(r->tokens));
  // Prefill 4 + 2, then 4 decode steps (the 5th token is not fed back).
  ASSERT_EQ(exec_.calls.size(), 6u);
  EXPECT_EQ(exec_.calls[0].pos0, 0);
  EXPECT_EQ(exec_.calls[0].n, 4);
  EXPECT_EQ(exec_.calls[1].pos0, 4);
  EXPECT_EQ(exec_.calls[1].n, 2);
  EXPECT_EQ(exec_.calls[5].pos0, 9);
  EXPECT_EQ(s->cached_tokens().size(), 10u);
}

TEST_F(GenerateTest, ASecondRequestPrefillsOnlyWhatTheCacheLacks) {
  auto s = MakeSession(64, 8);
  std::vector<int32_t> seq = {1, 10, 20, 30};
  GenerateOptions o;
  o.n_predict = 3;
  absl::StatusOr<GenerateResult> r1 = s->Generate(seq, o, nullptr);
  ASSERT_TRUE(r1.ok()) << r1.status();
  seq.insert(seq.end(), r1->tokens.begin(), r1->tokens.end());
  seq.insert(seq.end(), {60, 70});
  exec_.calls.clear();
  absl::StatusOr<GenerateResult> r2 = s->Generate(seq, o, nullptr);
  ASSERT_TRUE(r2.ok()) << r2.status();
  // The cache held the prompt and the first two generated tokens (the third
  // was never fed): 6 reused, 3 prefilled at position 6.
  EXPECT_EQ(r2->n_reused, 6);
  EXPECT_EQ(r2->n_prefilled, 3);
  ASSERT_FALSE(exec_.calls.empty());
  EXPECT_EQ(exec_.calls[0].pos0, 6);
  EXPECT_EQ(exec_.calls[0].n, 3);
  // Same continuation as a fresh model.
  EXPECT_EQ(r2->tokens, Expected(seq, 3));

  // A request that diverges earlier rewrites the cache from there.
  std::vector<int32_t> other = {1, 10, 99, 98, 97};
  exec_.calls.clear();
  absl::StatusOr<GenerateResult> r3 = s->Generate(other, o, nullptr);
  ASSERT_TRUE(r3.ok());
  EXPECT_EQ(r3->n_reused, 2);
  EXPECT_EQ(exec_.calls[0].pos0, 2);
  EXPECT_EQ(r3->tokens, Expected(other, 3));

  // The same request again recomputes its last token (its logits are needed).
  std::vector<int32_t> again(s->cached_tokens());
  exec_.calls.clear();
  absl::StatusOr<GenerateResult> r4 = s->Generate(again, o, nullptr);
  ASSERT_TRUE(r4.ok());
  EXPECT_EQ(r4->n_prefilled, 1);
  EXPECT_EQ(r4->tokens, Expected(again, 3));

  s->Reset();
  EXPECT_TRUE(s->cached_tokens().empty());
  absl::StatusOr<GenerateResult> r5 = s->Generate(again, o, nullptr);
  EXPECT_EQ(r5->n_reused, 0);
}

TEST_F(GenerateTest, EndOfGenerationStopsUnlessIgnored) {
  auto s = MakeSession();
  exec_.eos_at = 7;  // EOS after 7 tokens of sequence
  const std::vector<int32_t> prompt = {1, 10, 20};
  GenerateOptions o;
  absl::StatusOr<GenerateResult> r = s->Generate(prompt, o, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop, StopReason::kEndOfGeneration);
  EXPECT_EQ(r->n_generated, 4);
  EXPECT_EQ(r->tokens, Expected(prompt, 10, 7));

  o.ignore_eos = true;
  o.n_predict = 6;
  r = s->Generate(prompt, o, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop, StopReason::kNPredict);
  EXPECT_EQ(r->n_generated, 6);
  // The EOS the model wanted was banned: the runner-up (logit 0, the lowest
  // id that is not an end-of-generation token) came instead.
  EXPECT_EQ(r->tokens[4], 0);
  for (int32_t t : r->tokens) EXPECT_FALSE(tok_->IsEndOfGeneration(t)) << t;
}

TEST_F(GenerateTest, ContextFullStops) {
  auto s = MakeSession(/*n_ctx=*/8);
  GenerateOptions o;
  absl::StatusOr<GenerateResult> r = s->Generate(std::vector<int32_t>{1, 10, 20}, o, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop, StopReason::kContextFull);
  EXPECT_EQ(r->n_generated, 6);  // 3 + 6 = 9 = n_ctx + the last, unfed token
  EXPECT_EQ(s->cached_tokens().size(), 8u);
  EXPECT_FALSE(s->Generate(std::vector<int32_t>(9, 5), o, nullptr).ok());
  EXPECT_FALSE(s->Generate(std::vector<int32_t>{}, o, nullptr).ok());
  EXPECT_FALSE(s->Generate(std::vector<int32_t>{1, 600}, o, nullptr).ok());
}

TEST_F(GenerateTest, CallbackAndCancelInterrupt) {
  auto s = MakeSession(64, 2);
  GenerateOptions o;
  int seen = 0;
  absl::StatusOr<GenerateResult> r =
      s->Generate(std::vector<int32_t>{1, 10, 20}, o, [&](const TokenEvent&) { return ++seen < 3; });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop, StopReason::kInterrupted);
  EXPECT_EQ(r->n_generated, 3);

  std::atomic<bool> cancel{true};
  o.cancel = &cancel;
  exec_.calls.clear();
  r = s->Generate(std::vector<int32_t>{1, 11, 21, 31, 41}, o, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop, StopReason::kInterrupted);
  EXPECT_EQ(r->n_generated, 0);
  EXPECT_TRUE(exec_.calls.empty());
}

TEST_F(GenerateTest, StopStringEndsGenerationAndIsNotShown) {
  auto s = MakeSession();
  const std::vector<int32_t> prompt = {1, 10, 20};
  const std::vector<int32_t> plain = Expected(prompt, 8);
  const std::string full = tok_->Decode(plain);
  // Stop at the text of the 4th token (it may begin inside an earlier piece).
  const std::string stop = tok_->TokenToPiece(plain[3]);
  ASSERT_FALSE(stop.empty());
  const size_t at = full.find(stop);
  GenerateOptions o;
  o.n_predict = 8;
  o.stops = {{stop, false}};
  std::string shown;
  absl::StatusOr<GenerateResult> r = s->Generate(prompt, o, [&](const TokenEvent& e) {
    shown += e.text;
    return true;
  });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop, StopReason::kStopString);
  EXPECT_EQ(shown, full.substr(0, at));
  EXPECT_EQ(r->text, shown);
  o.stops = {{stop, true}};
  r = s->Generate(prompt, o, nullptr);
  EXPECT_EQ(r->text, full.substr(0, at + stop.size()));
}

// A program that samples (Executor::samples()): StepSample draws from the
// step's logits with the draw it is given, as the sample op does; the logits
// are spread (a hash per token) so that seeded draws vary.
class FakeSamplingExecutor : public FakeExecutor {
 public:
  absl::StatusOr<absl::Span<const float>> Step(absl::Span<const int32_t> tokens, int32_t pos0) override {
    absl::StatusOr<absl::Span<const float>> out = FakeExecutor::Step(tokens, pos0);
    if (!out.ok()) return out;
    const int64_t last = pos0 + static_cast<int64_t>(tokens.size()) - 1;
    for (int i = 3; i < kVocab; ++i) {
      logits[i] = std::max(logits[i], static_cast<float>((Next(kv, last, -1) * 7919u + i * 104729u) % 997) / 250.0f);
    }
    return absl::Span<const float>(logits);
  }
  bool samples() const override { return sampling; }
  absl::StatusOr<int32_t> StepSample(absl::Span<const int32_t> tokens, int32_t pos0, const SampleDraw& d) override {
    draws.push_back(d);
    absl::StatusOr<absl::Span<const float>> l = Step(tokens, pos0);
    if (!l.ok()) return l.status();
    return SampleToken(*l, d);
  }
  bool sampling = true;
  std::vector<SampleDraw> draws;
};

// The loop asks a program that samples for the token (the host sampler's
// next draw), and gets the tokens the host would have drawn from the logits.
TEST_F(GenerateTest, AProgramThatSamplesDrawsTheHostsTokens) {
  for (const SamplerParams& p : {Greedy(), Chain(2.0f, 40, 1.0f, 0.0f, 77), Chain(0.7f, 0, 0.9f, 0.0f, 5)}) {
    FakeSamplingExecutor device, host;
    host.sampling = false;
    Session a(&device, tok_.get(), 64, 4, kVocab, *Sampler::Create(p));
    Session b(&host, tok_.get(), 64, 4, kVocab, *Sampler::Create(p));
    const std::vector<int32_t> prompt = {1, 10, 20, 30, 40, 50};
    GenerateOptions o;
    o.n_predict = 12;
    absl::StatusOr<GenerateResult> ra = a.Generate(prompt, o, nullptr);
    absl::StatusOr<GenerateResult> rb = b.Generate(prompt, o, nullptr);
    ASSERT_TRUE(ra.ok() && rb.ok()) << ra.status() << rb.status();
    EXPECT_EQ(ra->tokens, rb->tokens) << "temp " << p.temp;
    EXPECT_EQ(ra->n_generated, 12);
    // One draw per generated token (the first from the prompt's last chunk),
    // numbered from 0; the host sampler's steps drew none.
    ASSERT_EQ(device.draws.size(), 12u);
    for (size_t i = 0; i < device.draws.size(); ++i) {
      EXPECT_EQ(device.draws[i].n, i);
      EXPECT_EQ(device.draws[i].temp, p.temp);
      EXPECT_EQ(device.draws[i].top_k, p.top_k);
    }
    EXPECT_TRUE(host.draws.empty());
    // The same steps: prefill 4 + 2, then one per token but the last.
    ASSERT_EQ(device.calls.size(), host.calls.size());
    // A second request continues the draw count.
    device.draws.clear();
    ra = a.Generate(prompt, o, nullptr);
    ASSERT_TRUE(ra.ok());
    ASSERT_FALSE(device.draws.empty());
    EXPECT_EQ(device.draws[0].n, 12u);
  }
}

// A bias (--ignore-eos's ban) or a penalty changes the logits first: the
// host samples, from the logits.
TEST_F(GenerateTest, ABiasOrAPenaltySamplesOnTheHost) {
  FakeSamplingExecutor device;
  Session s(&device, tok_.get(), 64, 4, kVocab, *Sampler::Create(Greedy()));
  GenerateOptions o;
  o.n_predict = 4;
  o.ignore_eos = true;
  ASSERT_TRUE(s.Generate(std::vector<int32_t>{1, 10, 20}, o, nullptr).ok());
  EXPECT_TRUE(device.draws.empty());
  SamplerParams p = Greedy();
  p.repeat_penalty = 1.3f;
  Session t(&device, tok_.get(), 64, 4, kVocab, *Sampler::Create(p));
  o.ignore_eos = false;
  ASSERT_TRUE(t.Generate(std::vector<int32_t>{1, 10, 20}, o, nullptr).ok());
  EXPECT_TRUE(device.draws.empty());
}

TEST(StopMatcherTest, HoldsBackPossibleStartsAndReleasesThem) {
  bool stopped = false;
  StopMatcher m({{"User:", false}, {"###", true}});
  EXPECT_EQ(m.Feed("Hello Us", &stopped), "Hello ");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(m.Feed("eful", &stopped), "Useful");  // "Use" then "f": no longer a stop
  EXPECT_EQ(m.Feed(" U", &stopped), " ");
  EXPECT_EQ(m.Feed("ser: more", &stopped), "");
  EXPECT_TRUE(stopped);
  StopMatcher p({{"User:", false}, {"###", true}});
  EXPECT_EQ(p.Feed("a ## b #", &stopped), "a ## b ");
  EXPECT_EQ(p.Feed("##x", &stopped), "###");  // printed stop string
  EXPECT_TRUE(stopped);
  StopMatcher f({{"abc", false}});
  EXPECT_EQ(f.Feed("xab", &stopped), "x");
  EXPECT_EQ(f.Flush(), "ab");
  StopMatcher none({});
  EXPECT_EQ(none.Feed("User:", &stopped), "User:");
  // The earliest of two matches wins.
  StopMatcher two({{"cd", false}, {"bc", false}});
  EXPECT_EQ(two.Feed("abcd", &stopped), "a");
}

TEST_F(GenerateTest, PenaltyWindowStartsWithThePrompt) {
  SamplerParams p = Greedy();
  p.repeat_last_n = 4;
  p.presence_penalty = 100.0f;
  auto s = MakeSession(64, 8, p);
  GenerateOptions o;
  o.n_predict = 2;
  absl::StatusOr<GenerateResult> r = s->Generate(std::vector<int32_t>{1, 10, 20, 30, 40, 50}, o, nullptr);
  ASSERT_TRUE(r.ok());
  // The window started as the prompt's last 4 tokens; the two generated ones
  // pushed out the oldest two.
  EXPECT_THAT(s->sampler().History(), ElementsAre(40, 50, r->tokens[0], r->tokens[1]));
  // A banned token is never generated, whatever the model prefers.
  const std::vector<int32_t> base = {1, 10};
  const int32_t preferred = Expected(base, 1)[0];
  std::vector<int32_t> prompt = {1, 10};
  auto fresh = MakeSession(64, 8, p);
  o.n_predict = 1;
  r = fresh->Generate(prompt, o, nullptr);
  EXPECT_EQ(r->tokens[0], preferred);
  SamplerParams q = p;
  q.logit_bias = {{preferred, -1000.0f}};
  auto banned = MakeSession(64, 8, q);
  r = banned->Generate(prompt, o, nullptr);
  EXPECT_NE(r->tokens[0], preferred);
}

}  // namespace
}  // namespace vibrant
