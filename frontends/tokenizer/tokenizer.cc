#include "frontends/tokenizer/tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <queue>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "frontends/tokenizer/pretokenizer.h"
#include "frontends/tokenizer/utf8.h"

namespace vibrant {
namespace {

absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Token attributes (llama.cpp's llama_token_attr bits).
enum Attr : uint32_t {
  kAttrUndefined = 0,
  kAttrUnknown = 1u << 0,
  kAttrUnused = 1u << 1,
  kAttrNormal = 1u << 2,
  kAttrControl = 1u << 3,
  kAttrUserDefined = 1u << 4,
  kAttrByte = 1u << 5,
  kAttrLstrip = 1u << 7,
  kAttrRstrip = 1u << 8,
};
constexpr uint32_t kAttrTypeMask =
    kAttrUnknown | kAttrUnused | kAttrNormal | kAttrControl | kAttrUserDefined | kAttrByte;

uint32_t AttrOfType(int32_t type) {
  switch (static_cast<TokenType>(type)) {
    case TokenType::kNormal: return kAttrNormal;
    case TokenType::kUnknown: return kAttrUnknown;
    case TokenType::kControl: return kAttrControl;
    case TokenType::kUserDefined: return kAttrUserDefined;
    case TokenType::kUnused: return kAttrUnused;
    case TokenType::kByte: return kAttrByte;
    default: return kAttrUndefined;
  }
}

TokenType TypeOfAttr(uint32_t attr) {
  if (attr & kAttrControl) return TokenType::kControl;
  if (attr & kAttrUserDefined) return TokenType::kUserDefined;
  if (attr & kAttrUnknown) return TokenType::kUnknown;
  if (attr & kAttrByte) return TokenType::kByte;
  if (attr & kAttrUnused) return TokenType::kUnused;
  if (attr & kAttrNormal) return TokenType::kNormal;
  return TokenType::kUndefined;
}

// SentencePiece's whitespace marker U+2581.
constexpr std::string_view kSpmSpace = "\xE2\x96\x81";

void ReplaceAll(std::string* s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s->size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s->find(from.data(), pos, from.size());
    if (hit == std::string::npos) break;
    out.append(*s, pos, hit - pos);
    out.append(to.data(), to.size());
    pos = hit + from.size();
  }
  out.append(*s, pos, std::string::npos);
  s->swap(out);
}

// C isspace() in the "C" locale, as llama.cpp's lstrip/rstrip use it.
bool IsCSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

struct Symbol {
  int prev;
  int next;
  size_t off;
  size_t n;
};

// A piece of the input after special-token partitioning: a token, or raw text.
struct Fragment {
  int32_t token;  // >= 0: a special token; -1: raw text [off, off+len)
  size_t off;
  size_t len;
};

class VocabTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(VocabData vocab);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special,
                                              bool parse_special) const override;
  std::string TokenToPiece(int32_t id, bool render_special) const override;
  std::string Detokenize(absl::Span<const int32_t> ids, bool remove_special,
                         bool unparse_special) const override;
  const std::string& TokenText(int32_t id) const override {
    static const std::string* const kEmpty = new std::string();
    return InRange(id) ? text_[id] : *kEmpty;
  }
  TokenType token_type(int32_t id) const override {
    return InRange(id) ? TypeOfAttr(attr_[id]) : TokenType::kUndefined;
  }
  int32_t vocab_size() const override { return static_cast<int32_t>(text_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  bool add_bos() const override { return add_bos_; }
  bool add_eos() const override { return add_eos_; }
  bool IsEndOfGeneration(int32_t id) const override { return eog_.contains(id); }
  bool IsControl(int32_t id) const override {
    return InRange(id) && (attr_[id] & kAttrControl) != 0;
  }
  const std::string& model() const override { return model_; }
  const std::string& pre() const override { return pre_; }

 private:
  bool InRange(int32_t id) const { return id >= 0 && id < static_cast<int32_t>(text_.size()); }
  int32_t Find(std::string_view s) const {
    auto it = token_to_id_.find(AsAbsl(s));
    return it == token_to_id_.end() ? -1 : it->second;
  }
  std::string ComputePiece(int32_t id) const;
  std::vector<Fragment> Partition(std::string_view text, bool parse_special) const;
  absl::Status SpmTokenize(const std::string& text, std::vector<int32_t>* out) const;
  void BpeTokenize(std::string_view text, std::vector<int32_t>* out) const;

  bool spm_ = true;
  std::string model_;
  std::string pre_;
  std::vector<std::string> text_;
  std::vector<float> score_;
  std::vector<uint32_t> attr_;
  // Keys view text_, which never changes after Create().
  absl::flat_hash_map<absl::string_view, int32_t> token_to_id_;
  // BPE merges: "left" '\xff' "right" -> rank (0xFF never occurs in UTF-8).
  // Keys view merge_keys_.
  std::string merge_keys_;
  absl::flat_hash_map<absl::string_view, int32_t> bpe_ranks_;
  std::vector<int32_t> special_;    // partitioned tokens, longest text first
  int32_t spm_byte_token_[256];

  int32_t bos_ = -1, eos_ = -1, eot_ = -1, eom_ = -1, unk_ = -1, sep_ = -1, pad_ = -1,
          mask_ = -1;
  int32_t fim_pre_ = -1, fim_suf_ = -1, fim_mid_ = -1, fim_pad_ = -1, fim_rep_ = -1,
          fim_sep_ = -1;
  absl::flat_hash_set<int32_t> eog_;
  bool add_bos_ = false;
  bool add_eos_ = false;
  bool add_space_prefix_ = false;
  bool ignore_merges_ = false;
  bool clean_spaces_ = false;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
};

absl::StatusOr<std::unique_ptr<Tokenizer>> VocabTokenizer::Create(VocabData v) {
  std::unique_ptr<VocabTokenizer> t(new VocabTokenizer());
  t->model_ = v.model;
  t->pre_ = v.pre;
  if (v.model == "llama") {
    t->spm_ = true;
    t->bos_ = 1;
    t->eos_ = 2;
    t->unk_ = 0;
    t->add_space_prefix_ = true;
    t->clean_spaces_ = false;
    t->add_bos_ = true;
    t->add_eos_ = false;
  } else if (v.model == "gpt2") {
    t->spm_ = false;
    t->bos_ = 11;
    t->eos_ = 11;
    absl::StatusOr<PreTokenizerInfo> info = LookupPreTokenizer(v.pre);
    if (!info.ok()) return info.status();
    t->add_space_prefix_ = false;
    t->clean_spaces_ = info->clean_spaces;
    t->ignore_merges_ = info->ignore_merges;
    t->add_bos_ = info->add_bos;
    if (info->no_bos) t->bos_ = -1;
    absl::StatusOr<std::unique_ptr<PreTokenizer>> pre = PreTokenizer::Create(info->type);
    if (!pre.ok()) return pre.status();
    t->pre_tokenizer_ = *std::move(pre);
  } else if (v.model == "no_vocab" || v.model == "none" || v.model == "bert" || v.model == "t5" ||
             v.model == "rwkv") {
    return absl::UnimplementedError(
        absl::StrCat("tokenizer model (tokenizer.ggml.model) '", v.model,
                     "' is not supported; supported: 'llama' (SentencePiece), 'gpt2' (BPE)"));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown tokenizer model (tokenizer.ggml.model): '", v.model, "'"));
  }
  if (v.add_space_prefix.has_value()) t->add_space_prefix_ = *v.add_space_prefix;

  const size_t n = v.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("tokenizer.ggml.tokens is empty");
  if (n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError("tokenizer.ggml.tokens has too many entries");
  }
  if (!v.scores.empty() && v.scores.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.scores has ", v.scores.size(),
                                                   " entries but there are ", n, " tokens"));
  }
  if (!v.token_types.empty() && v.token_types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.token_type has ",
                                                   v.token_types.size(),
                                                   " entries but there are ", n, " tokens"));
  }
  t->text_ = std::move(v.tokens);
  t->score_ = v.scores.empty() ? std::vector<float>(n, 0.0f) : std::move(v.scores);
  t->attr_.resize(n);
  t->token_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    std::string& word = t->text_[i];
    if (word.empty()) word = absl::StrCat("[EMPTY_", i, "]");
    t->attr_[i] = v.token_types.empty() ? kAttrNormal : AttrOfType(v.token_types[i]);
  }
  for (size_t i = 0; i < n; ++i) {
    t->token_to_id_.insert_or_assign(t->text_[i], static_cast<int32_t>(i));  // the last one wins
  }

  if (!t->spm_) {
    size_t total = 0;
    for (const std::string& m : v.merges) total += m.size();
    t->merge_keys_.reserve(total);  // never reallocated: the map's keys view it
    t->bpe_ranks_.reserve(v.merges.size());
    for (size_t i = 0; i < v.merges.size(); ++i) {
      const std::string& m = v.merges[i];
      // Split at the first space after the first byte, as llama.cpp does.
      const size_t space = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
      if (space == std::string::npos) continue;  // never matches a pair of symbols
      const size_t start = t->merge_keys_.size();
      t->merge_keys_.append(m);
      t->merge_keys_[start + space] = '\xff';
      t->bpe_ranks_.try_emplace(absl::string_view(t->merge_keys_.data() + start, m.size()),
                                static_cast<int32_t>(i));  // the first one wins
    }
  }

  // Special token ids from the metadata; bad ones keep the default.
  auto set_id = [&](const std::optional<int64_t>& value, int32_t* id) {
    if (value.has_value() && *value >= 0 && *value < static_cast<int64_t>(n)) {
      *id = static_cast<int32_t>(*value);
    }
  };
  set_id(v.bos_id, &t->bos_);
  set_id(v.eos_id, &t->eos_);
  set_id(v.eot_id, &t->eot_);
  set_id(v.eom_id, &t->eom_);
  set_id(v.unk_id, &t->unk_);
  set_id(v.sep_id, &t->sep_);
  set_id(v.pad_id, &t->pad_);
  set_id(v.mask_id, &t->mask_);
  set_id(v.fim_pre_id, &t->fim_pre_);
  set_id(v.fim_suf_id, &t->fim_suf_);
  set_id(v.fim_mid_id, &t->fim_mid_);
  set_id(v.fim_pad_id, &t->fim_pad_);
  set_id(v.fim_rep_id, &t->fim_rep_);
  set_id(v.fim_sep_id, &t->fim_sep_);
  // A default that does not exist in a small vocabulary means "none".
  for (int32_t* id : {&t->bos_, &t->eos_, &t->unk_}) {
    if (*id >= static_cast<int32_t>(n)) *id = -1;
  }
  if (v.add_bos.has_value()) t->add_bos_ = *v.add_bos;
  if (v.add_eos.has_value()) t->add_eos_ = *v.add_eos;

  // Tokens recognized by their text (llama.cpp's workaround for converters
  // that do not record them) become control tokens. llama.cpp walks its
  // text -> id map in hash order; with several candidates this takes the
  // lowest id.
  auto detect = [&](int32_t* id, std::initializer_list<std::string_view> names) {
    if (*id != -1) return;
    for (std::string_view name : names) {
      const int32_t found = t->Find(name);
      if (found >= 0 && (*id == -1 || found < *id)) *id = found;
    }
    if (*id >= 0) t->attr_[*id] = kAttrControl;
  };
  detect(&t->eot_, {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                    "<EOT>", "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"});
  detect(&t->eom_, {"<|eom_id|>"});
  detect(&t->fim_pre_, {"<|fim_prefix|>", "<fim-prefix>",
                        "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>", "<PRE>"});
  detect(&t->fim_suf_, {"<|fim_suffix|>", "<fim-suffix>",
                        "<\xEF\xBD\x9C" "fim\xE2\x96\x81hole\xEF\xBD\x9C>", "<SUF>"});
  detect(&t->fim_mid_, {"<|fim_middle|>", "<fim-middle>",
                        "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", "<MID>"});
  detect(&t->fim_pad_, {"<|fim_pad|>", "<fim-pad>", "<PAD>"});
  detect(&t->fim_rep_, {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>"});
  detect(&t->fim_sep_, {"<|file_sep|>"});
  for (int32_t id : {t->fim_pad_, t->fim_rep_, t->fim_sep_}) {
    if (id >= 0) t->eog_.insert(id);
  }
  for (std::string_view name : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                "<|endoftext|>", "<|eom_id|>", "<EOT>"}) {
    const int32_t id = t->Find(name);
    if (id < 0) continue;
    t->eog_.insert(id);
    if ((t->attr_[id] & kAttrControl) == 0) t->attr_[id] = kAttrControl;
  }
  for (int32_t id : {t->eos_, t->eot_, t->eom_}) {
    if (id >= 0) t->eog_.insert(id);
  }

  // Tokens cut out of the text before tokenizing, longest first (ties by id;
  // llama.cpp's unstable sort leaves their order unspecified).
  for (int32_t i = 0; i < static_cast<int32_t>(n); ++i) {
    if (t->attr_[i] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) t->special_.push_back(i);
  }
  std::stable_sort(t->special_.begin(), t->special_.end(), [&](int32_t a, int32_t b) {
    return t->text_[a].size() > t->text_[b].size();
  });

  // Whitespace stripping around special tokens, chosen by name as llama.cpp does.
  auto set_attr = [&](std::string_view token, uint32_t attr, bool on) {
    const int32_t id = t->Find(token);
    if (id < 0) return;
    t->attr_[id] = on ? (t->attr_[id] | attr) : (t->attr_[id] & ~attr);
  };
  const std::string name = absl::AsciiStrToLower(v.name);
  auto contains_any = [](const std::string& s, std::initializer_list<std::string_view> subs) {
    for (std::string_view sub : subs) {
      if (s.find(sub) != std::string::npos) return true;
    }
    return false;
  };
  if (contains_any(v.pre, {"jina-v2-de", "jina-v2-es", "jina-v2-code"})) {
    set_attr("<mask>", kAttrLstrip, true);
  } else if (contains_any(name, {"phi-3", "phi3"})) {
    for (int32_t id : t->special_) t->attr_[id] |= kAttrRstrip;
    set_attr("</s>", kAttrRstrip, true);
    for (std::string_view tok : {"<unk>", "<s>", "<|endoftext|>"}) set_attr(tok, kAttrRstrip, false);
  }

  // SentencePiece byte fallback: "<0xXX>", else the byte itself as a token.
  for (int b = 0; b < 256; ++b) {
    int32_t id = t->Find(absl::StrFormat("<0x%02X>", b));
    // llama.cpp looks the byte up as a C string, so byte 0 finds nothing.
    if (id < 0 && b != 0) id = t->Find(std::string(1, static_cast<char>(b)));
    t->spm_byte_token_[b] = id;
  }
  return std::unique_ptr<Tokenizer>(std::move(t));
}

std::string VocabTokenizer::ComputePiece(int32_t id) const {
  const uint32_t attr = attr_[id];
  const std::string& text = text_[id];
  if (attr & (kAttrUnknown | kAttrControl | kAttrUserDefined)) return text;
  if (spm_) {
    if (attr & kAttrNormal) {
      std::string piece = text;
      ReplaceAll(&piece, kSpmSpace, " ");
      return piece;
    }
    if (attr & kAttrByte) {
      // "<0xXX>": the two hex digits after "<0x".
      const std::string hex = text.size() > 3 ? text.substr(3, 2) : std::string();
      return std::string(1, static_cast<char>(std::strtol(hex.c_str(), nullptr, 16)));
    }
    return "";
  }
  if (attr & kAttrNormal) {
    // Byte-level BPE: every code point stands for one byte.
    const utf8::ByteLevel& bl = utf8::ByteLevel::Get();
    std::string piece;
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t start = pos;
      uint32_t cp;
      if (!utf8::Decode(text, &pos, &cp)) {
        piece.push_back(text[pos++]);  // malformed vocabulary entry: keep the byte
        continue;
      }
      const int b = bl.CodepointToByte(cp);
      if (b >= 0) {
        piece.push_back(static_cast<char>(b));
      } else {
        piece += "[UNK_BYTE_0x";
        for (size_t k = start; k < pos; ++k) {
          absl::StrAppendFormat(&piece, "%02x", static_cast<uint8_t>(text[k]));
        }
        piece += text + "]";
      }
    }
    return piece;
  }
  return "";
}

std::string VocabTokenizer::TokenToPiece(int32_t id, bool render_special) const {
  if (!InRange(id)) return "";
  if (!render_special && (attr_[id] & (kAttrUnknown | kAttrControl))) return "";
  return ComputePiece(id);
}

std::vector<Fragment> VocabTokenizer::Partition(std::string_view text, bool parse_special) const {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({-1, 0, text.size()});
  std::vector<Fragment> next;
  // Bytes present in the text: a token whose first byte is absent cannot
  // occur, which skips most of a large special-token list cheaply.
  bool present[256] = {};
  for (char c : text) present[static_cast<uint8_t>(c)] = true;
  for (int32_t id : special_) {
    const uint32_t attr = attr_[id];
    // Without parse_special, control and unknown tokens stay text; user-defined
    // ones are still cut out.
    if (!parse_special && (attr & (kAttrControl | kAttrUnknown))) continue;
    const std::string& tok = text_[id];
    if (tok.size() > text.size() || !present[static_cast<uint8_t>(tok[0])]) continue;
    bool changed = false;
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      size_t base = f.off;
      size_t len = f.len;
      while (len > 0) {
        const size_t hit = text.substr(base, len).find(tok);
        if (hit == std::string_view::npos) break;
        changed = true;
        const size_t match = base + hit;
        size_t left_len = hit;
        if (attr & kAttrLstrip) {
          while (left_len > 0 && IsCSpace(text[base + left_len - 1])) --left_len;
        }
        if (left_len > 0) next.push_back({-1, base, left_len});
        next.push_back({id, 0, 0});
        size_t right = match + tok.size();
        size_t right_len = base + len - right;
        if (attr & kAttrRstrip) {
          while (right_len > 0 && IsCSpace(text[right])) ++right, --right_len;
        }
        base = right;
        len = right_len;
      }
      if (len > 0) next.push_back({-1, base, len});
    }
    if (changed) frags.swap(next);
  }
  return frags;
}

absl::Status VocabTokenizer::SpmTokenize(const std::string& text, std::vector<int32_t>* out) const {
  std::vector<Symbol> sym;
  sym.reserve(text.size());
  for (size_t off = 0; off < text.size();) {
    const size_t n = std::min(utf8::SeqLen(static_cast<uint8_t>(text[off])), text.size() - off);
    const int index = static_cast<int>(sym.size());
    sym.push_back({index - 1, off + n == text.size() ? -1 : index + 1, off, n});
    off += n;
  }
  if (sym.empty()) return absl::OkStatus();

  struct Bigram {
    int left;
    int right;
    float score;
    size_t size;
  };
  // Highest score first; ties go to the leftmost pair.
  auto worse = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
  auto try_add = [&](int left, int right) {
    if (left == -1 || right == -1) return;
    const size_t size = sym[left].n + sym[right].n;
    const int32_t id = Find(std::string_view(text).substr(sym[left].off, size));
    if (id < 0) return;
    queue.push({left, right, score_[id], size});
  };
  for (int i = 1; i < static_cast<int>(sym.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = sym[b.left];
    Symbol& r = sym[b.right];
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

  for (int i = 0; i != -1; i = sym[i].next) {
    const std::string_view piece = std::string_view(text).substr(sym[i].off, sym[i].n);
    const int32_t id = Find(piece);
    if (id >= 0) {
      out->push_back(id);
      continue;
    }
    // Every merged symbol is a token, so this is a single character that is
    // not in the vocabulary: spell it in byte tokens.
    for (char c : piece) {
      int32_t byte_id = spm_byte_token_[static_cast<uint8_t>(c)];
      if (byte_id < 0) byte_id = unk_;
      if (byte_id < 0) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "the vocabulary has no token for byte 0x%02X and no unknown token",
            static_cast<uint8_t>(c)));
      }
      out->push_back(byte_id);
    }
  }
  return absl::OkStatus();
}

void VocabTokenizer::BpeTokenize(std::string_view text, std::vector<int32_t>* out) const {
  const utf8::ByteLevel& bl = utf8::ByteLevel::Get();
  std::string word;
  std::string key;
  std::vector<Symbol> sym;
  struct Bigram {
    int left;
    int right;
    int32_t rank;
    size_t left_n;
    size_t right_n;
  };
  // Lowest rank first; ties go to the leftmost pair.
  auto worse = [](const Bigram& a, const Bigram& b) {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  };
  std::vector<Bigram> heap;

  for (std::string_view raw : pre_tokenizer_->Split(text)) {
    word.clear();
    for (char c : raw) word += bl.ByteToText(static_cast<uint8_t>(c));

    if (ignore_merges_) {
      const int32_t id = Find(word);
      if (id >= 0) {
        out->push_back(id);
        continue;
      }
    }

    sym.clear();
    for (size_t off = 0; off < word.size();) {
      const size_t n = std::min(utf8::SeqLen(static_cast<uint8_t>(word[off])), word.size() - off);
      const int index = static_cast<int>(sym.size());
      sym.push_back({index - 1, off + n == word.size() ? -1 : index + 1, off, n});
      off += n;
    }
    heap.clear();
    auto add = [&](int left, int right) {
      if (left == -1 || right == -1) return;
      key.assign(word, sym[left].off, sym[left].n);
      key.push_back('\xff');
      key.append(word, sym[right].off, sym[right].n);
      auto it = bpe_ranks_.find(key);
      if (it == bpe_ranks_.end()) return;
      heap.push_back({left, right, it->second, sym[left].n, sym[right].n});
      std::push_heap(heap.begin(), heap.end(), worse);
    };
    for (int i = 1; i < static_cast<int>(sym.size()); ++i) add(i - 1, i);

    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), worse);
      const Bigram b = heap.back();
      heap.pop_back();
      Symbol& l = sym[b.left];
      Symbol& r = sym[b.right];
      // Stale when either side changed since the pair was queued.
      if (l.n == 0 || r.n == 0 || l.n != b.left_n || r.n != b.right_n) continue;
      l.n += r.n;
      r.n = 0;
      l.next = r.next;
      if (r.next >= 0) sym[r.next].prev = b.left;
      add(l.prev, b.left);
      add(b.left, l.next);
    }

    for (const Symbol& s : sym) {
      if (s.n == 0) continue;
      const std::string_view piece = std::string_view(word).substr(s.off, s.n);
      const int32_t id = Find(piece);
      if (id >= 0) {
        out->push_back(id);
        continue;
      }
      // Not in the vocabulary: llama.cpp looks up each byte of the mapped
      // text on its own and drops the ones it does not find.
      for (char c : piece) {
        const int32_t byte_id = Find(std::string_view(&c, 1));
        if (byte_id >= 0) out->push_back(byte_id);
      }
    }
  }
}

absl::StatusOr<std::vector<int32_t>> VocabTokenizer::Encode(std::string_view text,
                                                            bool add_special,
                                                            bool parse_special) const {
  if (!spm_) {
    absl::Status valid = utf8::Validate(text);
    if (!valid.ok()) return valid;
  }
  const std::vector<Fragment> frags = Partition(text, parse_special);
  std::vector<int32_t> out;
  out.reserve(text.size() / 2 + 4);
  if (add_special && add_bos_) {
    if (bos_ < 0) {
      return absl::FailedPreconditionError(
          "the vocabulary asks for a BOS token (add_bos_token) but has none");
    }
    out.push_back(bos_);
  }
  if (spm_) {
    bool prev_special = true;  // the first piece of text gets the space prefix
    std::string piece;
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        out.push_back(f.token);
        prev_special = true;
        continue;
      }
      piece.clear();
      if (add_space_prefix_ && prev_special) piece.push_back(' ');
      piece.append(text.substr(f.off, f.len));
      ReplaceAll(&piece, " ", kSpmSpace);
      absl::Status s = SpmTokenize(piece, &out);
      if (!s.ok()) return s;
      prev_special = false;
    }
  } else {
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        out.push_back(f.token);
      } else {
        BpeTokenize(text.substr(f.off, f.len), &out);
      }
    }
  }
  if (add_special && add_eos_) {
    if (eos_ < 0) {
      return absl::FailedPreconditionError(
          "the vocabulary asks for an EOS token (add_eos_token) but has none");
    }
    out.push_back(eos_);
  }
  return out;
}

std::string VocabTokenizer::Detokenize(absl::Span<const int32_t> ids, bool remove_special,
                                       bool unparse_special) const {
  bool remove_space = add_space_prefix_;
  if (remove_special && add_bos_ && !ids.empty() && ids.front() == bos_) {
    remove_space = false;
    ids.remove_prefix(1);
  }
  if (remove_special && add_eos_ && !ids.empty() && ids.back() == eos_) ids.remove_suffix(1);

  std::string text;
  for (int32_t id : ids) {
    std::string piece = TokenToPiece(id, unparse_special);
    if (remove_space && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    remove_space = false;
    text += piece;
  }
  if (!clean_spaces_) return text;

  // clean_up_tokenization_spaces, pass by pass as llama.cpp does it in place.
  std::string& s = text;
  // 1. " ?", " !", " .", " ," lose the space.
  size_t total = s.empty() ? 0 : 1;
  for (size_t i = 1, n = s.size(); i < n; ++i) {
    const char x = s[i];
    if (s[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) --total;
    s[total++] = x;
  }
  s.resize(total);
  // 2. " ' " becomes "'".
  total = s.empty() ? 0 : 1;
  for (size_t i = 1, n = s.size(); i < n; ++i) {
    const char x = s[i];
    if (x == '\'' && i + 1 < n && s[i - 1] == ' ' && s[i + 1] == ' ') {
      --total;
      s[++i] = '\0';
    }
    s[total++] = x;
  }
  s.resize(total);
  // 3. " 's", " 'm", " 're", " 've" lose the space.
  total = s.empty() ? 0 : 1;
  for (size_t i = 1, n = s.size(); i < n; ++i) {
    const char x = s[i];
    if (s[i - 1] == ' ' && x == '\'' && i + 1 < n) {
      const char x1 = s[i + 1];
      if (x1 == 's' || x1 == 'm') {
        --total;
      } else if (x1 != 't' && x1 != 'd' && i + 2 < n) {
        const char x2 = s[i + 2];
        if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) --total;
      }
    }
    s[total++] = x;
  }
  s.resize(total);
  return text;
}

// ---- GGUF metadata -------------------------------------------------------

absl::Status KeyError(const GgufFile& file, std::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file.path(), ": ", AsAbsl(key), ": ", what));
}

absl::Status ReadStringArray(const GgufFile& file, std::string_view key,
                             std::vector<std::string>* out) {
  absl::StatusOr<const GgufArray*> arr = file.GetArray(key);
  if (!arr.ok()) return arr.status();
  if ((*arr)->elem_type != GgufType::kString) {
    return KeyError(file, key, absl::StrCat("expected an array of strings, got an array of ",
                                            AsAbsl(GgufTypeName((*arr)->elem_type))));
  }
  out->reserve((*arr)->elems.size());
  for (const GgufValue& v : (*arr)->elems) {
    absl::StatusOr<std::string_view> s = v.AsString();
    if (!s.ok()) return KeyError(file, key, s.status().message());
    out->emplace_back(*s);
  }
  return absl::OkStatus();
}

absl::Status ReadOptionalId(const GgufFile& file, std::string_view key,
                            std::optional<int64_t>* out) {
  if (file.Find(key) == nullptr) return absl::OkStatus();
  absl::StatusOr<int64_t> v = file.GetInt(key);
  if (!v.ok()) return v.status();
  *out = *v;
  return absl::OkStatus();
}

absl::Status ReadOptionalBool(const GgufFile& file, std::string_view key,
                              std::optional<bool>* out) {
  if (file.Find(key) == nullptr) return absl::OkStatus();
  absl::StatusOr<bool> v = file.GetBool(key);
  if (!v.ok()) return v.status();
  *out = *v;
  return absl::OkStatus();
}

// The special token id keys, in llama.cpp's order: the deprecated FIM keys
// come last and win.
struct IdKey {
  const char* key;
  std::optional<int64_t> VocabData::*id;
};
constexpr IdKey kIdKeys[] = {
    {"tokenizer.ggml.bos_token_id", &VocabData::bos_id},
    {"tokenizer.ggml.eos_token_id", &VocabData::eos_id},
    {"tokenizer.ggml.eot_token_id", &VocabData::eot_id},
    {"tokenizer.ggml.eom_token_id", &VocabData::eom_id},
    {"tokenizer.ggml.unknown_token_id", &VocabData::unk_id},
    {"tokenizer.ggml.seperator_token_id", &VocabData::sep_id},
    {"tokenizer.ggml.padding_token_id", &VocabData::pad_id},
    {"tokenizer.ggml.mask_token_id", &VocabData::mask_id},
    {"tokenizer.ggml.fim_pre_token_id", &VocabData::fim_pre_id},
    {"tokenizer.ggml.fim_suf_token_id", &VocabData::fim_suf_id},
    {"tokenizer.ggml.fim_mid_token_id", &VocabData::fim_mid_id},
    {"tokenizer.ggml.fim_pad_token_id", &VocabData::fim_pad_id},
    {"tokenizer.ggml.fim_rep_token_id", &VocabData::fim_rep_id},
    {"tokenizer.ggml.fim_sep_token_id", &VocabData::fim_sep_id},
    {"tokenizer.ggml.prefix_token_id", &VocabData::fim_pre_id},
    {"tokenizer.ggml.suffix_token_id", &VocabData::fim_suf_id},
    {"tokenizer.ggml.middle_token_id", &VocabData::fim_mid_id},
};

}  // namespace

std::string Tokenizer::Decode(absl::Span<const int32_t> ids, bool render_special) const {
  std::string out;
  for (int32_t id : ids) out += TokenToPiece(id, render_special);
  return out;
}

absl::StatusOr<VocabData> Tokenizer::ReadVocab(const GgufFile& file) {
  VocabData v;
  absl::StatusOr<std::string> model = file.GetString("tokenizer.ggml.model");
  if (!model.ok()) return model.status();
  v.model = *model;
  if (file.Find("tokenizer.ggml.pre") != nullptr) {
    absl::StatusOr<std::string> pre = file.GetString("tokenizer.ggml.pre");
    if (!pre.ok()) return pre.status();
    v.pre = *pre;
  }
  if (const GgufValue* name = file.Find("general.name"); name != nullptr && name->is_string()) {
    v.name = std::string(*name->AsString());
  }

  if (absl::Status s = ReadStringArray(file, "tokenizer.ggml.tokens", &v.tokens); !s.ok()) {
    return s;
  }
  const size_t n = v.tokens.size();

  constexpr std::string_view kScores = "tokenizer.ggml.scores";
  if (file.Find(kScores) != nullptr) {
    absl::StatusOr<const GgufArray*> arr = file.GetArray(kScores);
    if (!arr.ok()) return arr.status();
    if ((*arr)->elems.size() != n) {
      return KeyError(file, kScores, absl::StrCat((*arr)->elems.size(), " entries for ", n,
                                                  " tokens"));
    }
    v.scores.reserve(n);
    for (const GgufValue& e : (*arr)->elems) {
      absl::StatusOr<double> f = e.AsFloat();
      if (!f.ok()) return KeyError(file, kScores, f.status().message());
      v.scores.push_back(static_cast<float>(*f));
    }
  }

  constexpr std::string_view kTypes = "tokenizer.ggml.token_type";
  if (file.Find(kTypes) != nullptr) {
    absl::StatusOr<const GgufArray*> arr = file.GetArray(kTypes);
    if (!arr.ok()) return arr.status();
    if ((*arr)->elems.size() != n) {
      return KeyError(file, kTypes, absl::StrCat((*arr)->elems.size(), " entries for ", n,
                                                 " tokens"));
    }
    v.token_types.reserve(n);
    for (const GgufValue& e : (*arr)->elems) {
      absl::StatusOr<int64_t> t = e.AsInt();
      if (!t.ok()) return KeyError(file, kTypes, t.status().message());
      v.token_types.push_back(static_cast<int32_t>(
          std::clamp<int64_t>(*t, INT32_MIN, INT32_MAX)));
    }
  }

  constexpr std::string_view kMerges = "tokenizer.ggml.merges";
  if (file.Find(kMerges) != nullptr) {
    if (absl::Status s = ReadStringArray(file, kMerges, &v.merges); !s.ok()) return s;
  } else if (v.model == "gpt2") {
    return KeyError(file, kMerges, "missing; a gpt2 (BPE) vocabulary needs its merges");
  }

  for (const IdKey& k : kIdKeys) {
    if (absl::Status s = ReadOptionalId(file, k.key, &(v.*k.id)); !s.ok()) return s;
  }
  if (absl::Status s = ReadOptionalBool(file, "tokenizer.ggml.add_bos_token", &v.add_bos);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ReadOptionalBool(file, "tokenizer.ggml.add_eos_token", &v.add_eos);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          ReadOptionalBool(file, "tokenizer.ggml.add_space_prefix", &v.add_space_prefix);
      !s.ok()) {
    return s;
  }
  return v;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromVocab(VocabData vocab) {
  return VocabTokenizer::Create(std::move(vocab));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& file) {
  absl::StatusOr<VocabData> vocab = ReadVocab(file);
  if (!vocab.ok()) return vocab.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = FromVocab(*std::move(vocab));
  if (!t.ok()) {
    return absl::Status(t.status().code(), absl::StrCat(file.path(), ": ", t.status().message()));
  }
  return t;
}

absl::Status ValidateVocabulary(const GgufFile& file, int64_t n_embedding_rows) {
  absl::StatusOr<VocabData> v = Tokenizer::ReadVocab(file);
  if (!v.ok()) return v.status();
  const int64_t n = static_cast<int64_t>(v->tokens.size());
  if (n_embedding_rows >= 0 && n != n_embedding_rows) {
    return KeyError(file, "tokenizer.ggml.tokens",
                    absl::StrCat(n, " tokens, but the embedding (token_embd.weight) has ",
                                 n_embedding_rows,
                                 " rows: every token needs a row and every row a token"));
  }
  for (const IdKey& k : kIdKeys) {
    // Converters write -1 (as uint32: 4294967295) for "no such token".
    std::optional<int64_t> id;
    if (file.Find(k.key) != nullptr) id = file.GetInt(k.key).value_or(-1);
    if (id.has_value() && (*id == -1 || *id == int64_t{UINT32_MAX})) continue;
    if (id.has_value() && (*id < 0 || *id >= n)) {
      return KeyError(file, k.key,
                      absl::StrCat(*id, " is outside the vocabulary [0, ", n, ")"));
    }
  }
  for (size_t i = 0; i < v->token_types.size(); ++i) {
    const int32_t t = v->token_types[i];
    if (t < static_cast<int32_t>(TokenType::kUndefined) || t > static_cast<int32_t>(TokenType::kByte)) {
      return KeyError(file, "tokenizer.ggml.token_type",
                      absl::StrCat("entry ", i, " is ", t, ", not a token type (0..6)"));
    }
  }
  for (size_t i = 0; i < v->scores.size(); ++i) {
    if (!std::isfinite(v->scores[i])) {
      return KeyError(file, "tokenizer.ggml.scores",
                      absl::StrCat("entry ", i, " is ", v->scores[i], ", not a finite number"));
    }
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromVocab(*std::move(v));
  if (!t.ok()) {
    return absl::Status(t.status().code(), absl::StrCat(file.path(), ": ", t.status().message()));
  }
  return absl::OkStatus();
}

}  // namespace vibrant
