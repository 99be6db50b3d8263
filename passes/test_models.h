// Models for the passes' tests: the bundled stories260K, a synthetic
// tiny-qwen2 built in memory, and the shared models (../shared) when present.
#ifndef VIBRANT_PASSES_TEST_MODELS_H_
#define VIBRANT_PASSES_TEST_MODELS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "ir/graph.h"
#include "runtime/cpu/executor.h"

namespace vibrant::passes::test_models {

struct TestModel {
  std::string name;   // "stories260K", "tiny-qwen2", a shared model's stem
  std::string bytes;  // the GGUF, for models built in memory
  std::unique_ptr<GgufFile> file;

  WeightResolver Resolver() const;
  absl::StatusOr<ir::Graph> Lower(const LowerOptions& opts = LowerOptions()) const;
};

// tests/data/stories260K.gguf (llama, 5 layers, d 64, 8 heads / 4 KV heads,
// vocab 512; always present).
absl::StatusOr<std::unique_ptr<TestModel>> Stories260K();

// A qwen2-shaped model: 2 layers, d 64, 4 heads / 2 KV heads (head 16), FFN
// 96, vocab 80, Q/K/V biases, tied embeddings, rope base 1e6, eps 1e-6,
// context 256; f32 weights drawn from a fixed seed.
TransformerSpec TinyQwen2Spec();
absl::StatusOr<std::unique_ptr<TestModel>> TinyQwen2();

// A GGUF built in memory from `spec` (f32 tensors: norm scales in [0.8, 1.2),
// everything else in [-0.25, 0.25), drawn from `seed`; spec.matrix_type is
// ignored).
absl::StatusOr<std::unique_ptr<TestModel>> Synthetic(const TransformerSpec& spec, uint32_t seed);

// A llama with head_dim 64 (the tensor-core attention kernels' smallest):
// 2 layers, d 256, 4 heads / 2 KV heads, FFN 128, vocab 96, context 512.
TransformerSpec TinyLlamaHd64Spec();

// Qwen2.5-3B's shapes (bench/synth's qwen2.5-3b preset; 36 layers, d 2048,
// 16 heads / 2 KV heads, FFN 11008, vocab 151936, tied embeddings, Q/K/V
// biases, rope base 1e6, eps 1e-6) with q4_K matrices: lowered with
// LowerShapes, no weights needed.
TransformerSpec Qwen25_3BSpec();

// A GGUF file on disk.
absl::StatusOr<std::unique_ptr<TestModel>> OpenModel(const std::string& path);

// ../shared/models/*.gguf, sorted; empty when ../shared is absent.
std::vector<std::string> SharedModelPaths();

}  // namespace vibrant::passes::test_models

#endif  // VIBRANT_PASSES_TEST_MODELS_H_
