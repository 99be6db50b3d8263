// Continuous batching: many generation requests share one executor whose
// graph is paged (frontends/lower/lower.h, LowerOptions::n_seq > 0). Every
// step takes tokens of up to n_seq sequences at once: one decode token of each
// generating sequence, then prefill chunks of the sequences still reading
// their prompt, within the step's token budget (the graph's max_tokens).
// Sequences join and leave the running batch between any two steps.
//
// The KV cache is a pool of fixed-size blocks (KvBlockPool); a sequence holds
// the blocks its positions fill, in order (its block table row), takes a new
// one when it crosses into the next block, and gives them all back when it
// ends, is cancelled or fails. Requests that do not fit (no free slot, or not
// enough free blocks for their prompt) wait in a FIFO queue of bounded length
// (Submit fails with ResourceExhausted when it is full). When a generating
// sequence needs a block and none is free, the most recently admitted other
// sequence is preempted: its blocks are freed and it goes back to the head of
// the queue with its tokens so far, to be prefilled again later (vLLM's
// recompute preemption); its sampler keeps its state, so greedy and seeded
// outputs do not change.
//
// Each sequence samples with its own Sampler (runtime/sampler.h) and stops as
// Session::Generate does (runtime/generate.h): end of generation, a stop
// string (held back while it may be starting), n_predict, its context (the
// graph's max_blocks * block_size positions), cancellation or a deadline.
// Events are delivered through the request's callback on the engine's
// thread; a callback returning false cancels the sequence.
#ifndef VIBRANT_RUNTIME_BATCH_H_
#define VIBRANT_RUNTIME_BATCH_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "frontends/tokenizer/tokenizer.h"
#include "runtime/backend.h"
#include "runtime/generate.h"
#include "runtime/sampler.h"

namespace vibrant {

// Free-list allocator of KV blocks 0..n_blocks-1.
class KvBlockPool {
 public:
  explicit KvBlockPool(int32_t n_blocks);
  // n blocks, or none (false) when fewer are free.
  bool Allocate(int32_t n, std::vector<int32_t>* out);
  void Free(const std::vector<int32_t>& blocks);
  int32_t free_blocks() const { return static_cast<int32_t>(free_.size()); }
  int32_t total_blocks() const { return n_blocks_; }

 private:
  int32_t n_blocks_;
  std::vector<int32_t> free_;  // a stack: recently freed blocks are reused first
};

struct TopLogprob {
  int32_t token = -1;
  float logprob = 0;
};

// What a request's callback receives.
struct BatchEvent {
  enum class Kind { kToken, kDone };
  Kind kind = Kind::kToken;
  // kToken: the sampled token, its bytes and the text released now (may be
  // empty while a stop string might be starting; see generate.h).
  int32_t token = -1;
  std::string piece;
  std::string text;
  float logprob = 0;                 // log p(token) under the model (before sampling filters)
  std::vector<TopLogprob> top;       // the top_logprobs most likely tokens
  // kDone: why it stopped, what was held back until now (in `text`), and the
  // counts. An error (e.g. a failed step) has stop kInterrupted and !status.ok().
  StopReason stop = StopReason::kNPredict;
  absl::Status status;
  int64_t n_prompt = 0;
  int64_t n_generated = 0;
  double queue_seconds = 0;    // submitted -> first step
  double prefill_seconds = 0;  // first step -> first token (time to first token - queue)
};
// Called on the engine's thread; return false to cancel the sequence (a kDone
// event with StopReason::kInterrupted follows). Must not call back into the
// engine's Submit/Cancel while holding locks the engine thread could need.
using BatchCallback = std::function<bool(const BatchEvent&)>;

struct BatchRequest {
  std::vector<int32_t> prompt;  // the whole prompt, BOS included
  SamplerParams sampling;
  int64_t n_predict = -1;  // < 0: until another stop
  bool ignore_eos = false;
  std::vector<StopString> stops;
  int top_logprobs = -1;  // < 0: no logprobs; 0..20: the chosen token's, and that many alternatives
  // Stop (kInterrupted) when this time has passed; default: never.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  BatchCallback on_event;
};

struct BatchEngineOptions {
  int64_t max_queue = 64;  // requests waiting beyond the running ones
};

// Counters and gauges for /metrics.
struct BatchStats {
  int64_t requests_submitted = 0;
  int64_t requests_finished = 0;   // every kDone, whatever the reason
  int64_t requests_cancelled = 0;  // kInterrupted (callback false, Cancel, deadline)
  int64_t requests_rejected = 0;   // Submit failed: full queue or bad request
  int64_t requests_preempted = 0;
  int64_t prompt_tokens = 0;      // prompt tokens of finished requests
  int64_t generated_tokens = 0;   // sampled tokens
  int64_t prefill_tokens = 0;     // tokens run as prefill (recomputation included)
  int64_t steps = 0;
  double step_seconds_sum = 0;
  double last_step_seconds = 0;
  int64_t last_step_tokens = 0;
  int64_t running = 0;   // sequences holding a slot
  int64_t queued = 0;    // waiting
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;
  int64_t n_seq = 0;
  int64_t block_size = 0;
};

class BatchEngine {
 public:
  // `exec` runs a paged graph of n_seq slots, blocks of block_size rows,
  // max_blocks per sequence, n_blocks in the pool (the caches' rows /
  // block_size), steps of at most max_tokens tokens, n_vocab logits a row.
  // exec and tokenizer must outlive the engine. Starts the engine's thread.
  struct Shape {
    int64_t n_seq = 0, block_size = 0, max_blocks = 0, n_blocks = 0, max_tokens = 0, n_vocab = 0;
  };
  static absl::StatusOr<std::unique_ptr<BatchEngine>> Create(Executor* exec,
                                                            const Tokenizer* tokenizer,
                                                            Shape shape, BatchEngineOptions opts);
  ~BatchEngine();  // Shutdown()

  // Queues a request; returns its id. Fails (and calls nothing) on an empty
  // prompt, a token outside the vocabulary, a prompt that leaves no room to
  // generate in one sequence's context (OutOfRange), bad sampling parameters
  // (InvalidArgument), a full queue (ResourceExhausted) or after Shutdown
  // (Unavailable).
  absl::StatusOr<uint64_t> Submit(BatchRequest request);
  // Cancels a request (queued or running): it ends with kInterrupted and its
  // blocks are freed before the next step. Unknown ids are ignored.
  void Cancel(uint64_t id);
  // Ends every request (kInterrupted, Unavailable status) and stops the thread.
  void Shutdown();

  BatchStats Stats() const;
  const Shape& shape() const { return shape_; }
  // Positions one sequence can hold (its prompt and generated tokens).
  int64_t context_per_sequence() const { return shape_.max_blocks * shape_.block_size; }

 private:
  struct Seq;
  BatchEngine(Executor* exec, const Tokenizer* tokenizer, Shape shape, BatchEngineOptions opts);
  void Loop();
  // One scheduling decision + step + sampling; false when there was nothing to do.
  bool StepOnce();
  void Finish(Seq& s, StopReason why, absl::Status status = absl::OkStatus());
  void FinishLocked(Seq& s, StopReason why);  // Finish's bookkeeping, under mu_
  void ReleaseSlot(Seq& s);
  bool EnsureBlocks(Seq& s, int64_t upto_positions);
  void Preempt(Seq& s);
  void Sample(Seq& s, const float* logits);

  Executor* exec_;
  const Tokenizer* tokenizer_;
  Shape shape_;
  BatchEngineOptions opts_;
  std::vector<int32_t> eog_ids_;

  mutable std::mutex mu_;  // guards everything below that the API touches
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t next_id_ = 1;
  std::deque<std::unique_ptr<Seq>> queue_;  // waiting, in order
  std::vector<std::unique_ptr<Seq>> running_;  // holding a slot (engine thread adds/removes under mu_)
  std::vector<std::unique_ptr<Seq>> finished_;  // done, freed at the next step
  std::vector<uint64_t> cancels_;
  BatchStats stats_;

  // Engine-thread state.
  KvBlockPool pool_;
  std::vector<int32_t> free_slots_;
  std::vector<int32_t> block_table_;  // [n_seq, max_blocks]
  std::thread thread_;
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_BATCH_H_
