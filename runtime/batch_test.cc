#include "runtime/batch.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "nlohmann/json.hpp"
#include "runtime/backends.h"
#include "runtime/program.h"

namespace vibrant {
namespace {

using ::testing::HasSubstr;

// llama.cpp's greedy continuations of stories260K (CPU backend), bundled.
struct RefCase {
  std::vector<int32_t> prompt, generated;
};
std::vector<RefCase> ReferenceCases() {
  std::ifstream in(VIBRANT_SOURCE_DIR "/tests/data/stories260K.reference.json");
  nlohmann::json j = nlohmann::json::parse(in);
  std::vector<RefCase> out;
  for (const auto& c : j["cases"]) {
    out.push_back({c["prompt_tokens"].get<std::vector<int32_t>>(),
                   c["generated"].get<std::vector<int32_t>>()});
  }
  return out;
}

// Collects one request's events; Wait() blocks until its kDone.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> tokens;
  std::string text;
  bool done = false;
  BatchEvent last;
  int cancel_after = -1;  // return false after this many tokens

  BatchCallback Callback() {
    return [this](const BatchEvent& e) {
      std::lock_guard<std::mutex> lock(mu);
      text += e.text;
      if (e.kind == BatchEvent::Kind::kToken) {
        tokens.push_back(e.token);
        if (cancel_after >= 0 && static_cast<int>(tokens.size()) >= cancel_after) return false;
        return true;
      }
      done = true;
      last = e;
      cv.notify_all();
      return true;
    };
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return done; }));
  }
};

class BatchEngineTest : public ::testing::Test {
 protected:
  void Load(int64_t n_seq, int64_t block_size, int64_t n_ctx, int64_t max_tokens) {
    absl::StatusOr<std::unique_ptr<GgufFile>> f =
        GgufFile::Open(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf");
    ASSERT_TRUE(f.ok()) << f.status();
    gguf_ = *std::move(f);
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromGguf(*gguf_);
    ASSERT_TRUE(t.ok()) << t.status();
    tok_ = *std::move(t);
    LowerOptions lo;
    lo.n_seq = n_seq;
    lo.block_size = block_size;
    lo.n_ctx = n_ctx;
    lo.max_tokens = max_tokens;
    absl::StatusOr<ir::Graph> g = LowerGguf(*gguf_, lo);
    ASSERT_TRUE(g.ok()) << g.status();
    program_.graph = *std::move(g);
    auto meta = [&](const char* k) { return std::get<int64_t>(program_.graph.meta.at(k)); };
    absl::StatusOr<std::unique_ptr<Executor>> e =
        CreateBackend(program_, GgufWeights(*gguf_), BackendOptions{2, 0});
    ASSERT_TRUE(e.ok()) << e.status();
    exec_ = *std::move(e);
    shape_.n_seq = meta("n_seq");
    shape_.block_size = meta("block_size");
    shape_.max_blocks = meta("max_blocks");
    shape_.n_blocks = meta("n_ctx") / shape_.block_size;
    shape_.max_tokens = program_.graph.max_tokens;
    shape_.n_vocab = meta("n_vocab");
  }
  std::unique_ptr<BatchEngine> Engine(int64_t max_queue = 64) {
    absl::StatusOr<std::unique_ptr<BatchEngine>> e =
        BatchEngine::Create(exec_.get(), tok_.get(), shape_, BatchEngineOptions{max_queue});
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? *std::move(e) : nullptr;
  }
  static BatchRequest Greedy(std::vector<int32_t> prompt, int64_t n, Collector* c) {
    BatchRequest r;
    r.prompt = std::move(prompt);
    r.sampling.temp = 0.0f;
    r.n_predict = n;
    r.on_event = c->Callback();
    return r;
  }

  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<Tokenizer> tok_;
  Program program_;
  std::unique_ptr<Executor> exec_;
  BatchEngine::Shape shape_;
};

// 16 requests (the three reference prompts, repeated) through 6 slots in
// blocks of 8 rows: each gets llama.cpp's greedy continuation, whatever it
// shares its steps with. max_tokens 16 makes the 96-token prompt prefill in
// chunks mixed with other sequences' decode tokens.
TEST_F(BatchEngineTest, ConcurrentGreedyEqualsLlamaCppAlone) {
  Load(/*n_seq=*/6, /*block_size=*/8, /*n_ctx=*/1024, /*max_tokens=*/16);
  std::unique_ptr<BatchEngine> engine = Engine();
  ASSERT_NE(engine, nullptr);
  const std::vector<RefCase> cases = ReferenceCases();
  std::vector<std::unique_ptr<Collector>> cs;
  for (int i = 0; i < 16; ++i) {
    cs.push_back(std::make_unique<Collector>());
    const RefCase& c = cases[i % cases.size()];
    ASSERT_TRUE(engine->Submit(Greedy(c.prompt, 32, cs.back().get())).ok());
  }
  for (int i = 0; i < 16; ++i) {
    cs[i]->Wait();
    EXPECT_TRUE(cs[i]->last.status.ok()) << cs[i]->last.status;
    EXPECT_EQ(cs[i]->last.stop, StopReason::kNPredict);
    EXPECT_EQ(cs[i]->tokens, cases[i % cases.size()].generated) << "request " << i;
    EXPECT_EQ(cs[i]->last.n_generated, 32);
  }
  const BatchStats st = engine->Stats();
  EXPECT_EQ(st.requests_finished, 16);
  EXPECT_EQ(st.generated_tokens, 16 * 32);
  EXPECT_EQ(st.kv_blocks_used, 0);  // every block back in the pool
  EXPECT_EQ(st.running, 0);
  // Batching happened: fewer steps than 16 sequences one at a time would take.
  EXPECT_LT(st.steps, 16 * 32);
}

// A KV budget too small for all sequences at once: sequences wait, and when a
// generating one needs a block, the newest is preempted and recomputed later.
// The texts do not change.
TEST_F(BatchEngineTest, PreemptionKeepsGreedyTexts) {
  // 4 slots, blocks of 4, 24 blocks (96 rows): the three prompts need
  // 2 + 3 + 24 blocks plus 8 more each to generate 32 tokens.
  Load(4, 4, 96, 8);
  std::unique_ptr<BatchEngine> engine = Engine();
  ASSERT_NE(engine, nullptr);
  const std::vector<RefCase> cases = ReferenceCases();
  std::vector<std::unique_ptr<Collector>> cs;
  for (int i = 0; i < 4; ++i) {
    cs.push_back(std::make_unique<Collector>());
    const RefCase& c = cases[i % 2];  // the two short prompts
    ASSERT_TRUE(engine->Submit(Greedy(c.prompt, 32, cs.back().get())).ok());
  }
  for (int i = 0; i < 4; ++i) {
    cs[i]->Wait();
    EXPECT_EQ(cs[i]->tokens, cases[i % 2].generated) << "request " << i;
  }
  const BatchStats st = engine->Stats();
  EXPECT_GT(st.requests_preempted, 0);
  EXPECT_EQ(st.kv_blocks_used, 0);
}

TEST_F(BatchEngineTest, CancelAndCallbackStopFreeBlocks) {
  Load(2, 4, 256, 8);
  std::unique_ptr<BatchEngine> engine = Engine();
  ASSERT_NE(engine, nullptr);
  const std::vector<RefCase> cases = ReferenceCases();
  Collector by_callback;
  by_callback.cancel_after = 3;
  ASSERT_TRUE(engine->Submit(Greedy(cases[0].prompt, 100, &by_callback)).ok());
  by_callback.Wait();
  EXPECT_EQ(by_callback.last.stop, StopReason::kInterrupted);
  EXPECT_EQ(by_callback.tokens.size(), 3u);

  Collector by_cancel;
  BatchRequest r = Greedy(cases[2].prompt, -1, &by_cancel);
  r.sampling.temp = 1.0f;
  r.sampling.seed = 5;
  r.ignore_eos = true;
  absl::StatusOr<uint64_t> id = engine->Submit(std::move(r));
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 200 && engine->Stats().generated_tokens < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  engine->Cancel(*id);
  by_cancel.Wait();
  EXPECT_EQ(by_cancel.last.stop, StopReason::kInterrupted);
  for (int i = 0; i < 100 && engine->Stats().kv_blocks_used != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(engine->Stats().kv_blocks_used, 0);
  EXPECT_EQ(engine->Stats().requests_cancelled, 2);
}

TEST_F(BatchEngineTest, StopsAtContextDeadlineStopStringAndEog) {
  Load(2, 4, 64, 8);  // a sequence holds 64 positions
  std::unique_ptr<BatchEngine> engine = Engine();
  ASSERT_NE(engine, nullptr);
  const std::vector<RefCase> cases = ReferenceCases();
  {
    Collector c;
    BatchRequest r = Greedy(cases[1].prompt, -1, &c);
    r.ignore_eos = true;
    ASSERT_TRUE(engine->Submit(std::move(r)).ok());
    c.Wait();
    EXPECT_EQ(c.last.stop, StopReason::kContextFull);
    EXPECT_EQ(c.last.n_generated + c.last.n_prompt, 64 + 1);  // the last token is not stored
  }
  {
    Collector c;
    BatchRequest r = Greedy(cases[0].prompt, 32, &c);
    const std::string ref = tok_->Decode(cases[0].generated);
    const std::string stop = ref.substr(20, 5);
    r.stops = {{stop, false}};
    ASSERT_TRUE(engine->Submit(std::move(r)).ok());
    c.Wait();
    EXPECT_EQ(c.last.stop, StopReason::kStopString);
    EXPECT_EQ(c.text, ref.substr(0, ref.find(stop)));
  }
  {
    Collector c;
    BatchRequest r = Greedy(cases[0].prompt, -1, &c);
    r.deadline = std::chrono::steady_clock::now();  // already past
    ASSERT_TRUE(engine->Submit(std::move(r)).ok());
    c.Wait();
    EXPECT_EQ(c.last.stop, StopReason::kInterrupted);
    EXPECT_EQ(c.last.status.code(), absl::StatusCode::kDeadlineExceeded);
  }
}

TEST_F(BatchEngineTest, SubmitRejectsBadRequestsAndAFullQueue) {
  Load(1, 4, 64, 8);
  std::unique_ptr<BatchEngine> engine = Engine(/*max_queue=*/1);
  ASSERT_NE(engine, nullptr);
  Collector c;
  EXPECT_EQ(engine->Submit(Greedy({}, 4, &c)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(engine->Submit(Greedy({1, 9999}, 4, &c)).status().message(),
              HasSubstr("outside the vocabulary"));
  EXPECT_EQ(engine->Submit(Greedy(std::vector<int32_t>(64, 5), 4, &c)).status().code(),
            absl::StatusCode::kOutOfRange);
  BatchRequest bad = Greedy({1, 2}, 4, &c);
  bad.sampling.temp = 0.5f;
  bad.sampling.top_p = 2.0f;
  EXPECT_EQ(engine->Submit(std::move(bad)).status().code(), absl::StatusCode::kInvalidArgument);

  // One slot, a queue of one: the third long request is refused.
  std::vector<std::unique_ptr<Collector>> cs;
  std::vector<absl::Status> got;
  for (int i = 0; i < 3; ++i) {
    cs.push_back(std::make_unique<Collector>());
    BatchRequest r = Greedy({1, 403, 407}, 40, cs.back().get());
    r.ignore_eos = true;
    got.push_back(engine->Submit(std::move(r)).status());
  }
  // The first may already be running; at most two fit.
  int refused = 0;
  for (const absl::Status& s : got) refused += s.code() == absl::StatusCode::kResourceExhausted;
  EXPECT_GE(refused, 1);
  engine->Shutdown();
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i].ok()) cs[i]->Wait();
  }
  EXPECT_EQ(engine->Submit(Greedy({1, 2}, 4, &c)).status().code(), absl::StatusCode::kUnavailable);
}

// Step errors reach every sequence of the step and free their blocks.
TEST_F(BatchEngineTest, NotAPagedGraphIsAnError) {
  Load(2, 4, 64, 8);
  BatchEngine::Shape bad = shape_;
  bad.n_seq = 0;
  EXPECT_FALSE(BatchEngine::Create(exec_.get(), tok_.get(), bad, {}).ok());
}

}  // namespace
}  // namespace vibrant
