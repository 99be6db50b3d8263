#include "bench/synth/vocab.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "frontends/gguf/gguf.h"

#ifndef VIBRANT_SYNTH_SHARED_DIR
#define VIBRANT_SYNTH_SHARED_DIR ""
#endif

namespace vibrant::synth {
namespace {

constexpr int32_t kNormal = 1;
constexpr int32_t kControl = 3;
constexpr int32_t kUserDefined = 4;
constexpr int32_t kUnused = 5;

void AppendUtf8(uint32_t cp, std::string* s) {
  if (cp < 0x80) {
    s->push_back(static_cast<char>(cp));
  } else {  // every code point here is below 0x800
    s->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the
// others map to U+0100 onwards in byte order. Returns the 256 bytes in GPT-2's
// token order (printable ones first) and each byte's UTF-8 string.
void ByteAlphabet(std::vector<int>* order, std::vector<std::string>* str) {
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  str->assign(256, "");
  order->clear();
  for (int b = 0; b < 256; ++b) {
    if (printable(b)) {
      order->push_back(b);
      AppendUtf8(static_cast<uint32_t>(b), &(*str)[b]);
    }
  }
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (!printable(b)) {
      order->push_back(b);
      AppendUtf8(static_cast<uint32_t>(256 + n), &(*str)[b]);
      ++n;
    }
  }
}

struct Special {
  std::string text;
  int32_t type;
};

// The special tokens that follow the regular ones, in id order.
std::vector<Special> SpecialTokens(VocabKind kind) {
  std::vector<Special> s;
  if (kind == VocabKind::kLlama3) {
    // Llama 3 / 3.1 / 3.2: ids 128000..128255.
    s = {{"<|begin_of_text|>", kControl},
         {"<|end_of_text|>", kControl},
         {"<|reserved_special_token_0|>", kControl},
         {"<|reserved_special_token_1|>", kControl},
         {"<|finetune_right_pad_id|>", kControl},
         {"<|reserved_special_token_2|>", kControl},
         {"<|start_header_id|>", kControl},
         {"<|end_header_id|>", kControl},
         {"<|eom_id|>", kControl},
         {"<|eot_id|>", kControl},
         {"<|python_tag|>", kControl}};
    for (int i = 3; i <= 247; ++i) {
      s.push_back({absl::StrCat("<|reserved_special_token_", i, "|>"), kControl});
    }
  } else {
    // Qwen2.5: ids 151643..151664.
    for (const char* t : {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                          "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                          "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                          "<|image_pad|>", "<|video_pad|>"}) {
      s.push_back({t, kControl});
    }
    for (const char* t : {"<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
                          "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"}) {
      s.push_back({t, kUserDefined});
    }
  }
  return s;
}

int64_t RegularTokens(VocabKind kind) { return kind == VocabKind::kLlama3 ? 128000 : 151643; }

GgufArray Int32Array(const std::vector<int32_t>& v) {
  GgufArray a{GgufType::kInt32, {}};
  a.elems.reserve(v.size());
  for (int32_t x : v) a.elems.push_back(GgufValue::Int(GgufType::kInt32, x));
  return a;
}

}  // namespace

absl::StatusOr<SpmVocab> SyntheticSpmVocab(int64_t n_vocab) {
  constexpr int32_t kSpmNormal = 1, kSpmUnknown = 2, kSpmControl = 3, kSpmUnused = 5, kSpmByte = 6;
  // "▁" (U+2581) and the printable ASCII characters but the space, which
  // SentencePiece writes as "▁".
  std::vector<std::string> chars = {"\xE2\x96\x81"};
  for (int c = '!'; c <= '~'; ++c) chars.emplace_back(1, static_cast<char>(c));
  const int64_t n_fixed = 4 + 256;
  const int64_t n_chars = static_cast<int64_t>(chars.size());
  if (n_vocab < n_fixed + n_chars) {
    return absl::InvalidArgumentError(absl::StrCat(
        "synthetic SentencePiece vocabulary: ", n_vocab, " tokens is fewer than the ",
        n_fixed + n_chars, " specials, bytes and single characters"));
  }
  // Gemma 3's tokenizer has 262144 pieces; its embedding has 262208 rows.
  const int64_t n_pieces = std::min<int64_t>(n_vocab, 262144);
  SpmVocab v;
  v.tokens.reserve(n_vocab);
  auto add = [&v](std::string t, float score, int32_t type) {
    v.tokens.push_back(std::move(t));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  add("<pad>", 0, kSpmControl);
  add("<eos>", 0, kSpmControl);
  add("<bos>", 0, kSpmControl);
  add("<unk>", 0, kSpmUnknown);
  v.pad_id = 0;
  v.eos_id = 1;
  v.bos_id = 2;
  v.unk_id = 3;
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
    add(hex, 0, kSpmByte);
  }
  // Pieces of 1, 2 then 3 characters; every prefix of a piece is a piece, so
  // the tokenizer can build each from its characters.
  auto remaining = [&] { return n_pieces - static_cast<int64_t>(v.tokens.size()); };
  for (const std::string& c : chars) {
    add(c, -static_cast<float>(v.tokens.size()), kSpmNormal);
  }
  for (int64_t i = 0; i < n_chars && remaining() > 0; ++i) {
    for (int64_t j = 0; j < n_chars && remaining() > 0; ++j) {
      add(chars[i] + chars[j], -static_cast<float>(v.tokens.size()), kSpmNormal);
    }
  }
  for (int64_t i = 0; i < n_chars && remaining() > 0; ++i) {
    for (int64_t j = 0; j < n_chars && remaining() > 0; ++j) {
      for (int64_t k = 0; k < n_chars && remaining() > 0; ++k) {
        add(chars[i] + chars[j] + chars[k], -static_cast<float>(v.tokens.size()), kSpmNormal);
      }
    }
  }
  while (static_cast<int64_t>(v.tokens.size()) < n_vocab) {
    add(absl::StrCat("<unused", v.tokens.size(), ">"), 0, kSpmUnused);
  }
  return v;
}

absl::StatusOr<ByteBpeVocab> SyntheticVocab(VocabKind kind, int64_t n_vocab) {
  const std::vector<Special> specials = SpecialTokens(kind);
  const int64_t n_special = static_cast<int64_t>(specials.size());
  // Fewer regular tokens than the real vocabulary's when n_vocab is smaller
  // (small test models); the 256 bytes are the minimum.
  const int64_t n_regular = std::min(RegularTokens(kind), n_vocab - n_special);
  if (n_regular < 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("synthetic vocabulary: ", n_vocab, " tokens is fewer than the 256 bytes and ",
                     n_special, " special tokens"));
  }
  std::vector<int> order;
  std::vector<std::string> byte_str;
  ByteAlphabet(&order, &byte_str);

  ByteBpeVocab v;
  v.tokens.reserve(n_vocab);
  v.types.reserve(n_vocab);
  v.merges.reserve(n_regular);
  for (int b : order) {
    v.tokens.push_back(byte_str[b]);
    v.types.push_back(kNormal);
  }
  // All byte pairs, then (pair, byte) triples, until the regular tokens are
  // complete. Every token is the merge of two earlier ones, so BPE can reach
  // it, and all are distinct.
  for (int a : order) {
    for (int b : order) {
      if (static_cast<int64_t>(v.tokens.size()) >= n_regular) break;
      v.merges.push_back(absl::StrCat(byte_str[a], " ", byte_str[b]));
      v.tokens.push_back(byte_str[a] + byte_str[b]);
      v.types.push_back(kNormal);
    }
  }
  for (size_t pair = 256; static_cast<int64_t>(v.tokens.size()) < n_regular; ++pair) {
    const std::string left = v.tokens[pair];
    for (int c : order) {
      if (static_cast<int64_t>(v.tokens.size()) >= n_regular) break;
      v.merges.push_back(absl::StrCat(left, " ", byte_str[c]));
      v.tokens.push_back(left + byte_str[c]);
      v.types.push_back(kNormal);
    }
  }
  for (const Special& s : specials) {
    v.tokens.push_back(s.text);
    v.types.push_back(s.type);
  }
  // Llama 3 base: <|begin_of_text|> / <|end_of_text|>, BOS added. Qwen2.5:
  // <|endoftext|> as BOS (not added) and padding, <|im_end|> as EOS.
  v.bos_id = n_regular;
  if (kind == VocabKind::kLlama3) {
    v.eos_id = n_regular + 1;
    v.add_bos = true;
  } else {
    v.eos_id = n_regular + 2;
    v.pad_id = n_regular;
    v.add_bos = false;
  }
  while (static_cast<int64_t>(v.tokens.size()) < n_vocab) {
    v.tokens.push_back(absl::StrCat("[PAD", v.tokens.size(), "]"));
    v.types.push_back(kUnused);
  }
  return v;
}

absl::StatusOr<std::string> AddVocabulary(VocabKind kind, int64_t n_vocab,
                                          const std::string& qwen2_vocab_gguf, GgufWriter& w) {
  if (kind == VocabKind::kQwen2 && !qwen2_vocab_gguf.empty()) {
    absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(qwen2_vocab_gguf);
    if (!f.ok()) return f.status();
    absl::StatusOr<const GgufArray*> tokens = (*f)->GetArray("tokenizer.ggml.tokens");
    if (!tokens.ok()) return tokens.status();
    absl::StatusOr<const GgufArray*> types = (*f)->GetArray("tokenizer.ggml.token_type");
    if (!types.ok()) return types.status();
    const int64_t n = static_cast<int64_t>((*tokens)->elems.size());
    if ((*tokens)->elem_type != GgufType::kString || (*types)->elems.size() != (*tokens)->elems.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          qwen2_vocab_gguf, ": tokenizer.ggml.tokens/token_type are not parallel arrays"));
    }
    if (n > n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat(qwen2_vocab_gguf, ": ", n,
                                                     " tokens do not fit a vocabulary of ",
                                                     n_vocab));
    }
    // tokenizer.ggml.* in the file's order, tokens and types padded.
    for (const auto& [key, value] : (*f)->metadata()) {
      if (key.rfind("tokenizer.ggml.", 0) != 0) continue;
      if (key == "tokenizer.ggml.tokens") {
        GgufArray a = **tokens;
        for (int64_t i = n; i < n_vocab; ++i) {
          a.elems.push_back(GgufValue::String(absl::StrCat("[PAD", i, "]")));
        }
        w.AddArray(key, std::move(a));
      } else if (key == "tokenizer.ggml.token_type") {
        GgufArray a = **types;
        for (int64_t i = n; i < n_vocab; ++i) {
          a.elems.push_back(GgufValue::Int(a.elem_type, kUnused));
        }
        w.AddArray(key, std::move(a));
      } else {
        w.AddMetadata(key, value);
      }
    }
    return absl::StrCat("Qwen2 vocabulary from ", qwen2_vocab_gguf, " (", n, " tokens, padded to ",
                        n_vocab, ")");
  }

  if (kind == VocabKind::kGemma3) {
    absl::StatusOr<SpmVocab> v = SyntheticSpmVocab(n_vocab);
    if (!v.ok()) return v.status();
    w.AddString("tokenizer.ggml.model", "llama");
    w.AddString("tokenizer.ggml.pre", "default");
    w.AddStringArray("tokenizer.ggml.tokens", v->tokens);
    w.AddFloat32Array("tokenizer.ggml.scores", v->scores);
    w.AddArray("tokenizer.ggml.token_type", Int32Array(v->types));
    w.AddUint32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(v->bos_id));
    w.AddUint32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(v->eos_id));
    w.AddUint32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(v->unk_id));
    w.AddUint32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(v->pad_id));
    w.AddBool("tokenizer.ggml.add_bos_token", true);
    w.AddBool("tokenizer.ggml.add_eos_token", false);
    return absl::StrCat("synthetic SentencePiece vocabulary (", v->tokens.size(),
                        " tokens; not the trained one)");
  }
  absl::StatusOr<ByteBpeVocab> v = SyntheticVocab(kind, n_vocab);
  if (!v.ok()) return v.status();
  w.AddString("tokenizer.ggml.model", "gpt2");
  w.AddString("tokenizer.ggml.pre", kind == VocabKind::kLlama3 ? "llama-bpe" : "qwen2");
  w.AddStringArray("tokenizer.ggml.tokens", v->tokens);
  w.AddArray("tokenizer.ggml.token_type", Int32Array(v->types));
  w.AddStringArray("tokenizer.ggml.merges", v->merges);
  w.AddUint32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(v->bos_id));
  w.AddUint32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(v->eos_id));
  if (v->pad_id >= 0) {
    w.AddUint32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(v->pad_id));
  }
  w.AddBool("tokenizer.ggml.add_bos_token", v->add_bos);
  return absl::StrCat("synthetic byte-level BPE vocabulary (", v->tokens.size(), " tokens, ",
                      v->merges.size(), " merges; not the trained one)");
}

std::string FindQwen2Vocab() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("VIBRANT_SHARED_DIR"); env != nullptr && *env != '\0') {
    dirs.emplace_back(env);
  }
  if (std::string_view(VIBRANT_SYNTH_SHARED_DIR) != "") dirs.emplace_back(VIBRANT_SYNTH_SHARED_DIR);
  for (const std::string& d : dirs) {
    std::string path = d + "/tokenizer/ggml-vocab-qwen2.gguf";
    std::error_code ec;
    if (std::filesystem::is_regular_file(path, ec)) return path;
  }
  return "";
}

}  // namespace vibrant::synth
