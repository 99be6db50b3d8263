#include "runtime/generate.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vibrant {
namespace {

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

std::string_view StopReasonName(StopReason r) {
  switch (r) {
    case StopReason::kEndOfGeneration:
      return "eog";
    case StopReason::kStopString:
      return "stop_string";
    case StopReason::kNPredict:
      return "n_predict";
    case StopReason::kContextFull:
      return "context_full";
    case StopReason::kInterrupted:
      return "interrupted";
  }
  return "?";
}

std::string StopMatcher::Feed(std::string_view piece, bool* stopped) {
  *stopped = false;
  held_.append(piece);
  if (stops_.empty()) {
    std::string out;
    out.swap(held_);
    return out;
  }
  // The earliest completed stop string.
  size_t best = std::string::npos;
  const StopString* hit = nullptr;
  for (const StopString& s : stops_) {
    if (s.text.empty()) continue;
    const size_t at = held_.find(s.text);
    if (at != std::string::npos && at < best) {
      best = at;
      hit = &s;
    }
  }
  if (hit != nullptr) {
    *stopped = true;
    std::string out = held_.substr(0, best);
    if (hit->print) out += hit->text;
    held_.clear();
    return out;
  }
  // Hold back the longest suffix that begins some stop string.
  size_t keep = 0;
  for (const StopString& s : stops_) {
    const size_t max = std::min(s.text.size() - 1, held_.size());
    for (size_t n = max; n > keep; --n) {
      if (held_.compare(held_.size() - n, n, s.text, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::Flush() {
  std::string out;
  out.swap(held_);
  return out;
}

Session::Session(Executor* exec, const Tokenizer* tokenizer, int64_t n_ctx, int64_t max_tokens,
                 int64_t n_vocab, Sampler sampler)
    : exec_(exec),
      tokenizer_(tokenizer),
      n_ctx_(n_ctx),
      max_tokens_(max_tokens),
      n_vocab_(n_vocab),
      sampler_(std::move(sampler)),
      base_bias_(sampler_.params().logit_bias) {}

void Session::Reset() {
  cached_.clear();
  exec_->Reset();
}

absl::StatusOr<absl::Span<const float>> Session::Step(absl::Span<const int32_t> tokens,
                                                      int32_t pos0, bool decode) {
  absl::StatusOr<absl::Span<const float>> out =
      step_ ? step_(tokens, pos0, decode) : exec_->Step(tokens, pos0);
  if (!out.ok()) return out.status();
  if (out->empty() || out->size() % n_vocab_ != 0) {
    return absl::InternalError(absl::StrCat("the step returned ", out->size(),
                                            " logits, not a multiple of n_vocab ", n_vocab_));
  }
  return out->subspan(out->size() - n_vocab_);  // the last token's row
}

absl::StatusOr<GenerateResult> Session::Generate(absl::Span<const int32_t> tokens,
                                                 const GenerateOptions& opts,
                                                 const TokenCallback& on_token) {
  if (tokens.empty()) {
    return absl::InvalidArgumentError(
        "the prompt is empty (and the model adds no BOS token): nothing to continue");
  }
  if (static_cast<int64_t>(tokens.size()) > n_ctx_) {
    return absl::OutOfRangeError(absl::StrCat("the prompt is ", tokens.size(),
                                              " tokens, longer than the context of ", n_ctx_,
                                              " tokens"));
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= n_vocab_) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", t, " is outside the vocabulary of ", n_vocab_));
    }
  }
  auto cancelled = [&] { return opts.cancel != nullptr && opts.cancel->load(); };

  GenerateResult r;
  r.n_prompt = static_cast<int64_t>(tokens.size());
  // The longest common prefix with the cache, leaving at least one token to run.
  size_t reuse = 0;
  while (reuse < cached_.size() && reuse + 1 < tokens.size() && cached_[reuse] == tokens[reuse]) {
    ++reuse;
  }
  cached_.resize(reuse);
  r.n_reused = static_cast<int64_t>(reuse);

  // --ignore-eos: ban every end-of-generation token for this request.
  std::vector<std::pair<int32_t, float>> bias = base_bias_;
  if (opts.ignore_eos) {
    if (eog_ids_.empty()) {
      for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
        if (tokenizer_->IsEndOfGeneration(id)) eog_ids_.push_back(id);
      }
    }
    for (int32_t id : eog_ids_) bias.push_back({id, -std::numeric_limits<float>::infinity()});
  }
  sampler_.SetLogitBias(std::move(bias));

  // Penalty window: the prompt's last tokens.
  sampler_.ResetHistory();
  if (sampler_.modifies_logits()) {
    const int32_t n = sampler_.params().repeat_last_n;
    size_t from = n < 0 || static_cast<size_t>(n) >= tokens.size() ? 0 : tokens.size() - n;
    for (size_t i = from; i < tokens.size(); ++i) sampler_.Accept(tokens[i]);
  }

  // The plan draws the next token itself (a sample op: only the id leaves the
  // device) unless the host must change the logits first (a bias, such as
  // --ignore-eos's ban, or a penalty) or a replaced step (--verify) returns
  // logits: then the host samples from the logits. Both make the same draws.
  const bool device_samples = exec_->samples() && !sampler_.modifies_logits() && !step_;
  // A step that also gives the next token.
  auto step_token = [&](absl::Span<const int32_t> ids, int32_t pos0, bool decode) -> absl::StatusOr<int32_t> {
    if (device_samples) return exec_->StepSample(ids, pos0, sampler_.NextDraw());
    absl::StatusOr<absl::Span<const float>> logits = Step(ids, pos0, decode);
    if (!logits.ok()) return logits.status();
    return sampler_.Sample(*logits);
  };

  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<int32_t> id = -1;
  for (size_t done = reuse; done < tokens.size();) {
    if (cancelled()) {
      r.prefill_seconds = Seconds(std::chrono::steady_clock::now() - t0);
      r.stop = StopReason::kInterrupted;
      return r;
    }
    const size_t n = std::min<size_t>(tokens.size() - done, static_cast<size_t>(max_tokens_));
    // The last chunk's step gives the first token (unless none is wanted).
    if (done + n == tokens.size() && opts.n_predict != 0) {
      id = step_token(tokens.subspan(done, n), static_cast<int32_t>(done), /*decode=*/false);
      if (!id.ok()) return id.status();
    } else {
      absl::StatusOr<absl::Span<const float>> out =
          Step(tokens.subspan(done, n), static_cast<int32_t>(done), /*decode=*/false);
      if (!out.ok()) return out.status();
    }
    cached_.insert(cached_.end(), tokens.begin() + done, tokens.begin() + done + n);
    r.n_prefilled += static_cast<int64_t>(n);
    done += n;
  }
  const auto t1 = std::chrono::steady_clock::now();
  r.prefill_seconds = Seconds(t1 - t0);

  StopMatcher matcher(opts.stops);
  auto finish = [&](StopReason why) {
    r.stop = why;
    std::string rest = matcher.Flush();
    if (!rest.empty()) {
      r.text += rest;
      if (on_token) on_token(TokenEvent{-1, {}, rest});
    }
    r.generate_seconds = Seconds(std::chrono::steady_clock::now() - t1);
    return r;
  };

  while (true) {
    if (opts.n_predict >= 0 && r.n_generated >= opts.n_predict) return finish(StopReason::kNPredict);
    if (!opts.ignore_eos && tokenizer_->IsEndOfGeneration(*id)) {
      return finish(StopReason::kEndOfGeneration);
    }
    sampler_.Accept(*id);
    ++r.n_generated;
    r.tokens.push_back(*id);
    const std::string piece = tokenizer_->TokenToPiece(*id);
    bool stopped = false;
    const std::string shown = matcher.Feed(piece, &stopped);
    r.text += shown;
    const bool go_on = on_token ? on_token(TokenEvent{*id, piece, shown}) : true;
    if (stopped) {
      r.stop = StopReason::kStopString;
      r.generate_seconds = Seconds(std::chrono::steady_clock::now() - t1);
      return r;
    }
    if (!go_on || cancelled()) return finish(StopReason::kInterrupted);
    if (opts.n_predict >= 0 && r.n_generated >= opts.n_predict) return finish(StopReason::kNPredict);
    const int64_t pos = static_cast<int64_t>(cached_.size());
    if (pos >= n_ctx_) return finish(StopReason::kContextFull);
    const int32_t next[1] = {*id};
    id = step_token(absl::Span<const int32_t>(next, 1), static_cast<int32_t>(pos), /*decode=*/true);
    if (!id.ok()) return id.status();
    cached_.push_back(next[0]);
  }
}

}  // namespace vibrant
