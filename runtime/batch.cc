#include "runtime/batch.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vibrant {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

KvBlockPool::KvBlockPool(int32_t n_blocks) : n_blocks_(n_blocks) {
  free_.reserve(n_blocks);
  for (int32_t b = n_blocks - 1; b >= 0; --b) free_.push_back(b);  // block 0 on top
}

bool KvBlockPool::Allocate(int32_t n, std::vector<int32_t>* out) {
  if (n < 0 || n > free_blocks()) return false;
  for (int32_t i = 0; i < n; ++i) {
    out->push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void KvBlockPool::Free(const std::vector<int32_t>& blocks) {
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) free_.push_back(*it);
}

struct BatchEngine::Seq {
  uint64_t id = 0;
  BatchRequest req;
  Sampler sampler;
  StopMatcher matcher;
  std::vector<int32_t> tokens;  // prompt + generated
  int64_t n_prompt = 0;
  int64_t n_computed = 0;       // tokens whose K/V the cache holds
  int64_t n_generated = 0;
  int32_t slot = -1;
  std::vector<int32_t> blocks;
  bool cancelled = false;
  bool done = false;
  Clock::time_point submitted, first_step, first_token;
  bool started = false, sampled_once = false;

  Seq(BatchRequest r, Sampler s) : req(std::move(r)), sampler(std::move(s)), matcher(req.stops) {}
};

BatchEngine::BatchEngine(Executor* exec, const Tokenizer* tokenizer, Shape shape,
                         BatchEngineOptions opts)
    : exec_(exec),
      tokenizer_(tokenizer),
      shape_(shape),
      opts_(opts),
      pool_(static_cast<int32_t>(shape.n_blocks)) {
  for (int32_t s = static_cast<int32_t>(shape.n_seq) - 1; s >= 0; --s) free_slots_.push_back(s);
  block_table_.assign(shape.n_seq * shape.max_blocks, 0);
  for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
    if (tokenizer_->IsEndOfGeneration(id)) eog_ids_.push_back(id);
  }
  stats_.kv_blocks_total = shape.n_blocks;
  stats_.n_seq = shape.n_seq;
  stats_.block_size = shape.block_size;
}

absl::StatusOr<std::unique_ptr<BatchEngine>> BatchEngine::Create(Executor* exec,
                                                                const Tokenizer* tokenizer,
                                                                Shape shape,
                                                                BatchEngineOptions opts) {
  if (exec == nullptr || tokenizer == nullptr) {
    return absl::InvalidArgumentError("BatchEngine: null executor or tokenizer");
  }
  if (shape.n_seq < 1 || shape.block_size < 1 || shape.max_blocks < 1 || shape.n_blocks < 1 ||
      shape.max_tokens < 1 || shape.n_vocab < 1 || shape.n_blocks > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BatchEngine: the graph is not a paged graph (n_seq ", shape.n_seq, ", block_size ",
        shape.block_size, ", max_blocks ", shape.max_blocks, ", blocks ", shape.n_blocks,
        ", max_tokens ", shape.max_tokens, ", n_vocab ", shape.n_vocab, ")"));
  }
  if (opts.max_queue < 0) return absl::InvalidArgumentError("BatchEngine: max_queue < 0");
  std::unique_ptr<BatchEngine> e(new BatchEngine(exec, tokenizer, shape, opts));
  e->exec_->Reset();
  e->thread_ = std::thread([p = e.get()] { p->Loop(); });
  return e;
}

BatchEngine::~BatchEngine() { Shutdown(); }

absl::StatusOr<uint64_t> BatchEngine::Submit(BatchRequest request) {
  auto reject = [&](absl::Status s) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.requests_rejected;
    return s;
  };
  if (request.prompt.empty()) {
    return reject(absl::InvalidArgumentError("the prompt is empty: nothing to continue"));
  }
  for (int32_t t : request.prompt) {
    if (t < 0 || t >= shape_.n_vocab) {
      return reject(absl::InvalidArgumentError(
          absl::StrCat("token id ", t, " is outside the vocabulary of ", shape_.n_vocab)));
    }
  }
  const int64_t n = static_cast<int64_t>(request.prompt.size());
  const int64_t ctx = std::min(context_per_sequence(), shape_.n_blocks * shape_.block_size);
  if (n >= ctx) {
    return reject(absl::OutOfRangeError(
        absl::StrCat("the prompt is ", n, " tokens; a sequence holds at most ", ctx,
                     " tokens (prompt and completion), so it must be shorter")));
  }
  if (request.top_logprobs > 20) {
    return reject(absl::InvalidArgumentError("top_logprobs must be at most 20"));
  }
  SamplerParams sp = request.sampling;
  absl::StatusOr<Sampler> sampler = Sampler::Create(sp);
  if (!sampler.ok()) return reject(sampler.status());
  // --ignore-eos: end-of-generation tokens banned (as Session::Generate).
  if (request.ignore_eos) {
    std::vector<std::pair<int32_t, float>> bias = sp.logit_bias;
    for (int32_t id : eog_ids_) bias.push_back({id, -std::numeric_limits<float>::infinity()});
    sampler->SetLogitBias(std::move(bias));
  }
  // The penalty window starts with the prompt's last tokens.
  sampler->ResetHistory();
  if (sampler->modifies_logits()) {
    const int32_t w = sampler->params().repeat_last_n;
    const size_t from = w < 0 || static_cast<size_t>(w) >= request.prompt.size()
                            ? 0
                            : request.prompt.size() - static_cast<size_t>(w);
    for (size_t i = from; i < request.prompt.size(); ++i) sampler->Accept(request.prompt[i]);
  }
  auto seq = std::make_unique<Seq>(std::move(request), *std::move(sampler));
  seq->tokens = seq->req.prompt;
  seq->n_prompt = n;
  seq->submitted = Clock::now();

  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) {
    ++stats_.requests_rejected;
    return absl::UnavailableError("the server is shutting down");
  }
  if (static_cast<int64_t>(queue_.size()) >= opts_.max_queue &&
      static_cast<int64_t>(running_.size()) + static_cast<int64_t>(queue_.size()) >= shape_.n_seq) {
    ++stats_.requests_rejected;
    return absl::ResourceExhaustedError(absl::StrCat(
        "the queue is full (", queue_.size(), " requests waiting, ", running_.size(),
        " running); try again later"));
  }
  seq->id = next_id_++;
  const uint64_t id = seq->id;
  queue_.push_back(std::move(seq));
  ++stats_.requests_submitted;
  stats_.queued = static_cast<int64_t>(queue_.size());
  cv_.notify_all();
  return id;
}

void BatchEngine::Cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  cancels_.push_back(id);
  cv_.notify_all();
}

void BatchEngine::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  // Whatever is left ends now (on this thread: the engine's has stopped).
  std::vector<std::unique_ptr<Seq>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& s : queue_) left.push_back(std::move(s));
    queue_.clear();
  }
  for (auto& s : left) Finish(*s, StopReason::kInterrupted, absl::UnavailableError("the server is shutting down"));
  while (true) {
    Seq* s = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (running_.empty()) break;
      s = running_.back().get();
    }
    Finish(*s, StopReason::kInterrupted, absl::UnavailableError("the server is shutting down"));
  }
}

BatchStats BatchEngine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void BatchEngine::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty() || !running_.empty() || !cancels_.empty(); });
      if (stop_) return;
    }
    StepOnce();
  }
}

void BatchEngine::ReleaseSlot(Seq& s) {
  pool_.Free(s.blocks);
  s.blocks.clear();
  if (s.slot >= 0) {
    std::fill(block_table_.begin() + s.slot * shape_.max_blocks,
              block_table_.begin() + (s.slot + 1) * shape_.max_blocks, 0);
    free_slots_.push_back(s.slot);
    s.slot = -1;
  }
  s.n_computed = 0;
}

void BatchEngine::Finish(Seq& s, StopReason why, absl::Status status) {
  if (s.done) return;
  s.done = true;
  BatchEvent ev;
  ev.kind = BatchEvent::Kind::kDone;
  ev.stop = why;
  ev.status = std::move(status);
  if (why != StopReason::kStopString) ev.text = s.matcher.Flush();
  ev.n_prompt = s.n_prompt;
  ev.n_generated = s.n_generated;
  if (s.started) ev.queue_seconds = Seconds(s.first_step - s.submitted);
  if (s.sampled_once) ev.prefill_seconds = Seconds(s.first_token - s.first_step);
  // The blocks and the statistics first, then the event: whoever waits for
  // kDone sees the sequence gone from Stats() (and /metrics).
  ReleaseSlot(s);
  {
    std::lock_guard<std::mutex> lock(mu_);
    FinishLocked(s, why);
  }
  if (s.req.on_event) s.req.on_event(ev);  // s lives in finished_ until the next step
}

void BatchEngine::FinishLocked(Seq& s, StopReason why) {
  ++stats_.requests_finished;
  if (why == StopReason::kInterrupted) ++stats_.requests_cancelled;
  stats_.prompt_tokens += s.n_prompt;
  // Move it from wherever it is to finished_ (freed at the next step: the
  // caller may still hold a pointer).
  auto drop = [&](auto& list) {
    for (auto it = list.begin(); it != list.end(); ++it) {
      if (it->get() == &s) {
        finished_.push_back(std::move(*it));
        list.erase(it);
        return true;
      }
    }
    return false;
  };
  if (!drop(running_)) drop(queue_);
  stats_.running = static_cast<int64_t>(running_.size());
  stats_.queued = static_cast<int64_t>(queue_.size());
  stats_.kv_blocks_used = pool_.total_blocks() - pool_.free_blocks();
}

bool BatchEngine::EnsureBlocks(Seq& s, int64_t upto_positions) {
  const int64_t need = CeilDiv(upto_positions, shape_.block_size) - static_cast<int64_t>(s.blocks.size());
  if (need <= 0) return true;
  if (static_cast<int64_t>(s.blocks.size()) + need > shape_.max_blocks) return false;
  const size_t had = s.blocks.size();
  if (!pool_.Allocate(static_cast<int32_t>(need), &s.blocks)) return false;
  for (size_t i = had; i < s.blocks.size(); ++i) {
    block_table_[s.slot * shape_.max_blocks + i] = s.blocks[i];
  }
  return true;
}

void BatchEngine::Preempt(Seq& s) {
  ReleaseSlot(s);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = running_.begin(); it != running_.end(); ++it) {
    if (it->get() == &s) {
      std::unique_ptr<Seq> p = std::move(*it);
      running_.erase(it);
      queue_.push_front(std::move(p));
      break;
    }
  }
  ++stats_.requests_preempted;
  stats_.running = static_cast<int64_t>(running_.size());
  stats_.queued = static_cast<int64_t>(queue_.size());
}

void BatchEngine::Sample(Seq& s, const float* logits) {
  if (s.req.n_predict >= 0 && s.n_generated >= s.req.n_predict) {  // n_predict 0
    Finish(s, StopReason::kNPredict);
    return;
  }
  const absl::Span<const float> row(logits, shape_.n_vocab);
  absl::StatusOr<int32_t> id = s.sampler.Sample(row);
  if (!id.ok()) {
    Finish(s, StopReason::kInterrupted, id.status());
    return;
  }
  if (!s.sampled_once) {
    s.sampled_once = true;
    s.first_token = Clock::now();
  }
  if (!s.req.ignore_eos && tokenizer_->IsEndOfGeneration(*id)) {
    Finish(s, StopReason::kEndOfGeneration);
    return;
  }
  BatchEvent ev;
  ev.kind = BatchEvent::Kind::kToken;
  ev.token = *id;
  if (s.req.top_logprobs >= 0) {
    // log_softmax of the model's row (double sums).
    float m = -std::numeric_limits<float>::infinity();
    for (float x : row) {
      if (std::isfinite(x)) m = std::max(m, x);
    }
    double sum = 0;
    for (float x : row) {
      if (std::isfinite(x)) sum += std::exp(static_cast<double>(x) - m);
    }
    const double lse = m + std::log(sum);
    auto lp = [&](int32_t t) {
      return std::isfinite(row[t]) ? static_cast<float>(row[t] - lse)
                                   : -std::numeric_limits<float>::infinity();
    };
    ev.logprob = lp(*id);
    const int k = std::min<int>(s.req.top_logprobs, static_cast<int>(shape_.n_vocab));
    std::vector<int32_t> ids(shape_.n_vocab);
    for (int32_t i = 0; i < shape_.n_vocab; ++i) ids[i] = i;
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
      const float la = lp(a), lb = lp(b);
      return la != lb ? la > lb : a < b;
    });
    for (int i = 0; i < k; ++i) ev.top.push_back({ids[i], lp(ids[i])});
  }
  s.sampler.Accept(*id);
  s.tokens.push_back(*id);
  ++s.n_generated;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.generated_tokens;
  }
  ev.piece = tokenizer_->TokenToPiece(*id);
  bool stopped = false;
  ev.text = s.matcher.Feed(ev.piece, &stopped);
  const bool go_on = s.req.on_event ? s.req.on_event(ev) : true;
  if (stopped) {
    Finish(s, StopReason::kStopString);
    return;
  }
  if (!go_on || s.cancelled) {
    Finish(s, StopReason::kInterrupted);
    return;
  }
  if (s.req.n_predict >= 0 && s.n_generated >= s.req.n_predict) {
    Finish(s, StopReason::kNPredict);
    return;
  }
  // The new token goes at position tokens.size() - 1.
  if (static_cast<int64_t>(s.tokens.size()) - 1 >= context_per_sequence()) {
    Finish(s, StopReason::kContextFull);
  }
}

bool BatchEngine::StepOnce() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished_.clear();
  }
  const Clock::time_point now = Clock::now();
  // Cancellations and deadlines.
  std::vector<Seq*> cancelled, expired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint64_t id : cancels_) {
      for (auto& s : running_) {
        if (s->id == id) s->cancelled = true;
      }
      for (auto& s : queue_) {
        if (s->id == id) s->cancelled = true;
      }
    }
    cancels_.clear();
    for (auto* list : {&running_}) {
      for (auto& s : *list) {
        if (s->cancelled) cancelled.push_back(s.get());
        else if (now >= s->req.deadline) expired.push_back(s.get());
      }
    }
    for (auto& s : queue_) {
      if (s->cancelled) cancelled.push_back(s.get());
      else if (now >= s->req.deadline) expired.push_back(s.get());
    }
  }
  for (Seq* s : cancelled) Finish(*s, StopReason::kInterrupted);
  for (Seq* s : expired) {
    Finish(*s, StopReason::kInterrupted,
           absl::DeadlineExceededError("the request timed out (--timeout)"));
  }

  // Admission: queued requests take free slots, in order, while the pool
  // holds the blocks of their pending tokens.
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (!queue_.empty() && !free_slots_.empty()) {
      Seq& s = *queue_.front();
      const int64_t need = CeilDiv(static_cast<int64_t>(s.tokens.size()), shape_.block_size);
      if (need > pool_.free_blocks()) break;
      s.slot = free_slots_.back();
      free_slots_.pop_back();
      s.n_computed = 0;
      if (!EnsureBlocks(s, static_cast<int64_t>(s.tokens.size()))) {  // cannot fail: checked
        free_slots_.push_back(s.slot);
        s.slot = -1;
        break;
      }
      running_.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    stats_.running = static_cast<int64_t>(running_.size());
    stats_.queued = static_cast<int64_t>(queue_.size());
    stats_.kv_blocks_used = pool_.total_blocks() - pool_.free_blocks();
  }

  // Snapshot of the running sequences in admission order (only this thread
  // changes running_).
  std::vector<Seq*> run;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& s : running_) run.push_back(s.get());
  }
  if (run.empty()) return false;

  // Decoding sequences (one pending token) need the block of their next
  // position; when the pool is empty the newest other sequence is preempted.
  for (size_t i = 0; i < run.size(); ++i) {
    Seq* s = run[i];
    if (s == nullptr || s->done) continue;
    const int64_t pending = static_cast<int64_t>(s->tokens.size()) - s->n_computed;
    if (pending != 1) continue;
    while (!EnsureBlocks(*s, s->n_computed + 1)) {
      if (static_cast<int64_t>(s->blocks.size()) >= shape_.max_blocks) {
        Finish(*s, StopReason::kContextFull);
        break;
      }
      Seq* victim = nullptr;
      size_t vi = 0;
      for (size_t j = run.size(); j-- > 0;) {
        if (run[j] != nullptr && run[j] != s && !run[j]->done) {
          victim = run[j];
          vi = j;
          break;
        }
      }
      if (victim == nullptr) {  // alone and the pool is empty: its context is the pool
        Finish(*s, StopReason::kContextFull);
        break;
      }
      Preempt(*victim);
      run[vi] = nullptr;
    }
  }

  // The step: decode tokens first, then prefill chunks, within max_tokens.
  struct Part {
    Seq* s;
    int64_t from, n;
  };
  std::vector<Part> parts;
  int64_t budget = shape_.max_tokens;
  for (int pass = 0; pass < 2 && budget > 0; ++pass) {
    for (Seq* s : run) {
      if (s == nullptr || s->done || budget == 0) continue;
      const int64_t pending = static_cast<int64_t>(s->tokens.size()) - s->n_computed;
      if (pending <= 0 || (pass == 0) != (pending == 1)) continue;
      const int64_t n = std::min(pending, budget);
      parts.push_back({s, s->n_computed, n});
      budget -= n;
    }
  }
  if (parts.empty()) return false;

  std::vector<int32_t> tokens, positions, seq_ids;
  for (const Part& p : parts) {
    if (!p.s->started) {
      p.s->started = true;
      p.s->first_step = Clock::now();
    }
    for (int64_t i = 0; i < p.n; ++i) {
      tokens.push_back(p.s->tokens[p.from + i]);
      positions.push_back(static_cast<int32_t>(p.from + i));
      seq_ids.push_back(p.s->slot);
    }
  }
  BatchInputs in;
  in.tokens = tokens;
  in.positions = positions;
  in.seq_ids = seq_ids;
  in.block_table = block_table_;
  const Clock::time_point t0 = Clock::now();
  absl::StatusOr<absl::Span<const float>> logits = exec_->StepBatch(in);
  const double dt = Seconds(Clock::now() - t0);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.steps;
    stats_.step_seconds_sum += dt;
    stats_.last_step_seconds = dt;
    stats_.last_step_tokens = static_cast<int64_t>(tokens.size());
    for (const Part& p : parts) {
      if (p.n > 1 || static_cast<int64_t>(p.s->tokens.size()) - p.from > 1) stats_.prefill_tokens += p.n;
    }
  }
  if (!logits.ok() ||
      logits->size() != tokens.size() * static_cast<size_t>(shape_.n_vocab)) {
    const absl::Status st = logits.ok() ? absl::InternalError(absl::StrCat(
                                              "the step returned ", logits->size(), " logits for ",
                                              tokens.size(), " tokens"))
                                        : logits.status();
    for (const Part& p : parts) Finish(*p.s, StopReason::kInterrupted, st);
    return true;
  }
  int64_t row = 0;
  for (const Part& p : parts) {
    row += p.n;
    p.s->n_computed += p.n;
    if (p.s->n_computed == static_cast<int64_t>(p.s->tokens.size())) {
      Sample(*p.s, logits->data() + (row - 1) * shape_.n_vocab);
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.kv_blocks_used = pool_.total_blocks() - pool_.free_blocks();
  }
  return true;
}

}  // namespace vibrant
