// Tokenizer metadata (tokenizer.ggml.*) for synthetic models.
//
// Gemma 3 presets get a synthetic SentencePiece vocabulary (SyntheticSpmVocab).
// Qwen presets use the real Qwen2 vocabulary when a vocabulary-only GGUF of it
// is available (../shared/tokenizer/ggml-vocab-qwen2.gguf), padded with
// "[PAD<id>]" tokens of type UNUSED up to the preset's vocab_size as
// convert_hf_to_gguf.py pads it. Otherwise, and for the Llama presets, the
// vocabulary is synthetic: a valid byte-level BPE ("gpt2" model, GPT-2's
// byte-to-unicode alphabet) with the real token count, the real special tokens
// at their real ids, and the real pre-tokenizer name ("qwen2" / "llama-bpe").
// Its regular tokens are the 256 bytes, all 65536 byte pairs, then byte
// triples, each with its merge; it is not the trained vocabulary, so token ids
// of a text differ from the real model's (speed does not depend on them).
#ifndef VIBRANT_BENCH_SYNTH_VOCAB_H_
#define VIBRANT_BENCH_SYNTH_VOCAB_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/synth/presets.h"
#include "frontends/gguf/gguf_writer.h"

namespace vibrant::synth {

// A byte-level BPE vocabulary.
struct ByteBpeVocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;  // llama.cpp token types: 1 normal, 3 control, 5 unused
  std::vector<std::string> merges;
  int64_t bos_id = -1, eos_id = -1, pad_id = -1;  // -1: none
  bool add_bos = false;
};

// The synthetic vocabulary of `kind` with `n_vocab` tokens: the real kind's
// regular tokens, its special tokens, then "[PAD<id>]" up to n_vocab. A
// smaller n_vocab (test models) keeps the special tokens and drops regular
// ones; it must leave room for the 256 byte tokens.
absl::StatusOr<ByteBpeVocab> SyntheticVocab(VocabKind kind, int64_t n_vocab);

// A SentencePiece ("llama" tokenizer model) vocabulary.
struct SpmVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;  // 1 normal, 2 unknown, 3 control, 5 unused, 6 byte
  int64_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;
};

// The synthetic SentencePiece vocabulary of Gemma 3 (kind kGemma3) with
// `n_vocab` tokens: <pad> <eos> <bos> <unk> at Gemma's ids 0..3, the 256
// byte-fallback tokens "<0xXX>", then pieces made of "▁" and printable ASCII
// (single characters, then pairs, then triples) with decreasing scores, then
// "<unusedN>" (type unused) up to n_vocab. n_vocab must leave room for the
// specials, the bytes and the 96 single-character pieces.
absl::StatusOr<SpmVocab> SyntheticSpmVocab(int64_t n_vocab);

// Adds tokenizer.ggml.* for a `n_vocab`-token vocabulary of `kind` to `w`.
// For kQwen2, a non-empty `qwen2_vocab_gguf` names the vocabulary-only GGUF
// to copy from (an error if it cannot be read or has more than n_vocab
// tokens); empty means synthetic. Returns a one-line description of what was
// written.
absl::StatusOr<std::string> AddVocabulary(VocabKind kind, int64_t n_vocab,
                                          const std::string& qwen2_vocab_gguf, GgufWriter& w);

// Where the Qwen2 vocabulary GGUF is, or "" when it is not found: the
// environment variable VIBRANT_SHARED_DIR (its tokenizer/ggml-vocab-qwen2.gguf),
// then the ../shared beside the source tree this was built from.
std::string FindQwen2Vocab();

}  // namespace vibrant::synth

#endif  // VIBRANT_BENCH_SYNTH_VOCAB_H_
