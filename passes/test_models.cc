#include "passes/test_models.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "frontends/gguf/gguf_writer.h"

namespace vibrant::passes::test_models {

WeightResolver TestModel::Resolver() const {
  const GgufFile* f = file.get();
  return [f](const std::string& name) -> absl::StatusOr<absl::Span<const uint8_t>> {
    const GgufTensorInfo* t = f->FindTensor(name);
    if (t == nullptr) return absl::NotFoundError(name);
    return f->TensorData(*t);
  };
}

absl::StatusOr<ir::Graph> TestModel::Lower(const LowerOptions& opts) const { return LowerGguf(*file, opts); }

absl::StatusOr<std::unique_ptr<TestModel>> OpenModel(const std::string& path) {
  auto m = std::make_unique<TestModel>();
  m->name = std::filesystem::path(path).stem().string();
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  if (!f.ok()) return f.status();
  m->file = *std::move(f);
  return m;
}

absl::StatusOr<std::unique_ptr<TestModel>> Stories260K() {
  return OpenModel(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf");
}

TransformerSpec Qwen25_3BSpec() {
  TransformerSpec spec;
  spec.name = "qwen2.5-3b shapes";
  spec.arch = "qwen2";
  spec.n_layer = 36;
  spec.n_embd = 2048;
  spec.n_head = 16;
  spec.n_head_kv = 2;
  spec.n_ff = 11008;
  spec.n_vocab = 151936;
  spec.n_ctx_train = 32768;
  spec.rope_freq_base = 1e6;
  spec.rms_eps = 1e-6;
  spec.tied_embeddings = true;
  spec.qkv_bias = true;
  spec.matrix_type = DType::kQ4_K;
  return spec;
}

TransformerSpec TinyQwen2Spec() {
  TransformerSpec s;
  s.name = "tiny-qwen2";
  s.arch = "qwen2";
  s.n_layer = 2;
  s.n_embd = 64;
  s.n_head = 4;
  s.n_head_kv = 2;
  s.n_ff = 96;
  s.n_vocab = 80;
  s.n_ctx_train = 256;
  s.rope_freq_base = 1e6;
  s.rms_eps = 1e-6;
  s.tied_embeddings = true;
  s.qkv_bias = true;
  s.matrix_type = DType::kF32;
  return s;
}

absl::StatusOr<std::unique_ptr<TestModel>> Synthetic(const TransformerSpec& spec, uint32_t seed) {
  const ModelShapes shapes = ShapesFromSpec(spec);
  GgufWriter w;
  for (const auto& [key, value] : shapes.metadata) w.AddMetadata(key, value);
  std::mt19937 rng(seed);
  for (const GgufTensorInfo& t : shapes.tensors) {
    int64_t n = 1;
    for (int64_t d : t.dims) n *= d;
    // Norm scales near 1, everything else small: logits stay in a sane range.
    const bool norm = t.name.find("norm") != std::string::npos;
    std::uniform_real_distribution<float> dist(norm ? 0.8f : -0.25f, norm ? 1.2f : 0.25f);
    std::vector<float> data(n);
    for (float& x : data) x = dist(rng);
    w.AddTensor(t.name, t.dims, DType::kF32,
                absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()), data.size() * 4));
  }
  absl::StatusOr<std::string> bytes = w.Serialize();
  if (!bytes.ok()) return bytes.status();
  auto m = std::make_unique<TestModel>();
  m->name = spec.name;
  m->bytes = *std::move(bytes);
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::FromBuffer(
      m->name + ".gguf",
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(m->bytes.data()), m->bytes.size()));
  if (!f.ok()) return f.status();
  m->file = *std::move(f);
  return m;
}

absl::StatusOr<std::unique_ptr<TestModel>> TinyQwen2() { return Synthetic(TinyQwen2Spec(), 20261125); }

TransformerSpec TinyLlamaHd64Spec() {
  TransformerSpec s;
  s.name = "tiny-llama-hd64";
  s.n_layer = 2;
  s.n_embd = 256;
  s.n_head = 4;
  s.n_head_kv = 2;
  s.n_ff = 128;
  s.n_vocab = 96;
  s.n_ctx_train = 512;
  s.matrix_type = DType::kF32;
  return s;
}

std::vector<std::string> SharedModelPaths() {
  std::vector<std::string> out;
  const std::filesystem::path dir = VIBRANT_SOURCE_DIR "/../shared/models";
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return out;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".gguf") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace vibrant::passes::test_models
