#include "api/conversation.h"

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

absl::StatusOr<GenerateResult> Conversation::Send(const std::string& user_text,
                                                  const GenerateOptions& opts,
                                                  const TokenCallback& on_token) {
  messages_.push_back({"user", user_text});
  auto fail = [&](absl::Status s) {
    messages_.pop_back();
    return s;
  };
  absl::StatusOr<std::string> prompt = RenderPrompt();
  if (!prompt.ok()) return fail(prompt.status());

  // Keep the chunks whose text continues to match the new rendering.
  size_t matched = 0, keep = 0;
  while (keep < chunks_.size() &&
         prompt->compare(matched, chunks_[keep].text.size(), chunks_[keep].text) == 0 &&
         matched + chunks_[keep].text.size() <= prompt->size()) {
    matched += chunks_[keep].text.size();
    ++keep;
  }
  std::vector<Chunk> chunks(chunks_.begin(), chunks_.begin() + keep);
  const std::string rest = prompt->substr(matched);
  if (!rest.empty()) {
    // BOS (as the tokenizer's metadata says) only at the very start.
    absl::StatusOr<std::vector<int32_t>> ids =
        tokenizer_->Encode(rest, /*add_special=*/chunks.empty(), /*parse_special=*/true);
    if (!ids.ok()) return fail(ids.status());
    chunks.push_back({rest, *std::move(ids)});
  }
  std::vector<int32_t> tokens;
  for (const Chunk& c : chunks) tokens.insert(tokens.end(), c.tokens.begin(), c.tokens.end());
  if (static_cast<int64_t>(tokens.size()) >= session_->n_ctx()) {
    return fail(absl::OutOfRangeError(absl::StrCat(
        "the conversation is ", tokens.size(), " tokens, it no longer fits the context of ",
        session_->n_ctx(), " tokens (start a new one, or use a larger -c)")));
  }
  absl::StatusOr<GenerateResult> r = session_->Generate(tokens, opts, on_token);
  if (!r.ok()) return fail(r.status());
  for (int32_t id : r->tokens) chunks.push_back({tokenizer_->TokenToPiece(id), {id}});
  chunks_ = std::move(chunks);
  messages_.push_back({"assistant", r->text});
  return r;
}

}  // namespace vibrant
