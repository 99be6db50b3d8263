// Writes a small seed corpus for gguf_fuzzer: tiny valid GGUF files that
// between them use every metadata type, nested and string arrays, several
// tensor types, 1 to 4 dimensions, non-default alignment and version 2.
//
//   gguf_fuzz_seeds OUT_DIR [MODEL.gguf]
//
// With MODEL.gguf, one more seed carries that model's metadata and its small
// tensors (a realistic header without megabytes of weights).
#include <cstdio>
#include <string>
#include <vector>

#include "frontends/gguf/gguf.h"
#include "frontends/gguf/gguf_writer.h"

namespace {

using vibrant::DType;
using vibrant::GgufArray;
using vibrant::GgufType;
using vibrant::GgufValue;
using vibrant::GgufWriter;

std::vector<uint8_t> Pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 37 + 11);
  return v;
}

bool Write(const GgufWriter& w, const std::string& path, int version = 3) {
  absl::StatusOr<std::string> bytes = w.Serialize();
  if (!bytes.ok()) {
    std::fprintf(stderr, "gguf_fuzz_seeds: %s\n", std::string(bytes.status().message()).c_str());
    return false;
  }
  (*bytes)[4] = static_cast<char>(version);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    std::perror(path.c_str());
    return false;
  }
  bool ok = std::fwrite(bytes->data(), 1, bytes->size(), f) == bytes->size();
  ok = std::fclose(f) == 0 && ok;
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: gguf_fuzz_seeds OUT_DIR [MODEL.gguf]\n");
    return 2;
  }
  std::string dir = argv[1];
  bool ok = true;

  ok &= Write(GgufWriter(), dir + "/empty.gguf");

  {
    GgufWriter w;
    w.AddUint8("u8", 1);
    w.AddInt8("i8", -1);
    w.AddUint16("u16", 2);
    w.AddInt16("i16", -2);
    w.AddUint32("u32", 3);
    w.AddInt32("i32", -3);
    w.AddUint64("u64", 4);
    w.AddInt64("i64", -4);
    w.AddFloat32("f32", 0.5f);
    w.AddFloat64("f64", 0.25);
    w.AddBool("b", true);
    w.AddString("s", "text");
    std::vector<std::string> strs = {"a", "bc", ""};
    w.AddStringArray("strs", strs);
    std::vector<float> fl = {1, 2};
    w.AddFloat32Array("floats", fl);
    GgufArray inner{GgufType::kInt32, {GgufValue::Int(GgufType::kInt32, 7)}};
    GgufArray mid{GgufType::kArray, {GgufValue::Array(inner), GgufValue::Array(inner)}};
    w.AddArray("nested", GgufArray{GgufType::kArray, {GgufValue::Array(mid)}});
    ok &= Write(w, dir + "/values.gguf");
    ok &= Write(w, dir + "/values_v2.gguf", 2);
  }

  {
    GgufWriter w;
    w.AddString("general.architecture", "llama");
    w.AddTensor("f32", {4}, DType::kF32, Pattern(16));
    w.AddTensor("f16", {2, 2}, DType::kF16, Pattern(8));
    w.AddTensor("bf16", {2, 1, 2}, DType::kBF16, Pattern(8));
    w.AddTensor("q4_0", {32}, DType::kQ4_0, Pattern(18));
    w.AddTensor("q8_0", {32, 2}, DType::kQ8_0, Pattern(68));
    w.AddTensor("q4_k", {256}, DType::kQ4_K, Pattern(144));
    w.AddTensor("q6_k", {256}, DType::kQ6_K, Pattern(210));
    w.AddTensor("i32", {1, 1, 1, 3}, DType::kI32, Pattern(12));
    ok &= Write(w, dir + "/tensors.gguf");
    w.SetAlignment(64);
    ok &= Write(w, dir + "/tensors_align64.gguf");
  }

  {
    GgufWriter w;
    w.AddString("general.architecture", "llama");
    w.AddString("tokenizer.ggml.model", "llama");
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    for (int i = 0; i < 40; ++i) {
      tokens.push_back(i < 3 ? std::string(i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>")
                             : "\xe2\x96\x81t" + std::to_string(i));
      scores.push_back(-static_cast<float>(i));
      types.push_back(i < 3 ? 3 : 1);
    }
    w.AddStringArray("tokenizer.ggml.tokens", tokens);
    w.AddFloat32Array("tokenizer.ggml.scores", scores);
    w.AddInt32Array("tokenizer.ggml.token_type", types);
    w.AddUint32("tokenizer.ggml.bos_token_id", 1);
    ok &= Write(w, dir + "/vocab.gguf");
  }

  if (argc == 3) {
    auto model = vibrant::GgufFile::Open(argv[2]);
    if (!model.ok()) {
      std::fprintf(stderr, "gguf_fuzz_seeds: %s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    GgufWriter w;
    for (const auto& [key, value] : (*model)->metadata()) w.AddMetadata(key, value);
    for (const vibrant::GgufTensorInfo& t : (*model)->tensors()) {
      if (t.bytes <= 1024) w.AddTensor(t.name, t.dims, t.type, (*model)->TensorData(t));
    }
    ok &= Write(w, dir + "/model_header.gguf");
  }
  return ok ? 0 : 1;
}
