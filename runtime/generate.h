// The generation loop: prefill a prompt (reusing what the KV cache already
// holds), then sample, stream and feed back one token at a time until a stop
// condition. vibrant-run, the public library (include/vibrant/vibrant.h) and
// its conversation mode all generate through Session::Generate.
//
// KV-cache reuse. A Session remembers which tokens the cache holds, in order.
// Generate takes the WHOLE token sequence of the request (for a chat: the
// rendered conversation so far); the longest prefix it shares with the cache
// is kept and only the rest is prefilled (at least one token always is: its
// logits start the generation). Attention reads cache rows 0..pos, so
// rewriting from a position on is all a "rollback" needs.
//
// Stop conditions, checked in this order after each sampled token:
//   eog           an end-of-generation token (not emitted; unless ignore_eos)
//   stop_string   the generated text contains one of `stops`; text from the
//                 stop string on is not emitted, except that a stop string
//                 with print = true (llama-cli's -r/--reverse-prompt) is
//   n_predict     n_predict tokens were generated
//   context_full  the next token would not fit the context
//   interrupted   the token callback returned false, or `cancel` was set
//                 (checked before every step, prefill chunks included)
// While the generated text ends with the beginning of a stop string, that
// part is held back; it is released when it stops matching, or at the end.
//
// Penalties: before generating, the sampler's history is reset to the last
// repeat_last_n tokens of the prompt (llama-cli accepts the prompt into the
// penalty window), then every generated token is accepted.
//
// Where tokens are drawn: a program that samples (Executor::samples(): the
// sample op, vibrantc compile --gpu-sampling, the default for cuda plans)
// draws each token where the logits are and returns only its id
// (Executor::StepSample with Sampler::NextDraw); with a logit bias
// (--ignore-eos) or a penalty, or a replaced step (set_step), the step
// returns the logits and the host samples. The draws are the same either way
// (runtime/sampler.h: counter-based).
#ifndef VIBRANT_RUNTIME_GENERATE_H_
#define VIBRANT_RUNTIME_GENERATE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "frontends/tokenizer/tokenizer.h"
#include "runtime/backend.h"
#include "runtime/sampler.h"

namespace vibrant {

enum class StopReason { kEndOfGeneration, kStopString, kNPredict, kContextFull, kInterrupted };
// "eog", "stop_string", "n_predict", "context_full", "interrupted".
std::string_view StopReasonName(StopReason r);

struct StopString {
  std::string text;
  bool print = false;  // emit the stop string itself (llama-cli's reverse prompt)
};

struct GenerateOptions {
  int64_t n_predict = -1;  // tokens to generate; < 0: until another stop
  // End-of-generation tokens are banned (a -inf logit bias, as llama.cpp's
  // --ignore-eos) and do not stop generation.
  bool ignore_eos = false;
  std::vector<StopString> stops;
  const std::atomic<bool>* cancel = nullptr;  // set from a signal handler: stop soon
};

// One sampled token, or (token == -1) the final release of held-back text.
struct TokenEvent {
  int32_t token = -1;
  std::string_view piece;  // the token's text as detokenized (raw bytes)
  std::string_view text;   // text released for display now (may be empty)
};
// Returns false to stop generating (StopReason::kInterrupted).
using TokenCallback = std::function<bool(const TokenEvent&)>;

struct GenerateResult {
  int64_t n_prompt = 0;     // tokens of the request
  int64_t n_reused = 0;     // of those, already in the KV cache
  int64_t n_prefilled = 0;  // of those, computed now (n_prompt - n_reused)
  int64_t n_generated = 0;  // tokens sampled and emitted
  std::vector<int32_t> tokens;  // the generated tokens
  std::string text;             // the released text (what a user saw)
  double prefill_seconds = 0;
  double generate_seconds = 0;
  StopReason stop = StopReason::kNPredict;
};

class Session {
 public:
  // `exec` and `tokenizer` must outlive the session. n_ctx: the KV cache's
  // length; max_tokens: the most tokens one step takes (prefill chunks);
  // n_vocab: the logits' row length.
  Session(Executor* exec, const Tokenizer* tokenizer, int64_t n_ctx, int64_t max_tokens,
          int64_t n_vocab, Sampler sampler);

  // See the header comment. Fails on an empty request, one longer than the
  // context, or an executor/sampler error. The callback may be empty.
  absl::StatusOr<GenerateResult> Generate(absl::Span<const int32_t> tokens,
                                          const GenerateOptions& opts,
                                          const TokenCallback& on_token);

  // The tokens whose keys and values the cache holds, in position order.
  const std::vector<int32_t>& cached_tokens() const { return cached_; }
  // Forgets the cache's contents (the next request prefills everything).
  void Reset();

  Sampler& sampler() { return sampler_; }
  int64_t n_ctx() const { return n_ctx_; }

  // Replaces Executor::Step (vibrant-run --verify runs steps op by op).
  using StepFn = std::function<absl::StatusOr<absl::Span<const float>>(
      absl::Span<const int32_t> tokens, int32_t pos0, bool decode)>;
  void set_step(StepFn step) { step_ = std::move(step); }

 private:
  absl::StatusOr<absl::Span<const float>> Step(absl::Span<const int32_t> tokens, int32_t pos0,
                                               bool decode);

  Executor* exec_;
  const Tokenizer* tokenizer_;
  int64_t n_ctx_, max_tokens_, n_vocab_;
  Sampler sampler_;
  std::vector<int32_t> cached_;
  StepFn step_;
  std::vector<std::pair<int32_t, float>> base_bias_;  // the sampler's own logit bias
  std::vector<int32_t> eog_ids_;                      // filled on first use
};

// The stop-string bookkeeping of Generate, on its own for tests: feed text,
// get what may be shown now.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<StopString> stops) : stops_(std::move(stops)) {}
  // Appends `piece`; returns the text that can be released now. Sets
  // *stopped when a stop string completed (the text after it is dropped).
  std::string Feed(std::string_view piece, bool* stopped);
  // Everything still held back (at the end of generation).
  std::string Flush();

 private:
  std::vector<StopString> stops_;
  std::string held_;
};

}  // namespace vibrant

#endif  // VIBRANT_RUNTIME_GENERATE_H_
