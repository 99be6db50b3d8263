// Tokenizers driven by GGUF metadata (tokenizer.ggml.*).
//
//   llama : SentencePiece-style (scores, byte fallback, the leading-space rule)
//   gpt2  : byte-level BPE (merges; pre-tokenizer regexes chosen by
//           tokenizer.ggml.pre: default/gpt-2, llama-bpe/llama3, qwen2,
//           deepseek-llm, deepseek-coder, falcon, starcoder, ...)
//
// Behaviour follows llama.cpp's llama_tokenize/llama_token_to_piece/
// llama_detokenize (src/llama-vocab.cpp), including its quirks:
//   * special tokens: control, user-defined and unknown tokens are cut out of
//     the text first (longest first). Without parse_special only the
//     user-defined ones are (as Hugging Face's tokenizers do);
//   * SentencePiece prepends a space to the text and to every piece of text
//     that follows a special token (add_space_prefix), then merges by score
//     and falls back to <0xXX> byte tokens;
//   * tokens whose text looks like an end-of-turn or FIM marker
//     ("<|im_end|>", "<|fim_prefix|>", ...) are treated as control tokens, and
//     Phi-3 vocabularies strip whitespace after their special tokens.
#ifndef VIBRANT_FRONTENDS_TOKENIZER_TOKENIZER_H_
#define VIBRANT_FRONTENDS_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "frontends/gguf/gguf.h"

namespace vibrant {

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Everything the tokenizers read from tokenizer.ggml.* (and general.name).
// Absent optional keys stay empty and the vocabulary's defaults apply.
struct VocabData {
  std::string model;  // tokenizer.ggml.model: "llama" or "gpt2"
  std::string pre;    // tokenizer.ggml.pre ("" when absent)
  std::string name;   // general.name (selects Phi-3's whitespace stripping)
  std::vector<std::string> tokens;
  std::vector<float> scores;          // empty: all 0
  std::vector<int32_t> token_types;   // empty: all kNormal
  std::vector<std::string> merges;    // "left right", best first
  // Special token ids as stored (uint32); out-of-range ids are ignored with
  // the default kept, as llama.cpp does.
  std::optional<int64_t> bos_id, eos_id, eot_id, eom_id, unk_id, sep_id, pad_id, mask_id;
  std::optional<int64_t> fim_pre_id, fim_suf_id, fim_mid_id, fim_pad_id, fim_rep_id, fim_sep_id;
  std::optional<bool> add_bos, add_eos, add_space_prefix;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Builds the tokenizer named by tokenizer.ggml.model. An unknown model or
  // pre-tokenizer is a named error.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& file);
  // The tokenizer.ggml.* metadata of `file`; errors name the file and key.
  static absl::StatusOr<VocabData> ReadVocab(const GgufFile& file);
  // Builds a tokenizer from already-read metadata (tests, converters).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromVocab(VocabData vocab);

  // add_special: add BOS/EOS as the metadata says (tokenizer.ggml.add_bos_token,
  //   add_eos_token, and the vocabulary's defaults when those are absent).
  // parse_special: text of control/user-defined tokens (e.g. "<|im_start|>")
  //   maps to those tokens instead of being tokenized as text.
  // Byte-level BPE needs well-formed UTF-8 (an error names the byte offset);
  // SentencePiece takes any bytes.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      bool add_special,
                                                      bool parse_special) const = 0;

  // The bytes a token stands for when detokenized (byte tokens give their
  // byte, SentencePiece's U+2581 gives a space, byte-level BPE is unmapped).
  // Control tokens give "" unless `render_special` is set.
  virtual std::string TokenToPiece(int32_t id, bool render_special = false) const = 0;
  // Concatenated pieces of `ids` (what streaming generation prints).
  std::string Decode(absl::Span<const int32_t> ids, bool render_special = false) const;
  // llama_detokenize: the pieces with SentencePiece's leading space removed
  // from the first one, optionally without the BOS/EOS that Encode adds
  // (remove_special), and with clean_up_tokenization_spaces applied when the
  // vocabulary asks for it. For SentencePiece,
  // Detokenize(Encode(s, false, false), false, false) == s unless s contains
  // U+2581 (which detokenizes to a space). Note llama.cpp's quirk, kept here:
  // removing a leading BOS also keeps the space after it.
  virtual std::string Detokenize(absl::Span<const int32_t> ids, bool remove_special,
                                 bool unparse_special) const = 0;

  // The raw vocabulary string of a token.
  virtual const std::string& TokenText(int32_t id) const = 0;
  virtual TokenType token_type(int32_t id) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when none
  virtual int32_t eos_id() const = 0;  // -1 when none
  virtual bool add_bos() const = 0;
  virtual bool add_eos() const = 0;
  // End of generation: EOS, EOT and the like.
  virtual bool IsEndOfGeneration(int32_t id) const = 0;
  virtual bool IsControl(int32_t id) const = 0;
  // "llama" or "gpt2", and tokenizer.ggml.pre.
  virtual const std::string& model() const = 0;
  virtual const std::string& pre() const = 0;
};

// What `vibrantc compile` checks of a model's vocabulary, stricter than
// Tokenizer::FromGguf (which, like llama.cpp, ignores bad special ids):
// the tokenizer builds; the vocabulary has exactly `n_embedding_rows` tokens
// (skipped when negative); every special token id key present
// (tokenizer.ggml.bos_token_id, ...) is a token of it or -1 / 4294967295 (none,
// as converters write it); token types are 0..6;
// scores are finite. Errors name the file and the key.
absl::Status ValidateVocabulary(const GgufFile& file, int64_t n_embedding_rows);

}  // namespace vibrant

#endif  // VIBRANT_FRONTENDS_TOKENIZER_TOKENIZER_H_
