#include "frontends/tokenizer/utf8.h"

#include "absl/strings/str_cat.h"

namespace vibrant::utf8 {

bool Decode(std::string_view s, size_t* pos, uint32_t* cp) {
  const size_t i = *pos;
  if (i >= s.size()) return false;
  const uint8_t b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    *cp = b0;
    *pos = i + 1;
    return true;
  }
  size_t n;
  uint32_t v;
  uint32_t min;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2, v = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3, v = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4, v = b0 & 0x07, min = 0x10000;
  } else {
    return false;
  }
  if (s.size() - i < n) return false;
  for (size_t k = 1; k < n; ++k) {
    const uint8_t b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) return false;
    v = (v << 6) | (b & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return false;
  *cp = v;
  *pos = i + n;
  return true;
}

absl::Status Validate(std::string_view s) {
  size_t pos = 0;
  uint32_t cp;
  while (pos < s.size()) {
    if (!Decode(s, &pos, &cp)) {
      return absl::InvalidArgumentError(
          absl::StrCat("text is not valid UTF-8: malformed sequence at byte offset ", pos));
    }
  }
  return absl::OkStatus();
}

bool IsValid(std::string_view s) {
  size_t pos = 0;
  uint32_t cp;
  while (pos < s.size()) {
    if (!Decode(s, &pos, &cp)) return false;
  }
  return true;
}

void Append(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | ((cp >> 18) & 0x07)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string Encode(uint32_t cp) {
  std::string s;
  Append(cp, &s);
  return s;
}

std::string Sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t start = pos;
    uint32_t cp;
    if (Decode(s, &pos, &cp)) {
      out.append(s.substr(start, pos - start));
    } else {
      Append(0xFFFD, &out);
      ++pos;
    }
  }
  return out;
}

const ByteLevel& ByteLevel::Get() {
  static const ByteLevel* const kInstance = new ByteLevel();
  return *kInstance;
}

ByteLevel::ByteLevel() {
  for (int16_t& v : cp_to_byte_) v = -1;
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = printable(b) ? static_cast<uint32_t>(b) : next++;
    byte_to_text_[b] = Encode(cp);
    cp_to_byte_[cp] = static_cast<int16_t>(b);
  }
}

}  // namespace vibrant::utf8
