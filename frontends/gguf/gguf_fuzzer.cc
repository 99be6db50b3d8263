// libFuzzer target for the GGUF reader (built with -DVIBRANT_FUZZ=ON and clang;
// run by .ci/fuzz.sh). Every input must either fail with a status or parse
// into a file whose values and tensor data can all be touched. A file that
// parses is also written back with GgufWriter and read again: the copy must
// hold the same metadata and tensors.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "frontends/gguf/gguf.h"
#include "frontends/gguf/gguf_writer.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "gguf_fuzzer: invariant broken: %s\n", what);
    std::abort();
  }
}

volatile uint64_t g_sink;

uint64_t Touch(const vibrant::GgufValue& v) {
  uint64_t h = static_cast<uint64_t>(v.type());
  h += v.ToString(4).size();
  if (auto i = v.AsInt(); i.ok()) h += static_cast<uint64_t>(*i);
  if (auto u = v.AsUint(); u.ok()) h += *u;
  if (auto f = v.AsFloat(); f.ok()) h += static_cast<uint64_t>(*f == *f);
  if (auto b = v.AsBool(); b.ok()) h += *b;
  if (auto s = v.AsString(); s.ok()) h += s->size();
  if (auto a = v.AsArray(); a.ok()) {
    for (const vibrant::GgufValue& e : (*a)->elems) {
      Check(e.type() == (*a)->elem_type, "array element type");
      h += Touch(e);
    }
  }
  Check(v.is_integer() == v.AsInt().ok() || v.AsInt().status().code() ==
                                                 absl::StatusCode::kOutOfRange,
        "is_integer agrees with AsInt");
  return h;
}

bool SameValue(const vibrant::GgufValue& a, const vibrant::GgufValue& b) {
  return a.type() == b.type() && a.ToString(-1) == b.ToString(-1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::unique_ptr<vibrant::GgufFile>> f =
      vibrant::GgufFile::FromBuffer("fuzz.gguf", absl::Span<const uint8_t>(data, size));
  if (!f.ok()) {
    Check(!f.status().message().empty(), "errors have a message");
    return 0;
  }
  const vibrant::GgufFile& g = **f;
  uint64_t h = g.version() + g.alignment() + g.data_offset();
  Check(g.alignment() != 0 && (g.alignment() & (g.alignment() - 1)) == 0, "alignment");
  for (const auto& [key, value] : g.metadata()) {
    h += Touch(value);
    Check(g.Find(key) == &value, "Find returns the entry");
    h += g.GetInt(key).ok() + g.GetFloat(key).ok() + g.GetBool(key).ok() +
         g.GetString(key).ok() + g.GetArray(key).ok();
  }
  h += g.Architecture().ok();
  for (const vibrant::GgufTensorInfo& t : g.tensors()) {
    Check(g.FindTensor(t.name) == &t, "FindTensor returns the entry");
    Check(!t.dims.empty() && t.dims.size() <= 4 && t.elements() > 0, "dims");
    Check(t.file_offset + t.bytes <= g.file_size(), "tensor inside the file");
    Check(t.offset % g.alignment() == 0, "tensor offset aligned");
    absl::Span<const uint8_t> d = g.TensorData(t);
    Check(d.size() == t.bytes && d.size() > 0, "tensor data size");
    h += d.front() + d.back();
  }

  // Write it back and read it again.
  vibrant::GgufWriter w;
  w.SetAlignment(static_cast<uint32_t>(g.alignment()));
  for (const auto& [key, value] : g.metadata()) w.AddMetadata(key, value);
  for (const vibrant::GgufTensorInfo& t : g.tensors()) {
    w.AddTensor(t.name, t.dims, t.type, g.TensorData(t));
  }
  absl::StatusOr<std::string> bytes = w.Serialize();
  Check(bytes.ok(), "a file that reads can be written");
  auto copy = vibrant::GgufFile::FromBuffer(
      "copy.gguf", absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes->data()),
                                             bytes->size()));
  Check(copy.ok(), "a written file reads");
  const vibrant::GgufFile& c = **copy;
  Check(c.alignment() == g.alignment(), "copy alignment");
  Check(c.metadata().size() == g.metadata().size(), "copy metadata count");
  for (const auto& [key, value] : g.metadata()) {
    const vibrant::GgufValue* v = c.Find(key);
    Check(v != nullptr && SameValue(*v, value), "copy metadata value");
  }
  Check(c.tensors().size() == g.tensors().size(), "copy tensor count");
  for (size_t i = 0; i < g.tensors().size(); ++i) {
    const vibrant::GgufTensorInfo& a = g.tensors()[i];
    const vibrant::GgufTensorInfo& b = c.tensors()[i];
    Check(a.name == b.name && a.dims == b.dims && a.type == b.type && a.bytes == b.bytes,
          "copy tensor info");
    Check(std::memcmp(g.TensorData(a).data(), c.TensorData(b).data(), a.bytes) == 0,
          "copy tensor data");
  }
  g_sink = h;
  return 0;
}
