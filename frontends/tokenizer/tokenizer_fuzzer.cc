// libFuzzer target for the tokenizers (`.ci/fuzz.sh tokenizer`).
//
// Input: a selector byte, a flags byte, then text. The selector picks one of
// the tokenizers built at start: the bundled stories260K SentencePiece
// vocabulary, a synthetic byte-level BPE vocabulary under every
// pre-tokenizer this build knows (bench/synth/vocab.h), and every
// vocabulary-only GGUF in $VIBRANT_FUZZ_VOCAB_DIR (for long local runs:
// ../shared/tokenizer). Selector 0xFF instead reads the rest as a GGUF and
// builds its tokenizer (Tokenizer::FromGguf, ValidateVocabulary).
//
// Invariants: every id Encode returns is in the vocabulary; pieces,
// Decode and Detokenize never fail; byte-level BPE with a token for every
// byte is lossless (the pieces of Encode(text) without special handling
// concatenate to the text).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench/synth/vocab.h"
#include "frontends/gguf/gguf.h"
#include "frontends/tokenizer/tokenizer.h"

namespace {

using vibrant::Tokenizer;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tokenizer_fuzzer: invariant broken: %s\n", what);
    std::abort();
  }
}

struct Entry {
  std::string name;
  std::string bytes;  // the GGUF, kept alive for the file
  std::unique_ptr<vibrant::GgufFile> file;
  std::unique_ptr<Tokenizer> tok;
  bool lossless = false;  // byte-level BPE with a token for each of the 256 byte symbols
};

// Whether byte-level BPE `t` can encode every byte: real vocabularies may
// lack some (falcon has no tokens for most control bytes, starcoder none for
// 0xC0), and then those bytes are dropped, as llama.cpp drops them.
bool HasEveryByte(const Tokenizer& t) {
  if (t.model() != "gpt2") return false;
  // For each byte, a short valid UTF-8 text holding it (0xC0, 0xC1 and
  // 0xF5..0xFF never occur in UTF-8).
  std::vector<std::string> texts;
  for (int b = 1; b < 0x80; ++b) texts.push_back(std::string(1, static_cast<char>(b)));
  for (int b = 0x80; b < 0xC0; ++b) texts.push_back(std::string("\xC2") + static_cast<char>(b));
  for (int b = 0xC2; b < 0xE0; ++b) texts.push_back(std::string(1, static_cast<char>(b)) + "\x80");
  for (int b = 0xE0; b < 0xF0; ++b) {
    texts.push_back(std::string(1, static_cast<char>(b)) + (b == 0xE0 ? "\xA0\x80" : "\x80\x80"));
  }
  for (int b = 0xF0; b < 0xF5; ++b) {
    texts.push_back(std::string(1, static_cast<char>(b)) + (b == 0xF0 ? "\x90\x80\x80" : "\x80\x80\x80"));
  }
  for (const std::string& text : texts) {
    absl::StatusOr<std::vector<int32_t>> ids = t.Encode(text, false, false);
    if (!ids.ok() || t.Decode(*ids) != text) return false;
  }
  return true;
}

void AddGguf(std::vector<Entry>& out, const std::string& path) {
  Entry e;
  e.name = path;
  absl::StatusOr<std::unique_ptr<vibrant::GgufFile>> f = vibrant::GgufFile::Open(path);
  if (!f.ok()) return;
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromGguf(**f);
  if (!t.ok()) return;
  e.file = *std::move(f);
  e.tok = *std::move(t);
  e.lossless = HasEveryByte(*e.tok);
  out.push_back(std::move(e));
}

std::vector<Entry> BuildTokenizers() {
  std::vector<Entry> out;
  AddGguf(out, VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf");
  absl::StatusOr<vibrant::synth::ByteBpeVocab> bpe =
      vibrant::synth::SyntheticVocab(vibrant::synth::VocabKind::kLlama3, 1024);
  if (bpe.ok()) {
    for (const char* pre : {"default", "llama3", "deepseek-llm", "deepseek-coder", "falcon", "mpt",
                            "starcoder", "gpt-2", "refact", "command-r", "qwen2", "stablelm2", "olmo",
                            "dbrx", "smaug-bpe", "poro-chat", "chatglm-bpe", "viking", "jais", "tekken",
                            "smollm", "codeshell", "bloom", "gpt3-finnish", "exaone", "chameleon",
                            "minerva-7b", "megrez"}) {
      vibrant::VocabData v;
      v.model = "gpt2";
      v.pre = pre;
      v.tokens = bpe->tokens;
      v.token_types = bpe->types;
      v.merges = bpe->merges;
      if (bpe->bos_id >= 0) v.bos_id = bpe->bos_id;
      if (bpe->eos_id >= 0) v.eos_id = bpe->eos_id;
      absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromVocab(std::move(v));
      if (!t.ok()) continue;
      Entry e;
      e.name = std::string("bpe/") + pre;
      e.tok = *std::move(t);
      e.lossless = HasEveryByte(*e.tok);
      out.push_back(std::move(e));
    }
  }
  if (const char* dir = std::getenv("VIBRANT_FUZZ_VOCAB_DIR"); dir != nullptr) {
    std::vector<std::string> paths;
    std::error_code ec;
    for (const auto& f : std::filesystem::directory_iterator(dir, ec)) {
      if (f.path().extension() == ".gguf") paths.push_back(f.path().string());
    }
    std::sort(paths.begin(), paths.end());
    for (const std::string& p : paths) AddGguf(out, p);
  }
  if (std::getenv("VIBRANT_FUZZ_VERBOSE") != nullptr) {
    for (size_t i = 0; i < out.size(); ++i) {
      std::fprintf(stderr, "tokenizer %zu: %s%s\n", i, out[i].name.c_str(), out[i].lossless ? " (lossless)" : "");
    }
  }
  return out;
}

bool ValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
    for (size_t k = 1; k < n; ++k) {
      const unsigned char b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xc0) != 0x80) return false;
      cp = cp << 6 | (b & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n;
  }
  return true;
}

void Exercise(const Tokenizer& t, std::string_view text, uint8_t flags, bool lossless) {
  const bool add_special = flags & 1, parse_special = flags & 2;
  absl::StatusOr<std::vector<int32_t>> ids = t.Encode(text, add_special, parse_special);
  if (!ids.ok()) {
    Check(!ids.status().message().empty(), "errors have a message");
    return;
  }
  for (int32_t id : *ids) Check(id >= 0 && id < t.vocab_size(), "ids in the vocabulary");
  size_t total = 0;
  for (int32_t id : *ids) total += t.TokenToPiece(id, flags & 4).size() + t.TokenText(id).size();
  const std::string decoded = t.Decode(*ids);
  total += t.Detokenize(*ids, flags & 8, flags & 16).size();
  if (lossless && !add_special && !parse_special && ValidUtf8(text)) {
    if (decoded != text) {
      std::fprintf(stderr, "text:    [%.*s]\ndecoded: [%s]\n", static_cast<int>(text.size()), text.data(),
                   decoded.c_str());
    }
    Check(decoded == text, "byte-level BPE round-trips");
  }
  volatile size_t sink = total;
  (void)sink;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<Entry>* tokenizers = new std::vector<Entry>(BuildTokenizers());
  if (size < 2) return 0;
  if (data[0] == 0xFF) {
    absl::StatusOr<std::unique_ptr<vibrant::GgufFile>> f =
        vibrant::GgufFile::FromBuffer("fuzz.gguf", absl::Span<const uint8_t>(data + 1, size - 1));
    if (!f.ok()) return 0;
    absl::Status valid = vibrant::ValidateVocabulary(**f, -1);
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromGguf(**f);
    if (!t.ok()) {
      Check(!valid.ok(), "a vocabulary that validates builds a tokenizer");
      return 0;
    }
    Exercise(**t, "Hello world! <s> caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC 123", 3, false);
    Exercise(**t, "  x\ny\t", 0, false);
    return 0;
  }
  if (tokenizers->empty()) return 0;
  const Entry& e = (*tokenizers)[data[0] % tokenizers->size()];
  Exercise(*e.tok, std::string_view(reinterpret_cast<const char*>(data + 2), size - 2), data[1], e.lossless);
  return 0;
}
