// vibrantc tokenize MODEL.gguf TEXT | --file F [--no-bos] [--no-parse-special] [--json]
//
// Tokenizes TEXT (or the bytes of file F, as they are) with the vocabulary in
// MODEL.gguf, like llama.cpp's llama-tokenize --ids:
//   * prints the token ids on one line, separated by spaces;
//   * adds BOS/EOS when the vocabulary says so (tokenizer.ggml.add_bos_token,
//     add_eos_token, or the tokenizer's default); --no-bos adds neither;
//   * text such as "<|im_start|>" becomes that special token; with
//     --no-parse-special it is tokenized as plain text;
//   * --json prints instead a JSON array [{"id": 1, "piece": "<s>"}, ...]. A
//     piece is the token's bytes as they detokenize, special tokens rendered
//     as their text. Pieces that are not valid UTF-8 (a byte token, part of
//     a character) are written with each malformed byte replaced by U+FFFD,
//     and carry "bytes_hex" with their exact bytes in lowercase hex.
// Exit status: 0 on success, 1 when the model or text file cannot be read or
// tokenized, 2 on a usage error. Use "--" before a TEXT that starts with "-".
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "frontends/gguf/gguf.h"
#include "frontends/io/file.h"
#include "frontends/io/text.h"
#include "frontends/tokenizer/tokenizer.h"
#include "frontends/tokenizer/utf8.h"
#include "nlohmann/json.hpp"
#include "tools/vibrantc/commands.h"

namespace vibrant::cli {
namespace {

constexpr char kUsage[] =
    "usage: vibrantc tokenize MODEL.gguf TEXT [--no-bos] [--no-parse-special] [--json]\n"
    "       vibrantc tokenize MODEL.gguf --file F [--no-bos] [--no-parse-special] [--json]\n";

int UsageError(const std::string& message) {
  std::fprintf(stderr, "vibrantc tokenize: %s\n%s", message.c_str(), kUsage);
  return 2;
}

std::string Hex(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) absl::StrAppendFormat(&out, "%02x", c);
  return out;
}

}  // namespace

int RunTokenize(const std::vector<std::string>& args) {
  bool no_bos = false;
  bool no_parse_special = false;
  bool json = false;
  bool have_file = false;
  std::string file;
  std::vector<std::string> positional;
  bool options_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (options_done || a.empty() || a[0] != '-' || a == "-") {
      positional.push_back(a);
    } else if (a == "--") {
      options_done = true;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--no-bos") {
      no_bos = true;
    } else if (a == "--no-parse-special") {
      no_parse_special = true;
    } else if (a == "--json") {
      json = true;
    } else if (a == "--file" || a == "-f") {
      if (i + 1 >= args.size()) return UsageError(absl::StrCat(a, " needs a file name"));
      if (have_file) return UsageError("--file given twice");
      have_file = true;
      file = args[++i];
    } else {
      return UsageError(absl::StrCat("unknown option '", a, "'"));
    }
  }
  if (positional.empty()) return UsageError("missing MODEL.gguf");
  const std::string& model_path = positional[0];
  std::string text;
  if (have_file) {
    if (positional.size() > 1) return UsageError("give either TEXT or --file, not both");
    absl::StatusOr<std::string> read = io::ReadFile(file);  // regular files only
    if (!read.ok()) {
      std::fprintf(stderr, "vibrantc tokenize: %s\n",
                   io::EscapeForTerminal(read.status().message(), true).c_str());
      return 1;
    }
    text = *std::move(read);
  } else {
    if (positional.size() < 2) return UsageError("missing TEXT (or --file F)");
    if (positional.size() > 2) {
      return UsageError("too many arguments (quote TEXT that contains spaces)");
    }
    text = positional[1];
  }

  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Open(model_path);
  if (!gguf.ok()) {
    std::fprintf(stderr, "vibrantc tokenize: %s\n", vibrant::io::EscapeForTerminal(gguf.status().message(), true).c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromGguf(**gguf);
  if (!tok.ok()) {
    std::fprintf(stderr, "vibrantc tokenize: %s\n", vibrant::io::EscapeForTerminal(tok.status().message(), true).c_str());
    return 1;
  }
  absl::StatusOr<std::vector<int32_t>> ids =
      (*tok)->Encode(text, /*add_special=*/!no_bos, /*parse_special=*/!no_parse_special);
  if (!ids.ok()) {
    std::fprintf(stderr, "vibrantc tokenize: %s: %s\n",
                 have_file ? file.c_str() : "TEXT", vibrant::io::EscapeForTerminal(ids.status().message(), true).c_str());
    return 1;
  }

  if (!json) {
    std::printf("%s\n", absl::StrJoin(*ids, " ").c_str());
    return 0;
  }
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (int32_t id : *ids) {
    const std::string piece = (*tok)->TokenToPiece(id, /*render_special=*/true);
    nlohmann::ordered_json entry;
    entry["id"] = id;
    if (utf8::IsValid(piece)) {
      entry["piece"] = piece;
    } else {
      entry["piece"] = utf8::Sanitize(piece);
      entry["bytes_hex"] = Hex(piece);
    }
    out.push_back(std::move(entry));
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace vibrant::cli
