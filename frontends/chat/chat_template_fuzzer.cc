// libFuzzer target for chat templates (`.ci/fuzz.sh chat`): the recogniser
// that reads a GGUF's tokenizer.chat_template (untrusted text: every model
// file carries one) and the renderers it selects.
//
// Input: the template text (or a family name), then messages, all separated
// by NUL bytes: TEMPLATE \0 ROLE \0 CONTENT \0 ROLE \0 CONTENT ... The first
// byte's low bit is add_generation_prompt.
//
// Invariants: every error has a message; an unrecognised template's message
// quotes at most the template's first 80 bytes (a megabyte of template does
// not become a megabyte of error); a recognised template renders every list of
// messages with non-empty roles, the same way twice, and fails cleanly on an
// empty role.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "frontends/chat/chat_template.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "chat_template_fuzzer: invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using vibrant::chat::ChatTemplate;
  using vibrant::chat::Message;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  for (size_t at = 0;;) {
    const size_t nul = in.find('\0', at);
    parts.push_back(in.substr(at, nul == std::string_view::npos ? std::string_view::npos : nul - at));
    if (nul == std::string_view::npos) break;
    at = nul + 1;
  }
  const bool add_assistant = size > 0 && (data[0] & 1) != 0;
  const std::string_view jinja = parts[0];

  absl::StatusOr<ChatTemplate> detected = vibrant::chat::DetectTemplate(jinja, "fuzz.gguf");
  if (!detected.ok()) {
    const size_t n = detected.status().message().size();
    Check(n > 0, "errors have a message");
    // The message: source, at most 80 bytes of template, the known names.
    Check(n < 80 + 1024, "an unrecognised template's message stays short");
  }
  absl::StatusOr<ChatTemplate> either = vibrant::chat::TemplateFromNameOrText(jinja);
  Check(either.ok() || !either.status().message().empty(), "errors have a message");
  if (!detected.ok() && !either.ok()) return 0;
  ChatTemplate t = detected.ok() ? *detected : *either;
  t.bos_token = "<s>";
  t.eos_token = "</s>";

  std::vector<Message> messages;
  bool empty_role = false;
  for (size_t i = 1; i < parts.size(); i += 2) {
    Message m;
    m.role = std::string(parts[i]);
    if (i + 1 < parts.size()) m.content = std::string(parts[i + 1]);
    empty_role |= m.role.empty();
    messages.push_back(std::move(m));
  }
  absl::StatusOr<std::string> a = vibrant::chat::Render(t, messages, add_assistant);
  Check(a.ok() != empty_role, "Render fails exactly on an empty role");
  if (!a.ok()) {
    Check(!a.status().message().empty(), "errors have a message");
    return 0;
  }
  absl::StatusOr<std::string> b = vibrant::chat::Render(t, messages, add_assistant);
  Check(b.ok() && *a == *b, "Render is deterministic");
  const std::string stripped = vibrant::chat::StripLeadingBos(*a, t.bos_token);
  Check(stripped.size() == a->size() || stripped.size() + t.bos_token.size() == a->size(),
        "StripLeadingBos removes one BOS at most");
  return 0;
}
