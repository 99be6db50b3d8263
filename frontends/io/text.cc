#include "frontends/io/text.h"

#include <cstdint>
#include <cstdio>

namespace vibrant::io {
namespace {

void AppendHexByte(std::string& out, uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "\\x%02x", b);
  out += buf;
}

// Decodes one well-formed UTF-8 sequence at s[i] (no overlongs, no
// surrogates, at most U+10FFFF); returns its length, or 0 if malformed.
size_t DecodeUtf8(std::string_view s, size_t i, uint32_t* cp) {
  const uint8_t b0 = static_cast<uint8_t>(s[i]);
  size_t len;
  uint32_t c;
  uint32_t min;
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  } else if ((b0 & 0xE0) == 0xC0) {
    len = 2, c = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, c = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, c = b0 & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const uint8_t b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    c = (c << 6) | (b & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
  *cp = c;
  return len;
}

bool IsFormatControl(uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) || cp == 0x200E || cp == 0x200F ||
         (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

}  // namespace

std::string EscapeForTerminal(std::string_view s, bool keep_newlines) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = 0;
    const size_t n = DecodeUtf8(s, i, &cp);
    if (n == 0) {
      AppendHexByte(out, static_cast<uint8_t>(s[i]));
      ++i;
      continue;
    }
    if (cp < 0x20 || cp == 0x7F) {
      if (keep_newlines && (cp == '\n' || cp == '\t')) {
        out += static_cast<char>(cp);
      } else {
        AppendHexByte(out, static_cast<uint8_t>(cp));
      }
    } else if (IsFormatControl(cp)) {
      char buf[16];
      std::snprintf(buf, sizeof(buf), "\\u{%04x}", cp);
      out += buf;
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  return out;
}

}  // namespace vibrant::io
