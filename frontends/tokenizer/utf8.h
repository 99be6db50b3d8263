// UTF-8 helpers and GPT-2's byte-level mapping, shared by the tokenizers.
#ifndef VIBRANT_FRONTENDS_TOKENIZER_UTF8_H_
#define VIBRANT_FRONTENDS_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace vibrant::utf8 {

// Length of the sequence a lead byte announces, as llama.cpp counts it:
// 1 for ASCII and for stray continuation bytes (0x80-0xBF), 2 for 0xC0-0xDF,
// 3 for 0xE0-0xEF, 4 for 0xF0-0xFF. Used to cut text into characters without
// validating it (SentencePiece works on arbitrary bytes).
inline size_t SeqLen(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// Decodes one well-formed code point (no overlongs, surrogates or values
// above U+10FFFF) at `*pos` and advances `*pos`. Returns false, leaving
// `*pos` unchanged, on malformed input.
bool Decode(std::string_view s, size_t* pos, uint32_t* cp);

// OK when `s` is well-formed UTF-8; otherwise InvalidArgument naming the byte
// offset of the first malformed sequence.
absl::Status Validate(std::string_view s);
bool IsValid(std::string_view s);

void Append(uint32_t cp, std::string* out);
std::string Encode(uint32_t cp);

// `s` with every malformed byte replaced by U+FFFD.
std::string Sanitize(std::string_view s);

// GPT-2's byte-level alphabet: every byte value maps to a printable code
// point (bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF map to themselves, the
// other 68 to U+0100 upwards in byte order).
class ByteLevel {
 public:
  static const ByteLevel& Get();
  // UTF-8 text of the code point byte `b` maps to.
  const std::string& ByteToText(uint8_t b) const { return byte_to_text_[b]; }
  // The byte code point `cp` stands for, or -1 when it is not in the alphabet.
  int CodepointToByte(uint32_t cp) const {
    return cp < 0x144 ? cp_to_byte_[cp] : -1;
  }

 private:
  ByteLevel();
  std::string byte_to_text_[256];
  int16_t cp_to_byte_[0x144];
};

}  // namespace vibrant::utf8

#endif  // VIBRANT_FRONTENDS_TOKENIZER_UTF8_H_
