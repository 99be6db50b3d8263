// Chat templates: a list of messages -> the prompt text an instruct model was
// trained on.
//
// GGUF models carry their Hugging Face chat template as Jinja source in
// `tokenizer.chat_template`. Like llama.cpp (llm_chat_detect_template), Vibrant
// does not run Jinja: it recognises the family from the template's structure
// (e.g. "<|im_start|>" means ChatML) and renders it with a hand-written
// renderer per family. Each renderer reproduces what the family's published
// Jinja template renders (with add_generation_prompt as given), including the
// BOS/EOS tokens it writes as text; details the families differ in are read
// from the template text (Qwen's default system message, Llama 3.1's date
// header, DeepSeek-R1's "<think>" generation prompt).
//
// Families (names accepted by --chat-template; llama.cpp's where it has one):
//   chatml           ChatML: Qwen, Yi, OpenHermes, SmolLM, many fine-tunes
//   llama2           [INST] u [/INST]a</s>  (Mistral-7B-Instruct v0.1/v0.2)
//   llama2-sys       Meta's Llama-2-chat: <s>[INST] <<SYS>>..<</SYS>> u [/INST] a </s>
//   mistral-v1       " [INST] u [/INST] a</s>", system before the first message
//   mistral-v3       "[INST] u[/INST] a</s>", system before the last user message
//   mistral-v3-tekken the same without spaces (Mistral Nemo)
//   mistral-v7       [SYSTEM_PROMPT] s[/SYSTEM_PROMPT][INST] u[/INST] a</s>
//   mistral-v7-tekken the same without spaces (Mistral Small 3)
//   llama3           Llama 3: <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
//   llama3.1         Llama 3.1/3.2/3.3: llama3 plus the system header with
//                    "Cutting Knowledge Date" / "Today Date" lines
//   phi3             <|role|>\n...<|end|>\n
//   phi4             <|im_start|>role<|im_sep|>...<|im_end|>
//   gemma            <start_of_turn>user\n...<end_of_turn>\n (assistant = "model";
//                    a system message prefixes the first user turn, as Gemma 3 does)
//   deepseek2        DeepSeek-LLM / V2 chat: "User: u\n\nAssistant: a<eos>"
//   deepseek3        DeepSeek-V3 / R1 (and R1 distills): <｜User｜>u<｜Assistant｜>a<｜end▁of▁sentence｜>
//
// Where a published template raises an exception (a system message for
// Mistral v0.2 or Gemma 1/2, roles that do not alternate) the renderer does
// what llama.cpp does instead of failing: the system message is folded into
// the first user turn and the roles are rendered in the order given.
#ifndef VIBRANT_FRONTENDS_CHAT_CHAT_TEMPLATE_H_
#define VIBRANT_FRONTENDS_CHAT_CHAT_TEMPLATE_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vibrant::chat {

struct Message {
  std::string role;  // "system", "user", "assistant" (chatml, llama3, phi3: any)
  std::string content;
};

enum class Family {
  kChatml,
  kLlama2,
  kLlama2Sys,
  kMistralV1,
  kMistralV3,
  kMistralV3Tekken,
  kMistralV7,
  kMistralV7Tekken,
  kLlama3,
  kLlama31,
  kPhi3,
  kPhi4,
  kGemma,
  kDeepseek2,
  kDeepseek3,
};

struct ChatTemplate {
  Family family = Family::kChatml;
  // The BOS/EOS token texts the template writes ("<s>", "</s>", ...); the
  // caller fills them from the vocabulary.
  std::string bos_token;
  std::string eos_token;
  // Read from the template text:
  std::string default_system;         // chatml: used when no system message is given
  std::string date_string = "26 Jul 2024";  // llama3.1: "Today Date: ..."
  bool think_generation_prompt = false;  // deepseek3: the generation prompt opens <think>
  bool strip_think = false;           // deepseek3: past replies lose "...</think>"
};

// The family's name ("chatml", "llama3.1", ...).
std::string_view FamilyName(Family f);
// Every name TemplateFromName accepts, comma-separated (for messages).
std::string KnownTemplateNames();

// A template by family name (--chat-template NAME); an unknown name is an
// InvalidArgument error that lists the known ones.
absl::StatusOr<ChatTemplate> TemplateFromName(std::string_view name);

// Recognises the family of a Jinja chat template (tokenizer.chat_template)
// from its text, and reads the details above from it. `source` names the
// template in errors (e.g. "model.gguf: tokenizer.chat_template"). An
// unrecognised template is a NotFound error naming `source`, quoting the
// template's beginning and listing the known names.
absl::StatusOr<ChatTemplate> DetectTemplate(std::string_view jinja, std::string_view source);

// A name or a Jinja template's text (as llama.cpp's --chat-template takes
// either): the named family, else the family detected in the text.
absl::StatusOr<ChatTemplate> TemplateFromNameOrText(std::string_view name_or_text);

// Renders `messages` as the family's Jinja template does, with
// add_generation_prompt = `add_assistant`. The result starts with the BOS
// text where the template writes one; callers whose tokenizer adds BOS by
// itself strip it (StripLeadingBos) so that it is not there twice.
// Fails on an empty role.
absl::StatusOr<std::string> Render(const ChatTemplate& t, absl::Span<const Message> messages,
                                   bool add_assistant);

// `text` without one leading `bos` (when `bos` is non-empty and leads it).
std::string StripLeadingBos(std::string text, std::string_view bos);

}  // namespace vibrant::chat

#endif  // VIBRANT_FRONTENDS_CHAT_CHAT_TEMPLATE_H_
