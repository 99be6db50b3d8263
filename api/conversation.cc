#include "api/conversation.h"

#include <algorithm>
#include <cstddef>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vibrant {

absl::StatusOr<chat::ChatTemplate> ResolveChatTemplate(const std::string& model_path,
                                                       const std::string& gguf_template,
                                                       const std::string& override,
                                                       const Tokenizer& tokenizer,
                                                       std::string* note) {
  absl::StatusOr<chat::ChatTemplate> t;
  if (!override.empty()) {
    t = chat::TemplateFromNameOrText(override);
  } else if (gguf_template.empty()) {
    t = chat::TemplateFromName("chatml");
    if (note != nullptr) {
      *note = absl::StrCat(model_path,
                           " has no chat template (tokenizer.chat_template); using chatml "
                           "(choose another with --chat-template NAME)");
    }
  } else {
    t = chat::DetectTemplate(gguf_template, absl::StrCat(model_path, ": tokenizer.chat_template"));
  }
  if (!t.ok()) return t.status();
  if (tokenizer.bos_id() >= 0) t->bos_token = tokenizer.TokenText(tokenizer.bos_id());
  if (tokenizer.eos_id() >= 0) t->eos_token = tokenizer.TokenText(tokenizer.eos_id());
  return t;
}

Conversation::Conversation(Session* session, const Tokenizer* tokenizer, chat::ChatTemplate tmpl)
    : session_(session), tokenizer_(tokenizer), tmpl_(std::move(tmpl)) {
  if (tmpl_.bos_token.empty() && tokenizer_->bos_id() >= 0) {
    tmpl_.bos_token = tokenizer_->TokenText(tokenizer_->bos_id());
  }
  if (tmpl_.eos_token.empty() && tokenizer_->eos_id() >= 0) {
    tmpl_.eos_token = tokenizer_->TokenText(tokenizer_->eos_id());
  }
}

void Conversation::Clear() {
  messages_.clear();
  chunks_.clear();
  session_->Reset();
}

absl::StatusOr<std::string> Conversation::RenderPrompt() const {
  absl::StatusOr<std::string> text = chat::Render(tmpl_, messages_, /*add_assistant=*/true);
  if (!text.ok()) return text.status();
  if (tokenizer_->add_bos()) return chat::StripLeadingBos(*std::move(text), tmpl_.bos_token);
  return text;
}

absl::StatusOr<std::vector<int32_t>> Conversation::PromptTokens(std::vector<Chunk>* chunks) const {
  absl::StatusOr<std::string> prompt = RenderPrompt();
  if (!prompt.ok()) return prompt.status();
  // Keep the chunks whose text continues to match the new rendering.
  size_t matched = 0, keep = 0;
  while (keep < chunks_.size() &&
         prompt->compare(matched, chunks_[keep].text.size(), chunks_[keep].text) == 0 &&
         matched + chunks_[keep].text.size() <= prompt->size()) {
    matched += chunks_[keep].text.size();
    ++keep;
  }
  chunks->assign(chunks_.begin(), chunks_.begin() + keep);
  const std::string rest = prompt->substr(matched);
  if (!rest.empty()) {
    // BOS (as the tokenizer's metadata says) only at the very start.
    absl::StatusOr<std::vector<int32_t>> ids =
        tokenizer_->Encode(rest, /*add_special=*/chunks->empty(), /*parse_special=*/true);
    if (!ids.ok()) return ids.status();
    chunks->push_back({rest, *std::move(ids)});
  }
  std::vector<int32_t> tokens;
  for (const Chunk& c : *chunks) tokens.insert(tokens.end(), c.tokens.begin(), c.tokens.end());
  return tokens;
}

absl::StatusOr<GenerateResult> Conversation::Send(const std::string& user_text,
                                                  const GenerateOptions& opts,
                                                  const TokenCallback& on_token) {
  const std::vector<chat::Message> before = messages_;
  messages_.push_back({"user", user_text});
  last_dropped_ = 0;
  auto fail = [&](absl::Status s) {
    messages_ = before;
    last_dropped_ = 0;
    return s;
  };
  std::vector<Chunk> chunks;
  absl::StatusOr<std::vector<int32_t>> tokens = PromptTokens(&chunks);
  if (!tokens.ok()) return fail(tokens.status());
  // Room for the reply: its -n, at most half the context, or a quarter of
  // the context when it is unbounded. With context shifting on, the oldest
  // turns (after the system messages) leave until the conversation and that
  // room fit; the next step prefills from where the text changed.
  const int64_t n_ctx = session_->n_ctx();
  const int64_t room = opts.n_predict > 0 ? std::min<int64_t>(opts.n_predict, n_ctx / 2) : n_ctx / 4;
  while (context_shift_ && static_cast<int64_t>(tokens->size()) + room > n_ctx) {
    // The oldest message that is neither a system message nor the new one;
    // a user message leaves with the reply that follows it.
    size_t i = 0;
    while (i + 1 < messages_.size() && messages_[i].role == "system") ++i;
    if (i + 1 >= messages_.size()) break;  // only the new message is left
    const bool pair = messages_[i].role == "user" && i + 2 < messages_.size() &&
                      messages_[i + 1].role == "assistant";
    messages_.erase(messages_.begin() + static_cast<std::ptrdiff_t>(i),
                    messages_.begin() + static_cast<std::ptrdiff_t>(i + (pair ? 2 : 1)));
    last_dropped_ += pair ? 2 : 1;
    tokens = PromptTokens(&chunks);
    if (!tokens.ok()) return fail(tokens.status());
  }
  if (static_cast<int64_t>(tokens->size()) >= n_ctx) {
    return fail(absl::OutOfRangeError(absl::StrCat(
        "the conversation is ", tokens->size(), " tokens, it no longer fits the context of ", n_ctx,
        context_shift_ ? " tokens even without its earlier turns (use a larger -c)"
                       : " tokens (start a new one, or use a larger -c)")));
  }
  absl::StatusOr<GenerateResult> r = session_->Generate(*tokens, opts, on_token);
  if (!r.ok()) return fail(r.status());
  for (int32_t id : r->tokens) chunks.push_back({tokenizer_->TokenToPiece(id), {id}});
  chunks_ = std::move(chunks);
  messages_.push_back({"assistant", r->text});
  return r;
}

}  // namespace vibrant
