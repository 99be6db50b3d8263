// Making untrusted text safe to print on a terminal.
//
// Strings from files (GGUF metadata, tensor names, the architecture, paths
// stored in plans) can hold escape sequences that move the cursor, rewrite
// the screen or set the window title. Every such string is passed through
// EscapeForTerminal before it is printed, and the tools print their error
// messages through it too (errors quote file-provided names).
#ifndef VIBRANT_FRONTENDS_IO_TEXT_H_
#define VIBRANT_FRONTENDS_IO_TEXT_H_

#include <string>
#include <string_view>

#include "absl/strings/string_view.h"

namespace vibrant::io {

// `s` with every byte that a terminal would not just display replaced by a
// visible escape: C0 controls and DEL as \xNN (except '\n' and '\t' when
// `keep_newlines`), C1 controls (U+0080..U+009F) and the bidirectional
// formatting characters (U+200E/F, U+202A..U+202E, U+2066..U+2069) as
// \u{XXXX}, and bytes that are not well-formed UTF-8 as \xNN. Valid printable
// UTF-8 (accents, CJK, emoji) is kept as it is.
std::string EscapeForTerminal(std::string_view s, bool keep_newlines = false);
// The same for the other string types (absl::string_view is its own type in
// Debian's Abseil: Status::message() returns one).
inline std::string EscapeForTerminal(const std::string& s, bool keep_newlines = false) {
  return EscapeForTerminal(std::string_view(s), keep_newlines);
}
inline std::string EscapeForTerminal(const char* s, bool keep_newlines = false) {
  return EscapeForTerminal(std::string_view(s), keep_newlines);
}
inline std::string EscapeForTerminal(absl::string_view s, bool keep_newlines = false) {
  return EscapeForTerminal(std::string_view(s.data(), s.size()), keep_newlines);
}

}  // namespace vibrant::io

#endif  // VIBRANT_FRONTENDS_IO_TEXT_H_
