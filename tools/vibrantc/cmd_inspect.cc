// vibrantc inspect MODEL.gguf|PLAN [--json]
//
// A GGUF: first what llama.cpp's loader prints about a model (file type,
// parameter count, size and bits per weight, tensors per type, vocabulary
// type, special tokens with their text, and the chat template family Vibrant
// recognises), then: file summary, metadata (key, type, value; long arrays
// elided) and a tensor table (name, type, shape in ggml order, bytes, offset
// in the data section), then the tensor types with their counts, naming those
// Vibrant cannot run (any ggml type with a block layout is described, as
// gguf-dump does; `vibrantc compile` refuses a model that uses an unsupported
// one). --json prints one object for machines, arrays in full:
//   {"file": ..., "version": 3, "alignment": 32, "data_offset": ...,
//    "metadata": {key: value, ...},
//    "tensors": [{"name", "type", "shape", "offset", "bytes"}, ...],
//    "types": {"q4_K": 13, ...}, "unsupported_types": ["iq2_xxs", ...],
//    "summary": {"file_type", "file_type_id", "params", "tensor_bytes",
//                "bits_per_weight", "tensor_types": {type: count}, "vocab_type",
//                "n_vocab", "special_tokens": {"BOS": {"id", "text"}, ...},
//                "chat_template"}}
// A plan (plan.bin): its format version, sections, compile options, the model
// it references (and whether that file is still there, unchanged), the graph
// (ops, values, memory) and its kernels; --json gives the same as one object.
#include <charconv>
#include <cstring>
#include <map>
#include <optional>
#include <cstdio>
#include <map>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "frontends/chat/chat_template.h"
#include "frontends/gguf/gguf.h"
#include "frontends/io/file.h"
#include "frontends/io/text.h"
#include "frontends/tokenizer/tokenizer.h"
#include "ir/dtype.h"
#include "ir/graph.h"
#include "nlohmann/json.hpp"
#include "runtime/plan.h"
#include "tools/vibrantc/commands.h"

namespace vibrant::cli {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kUsage[] = "usage: vibrantc inspect MODEL.gguf|PLAN [--json]\n";

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// "array<string>", "array<array<int32>>", "uint32", ...
std::string TypeLabel(const GgufValue& v) {
  if (!v.is_array()) return std::string(GgufTypeName(v.type()));
  const GgufArray* a = *v.AsArray();
  if (a->elem_type == GgufType::kArray && !a->elems.empty()) {
    return absl::StrCat("array<", TypeLabel(a->elems[0]), ">");
  }
  return absl::StrCat("array<", AV(GgufTypeName(a->elem_type)), ">");
}

Json ToJson(const GgufValue& v) {
  switch (v.type()) {
    case GgufType::kUint8:
    case GgufType::kUint16:
    case GgufType::kUint32:
    case GgufType::kUint64:
      return Json(*v.AsUint());
    case GgufType::kInt8:
    case GgufType::kInt16:
    case GgufType::kInt32:
    case GgufType::kInt64:
      return Json(*v.AsInt());
    case GgufType::kFloat32: {
      // The shortest decimal that reads back as the same float32 ("1e-05"
      // rather than 9.999999747378752e-06).
      float f = static_cast<float>(*v.AsFloat());
      char buf[32];
      std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf) - 1, f);
      *r.ptr = '\0';
      return Json(std::strtod(buf, nullptr));
    }
    case GgufType::kFloat64:
      return Json(*v.AsFloat());
    case GgufType::kBool:
      return Json(*v.AsBool());
    case GgufType::kString:
      return Json(std::string(*v.AsString()));
    case GgufType::kArray: {
      Json arr = Json::array();
      for (const GgufValue& e : (*v.AsArray())->elems) arr.push_back(ToJson(e));
      return arr;
    }
  }
  return Json();
}

// Tensor count per type, in type id order.
std::map<DType, int> TypeCounts(const GgufFile& f) {
  std::map<DType, int> n;
  for (const GgufTensorInfo& t : f.tensors()) ++n[t.type];
  return n;
}

std::string ShapeString(const std::vector<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}


// llama.cpp's llama_ftype names (general.file_type).
std::string FileTypeName(int64_t ftype) {
  switch (ftype) {
    case 0: return "all F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 7: return "Q8_0";
    case 8: return "Q5_0";
    case 9: return "Q5_1";
    case 10: return "Q2_K - Medium";
    case 11: return "Q3_K - Small";
    case 12: return "Q3_K - Medium";
    case 13: return "Q3_K - Large";
    case 14: return "Q4_K - Small";
    case 15: return "Q4_K - Medium";
    case 16: return "Q5_K - Small";
    case 17: return "Q5_K - Medium";
    case 18: return "Q6_K";
    case 19: return "IQ2_XXS - 2.0625 bpw";
    case 20: return "IQ2_XS - 2.3125 bpw";
    case 21: return "Q2_K - Small";
    case 22: return "IQ3_XS - 3.3 bpw";
    case 23: return "IQ3_XXS - 3.0625 bpw";
    case 24: return "IQ1_S - 1.5625 bpw";
    case 25: return "IQ4_NL - 4.5 bpw";
    case 26: return "IQ3_S - 3.4375 bpw";
    case 27: return "IQ3_S mix - 3.66 bpw";
    case 28: return "IQ2_S - 2.5 bpw";
    case 29: return "IQ2_M - 2.7 bpw";
    case 30: return "IQ4_XS - 4.25 bpw";
    case 31: return "IQ1_M - 1.75 bpw";
    case 32: return "BF16";
    case 36: return "TQ1_0 - 1.69 bpw ternary";
    case 37: return "TQ2_0 - 2.06 bpw ternary";
    default: return absl::StrCat("unknown (", ftype, ")");
  }
}

// llama.cpp's vocabulary type names.
std::string VocabTypeName(const std::string& model) {
  if (model == "llama") return "SPM";
  if (model == "gpt2") return "BPE";
  if (model == "bert") return "WPM";
  if (model == "t5") return "UGM";
  if (model == "rwkv") return "RWKV";
  if (model == "none" || model.empty()) return "no vocab";
  return model;
}

// 3.09 B, 260.10 K (llama.cpp's print_info).
std::string ParamsString(double n) {
  if (n >= 1e12) return absl::StrFormat("%.3f T", n / 1e12);
  if (n >= 1e9) return absl::StrFormat("%.2f B", n / 1e9);
  if (n >= 1e6) return absl::StrFormat("%.2f M", n / 1e6);
  return absl::StrFormat("%.2f K", n / 1e3);
}

std::string SizeString(double bytes) {
  if (bytes < 1024.0 * 1024 * 1024) return absl::StrFormat("%.2f MiB", bytes / (1024.0 * 1024));
  return absl::StrFormat("%.2f GiB", bytes / (1024.0 * 1024 * 1024));
}

// A token's text for display: control bytes escaped, quotes around it.
std::string TokenShown(const std::string& t) {
  std::string out = "'";
  for (unsigned char c : t) {
    if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\x%02x", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out + "'";
}

// What llama.cpp's loader prints about a model.
Json ModelSummary(const GgufFile& f) {
  Json s = Json::object();
  int64_t ftype = -1;
  if (const GgufValue* v = f.Find("general.file_type"); v != nullptr) {
    absl::StatusOr<int64_t> i = v->AsInt();
    if (i.ok()) ftype = *i;
  }
  // Tensors per type, parameters, bytes.
  std::map<std::string, int64_t> per_type;
  std::map<DType, int64_t> elems_per_type;
  double params = 0, bytes = 0;
  for (const GgufTensorInfo& t : f.tensors()) {
    ++per_type[std::string(DTypeName(t.type))];
    params += static_cast<double>(t.elements());
    bytes += static_cast<double>(t.bytes);
    elems_per_type[t.type] += t.elements();
  }
  if (ftype >= 0) {
    s["file_type"] = FileTypeName(ftype);
    s["file_type_id"] = ftype;
  } else if (!elems_per_type.empty()) {
    // llama.cpp guesses from the type holding the most weights.
    DType most = elems_per_type.begin()->first;
    for (const auto& [t, n] : elems_per_type) {
      if (n > elems_per_type[most]) most = t;
    }
    // The llama_ftype whose main type that is (llama_model_loader's guess).
    const std::map<std::string, int64_t> ftype_of = {
        {"f32", 0},  {"f16", 1},  {"q4_0", 2}, {"q4_1", 3}, {"q8_0", 7},  {"q5_0", 8},  {"q5_1", 9},
        {"q2_K", 10}, {"q3_K", 12}, {"q4_K", 15}, {"q5_K", 17}, {"q6_K", 18}, {"bf16", 32}};
    auto it = ftype_of.find(std::string(DTypeName(most)));
    s["file_type"] = absl::StrCat(it != ftype_of.end() ? FileTypeName(it->second) : std::string(DTypeName(most)),
                                  " (guessed)");
    s["file_type_id"] = nullptr;
  }
  s["params"] = params;
  s["tensor_bytes"] = bytes;
  s["bits_per_weight"] = params > 0 ? bytes * 8 / params : 0.0;
  Json types = Json::object();
  for (const auto& [t, n] : per_type) types[t] = n;
  s["tensor_types"] = types;
  absl::StatusOr<VocabData> vocab = Tokenizer::ReadVocab(f);
  if (vocab.ok()) {
    s["vocab_type"] = VocabTypeName(vocab->model);
    s["n_vocab"] = vocab->tokens.size();
    if (!vocab->merges.empty()) s["n_merges"] = vocab->merges.size();
    Json special = Json::object();
    auto add = [&](const char* name, const std::optional<int64_t>& id) {
      if (!id || *id < 0 || *id >= static_cast<int64_t>(vocab->tokens.size())) return;
      special[name] = {{"id", *id}, {"text", vocab->tokens[*id]}};
    };
    add("BOS", vocab->bos_id);
    add("EOS", vocab->eos_id);
    add("EOT", vocab->eot_id);
    add("EOM", vocab->eom_id);
    add("UNK", vocab->unk_id);
    add("SEP", vocab->sep_id);
    add("PAD", vocab->pad_id);
    s["special_tokens"] = special;
  } else {
    s["vocab_type"] = nullptr;
    s["vocab_error"] = std::string(vocab.status().message());
  }
  std::string chat = "none";
  if (const GgufValue* v = f.Find("tokenizer.chat_template"); v != nullptr && v->AsString().ok()) {
    absl::StatusOr<chat::ChatTemplate> t = chat::DetectTemplate(*v->AsString(), "tokenizer.chat_template");
    chat = t.ok() ? std::string(chat::FamilyName(t->family)) : "unrecognised";
  }
  s["chat_template"] = chat;
  return s;
}

void PrintSummary(const Json& s) {
  std::printf("file type:   %s\n", s["file_type"].get<std::string>().c_str());
  const double params = s["params"].get<double>();
  std::printf("params:      %s (%.0f)\n", ParamsString(params).c_str(), params);
  std::printf("tensor data: %s (%.2f BPW)\n", SizeString(s["tensor_bytes"].get<double>()).c_str(),
              s["bits_per_weight"].get<double>());
  std::string types;
  for (const auto& [t, n] : s["tensor_types"].items()) {
    absl::StrAppend(&types, types.empty() ? "" : ", ", n.get<int64_t>(), " ", t);
  }
  std::printf("tensor types: %s\n", types.c_str());
  if (s["vocab_type"].is_null()) {
    std::printf("vocab:       unreadable (%s)\n", io::EscapeForTerminal(s["vocab_error"].get<std::string>()).c_str());
  } else {
    std::printf("vocab type:  %s, %lld tokens", s["vocab_type"].get<std::string>().c_str(),
                static_cast<long long>(s["n_vocab"].get<int64_t>()));
    if (s.contains("n_merges")) std::printf(", %lld merges", static_cast<long long>(s["n_merges"].get<int64_t>()));
    std::printf("\n");
    for (const auto& [name, t] : s["special_tokens"].items()) {
      std::printf("%s token:   %lld %s\n", name.c_str(), static_cast<long long>(t["id"].get<int64_t>()),
                  io::EscapeForTerminal(TokenShown(t["text"].get<std::string>())).c_str());
    }
  }
  std::printf("chat template: %s\n\n", s["chat_template"].get<std::string>().c_str());
}

// ---- plans

std::string Hex(uint64_t v) { return absl::StrFormat("%016x", v); }

Json PlanSummary(const PlanFile& p) {
  Json out = Json::object();
  out["file"] = p.name();
  out["format_version"] = p.version();
  out["size"] = p.bytes().size();
  Json options = Json::object();
  for (const auto& [k, v] : p.options()) options[k] = v;
  out["options"] = options;
  if (p.model_ref()) {
    const ModelRef& r = *p.model_ref();
    Json m = {{"path", r.path}, {"size", r.size}, {"fingerprint", Hex(r.fingerprint)}};
    absl::StatusOr<std::unique_ptr<GgufFile>> g = p.OpenModel();
    m["status"] = g.ok() ? "ok" : std::string(g.status().message());
    out["model"] = m;
  } else if (p.embedded_gguf()) {
    out["model"] = {{"embedded_bytes", p.embedded_gguf()->size()}, {"status", "ok"}};
  }
  absl::StatusOr<ir::Graph> g = p.LoadGraph();
  if (g.ok()) {
    int64_t kernels = 0, fused = 0;
    for (const ir::Op& op : g->ops()) {
      if (op.kind != ir::OpKind::kReshape) ++kernels;
      if (op.kind == ir::OpKind::kFused) ++fused;
    }
    Json graph = {{"ops", g->ops().size()},
                  {"fused_ops", fused},
                  {"values", g->values().size()},
                  {"max_tokens", g->max_tokens}};
    for (const char* key : {"n_layer", "n_embd", "n_vocab", "n_ctx"}) {
      auto it = g->meta.find(key);
      if (it != g->meta.end()) {
        if (const int64_t* v = std::get_if<int64_t>(&it->second)) graph[key] = *v;
      }
    }
    if (auto it = g->meta.find("arch"); it != g->meta.end()) {
      if (const std::string* v = std::get_if<std::string>(&it->second)) graph["arch"] = *v;
    }
    Json memory = Json::object();
    for (const auto& [device, mem] : g->memory) {
      memory[std::string(ir::DeviceName(device))] = {{"arena_bytes", mem.arena_bytes}};
    }
    graph["memory"] = memory;
    out["graph"] = graph;
  } else {
    out["graph"] = {{"error", std::string(g.status().message())}};
  }
  out["kernels_bytes"] = p.kernels().size();
  out["dispatch_bytes"] = p.dispatch().size();
  return out;
}

void PrintPlan(const Json& j) {
  std::printf("plan:        %s\n", io::EscapeForTerminal(j["file"].get<std::string>()).c_str());
  std::printf("format:      version %u, %llu bytes\n", j["format_version"].get<uint32_t>(),
              static_cast<unsigned long long>(j["size"].get<uint64_t>()));
  std::string opts;
  for (const auto& [k, v] : j["options"].items()) absl::StrAppend(&opts, opts.empty() ? "" : ", ", k, "=", v.get<std::string>());
  std::printf("options:     %s\n", io::EscapeForTerminal(opts).c_str());
  const Json& m = j["model"];
  if (m.contains("path")) {
    std::printf("model:       %s (%llu bytes, fingerprint %s): %s\n", io::EscapeForTerminal(m["path"].get<std::string>()).c_str(),
                static_cast<unsigned long long>(m["size"].get<uint64_t>()),
                m["fingerprint"].get<std::string>().c_str(), io::EscapeForTerminal(m["status"].get<std::string>()).c_str());
  } else if (m.contains("embedded_bytes")) {
    std::printf("model:       embedded (%llu bytes)\n", static_cast<unsigned long long>(m["embedded_bytes"].get<uint64_t>()));
  }
  const Json& g = j["graph"];
  if (g.contains("error")) {
    std::printf("graph:       %s\n", io::EscapeForTerminal(g["error"].get<std::string>()).c_str());
  } else {
    std::printf("graph:       %s, %lld layers, d %lld, vocab %lld, n_ctx %lld: %lld ops (%lld fused), %lld values, max_tokens %lld\n",
                io::EscapeForTerminal(g.value("arch", std::string("?"))).c_str(), static_cast<long long>(g.value("n_layer", int64_t{0})),
                static_cast<long long>(g.value("n_embd", int64_t{0})), static_cast<long long>(g.value("n_vocab", int64_t{0})),
                static_cast<long long>(g.value("n_ctx", int64_t{0})), static_cast<long long>(g["ops"].get<int64_t>()),
                static_cast<long long>(g["fused_ops"].get<int64_t>()), static_cast<long long>(g["values"].get<int64_t>()),
                static_cast<long long>(g["max_tokens"].get<int64_t>()));
    for (const auto& [dev, mem] : g["memory"].items()) {
      std::printf("memory:      %s arena %lld bytes\n", dev.c_str(), static_cast<long long>(mem["arena_bytes"].get<int64_t>()));
    }
  }
  const uint64_t kb = j["kernels_bytes"].get<uint64_t>();
  std::printf("kernels:     %s\n", kb > 0 ? absl::StrCat(kb, " bytes (CUBIN + PTX)").c_str() : "none");
  const uint64_t db = j["dispatch_bytes"].get<uint64_t>();
  std::printf("dispatch:    %s\n", db > 0 ? absl::StrCat(db, " bytes").c_str() : "none");
}


// Human output goes to a terminal: every string that comes from the file
// (keys, values, tensor names) is escaped (frontends/io/text.h), so that a
// crafted name cannot move the cursor or retitle the window.
void PrintHuman(const GgufFile& f) {
  PrintSummary(ModelSummary(f));
  uint64_t data_bytes = 0;
  for (const GgufTensorInfo& t : f.tensors()) data_bytes += t.bytes;
  std::printf("file:        %s\n", io::EscapeForTerminal(f.path()).c_str());
  std::printf("version:     %u\n", f.version());
  std::printf("size:        %llu bytes\n", static_cast<unsigned long long>(f.file_size()));
  std::printf("alignment:   %llu\n", static_cast<unsigned long long>(f.alignment()));
  std::printf("data offset: %llu\n", static_cast<unsigned long long>(f.data_offset()));

  std::printf("\nmetadata (%zu keys):\n", f.metadata().size());
  size_t key_w = 3, type_w = 4;
  std::vector<std::string> types, keys;
  for (const auto& [key, value] : f.metadata()) {
    types.push_back(TypeLabel(value));
    keys.push_back(io::EscapeForTerminal(key));
    key_w = std::max(key_w, keys.back().size());
    type_w = std::max(type_w, types.back().size());
  }
  std::printf("  %-*s  %-*s  %s\n", static_cast<int>(key_w), "key", static_cast<int>(type_w),
              "type", "value");
  for (size_t i = 0; i < f.metadata().size(); ++i) {
    const GgufValue& value = f.metadata()[i].second;
    std::string shown = value.ToString(8);
    if (shown.size() > 200) {
      size_t cut = 197;  // back up to the start of a UTF-8 sequence
      while (cut > 0 && (static_cast<unsigned char>(shown[cut]) & 0xC0) == 0x80) --cut;
      shown = shown.substr(0, cut) + "...";
    }
    std::printf("  %-*s  %-*s  %s\n", static_cast<int>(key_w), keys[i].c_str(),
                static_cast<int>(type_w), types[i].c_str(), io::EscapeForTerminal(shown).c_str());
  }

  std::printf("\ntensors (%zu, %llu bytes of data):\n", f.tensors().size(),
              static_cast<unsigned long long>(data_bytes));
  if (f.tensors().empty()) return;
  size_t name_w = 4, type_col = 4, shape_w = 5, bytes_w = 5;
  std::vector<std::string> names;
  for (const GgufTensorInfo& t : f.tensors()) {
    names.push_back(io::EscapeForTerminal(t.name));
    name_w = std::max(name_w, names.back().size());
    type_col = std::max(type_col, DTypeName(t.type).size());
    shape_w = std::max(shape_w, ShapeString(t.dims).size());
    bytes_w = std::max(bytes_w, absl::StrCat(t.bytes).size());
  }
  std::printf("  %-*s  %-*s  %-*s  %*s  %s\n", static_cast<int>(name_w), "name",
              static_cast<int>(type_col), "type", static_cast<int>(shape_w), "shape",
              static_cast<int>(bytes_w), "bytes", "offset");
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const GgufTensorInfo& t = f.tensors()[i];
    std::printf("  %-*s  %-*s  %-*s  %*llu  %llu\n", static_cast<int>(name_w), names[i].c_str(),
                static_cast<int>(type_col), std::string(DTypeName(t.type)).c_str(),
                static_cast<int>(shape_w), ShapeString(t.dims).c_str(),
                static_cast<int>(bytes_w), static_cast<unsigned long long>(t.bytes),
                static_cast<unsigned long long>(t.offset));
  }
  std::vector<std::string> counts, unsupported;
  for (const auto& [type, n] : TypeCounts(f)) {
    counts.push_back(absl::StrCat(AV(DTypeName(type)), " ", n));
    if (!IsSupported(type)) {
      unsupported.push_back(absl::StrCat(AV(DTypeName(type)), " (", static_cast<uint32_t>(type),
                                         ", ", n, n == 1 ? " tensor)" : " tensors)"));
    }
  }
  std::printf("\ntypes: %s\n", absl::StrJoin(counts, ", ").c_str());
  if (!unsupported.empty()) {
    std::printf("not supported by Vibrant: %s (vibrantc compile refuses this file; supported: %s)\n",
                absl::StrJoin(unsupported, ", ").c_str(), SupportedDTypeNames().c_str());
  }
}

void PrintJson(const GgufFile& f) {
  Json out = Json::object();
  out["file"] = f.path();
  out["version"] = f.version();
  out["alignment"] = f.alignment();
  out["data_offset"] = f.data_offset();
  Json meta = Json::object();
  for (const auto& [key, value] : f.metadata()) meta[key] = ToJson(value);
  out["metadata"] = std::move(meta);
  Json tensors = Json::array();
  for (const GgufTensorInfo& t : f.tensors()) {
    Json jt = Json::object();
    jt["name"] = t.name;
    jt["type"] = std::string(DTypeName(t.type));
    jt["shape"] = t.dims;
    jt["offset"] = t.offset;
    jt["bytes"] = t.bytes;
    tensors.push_back(std::move(jt));
  }
  out["tensors"] = std::move(tensors);
  Json types = Json::object();
  Json unsupported = Json::array();
  for (const auto& [type, n] : TypeCounts(f)) {
    types[std::string(DTypeName(type))] = n;
    if (!IsSupported(type)) unsupported.push_back(std::string(DTypeName(type)));
  }
  out["types"] = std::move(types);
  out["unsupported_types"] = std::move(unsupported);
  out["summary"] = ModelSummary(f);
  // Strings in GGUF files are not always valid UTF-8; replace bad bytes
  // with U+FFFD rather than failing. ensure_ascii: every non-ASCII character
  // as \uXXXX, so that C1 controls (U+009B is CSI) cannot reach a terminal
  // either; parsers read the same strings.
  std::string text = out.dump(-1, ' ', true, Json::error_handler_t::replace);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
}

}  // namespace

int RunInspect(const std::vector<std::string>& args) {
  bool json = false;
  std::string path;
  for (const std::string& a : args) {
    if (a == "--json") {
      json = true;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "vibrantc inspect: unknown option '%s'\n%s", a.c_str(), kUsage);
      return 2;
    } else if (path.empty()) {
      path = a;
    } else {
      std::fprintf(stderr, "vibrantc inspect: more than one model given\n%s", kUsage);
      return 2;
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "vibrantc inspect: no model given\n%s", kUsage);
    return 2;
  }
  // A plan?
  {
    // Regular files only (a FIFO would block here): frontends/io/file.h. A
    // file that cannot be read is reported by GgufFile::Open below.
    absl::StatusOr<std::string> head = io::ReadFileHead(path, sizeof(kPlanMagic));
    if (head.ok() && head->size() == sizeof(kPlanMagic) &&
        std::memcmp(head->data(), kPlanMagic, sizeof(kPlanMagic)) == 0) {
      absl::StatusOr<std::unique_ptr<PlanFile>> p = PlanFile::Open(path);
      if (!p.ok()) {
        std::fprintf(stderr, "vibrantc inspect: %s\n", io::EscapeForTerminal(p.status().message(), true).c_str());
        return 1;
      }
      Json j = PlanSummary(**p);
      if (json) {
        // ensure_ascii, as for a GGUF below: no C1 control reaches a terminal.
        std::string text = j.dump(-1, ' ', true, Json::error_handler_t::replace);
        std::printf("%s\n", text.c_str());
      } else {
        PrintPlan(j);
      }
      return std::fflush(stdout) == 0 ? 0 : 1;
    }
  }
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  if (!f.ok()) {
    std::fprintf(stderr, "vibrantc inspect: %s\n", vibrant::io::EscapeForTerminal(f.status().message(), true).c_str());
    return 1;
  }
  if (json) {
    PrintJson(**f);
  } else {
    PrintHuman(**f);
  }
  if (std::fflush(stdout) != 0) {
    std::fprintf(stderr, "vibrantc inspect: cannot write the output\n");
    return 1;
  }
  return 0;
}

}  // namespace vibrant::cli
