// vibrantc inspect MODEL.gguf [--json]
//
// Human-readable: file summary, metadata (key, type, value; long arrays
// elided) and a tensor table (name, type, shape in ggml order, bytes, offset
// in the data section). --json prints one object for machines, arrays in full:
//   {"file": ..., "version": 3, "alignment": 32, "data_offset": ...,
//    "metadata": {key: value, ...},
//    "tensors": [{"name", "type", "shape", "offset", "bytes"}, ...]}
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "frontends/gguf/gguf.h"
#include "frontends/io/text.h"
#include "ir/dtype.h"
#include "nlohmann/json.hpp"
#include "tools/vibrantc/commands.h"

namespace vibrant::cli {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kUsage[] = "usage: vibrantc inspect MODEL.gguf [--json]\n";

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

std::string ShapeString(const std::vector<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

// Human output goes to a terminal: every string that comes from the file
// (keys, values, tensor names) is escaped (frontends/io/text.h), so that a
// crafted name cannot move the cursor or retitle the window.
void PrintHuman(const GgufFile& f) {
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
