#include "frontends/tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vibrant {
namespace {

// ---- expressions --------------------------------------------------------
// Written as in the models' tokenizer.json (with llama.cpp's adaptations);
// \s and \S are rewritten by Rewrite() below. Non-ASCII literals are spelled
// as \x{...}.

// GPT-2 ('s|'t|... | ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)), as
// llama.cpp lists it. Unmatched single whitespace characters become pieces
// of their own all the same.
constexpr const char* kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";

// Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|... with the case folding spelled
// out (llama.cpp lower-cases with Python's str.lower()[0], which only maps
// ASCII letters onto s, t, r, e, v, m, l, d).
constexpr const char* kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Qwen2: as Llama 3 but single digits.
constexpr const char* kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// CJK ideographs, U+0800..U+4E00 and Hangul, used by DeepSeek.
constexpr const char* kDeepseekCjk = R"([\x{4E00}-\x{9FA5}\x{0800}-\x{4E00}\x{AC00}-\x{D7FF}]+)";

// DeepSeek LLM's letters: the cased letters of its tokenizer.json.
constexpr const char* kDeepseekLetters =
    R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293})"
    R"(\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A})"
    R"(\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556})"
    R"(\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF})"
    R"(\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D})"
    R"(\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D})"
    R"(\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4})"
    R"(\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4})"
    R"(\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124})"
    R"(\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F})"
    R"(\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4})"
    R"(\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F})"
    R"(\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17})"
    R"(\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3})"
    R"(\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF})"
    R"(\x{1E900}-\x{1E943}]+)";

constexpr const char* kDeepseekPunct =
    R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)";

// BLOOM / Poro / GPT-3 Finnish: everything up to whitespace or punctuation.
constexpr const char* kBloom =
    R"( ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{0964}\x{06D4}\x{060C})]+)";

// Tekken (Mistral Nemo), in llama.cpp's form: \p{Lu}-ish runs are
// approximated by "a letter that is not a-z" / "not A-Z".
constexpr const char* kTekken =
    R"([^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::vector<std::string> PatternsFor(PreType type) {
  switch (type) {
    case PreType::kLlama3:
    case PreType::kDbrx:
    case PreType::kSmaug:
    case PreType::kChatglm4:
      return {kLlama3};
    case PreType::kDeepseekLlm:
      return {R"([\r\n])", kDeepseekLetters, kDeepseekPunct, R"(\s+$)", kDeepseekCjk,
              R"(\p{N}+)"};
    case PreType::kDeepseekCoder:
      return {R"([\r\n])", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kDeepseekCjk, R"(\p{N})"};
    case PreType::kFalcon:
      return {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, R"([0-9][0-9][0-9])"};
    case PreType::kStarcoder:
    case PreType::kRefact:
    case PreType::kCommandR:
    case PreType::kSmollm:
    case PreType::kCodeshell:
    case PreType::kExaone:
    case PreType::kMinerva:
      return {R"(\p{N})", kGpt2};
    case PreType::kGpt2:
    case PreType::kMpt:
    case PreType::kOlmo:
    case PreType::kJais:
      return {kGpt2};
    case PreType::kStablelm2:
    case PreType::kQwen2:
      return {kQwen2};
    case PreType::kPoro:
    case PreType::kBloom:
    case PreType::kGpt3Finnish:
      return {kBloom};
    case PreType::kViking:
      return {kBloom, R"(\p{N})"};
    case PreType::kTekken:
      return {kTekken};
    case PreType::kChameleon:
      return {R"(<sentinel:[0-9]+>)", R"((IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z)",
              R"(([\t\n]|    |  ))", R"(\p{N})", R"([\p{P}!-/:-@\[-`{-~])", kGpt2};
    case PreType::kDefault:
      return {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", R"([0-9][0-9][0-9])"};
  }
  return {};
}

// llama.cpp's whitespace: Unicode White_Space. Split() maps every non-ASCII
// member onto U+0085 (two-byte ones) or U+FFFF (three-byte ones) before
// matching, so this class stays small and literal ranges never see them.
constexpr std::string_view kWhitespaceClass = R"(\t\n\x0B\f\r \x{85}\x{FFFF})";

// Rewrites \s and \S into kWhitespaceClass.
absl::StatusOr<std::string> Rewrite(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's') {
        if (in_class) {
          out.append(kWhitespaceClass);
        } else {
          absl::StrAppend(&out, "[", absl::string_view(kWhitespaceClass.data(), kWhitespaceClass.size()), "]");
        }
      } else if (e == 'S') {
        if (in_class) {
          return absl::InternalError(
              absl::StrCat("pre-tokenizer pattern uses \\S inside a class: ", std::string(pattern)));
        }
        absl::StrAppend(&out, "[^", absl::string_view(kWhitespaceClass.data(), kWhitespaceClass.size()), "]");
      } else {
        out.push_back(c);
        out.push_back(e);
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
    } else if (in_class && c == ']') {
      in_class = false;
    }
    out.push_back(c);
  }
  return out;
}

// The subject PCRE2 sees: `text` with non-ASCII whitespace replaced as
// described at kWhitespaceClass and a literal U+FFFF moved to U+FFFE (both
// are unassigned, so no expression tells them apart). Byte offsets are kept.
// Returns false (and leaves `out` alone) when nothing needs replacing.
bool MapSubject(std::string_view text, std::string* out) {
  bool copied = false;
  auto put = [&](size_t at, std::string_view bytes) {
    if (!copied) {
      out->assign(text.data(), text.size());
      copied = true;
    }
    out->replace(at, bytes.size(), bytes.data(), bytes.size());
  };
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n; ++i) {
    if (p[i] == 0xC2 && i + 1 < n && p[i + 1] == 0xA0) {
      put(i, "\xC2\x85");
    } else if (p[i] >= 0xE1 && p[i] <= 0xEF && i + 2 < n) {
      const uint32_t cp = ((p[i] & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
      const bool ws = cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
                      cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
      if (ws) {
        put(i, "\xEF\xBF\xBF");
      } else if (cp == 0xFFFF) {
        put(i, "\xEF\xBF\xBE");
      }
    }
  }
  return copied;
}

}  // namespace

struct PreTokenizer::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

PreTokenizer::~PreTokenizer() {
  for (Compiled* c : compiled_) delete c;
}

absl::StatusOr<PreTokenizerInfo> LookupPreTokenizer(std::string_view name) {
  PreTokenizerInfo info;
  auto is = [&](std::initializer_list<std::string_view> names) {
    for (std::string_view n : names) {
      if (name == n) return true;
    }
    return false;
  };
  if (is({"", "default"})) {
    info.type = PreType::kDefault;
  } else if (is({"llama3", "llama-v3", "llama-bpe", "falcon3"})) {
    info.type = PreType::kLlama3;
    info.ignore_merges = true;
    info.add_bos = true;
  } else if (is({"deepseek-llm"})) {
    info.type = PreType::kDeepseekLlm;
    info.clean_spaces = false;
  } else if (is({"deepseek-coder"})) {
    info.type = PreType::kDeepseekCoder;
    info.clean_spaces = false;
  } else if (is({"falcon"})) {
    info.type = PreType::kFalcon;
  } else if (is({"mpt"})) {
    info.type = PreType::kMpt;
  } else if (is({"starcoder"})) {
    info.type = PreType::kStarcoder;
  } else if (is({"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en", "jina-v2-es",
                 "jina-v2-de", "jina-v2-code", "roberta-bpe"})) {
    info.type = PreType::kGpt2;
  } else if (is({"refact"})) {
    info.type = PreType::kRefact;
  } else if (is({"command-r"})) {
    info.type = PreType::kCommandR;
    info.clean_spaces = false;
  } else if (is({"qwen2"})) {
    info.type = PreType::kQwen2;
    info.clean_spaces = false;
  } else if (is({"stablelm2"})) {
    info.type = PreType::kStablelm2;
  } else if (is({"olmo"})) {
    info.type = PreType::kOlmo;
  } else if (is({"dbrx"})) {
    info.type = PreType::kDbrx;
  } else if (is({"smaug-bpe"})) {
    info.type = PreType::kSmaug;
  } else if (is({"poro-chat"})) {
    info.type = PreType::kPoro;
    info.clean_spaces = false;
  } else if (is({"chatglm-bpe"})) {
    info.type = PreType::kChatglm4;
    info.no_bos = true;
  } else if (is({"viking"})) {
    info.type = PreType::kViking;
    info.clean_spaces = false;
  } else if (is({"jais"})) {
    info.type = PreType::kJais;
  } else if (is({"tekken"})) {
    info.type = PreType::kTekken;
    info.clean_spaces = false;
    info.ignore_merges = true;
    info.add_bos = true;
  } else if (is({"smollm"})) {
    info.type = PreType::kSmollm;
    info.clean_spaces = false;
  } else if (is({"codeshell"})) {
    info.type = PreType::kCodeshell;
  } else if (is({"bloom"})) {
    info.type = PreType::kBloom;
  } else if (is({"gpt3-finnish"})) {
    info.type = PreType::kGpt3Finnish;
  } else if (is({"exaone"})) {
    info.type = PreType::kExaone;
  } else if (is({"chameleon"})) {
    info.type = PreType::kChameleon;
    info.add_bos = true;
    info.clean_spaces = false;
  } else if (is({"minerva-7b"})) {
    info.type = PreType::kMinerva;
  } else if (is({"megrez"})) {
    info.type = PreType::kQwen2;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown pre-tokenizer type (tokenizer.ggml.pre): '", std::string(name), "'"));
  }
  return info;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(PreType type) {
  std::unique_ptr<PreTokenizer> pre(new PreTokenizer());
  pre->patterns_ = PatternsFor(type);
  for (const std::string& pattern : pre->patterns_) {
    absl::StatusOr<std::string> rewritten = Rewrite(pattern);
    if (!rewritten.ok()) return rewritten.status();
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten->data()),
                                     rewritten->size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &error,
                                     &error_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InternalError(absl::StrCat("pre-tokenizer pattern does not compile at offset ",
                                              error_offset, ": ",
                                              reinterpret_cast<const char*>(message), ": ",
                                              *rewritten));
    }
    // JIT is an optimization only; the interpreter is used when it fails.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    auto* compiled = new Compiled;
    compiled->code = code;
    pre->compiled_.push_back(compiled);
  }
  return pre;
}

std::vector<std::string_view> PreTokenizer::Split(std::string_view text) const {
  std::vector<std::string_view> words;
  if (text.empty()) return words;

  std::string mapped;
  const std::string_view subject = MapSubject(text, &mapped) ? std::string_view(mapped) : text;
  const auto* base = reinterpret_cast<PCRE2_SPTR>(subject.data());

  // Pieces as (offset, length) into text.
  std::vector<std::pair<size_t, size_t>> pieces = {{0, text.size()}};
  std::vector<std::pair<size_t, size_t>> next;
  for (const Compiled* compiled : compiled_) {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(compiled->code, nullptr);
    next.clear();
    next.reserve(pieces.size() * 2);
    for (const auto& [off, len] : pieces) {
      size_t prev = 0;   // relative to off
      size_t start = 0;  // where the next search begins
      while (start < len) {
        int rc = pcre2_match(compiled->code, base + off, len, start, PCRE2_NO_UTF_CHECK, md,
                             nullptr);
        if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
          // A JIT resource limit: the interpreter keeps its backtracking on the heap.
          rc = pcre2_match(compiled->code, base + off, len, start,
                           PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, nullptr);
        }
        if (rc < 0) break;  // no further match (or a limit even so: the rest stays one piece)
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const size_t m0 = ov[0];
        const size_t m1 = ov[1];
        if (m1 <= m0) {
          // An empty match (none of the expressions can produce one): step
          // over one character and keep searching.
          start = m0 + 1;
          while (start < len && (subject[off + start] & 0xC0) == 0x80) ++start;
          continue;
        }
        if (m0 > prev) next.emplace_back(off + prev, m0 - prev);
        next.emplace_back(off + m0, m1 - m0);
        prev = start = m1;
      }
      if (prev < len) next.emplace_back(off + prev, len - prev);
    }
    pcre2_match_data_free(md);
    pieces.swap(next);
  }
  words.reserve(pieces.size());
  for (const auto& [off, len] : pieces) words.push_back(text.substr(off, len));
  return words;
}

}  // namespace vibrant
