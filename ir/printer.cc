#include "ir/printer.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/verifier.h"

namespace vibrant::ir {
namespace {

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr int kMaxNesting = 8;

// ---------------------------------------------------------------- printing

bool IsBareNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '\'' || c == '-';
}

bool IsIdentStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsIdentChar(char c) { return IsIdentStart(c) || (c >= '0' && c <= '9') || c == '.'; }

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          static const char kHex[] = "0123456789abcdef";
          out += "\\x";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += "\"";
  return out;
}

std::string NameText(const std::string& name) {
  bool bare = !name.empty();
  for (char c : name) bare = bare && IsBareNameChar(c);
  return bare ? name : Quote(name);
}

std::string KeyText(const std::string& key) {
  bool ident = !key.empty() && IsIdentStart(key[0]);
  for (char c : key) ident = ident && IsIdentChar(c);
  return ident ? key : Quote(key);
}

std::string AttrText(const AttrValue& v);

// "{k=v, ...}" (empty for no attributes).
std::string AttrsText(const Attrs& attrs) {
  if (attrs.empty()) return "";
  std::string line = "{";
  bool first = true;
  for (const auto& [key, value] : attrs) {
    absl::StrAppend(&line, first ? "" : ", ", KeyText(key), "=", AttrText(value));
    first = false;
  }
  return line + "}";
}

// " kernels[T=1: name {params} -> launch, launch; T=2..8: ...]" (Op::kernels).
std::string KernelsText(const std::vector<KernelVariant>& ks) {
  if (ks.empty()) return "";
  std::string out = " kernels[";
  for (size_t i = 0; i < ks.size(); ++i) {
    const KernelVariant& k = ks[i];
    absl::StrAppend(&out, i ? "; " : "", "T=", k.t_min);
    if (k.t_max != k.t_min) absl::StrAppend(&out, "..", k.t_max);
    absl::StrAppend(&out, ": ", KeyText(k.name));
    if (!k.params.empty()) absl::StrAppend(&out, " ", AttrsText(k.params));
    if (!k.launches.empty()) {
      out += " ->";
      for (size_t j = 0; j < k.launches.size(); ++j) {
        absl::StrAppend(&out, j ? ", " : " ", KeyText(k.launches[j]));
      }
    }
  }
  return out + "]";
}

std::string AttrText(const AttrValue& v) {
  if (const int64_t* i = std::get_if<int64_t>(&v)) return absl::StrCat(*i);
  if (const double* d = std::get_if<double>(&v)) return FormatDouble(*d);
  if (const std::string* s = std::get_if<std::string>(&v)) return Quote(*s);
  const auto& list = std::get<std::vector<int64_t>>(v);
  std::string out = "[";
  for (size_t i = 0; i < list.size(); ++i) absl::StrAppend(&out, i ? ", " : "", list[i]);
  return out + "]";
}

std::string DeviceSuffix(Device d) {
  switch (d) {
    case Device::kCpu: return " @cpu";
    case Device::kCuda: return " @cuda";
    default: return "";
  }
}

// A planned value's arena offset: "+0x1200" right after its device.
std::string ArenaSuffix(const Value& v) {
  if (v.arena_offset < 0) return "";
  return absl::StrCat(v.device == Device::kUnassigned ? " +0x" : "+0x", absl::Hex(v.arena_offset));
}

class Printer {
 public:
  explicit Printer(std::string* out) : out_(out) {}

  void Body(const Graph& g, int indent, int depth) {
    const std::string pad(indent, ' ');
    const int64_t nv = static_cast<int64_t>(g.values().size());
    auto ref = [&](ValueId v) {
      if (v < 0 || v >= nv) return absl::StrCat("%<bad:", v, ">");
      return absl::StrCat("%", NameText(g.value(v).name));
    };
    auto type = [&](const Value& v) {
      return absl::StrCat(A(DTypeName(v.dtype)), ShapeToString(v.shape), DeviceSuffix(v.device),
                          ArenaSuffix(v));
    };
    std::vector<bool> op_defined(nv, false);
    for (const Op& op : g.ops()) {
      for (ValueId v : op.outputs) {
        if (v >= 0 && v < nv) op_defined[v] = true;
      }
    }
    for (const auto& [key, value] : g.meta) {
      absl::StrAppend(out_, pad, "meta ", KeyText(key), "=", AttrText(value), "\n");
    }
    for (const auto& [device, mem] : g.memory) {
      absl::StrAppend(out_, pad, "memory", DeviceSuffix(device), " arena=", mem.arena_bytes,
                      " kv=", mem.kv_bytes, "\n");
    }
    for (ValueId i = 0; i < nv; ++i) {
      if (op_defined[i]) continue;
      const Value& v = g.value(i);
      switch (v.storage) {
        case Storage::kInput:
          absl::StrAppend(out_, pad, "input ", ref(i), " : ", type(v), "\n");
          break;
        case Storage::kWeight:
          absl::StrAppend(out_, pad, "weight ", ref(i), " : ", type(v), " = gguf(", Quote(v.source),
                          v.source_offset != 0 ? absl::StrCat(", offset=", v.source_offset) : "",
                          v.rank_offsets.empty() ? ""
                                                 : absl::StrCat(", ranks=[", absl::StrJoin(v.rank_offsets, ", "), "]"),
                          v.source_row_stride != 0 ? absl::StrCat(", row_stride=", v.source_row_stride) : "",
                          ")\n");
          break;
        case Storage::kKvCache:
          absl::StrAppend(out_, pad, "kv ", ref(i), " : ", type(v), "\n");
          break;
        default:
          absl::StrAppend(out_, pad, "// undefined ", A(StorageName(v.storage)), " ", ref(i), " : ", type(v),
                          "\n");
      }
    }
    for (const Op& op : g.ops()) {
      std::string line = pad;
      for (size_t k = 0; k < op.outputs.size(); ++k) {
        if (k) line += ", ";
        const ValueId v = op.outputs[k];
        absl::StrAppend(&line, ref(v));
        if (v >= 0 && v < nv) absl::StrAppend(&line, " : ", type(g.value(v)));
      }
      const std::string_view name = IsValidOpKind(static_cast<int>(op.kind)) ? OpName(op.kind) : "<bad-op>";
      absl::StrAppend(&line, " = ", A(name), "(");
      for (size_t k = 0; k < op.inputs.size(); ++k) absl::StrAppend(&line, k ? ", " : "", ref(op.inputs[k]));
      line += ")";
      if (!op.attrs.empty()) absl::StrAppend(&line, " ", AttrsText(op.attrs));
      line += DeviceSuffix(op.device);
      line += KernelsText(op.kernels);
      if (op.body != nullptr && depth < kMaxNesting) {
        absl::StrAppend(out_, line, " {\n");
        Body(*op.body, indent + 2, depth + 1);
        absl::StrAppend(out_, pad, "}\n");
        continue;
      }
      if (op.outputs.size() == 1 && op.outputs[0] >= 0 && op.outputs[0] < nv) {
        const ValueId alias = g.value(op.outputs[0]).alias_of;
        if (alias != -1) absl::StrAppend(&line, "  // aliases ", ref(alias));
      }
      absl::StrAppend(out_, line, "\n");
    }
    for (ValueId v : g.outputs()) absl::StrAppend(out_, pad, "output ", ref(v), "\n");
  }

 private:
  std::string* out_;
};

// ----------------------------------------------------------------- parsing

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  absl::StatusOr<Graph> ParseTop() {
    Graph g;
    if (auto s = ExpectWord("graph"); !s.ok()) return s;
    if (auto s = ExpectWord("max_tokens"); !s.ok()) return s;
    if (auto s = Expect('='); !s.ok()) return s;
    auto mt = ParseInt();
    if (!mt.ok()) return mt.status();
    g.max_tokens = *mt;
    if (auto s = Expect('{'); !s.ok()) return s;
    if (auto s = ParseBody(g, 0); !s.ok()) return s;
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the graph");
    return g;
  }

 private:
  // Reads statements up to and including the closing '}'.
  absl::Status ParseBody(Graph& g, int depth) {
    std::map<std::string, ValueId> scope;
    while (true) {
      SkipSpace();
      if (pos_ >= text_.size()) return Error("missing '}'");
      if (Peek() == '}') {
        ++pos_;
        return absl::OkStatus();
      }
      if (Peek() == '%') {
        if (auto s = ParseOp(g, scope, depth); !s.ok()) return s;
        continue;
      }
      const size_t word_pos = pos_;
      std::string word = ReadIdent();
      if (word == "meta") {
        auto key = ParseKey();
        if (!key.ok()) return key.status();
        if (auto s = Expect('='); !s.ok()) return s;
        auto value = ParseAttrValue();
        if (!value.ok()) return value.status();
        if (!g.meta.emplace(*key, *value).second) return Error(absl::StrCat("meta key ", *key, " repeated"));
      } else if (word == "input" || word == "weight" || word == "kv") {
        Value v;
        v.storage = word == "input" ? Storage::kInput : word == "weight" ? Storage::kWeight : Storage::kKvCache;
        if (auto s = ParseDecl(&v); !s.ok()) return s;
        if (v.storage == Storage::kWeight) {
          if (auto s = Expect('='); !s.ok()) return s;
          if (auto s = ExpectWord("gguf"); !s.ok()) return s;
          if (auto s = Expect('('); !s.ok()) return s;
          auto src = ParseString();
          if (!src.ok()) return src.status();
          v.source = *src;
          // Optional, in this order: offset=N, ranks=[...], row_stride=N.
          int field = 0;
          while (true) {
            SkipSpace();
            if (pos_ >= text_.size() || text_[pos_] != ',') break;
            ++pos_;
            SkipSpace();
            const size_t at = pos_;
            while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_')) {
              ++pos_;
            }
            const std::string key(text_.substr(at, pos_ - at));
            const int order = key == "offset" ? 1 : key == "ranks" ? 2 : key == "row_stride" ? 3 : 0;
            if (order == 0 || order <= field) {
              return Error(absl::StrCat("expected offset=, ranks= or row_stride= (once each, in that order) in gguf(...), got '",
                                        key, "'"));
            }
            field = order;
            if (auto s = Expect('='); !s.ok()) return s;
            if (order == 2) {
              auto list = ParseAttrValue();
              if (!list.ok()) return list.status();
              const auto* ints = std::get_if<std::vector<int64_t>>(&*list);
              if (ints == nullptr) return Error("ranks= takes a list of integers");
              v.rank_offsets = *ints;
            } else {
              auto n = ParseInt();
              if (!n.ok()) return n.status();
              (order == 1 ? v.source_offset : v.source_row_stride) = *n;
            }
          }
          if (auto s = Expect(')'); !s.ok()) return s;
        }
        if (auto s = Define(g, scope, std::move(v)); !s.ok()) return s;
      } else if (word == "memory") {
        auto dev = ParseDevice();
        if (!dev.ok()) return dev.status();
        DeviceMemory mem;
        for (int64_t* field : {&mem.arena_bytes, &mem.kv_bytes}) {
          if (auto s = ExpectWord(field == &mem.arena_bytes ? "arena" : "kv"); !s.ok()) return s;
          if (auto s = Expect('='); !s.ok()) return s;
          auto n = ParseInt();
          if (!n.ok()) return n.status();
          *field = *n;
        }
        if (!g.memory.emplace(*dev, mem).second) {
          return Error(absl::StrCat("memory for ", A(DeviceName(*dev)), " repeated"));
        }
      } else if (word == "output") {
        auto id = ParseRef(scope);
        if (!id.ok()) return id.status();
        g.MarkOutput(*id);
      } else {
        pos_ = word_pos;
        return Error(word.empty() ? "expected a statement" : absl::StrCat("unknown statement '", word, "'"));
      }
    }
  }

  // %name : dtype[dims] [@device]
  absl::Status ParseDecl(Value* v) {
    SkipSpace();
    decl_pos_ = pos_;
    auto name = ParseName();
    if (!name.ok()) return name.status();
    v->name = *name;
    if (auto s = Expect(':'); !s.ok()) return s;
    SkipSpace();
    const size_t type_pos = pos_;
    std::string dtype = ReadIdent();
    auto t = DTypeFromName(dtype);
    if (!t.ok()) {
      pos_ = type_pos;
      return Error(absl::StrCat("unknown dtype '", dtype, "'"));
    }
    v->dtype = *t;
    if (auto s = Expect('['); !s.ok()) return s;
    SkipSpace();
    if (Peek() != ']') {
      while (true) {
        SkipSpace();
        if (Peek() == 'T') {
          ++pos_;
          v->shape.push_back(kTokens);
        } else {
          auto d = ParseInt();
          if (!d.ok()) return d.status();
          v->shape.push_back(*d);
        }
        SkipSpace();
        if (Peek() == ',') {
          ++pos_;
          continue;
        }
        break;
      }
    }
    if (auto s = Expect(']'); !s.ok()) return s;
    auto dev = ParseDevice();
    if (!dev.ok()) return dev.status();
    v->device = *dev;
    SkipSpace();
    if (Peek() == '+') {
      ++pos_;
      auto offset = ParseHex();
      if (!offset.ok()) return offset.status();
      v->arena_offset = *offset;
    }
    return absl::OkStatus();
  }

  // 0x followed by hex digits (an arena offset).
  absl::StatusOr<int64_t> ParseHex() {
    const size_t start = pos_;
    if (text_.substr(pos_, 2) != "0x") return Error("expected a hex offset (0x...)");
    pos_ += 2;
    const size_t digits = pos_;
    while (pos_ < text_.size() && std::isxdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    int64_t v = 0;
    auto [end, ec] = std::from_chars(text_.data() + digits, text_.data() + pos_, v, 16);
    if (ec != std::errc() || end != text_.data() + pos_ || digits == pos_) {
      pos_ = start;
      return Error("bad hex offset");
    }
    return v;
  }

  absl::StatusOr<Device> ParseDevice() {
    SkipSpace();
    if (Peek() != '@') return Device::kUnassigned;
    ++pos_;
    const size_t p = pos_;
    std::string d = ReadIdent();
    if (d == "cpu") return Device::kCpu;
    if (d == "cuda") return Device::kCuda;
    pos_ = p;
    return Error(absl::StrCat("unknown device '", d, "'"));
  }

  absl::Status Define(Graph& g, std::map<std::string, ValueId>& scope, Value v) {
    if (scope.count(v.name)) {
      pos_ = decl_pos_;
      return Error(absl::StrCat("%", v.name, " is defined twice"));
    }
    const std::string name = v.name;
    const ValueId id = g.AddValue(std::move(v));
    scope[name] = id;
    return absl::OkStatus();
  }

  absl::Status ParseOp(Graph& g, std::map<std::string, ValueId>& scope, int depth) {
    std::vector<Value> outs;
    std::vector<size_t> out_pos;
    while (true) {
      Value v;
      if (auto s = ParseDecl(&v); !s.ok()) return s;
      out_pos.push_back(decl_pos_);
      outs.push_back(std::move(v));
      SkipSpace();
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      break;
    }
    if (auto s = Expect('='); !s.ok()) return s;
    SkipSpace();
    const size_t op_pos = pos_;
    std::string opname = ReadIdent();
    auto kind = OpKindFromName(opname);
    if (!kind.ok()) {
      pos_ = op_pos;
      return Error(absl::StrCat("unknown op '", opname, "'"));
    }
    Op op;
    op.kind = *kind;
    if (auto s = Expect('('); !s.ok()) return s;
    SkipSpace();
    if (Peek() != ')') {
      while (true) {
        auto id = ParseRef(scope);
        if (!id.ok()) return id.status();
        op.inputs.push_back(*id);
        SkipSpace();
        if (Peek() == ',') {
          ++pos_;
          continue;
        }
        break;
      }
    }
    if (auto s = Expect(')'); !s.ok()) return s;
    SkipSpace();
    if (Peek() == '{' && !LooksLikeBody()) {
      if (auto s = ParseAttrs(&op.attrs); !s.ok()) return s;
    }
    auto dev = ParseDevice();
    if (!dev.ok()) return dev.status();
    op.device = *dev;
    SkipSpace();
    if (text_.compare(pos_, 8, "kernels[") == 0) {
      pos_ += 8;
      if (auto s = ParseKernels(&op.kernels); !s.ok()) return s;
      SkipSpace();
    }
    if (Peek() == '{') {
      if (depth + 1 >= kMaxNesting) return Error("fused bodies nested too deeply");
      ++pos_;
      auto body = std::make_shared<Graph>();
      body->max_tokens = g.max_tokens;
      if (auto s = ParseBody(*body, depth + 1); !s.ok()) return s;
      op.body = std::move(body);
    }
    for (size_t k = 0; k < outs.size(); ++k) {
      decl_pos_ = out_pos[k];
      outs[k].producer = static_cast<OpId>(g.ops().size());
      if (op.kind == OpKind::kKvStore && op.inputs.size() >= 2) {
        // The output shares the storage of the cache it updates.
        const Value& cache = g.value(op.inputs[1]);
        outs[k].storage = Storage::kKvCache;
        outs[k].alias_of = cache.alias_of >= 0 ? cache.alias_of : op.inputs[1];
      }
      const std::string name = outs[k].name;
      if (auto s = Define(g, scope, std::move(outs[k])); !s.ok()) return s;
      op.outputs.push_back(scope[name]);
    }
    g.AddRawOp(std::move(op));
    return absl::OkStatus();
  }

  // "{key=value, ...}" at '{'.
  absl::Status ParseAttrs(Attrs* attrs) {
    ++pos_;
    SkipSpace();
    if (Peek() != '}') {
      while (true) {
        auto key = ParseKey();
        if (!key.ok()) return key.status();
        if (auto s = Expect('='); !s.ok()) return s;
        auto value = ParseAttrValue();
        if (!value.ok()) return value.status();
        if (!attrs->emplace(*key, *value).second) return Error(absl::StrCat("attribute ", *key, " repeated"));
        SkipSpace();
        if (Peek() == ',') {
          ++pos_;
          continue;
        }
        break;
      }
    }
    return Expect('}');
  }

  // After "kernels[": variants "T=a[..b]: name [{params}] [-> launch, ...]"
  // separated by ';', then ']'.
  absl::Status ParseKernels(std::vector<KernelVariant>* out) {
    while (true) {
      KernelVariant k;
      SkipSpace();
      if (text_.compare(pos_, 2, "T=") != 0) return Error("expected T=<tokens> in kernels[...]");
      pos_ += 2;
      auto lo = ParseInt();
      if (!lo.ok()) return lo.status();
      k.t_min = k.t_max = *lo;
      if (text_.compare(pos_, 2, "..") == 0) {
        pos_ += 2;
        auto hi = ParseInt();
        if (!hi.ok()) return hi.status();
        k.t_max = *hi;
      }
      if (auto s = Expect(':'); !s.ok()) return s;
      auto name = ParseKey();
      if (!name.ok()) return name.status();
      k.name = *name;
      SkipSpace();
      if (Peek() == '{') {
        if (auto s = ParseAttrs(&k.params); !s.ok()) return s;
        SkipSpace();
      }
      if (text_.compare(pos_, 2, "->") == 0) {
        pos_ += 2;
        while (true) {
          auto l = ParseKey();
          if (!l.ok()) return l.status();
          k.launches.push_back(*l);
          SkipSpace();
          if (Peek() == ',') {
            ++pos_;
            continue;
          }
          break;
        }
      }
      out->push_back(std::move(k));
      SkipSpace();
      if (Peek() == ';') {
        ++pos_;
        continue;
      }
      return Expect(']');
    }
  }

  // After an op's ')', '{' opens attributes unless the brace holds a
  // statement (a body): attributes start with `key=`.
  bool LooksLikeBody() {
    size_t p = pos_ + 1;
    SkipSpaceAt(p);
    if (p < text_.size() && text_[p] == '}') return false;  // empty attrs
    if (p < text_.size() && text_[p] == '"') return false;  // quoted key
    while (p < text_.size() && IsIdentChar(text_[p])) ++p;
    SkipSpaceAt(p);
    return !(p < text_.size() && text_[p] == '=');
  }

  absl::StatusOr<ValueId> ParseRef(const std::map<std::string, ValueId>& scope) {
    SkipSpace();
    const size_t p = pos_;
    auto name = ParseName();
    if (!name.ok()) return name.status();
    auto it = scope.find(*name);
    if (it == scope.end()) {
      pos_ = p;
      return Error(absl::StrCat("unknown value %", *name));
    }
    return it->second;
  }

  absl::StatusOr<std::string> ParseName() {
    SkipSpace();
    if (Peek() != '%') return Error("expected a value name (%name)");
    ++pos_;
    if (Peek() == '"') return ParseString();
    std::string name;
    while (pos_ < text_.size() && IsBareNameChar(text_[pos_])) name += text_[pos_++];
    if (name.empty()) return Error("empty value name");
    return name;
  }

  absl::StatusOr<std::string> ParseKey() {
    SkipSpace();
    if (Peek() == '"') return ParseString();
    std::string key = ReadIdent();
    if (key.empty()) return Error("expected an attribute name");
    return key;
  }

  absl::StatusOr<AttrValue> ParseAttrValue() {
    SkipSpace();
    const char c = Peek();
    if (c == '"') {
      auto s = ParseString();
      if (!s.ok()) return s.status();
      return AttrValue(*s);
    }
    if (c == '[') {
      ++pos_;
      std::vector<int64_t> list;
      SkipSpace();
      if (Peek() != ']') {
        while (true) {
          auto i = ParseInt();
          if (!i.ok()) return i.status();
          list.push_back(*i);
          SkipSpace();
          if (Peek() == ',') {
            ++pos_;
            continue;
          }
          break;
        }
      }
      if (auto s = Expect(']'); !s.ok()) return s;
      return AttrValue(std::move(list));
    }
    const size_t start = pos_;
    if (Peek() == '-' || Peek() == '+') ++pos_;
    while (pos_ < text_.size() && (IsIdentChar(text_[pos_]) ||
                                   ((text_[pos_] == '-' || text_[pos_] == '+') &&
                                    (text_[pos_ - 1] == 'e' || text_[pos_ - 1] == 'E')))) {
      ++pos_;
    }
    std::string_view tok = text_.substr(start, pos_ - start);
    pos_ = start;
    if (tok.empty()) return Error("expected an attribute value");
    const bool is_float = tok.find_first_of(".eEin") != std::string_view::npos;
    if (!is_float) {
      auto i = ParseInt();
      if (!i.ok()) return i.status();
      return AttrValue(*i);
    }
    std::string_view digits = tok;
    if (digits[0] == '+') digits.remove_prefix(1);
    double d = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), d);
    if (ec != std::errc() || end != digits.data() + digits.size()) {
      return Error(absl::StrCat("bad number '", A(tok), "'"));
    }
    pos_ = start + tok.size();
    return AttrValue(d);
  }

  absl::StatusOr<int64_t> ParseInt() {
    SkipSpace();
    const size_t start = pos_;
    if (Peek() == '-') ++pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    int64_t v = 0;
    auto [end, ec] = std::from_chars(text_.data() + start, text_.data() + pos_, v);
    if (ec != std::errc() || end != text_.data() + pos_ || start == pos_) {
      pos_ = start;
      return Error("expected an integer");
    }
    return v;
  }

  absl::StatusOr<std::string> ParseString() {
    SkipSpace();
    if (Peek() != '"') return Error("expected a string");
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= text_.size() || text_[pos_] == '\n') return Error("unterminated string");
      char c = text_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= text_.size()) return Error("unterminated string");
      c = text_[pos_++];
      switch (c) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case 'x': {
          int v = 0;
          for (int k = 0; k < 2; ++k) {
            const char h = pos_ < text_.size() ? text_[pos_] : 0;
            int digit = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                       : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
            if (digit < 0) return Error("bad \\x escape");
            v = v * 16 + digit;
            ++pos_;
          }
          out += static_cast<char>(v);
          break;
        }
        default:
          --pos_;
          return Error("bad escape");
      }
    }
  }

  std::string ReadIdent() {
    SkipSpace();
    std::string out;
    if (pos_ < text_.size() && IsIdentStart(text_[pos_])) {
      while (pos_ < text_.size() && IsIdentChar(text_[pos_])) out += text_[pos_++];
    }
    return out;
  }

  absl::Status ExpectWord(std::string_view w) {
    SkipSpace();
    const size_t p = pos_;
    if (ReadIdent() != w) {
      pos_ = p;
      return Error(absl::StrCat("expected '", A(w), "'"));
    }
    return absl::OkStatus();
  }

  absl::Status Expect(char c) {
    SkipSpace();
    if (Peek() != c) return Error(absl::StrCat("expected '", std::string(1, c), "'"));
    ++pos_;
    return absl::OkStatus();
  }

  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void SkipSpaceAt(size_t& p) const {
    while (p < text_.size()) {
      const char c = text_[p];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        ++p;
      } else if (c == '/' && p + 1 < text_.size() && text_[p + 1] == '/') {
        while (p < text_.size() && text_[p] != '\n') ++p;
      } else {
        break;
      }
    }
  }
  void SkipSpace() { SkipSpaceAt(pos_); }

  absl::Status Error(const std::string& msg) const {
    int line = 1, col = 1;
    for (size_t i = 0; i < pos_ && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    return absl::InvalidArgumentError(absl::StrCat("line ", line, ", column ", col, ": ", msg));
  }

  std::string_view text_;
  size_t pos_ = 0;
  size_t decl_pos_ = 0;
};

}  // namespace

std::string FormatDouble(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d);
  std::string s(buf, ec == std::errc() ? end : buf);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string PrintGraph(const Graph& g) {
  std::string out = absl::StrCat("graph max_tokens=", g.max_tokens, " {\n");
  Printer(&out).Body(g, 2, 0);
  out += "}\n";
  return out;
}

absl::StatusOr<Graph> ParseGraph(std::string_view text) {
  absl::StatusOr<Graph> g = Parser(text).ParseTop();
  if (!g.ok()) return g.status();
  if (absl::Status s = Verify(*g); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("parsed graph does not verify: ", s.message()));
  }
  return g;
}

}  // namespace vibrant::ir
