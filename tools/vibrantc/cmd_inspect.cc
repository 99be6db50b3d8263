// vibrantc inspect MODEL.gguf [--json]
//
// Human-readable: file summary, metadata (key, type, value; long arrays
// elided) and a tensor table (name, type, shape in ggml order, bytes, offset
// in the data section), then the tensor types with their counts, naming those
// Vibrant cannot run (any ggml type with a block layout is described, as
// gguf-dump does; `vibrantc compile` refuses a model that uses an unsupported
// one). --json prints one object for machines, arrays in full:
//   {"file": ..., "version": 3, "alignment": 32, "data_offset": ...,
//    "metadata": {key: value, ...},
//    "tensors": [{"name", "type", "shape", "offset", "bytes"}, ...],
//    "types": {"q4_K": 13, ...}, "unsupported_types": ["iq2_xxs", ...]}
#include <charconv>
#include <cstdio>
#include <map>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "frontends/gguf/gguf.h"
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

// Tensor count per type, in type id order.
std::map<DType, int> TypeCounts(const GgufFile& f) {
  std::map<DType, int> n;
  for (const GgufTensorInfo& t : f.tensors()) ++n[t.type];
  return n;
}

std::string ShapeString(const std::vector<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

void PrintHuman(const GgufFile& f) {
  uint64_t data_bytes = 0;
  for (const GgufTensorInfo& t : f.tensors()) data_bytes += t.bytes;
  std::printf("file:        %s\n", f.path().c_str());
  std::printf("version:     %u\n", f.version());
  std::printf("size:        %llu bytes\n", static_cast<unsigned long long>(f.file_size()));
  std::printf("alignment:   %llu\n", static_cast<unsigned long long>(f.alignment()));
  std::printf("data offset: %llu\n", static_cast<unsigned long long>(f.data_offset()));

  std::printf("\nmetadata (%zu keys):\n", f.metadata().size());
  size_t key_w = 3, type_w = 4;
  std::vector<std::string> types;
  for (const auto& [key, value] : f.metadata()) {
    types.push_back(TypeLabel(value));
    key_w = std::max(key_w, key.size());
    type_w = std::max(type_w, types.back().size());
  }
  std::printf("  %-*s  %-*s  %s\n", static_cast<int>(key_w), "key", static_cast<int>(type_w),
              "type", "value");
  for (size_t i = 0; i < f.metadata().size(); ++i) {
    const auto& [key, value] = f.metadata()[i];
    std::string shown = value.ToString(8);
    if (shown.size() > 200) {
      size_t cut = 197;  // back up to the start of a UTF-8 sequence
      while (cut > 0 && (static_cast<unsigned char>(shown[cut]) & 0xC0) == 0x80) --cut;
      shown = shown.substr(0, cut) + "...";
    }
    std::printf("  %-*s  %-*s  %s\n", static_cast<int>(key_w), key.c_str(),
                static_cast<int>(type_w), types[i].c_str(), shown.c_str());
  }

  std::printf("\ntensors (%zu, %llu bytes of data):\n", f.tensors().size(),
              static_cast<unsigned long long>(data_bytes));
  if (f.tensors().empty()) return;
  size_t name_w = 4, type_col = 4, shape_w = 5, bytes_w = 5;
  for (const GgufTensorInfo& t : f.tensors()) {
    name_w = std::max(name_w, t.name.size());
    type_col = std::max(type_col, DTypeName(t.type).size());
    shape_w = std::max(shape_w, ShapeString(t.dims).size());
    bytes_w = std::max(bytes_w, absl::StrCat(t.bytes).size());
  }
  std::printf("  %-*s  %-*s  %-*s  %*s  %s\n", static_cast<int>(name_w), "name",
              static_cast<int>(type_col), "type", static_cast<int>(shape_w), "shape",
              static_cast<int>(bytes_w), "bytes", "offset");
  for (const GgufTensorInfo& t : f.tensors()) {
    std::printf("  %-*s  %-*s  %-*s  %*llu  %llu\n", static_cast<int>(name_w), t.name.c_str(),
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
  // Strings in GGUF files are not always valid UTF-8; replace bad bytes
  // with U+FFFD rather than failing.
  std::string text = out.dump(-1, ' ', false, Json::error_handler_t::replace);
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
    std::fprintf(stderr, "vibrantc inspect: %s\n", std::string(f.status().message()).c_str());
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
