// Tokenizers driven by GGUF metadata (tokenizer.ggml.*).
//
//   llama : SentencePiece-style (scores, byte fallback, the leading-space rule)
//   gpt2  : byte-level BPE (merges; pre-tokenizer regexes chosen by
//           tokenizer.ggml.pre: default/gpt-2, llama-bpe/llama3, qwen2,
//           deepseek-llm, deepseek-coder, falcon, starcoder, ...)
//
// Behaviour follows llama.cpp's llama_tokenize/llama_token_to_piece.
#ifndef VIBRANT_FRONTENDS_TOKENIZER_TOKENIZER_H_
#define VIBRANT_FRONTENDS_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "frontends/gguf/gguf.h"

namespace vibrant {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Builds the tokenizer named by tokenizer.ggml.model. An unknown model or
  // pre-tokenizer is a named error.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& file);

  // add_special: add BOS/EOS as the metadata says (tokenizer.ggml.add_bos_token,
  //   add_eos_token, and the vocabulary's defaults when those are absent).
  // parse_special: text of control/user-defined tokens (e.g. "<|im_start|>")
  //   maps to those tokens instead of being tokenized as text.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      bool add_special,
                                                      bool parse_special) const = 0;

  // The bytes a token stands for when detokenized (byte tokens give their
  // byte, SentencePiece's U+2581 gives a space, byte-level BPE is unmapped).
  // Control tokens give "" unless `render_special` is set.
  virtual std::string TokenToPiece(int32_t id, bool render_special = false) const = 0;
  // Concatenated pieces of `ids`.
  std::string Decode(absl::Span<const int32_t> ids, bool render_special = false) const;

  // The raw vocabulary string of a token.
  virtual const std::string& TokenText(int32_t id) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when none
  virtual int32_t eos_id() const = 0;  // -1 when none
  virtual bool add_bos() const = 0;
  virtual bool add_eos() const = 0;
  // End of generation: EOS, EOT and the like.
  virtual bool IsEndOfGeneration(int32_t id) const = 0;
  virtual bool IsControl(int32_t id) const = 0;
};

}  // namespace vibrant

#endif  // VIBRANT_FRONTENDS_TOKENIZER_TOKENIZER_H_
