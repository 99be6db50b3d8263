// Pre-tokenizers of byte-level BPE vocabularies, selected by
// tokenizer.ggml.pre the way llama.cpp's llama-vocab does.
//
// A pre-tokenizer is a list of regular expressions applied one after another:
// each one cuts every piece left by the previous ones into its matches and
// the unmatched gaps between them (llama.cpp's unicode_regex_split). The
// expressions are run with PCRE2 (UTF, UCP) on the real code points, with
// llama.cpp's semantics kept exactly:
//   * \s is Unicode's White_Space set (PCRE2's own \s differs at U+180E);
//   * non-ASCII whitespace never matches a literal character range (llama.cpp
//     rewrites it to U+000B before matching), which matters for the
//     deepseek-llm/-coder ranges that span U+2000..U+3000;
//   * $ matches only at the very end of the piece;
//   * contractions are matched as '[sS] etc., not with (?i:...), which would
//     also fold U+017F and U+212A the way llama.cpp does not.
// For the gpt-2 and llama3 expressions llama.cpp runs hand-written splitters;
// on well-formed text they give the same pieces as these expressions.
#ifndef VIBRANT_FRONTENDS_TOKENIZER_PRETOKENIZER_H_
#define VIBRANT_FRONTENDS_TOKENIZER_PRETOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace vibrant {

enum class PreType {
  kDefault,
  kLlama3,
  kDeepseekLlm,
  kDeepseekCoder,
  kFalcon,
  kMpt,
  kStarcoder,
  kGpt2,
  kRefact,
  kCommandR,
  kQwen2,
  kStablelm2,
  kOlmo,
  kDbrx,
  kSmaug,
  kPoro,
  kChatglm4,
  kViking,
  kJais,
  kTekken,
  kSmollm,
  kCodeshell,
  kBloom,
  kGpt3Finnish,
  kExaone,
  kChameleon,
  kMinerva,
};

// What a tokenizer.ggml.pre name implies besides its expressions.
struct PreTokenizerInfo {
  PreType type = PreType::kDefault;
  bool ignore_merges = false;  // a word that is a whole token skips BPE
  bool add_bos = false;        // default of add_bos_token
  bool clean_spaces = true;    // detokenizer's clean_up_tokenization_spaces
  bool no_bos = false;         // the vocabulary has no BOS token
};

// tokenizer.ggml.pre -> settings; "" (key absent) is "default", as in
// llama.cpp. An unknown name is an InvalidArgument error naming it.
absl::StatusOr<PreTokenizerInfo> LookupPreTokenizer(std::string_view name);

class PreTokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(PreType type);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Splits well-formed UTF-8 `text` into consecutive, non-empty words that
  // cover it exactly (views into `text`). Thread-safe.
  std::vector<std::string_view> Split(std::string_view text) const;

  // The expressions as written in tokenizer.json / llama.cpp (before the
  // rewriting described above), for diagnostics.
  const std::vector<std::string>& patterns() const { return patterns_; }

 private:
  struct Compiled;
  PreTokenizer() = default;
  std::vector<std::string> patterns_;
  std::vector<Compiled*> compiled_;
};

}  // namespace vibrant

#endif  // VIBRANT_FRONTENDS_TOKENIZER_PRETOKENIZER_H_
