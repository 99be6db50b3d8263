// A multi-turn chat over one Session: the messages, rendered with the model's
// chat template every turn, and the KV cache reused between turns so that a
// turn prefills only what is new.
//
// Every turn renders the whole conversation (with the generation prompt) and
// compares it with the text the session's tokens stand for, kept as chunks of
// (text, tokens): the prompt part of each turn, then one chunk per generated
// token. Chunks whose text is a prefix of the new rendering keep their tokens;
// the rest of the rendering is tokenized and Session::Generate prefills only
// what the cache lacks. A reply the template renders differently from how it
// was generated (trimmed, cut at a stop string, DeepSeek-R1's reasoning
// dropped) is thus re-prefilled from where it differs, and the cache always
// holds exactly what the template renders: the same tokens a single prompt of
// the whole conversation would give, up to how the pieces were tokenized.
#ifndef VIBRANT_API_CONVERSATION_H_
#define VIBRANT_API_CONVERSATION_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "frontends/chat/chat_template.h"
#include "frontends/tokenizer/tokenizer.h"
#include "runtime/generate.h"

namespace vibrant {

// The chat template to use for `model_path`'s `gguf_template` text
// (tokenizer.chat_template, "" when absent): `override` when given (a name or
// a template's text, as --chat-template), else the one recognised in the
// text; a model without a template gets chatml (llama.cpp's fallback), with a
// note in *note. The BOS/EOS texts come from the tokenizer.
absl::StatusOr<chat::ChatTemplate> ResolveChatTemplate(const std::string& model_path,
                                                       const std::string& gguf_template,
                                                       const std::string& override,
                                                       const Tokenizer& tokenizer,
                                                       std::string* note);

class Conversation {
 public:
  // `session` and `tokenizer` must outlive the conversation. The template's
  // bos/eos texts are filled from the tokenizer here.
  Conversation(Session* session, const Tokenizer* tokenizer, chat::ChatTemplate tmpl);

  // Adds a message without generating (a system prompt, or earlier turns).
  void Add(chat::Message m) { messages_.push_back(std::move(m)); }

  // Adds the user's message, generates the assistant's reply (streamed through
  // `on_token`) and adds it. When the conversation and room for the reply
  // (-n, at most half the context; a quarter when unbounded) outgrow the
  // context, the oldest turns are dropped first (context shifting, on by
  // default; the system messages stay): last_dropped() says how many
  // messages. On an error (the new message alone does not fit, say) the
  // conversation is as it was.
  absl::StatusOr<GenerateResult> Send(const std::string& user_text, const GenerateOptions& opts,
                                      const TokenCallback& on_token);

  // The prompt the conversation renders to now, with the generation prompt
  // (as given to the tokenizer: a leading BOS text is dropped when the
  // tokenizer adds BOS itself).
  absl::StatusOr<std::string> RenderPrompt() const;

  const std::vector<chat::Message>& messages() const { return messages_; }
  // Context shifting (llama.cpp's --context-shift; off: a conversation that
  // outgrows the context is an error, as --no-context-shift).
  void set_context_shift(bool on) { context_shift_ = on; }
  // Messages the last Send dropped to fit the context.
  int64_t last_dropped() const { return last_dropped_; }
  const chat::ChatTemplate& chat_template() const { return tmpl_; }
  // Forgets the messages (and the session's cache).
  void Clear();

 private:
  struct Chunk {
    std::string text;
    std::vector<int32_t> tokens;
  };

  // The tokens of the rendered conversation, reusing the chunks of chunks_
  // whose text the rendering still starts with (into *chunks).
  absl::StatusOr<std::vector<int32_t>> PromptTokens(std::vector<Chunk>* chunks) const;

  Session* session_;
  const Tokenizer* tokenizer_;
  chat::ChatTemplate tmpl_;
  std::vector<chat::Message> messages_;
  std::vector<Chunk> chunks_;
  bool context_shift_ = true;
  int64_t last_dropped_ = 0;
};

}  // namespace vibrant

#endif  // VIBRANT_API_CONVERSATION_H_
