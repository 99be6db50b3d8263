#include "frontends/chat/chat_template.h"

#include <ctime>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vibrant::chat {
namespace {

struct Named {
  const char* name;
  Family family;
};

constexpr Named kFamilies[] = {
    {"chatml", Family::kChatml},
    {"llama2", Family::kLlama2},
    {"llama2-sys", Family::kLlama2Sys},
    {"mistral-v1", Family::kMistralV1},
    {"mistral-v3", Family::kMistralV3},
    {"mistral-v3-tekken", Family::kMistralV3Tekken},
    {"mistral-v7", Family::kMistralV7},
    {"mistral-v7-tekken", Family::kMistralV7Tekken},
    {"llama3", Family::kLlama3},
    {"llama3.1", Family::kLlama31},
    {"phi3", Family::kPhi3},
    {"phi4", Family::kPhi4},
    {"gemma", Family::kGemma},
    {"deepseek2", Family::kDeepseek2},
    {"deepseek3", Family::kDeepseek3},
};

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Jinja's `trim` and Python's str.strip(): leading and trailing whitespace.
std::string Trim(std::string_view s) {
  return std::string(absl::StripAsciiWhitespace(absl::string_view(s.data(), s.size())));
}

// The text after the last "</think>" (DeepSeek-R1 drops past reasoning).
std::string AfterThink(const std::string& s) {
  const size_t at = s.rfind("</think>");
  return at == std::string::npos ? s : s.substr(at + 8);
}

// Undoes a Jinja string literal's escapes (\n, \t, \\, \', \").
std::string UnescapeJinja(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char c = s[++i];
      out.push_back(c == 'n' ? '\n' : c == 't' ? '\t' : c);
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// A ChatML template's literal default system message, e.g. Qwen2.5's
//   '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. ...<|im_end|>\n'
// in the branch taken when the conversation has no system message. Dynamic
// uses ('<|im_start|>system\n' + messages[0]['content'] + ...) are skipped:
// their text up to <|im_end|> holds a quote.
//
// Linear in the template's size (it comes from the model file: a crafted one
// holds many heads before one <|im_end|>): heads that share the next
// <|im_end|> share its search and the position of the body's last quote.
std::string ChatmlDefaultSystem(std::string_view t) {
  constexpr std::string_view kEnd = "<|im_end|>";
  for (const std::string_view head : {std::string_view("<|im_start|>system\\n"),
                                      std::string_view("<|im_start|>system\n")}) {
    size_t end = 0;       // the <|im_end|> after the current group of heads
    size_t last_bad = 0;  // 1 + the last of "'\"{}+" before `end` (0: none)
    bool have_end = false;
    for (size_t at = t.find(head); at != std::string_view::npos; at = t.find(head, at + 1)) {
      const size_t begin = at + head.size();
      if (!have_end || begin > end) {
        const size_t e = t.find(kEnd, begin);
        if (e == std::string_view::npos) break;
        const size_t bad = t.substr(begin, e - begin).find_last_of("'\"{}+");
        end = e;
        last_bad = bad == std::string_view::npos ? 0 : begin + bad + 1;
        have_end = true;
      }
      // The body [begin, end) is a suffix of the group's first body.
      if (begin >= end || last_bad > begin) continue;
      return UnescapeJinja(t.substr(begin, end - begin));
    }
  }
  return "";
}

std::string TodayDate() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%d %b %Y", &tm);
  return buf;
}

// A system message folded into the first user turn (families without a
// system role): "system\n\nuser".
std::vector<Message> FoldSystem(absl::Span<const Message> messages, const char* sep) {
  std::vector<Message> out;
  std::string system;
  for (const Message& m : messages) {
    if (m.role == "system") {
      absl::StrAppend(&system, system.empty() ? "" : "\n\n", m.content);
      continue;
    }
    out.push_back(m);
  }
  if (!system.empty()) {
    for (Message& m : out) {
      if (m.role == "user") {
        m.content = absl::StrCat(system, sep, m.content);
        return out;
      }
    }
    out.insert(out.begin(), Message{"user", system});
  }
  return out;
}

}  // namespace

std::string_view FamilyName(Family f) {
  for (const Named& n : kFamilies) {
    if (n.family == f) return n.name;
  }
  return "?";
}

std::string KnownTemplateNames() {
  std::vector<std::string> names;
  for (const Named& n : kFamilies) names.push_back(n.name);
  return absl::StrJoin(names, ", ");
}

absl::StatusOr<ChatTemplate> TemplateFromName(std::string_view name) {
  for (const Named& n : kFamilies) {
    if (name == n.name) {
      ChatTemplate t;
      t.family = n.family;
      return t;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown chat template '", AV(name),
                                                 "' (known: ", KnownTemplateNames(), ")"));
}

absl::StatusOr<ChatTemplate> DetectTemplate(std::string_view jinja, std::string_view source) {
  auto has = [&](std::string_view s) { return jinja.find(s) != std::string_view::npos; };
  ChatTemplate t;
  if (has("<|im_start|>")) {
    if (has("<|im_sep|>")) {
      t.family = Family::kPhi4;
    } else {
      t.family = Family::kChatml;
      t.default_system = ChatmlDefaultSystem(jinja);
    }
  } else if (has("[INST]")) {
    if (has("[SYSTEM_PROMPT]")) {
      t.family = has("[SYSTEM_PROMPT] ") ? Family::kMistralV7 : Family::kMistralV7Tekken;
    } else if (has("' [INST] ' + system_message")) {
      t.family = Family::kMistralV1;
    } else if (has("[AVAILABLE_TOOLS]")) {
      t.family = has("\"[INST]\" +") || has("'[INST]' +") ? Family::kMistralV3Tekken
                                                          : Family::kMistralV3;
    } else if (has("<<SYS>>")) {
      t.family = Family::kLlama2Sys;
    } else {
      t.family = Family::kLlama2;
    }
  } else if (has("<|start_header_id|>") && has("<|end_header_id|>")) {
    if (has("Cutting Knowledge Date")) {
      t.family = Family::kLlama31;
      if (has("strftime_now")) t.date_string = TodayDate();
    } else {
      t.family = Family::kLlama3;
    }
  } else if (has("<|assistant|>") && has("<|end|>")) {
    t.family = Family::kPhi3;
  } else if (has("<start_of_turn>")) {
    t.family = Family::kGemma;
  } else if (has("<\xef\xbd\x9cUser\xef\xbd\x9c>") && has("<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>")) {
    // <｜User｜> / <｜Assistant｜> (U+FF5C FULLWIDTH VERTICAL LINE)
    t.family = Family::kDeepseek3;
    t.think_generation_prompt = has("\xef\xbd\x9c>" "<think>");
    t.strip_think = has("</think>");
  } else if (has("'User: '") && has("'Assistant: '")) {
    t.family = Family::kDeepseek2;
  } else {
    std::string head(jinja.substr(0, 80));
    for (char& c : head) {
      if (c == '\n' || c == '\r' || c == '\t') {
        c = ' ';
      } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        c = '?';  // the text comes from a file: no terminal control bytes
      }
    }
    return absl::NotFoundError(absl::StrCat(
        AV(source), ": not a chat template Vibrant recognises (it begins \"", head,
        jinja.size() > 80 ? "..." : "", "\"); choose one with --chat-template NAME (known: ",
        KnownTemplateNames(), ")"));
  }
  return t;
}

absl::StatusOr<ChatTemplate> TemplateFromNameOrText(std::string_view name_or_text) {
  absl::StatusOr<ChatTemplate> named = TemplateFromName(name_or_text);
  if (named.ok()) return named;
  // A bare word is a misspelt name; anything with template syntax is a template.
  if (name_or_text.find_first_of("{<[|") == std::string_view::npos) return named.status();
  return DetectTemplate(name_or_text, "--chat-template");
}

std::string StripLeadingBos(std::string text, std::string_view bos) {
  if (!bos.empty() && text.compare(0, bos.size(), bos) == 0) text.erase(0, bos.size());
  return text;
}

absl::StatusOr<std::string> Render(const ChatTemplate& t, absl::Span<const Message> messages,
                                   bool add_assistant) {
  for (const Message& m : messages) {
    if (m.role.empty()) return absl::InvalidArgumentError("chat message with an empty role");
  }
  const std::string& bos = t.bos_token;
  const std::string& eos = t.eos_token;
  std::string out;
  switch (t.family) {
    case Family::kChatml: {
      if (!t.default_system.empty() && (messages.empty() || messages[0].role != "system")) {
        absl::StrAppend(&out, "<|im_start|>system\n", t.default_system, "<|im_end|>\n");
      }
      for (const Message& m : messages) {
        absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
      }
      if (add_assistant) out += "<|im_start|>assistant\n";
      break;
    }
    case Family::kLlama2: {
      // Mistral-7B-Instruct-v0.2: bos, then '[INST] ' + user + ' [/INST]' and
      // assistant + eos. No generation prompt: the prompt ends with [/INST].
      out = bos;
      for (const Message& m : FoldSystem(messages, "\n\n")) {
        if (m.role == "user") {
          absl::StrAppend(&out, "[INST] ", m.content, " [/INST]");
        } else {
          absl::StrAppend(&out, m.content, eos);
        }
      }
      break;
    }
    case Family::kLlama2Sys: {
      // Meta's Llama-2-chat: every user turn opens with bos; the system
      // message is wrapped in <<SYS>> inside the first turn; contents stripped.
      absl::Span<const Message> loop = messages;
      std::string system;
      bool has_system = false;
      if (!messages.empty() && messages[0].role == "system") {
        system = messages[0].content;
        has_system = true;
        loop = messages.subspan(1);
      }
      for (size_t i = 0; i < loop.size(); ++i) {
        std::string content = loop[i].content;
        if (i == 0 && has_system) {
          content = absl::StrCat("<<SYS>>\n", system, "\n<</SYS>>\n\n", content);
        }
        if (loop[i].role == "user") {
          absl::StrAppend(&out, bos, "[INST] ", Trim(content), " [/INST]");
        } else if (loop[i].role == "assistant") {
          absl::StrAppend(&out, " ", Trim(content), " ", eos);
        }
      }
      break;
    }
    case Family::kMistralV1: {
      // ' [INST] ' + (system + '\n\n' for the first) + user + ' [/INST]',
      // ' ' + assistant + eos.
      std::string system;
      absl::Span<const Message> loop = messages;
      if (!messages.empty() && messages[0].role == "system") {
        system = messages[0].content;
        loop = messages.subspan(1);
      }
      out = bos;
      for (size_t i = 0; i < loop.size(); ++i) {
        const Message& m = loop[i];
        if (m.role == "user") {
          absl::StrAppend(&out, " [INST] ", i == 0 && !system.empty() ? system + "\n\n" : "",
                          m.content, " [/INST]");
        } else {
          absl::StrAppend(&out, " ", m.content, eos);
        }
      }
      break;
    }
    case Family::kMistralV3:
    case Family::kMistralV3Tekken: {
      // The system message goes into the last message when it is a user
      // message (Mistral's v3 templates); v3 trims replies and spaces them.
      const bool tekken = t.family == Family::kMistralV3Tekken;
      std::string system;
      bool has_system = false;
      absl::Span<const Message> loop = messages;
      if (!messages.empty() && messages[0].role == "system") {
        system = messages[0].content;
        has_system = true;
        loop = messages.subspan(1);
      }
      const char* inst = tekken ? "[INST]" : "[INST] ";
      out = bos;
      for (size_t i = 0; i < loop.size(); ++i) {
        const Message& m = loop[i];
        if (m.role == "user") {
          const bool last = i + 1 == loop.size();
          absl::StrAppend(&out, inst, last && has_system ? system + "\n\n" : "", m.content,
                          "[/INST]");
        } else if (tekken) {
          absl::StrAppend(&out, m.content, eos);
        } else {
          absl::StrAppend(&out, " ", Trim(m.content), eos);
        }
      }
      break;
    }
    case Family::kMistralV7:
    case Family::kMistralV7Tekken: {
      const char* sp = t.family == Family::kMistralV7 ? " " : "";
      out = bos;
      for (const Message& m : messages) {
        if (m.role == "system") {
          absl::StrAppend(&out, "[SYSTEM_PROMPT]", sp, m.content, "[/SYSTEM_PROMPT]");
        } else if (m.role == "user") {
          absl::StrAppend(&out, "[INST]", sp, m.content, "[/INST]");
        } else {
          absl::StrAppend(&out, sp, m.content, eos);
        }
      }
      break;
    }
    case Family::kLlama3: {
      out = bos;
      for (const Message& m : messages) {
        absl::StrAppend(&out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n",
                        Trim(m.content), "<|eot_id|>");
      }
      if (add_assistant) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    }
    case Family::kLlama31: {
      // Always a system header, with the knowledge cutoff and the date.
      absl::Span<const Message> loop = messages;
      std::string system;
      if (!messages.empty() && messages[0].role == "system") {
        system = Trim(messages[0].content);
        loop = messages.subspan(1);
      }
      absl::StrAppend(&out, bos, "<|start_header_id|>system<|end_header_id|>\n\n",
                      "Cutting Knowledge Date: December 2023\n", "Today Date: ", t.date_string,
                      "\n\n", system, "<|eot_id|>");
      for (const Message& m : loop) {
        absl::StrAppend(&out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n",
                        Trim(m.content), "<|eot_id|>");
      }
      if (add_assistant) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    }
    case Family::kPhi3: {
      // Phi-3.5-mini: empty system messages are skipped; without a
      // generation prompt the text ends with eos.
      for (const Message& m : messages) {
        if (m.role == "system" && m.content.empty()) continue;
        absl::StrAppend(&out, "<|", m.role, "|>\n", m.content, "<|end|>\n");
      }
      out += add_assistant ? "<|assistant|>\n" : eos;
      break;
    }
    case Family::kPhi4: {
      // Phi-4 writes the assistant header after every user message, whatever
      // add_generation_prompt says.
      for (const Message& m : messages) {
        if (m.role == "system") {
          absl::StrAppend(&out, "<|im_start|>system<|im_sep|>", m.content, "<|im_end|>");
        } else if (m.role == "user") {
          absl::StrAppend(&out, "<|im_start|>user<|im_sep|>", m.content,
                          "<|im_end|><|im_start|>assistant<|im_sep|>");
        } else {
          absl::StrAppend(&out, m.content, "<|im_end|>");
        }
      }
      break;
    }
    case Family::kGemma: {
      // Gemma 3: the system message + "\n\n" prefixes the first turn; the
      // assistant role is "model"; contents trimmed.
      absl::Span<const Message> loop = messages;
      std::string prefix;
      if (!messages.empty() && messages[0].role == "system") {
        prefix = messages[0].content + "\n\n";
        loop = messages.subspan(1);
      }
      out = bos;
      for (size_t i = 0; i < loop.size(); ++i) {
        const std::string role = loop[i].role == "assistant" ? "model" : loop[i].role;
        absl::StrAppend(&out, "<start_of_turn>", role, "\n", i == 0 ? prefix : "",
                        Trim(loop[i].content), "<end_of_turn>\n");
      }
      if (add_assistant) out += "<start_of_turn>model\n";
      break;
    }
    case Family::kDeepseek2: {
      out = bos;
      for (const Message& m : messages) {
        if (m.role == "user") {
          absl::StrAppend(&out, "User: ", m.content, "\n\n");
        } else if (m.role == "assistant") {
          absl::StrAppend(&out, "Assistant: ", m.content, eos);
        } else if (m.role == "system") {
          absl::StrAppend(&out, m.content, "\n\n");
        }
      }
      if (add_assistant) out += "Assistant:";
      break;
    }
    case Family::kDeepseek3: {
      // System messages first (joined by blank lines), then the turns.
      static constexpr char kUser[] = "<\xef\xbd\x9cUser\xef\xbd\x9c>";
      static constexpr char kAssistant[] = "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>";
      static constexpr char kEnd[] =
          "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";
      std::string system;
      bool first = true;
      for (const Message& m : messages) {
        if (m.role != "system") continue;
        absl::StrAppend(&system, first ? "" : "\n\n", m.content);
        first = false;
      }
      out = bos + system;
      for (const Message& m : messages) {
        if (m.role == "user") {
          absl::StrAppend(&out, kUser, m.content);
        } else if (m.role == "assistant") {
          absl::StrAppend(&out, kAssistant, t.strip_think ? AfterThink(m.content) : m.content,
                          kEnd);
        }
      }
      if (add_assistant) absl::StrAppend(&out, kAssistant, t.think_generation_prompt ? "<think>\n" : "");
      break;
    }
  }
  return out;
}

}  // namespace vibrant::chat
