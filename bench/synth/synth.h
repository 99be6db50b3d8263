// Synthetic GGUF models with the exact shapes, tensor names, metadata and
// per-tensor quantization types of real models, and random weights.
//
//   synth::SynthOptions o;
//   o.preset = "qwen2.5-3b";
//   o.type = synth::FileType::kQ4_K_M;
//   absl::StatusOr<synth::SynthReport> r = synth::SynthesizeModel(o, "m.gguf");
//
// The file is an ordinary GGUF v3 as llama.cpp's convert_hf_to_gguf.py +
// llama-quantize would produce it for that model (same metadata keys, tensor
// names, shapes, order and types; tokenizer: see vocab.h), with random
// weights: 2-D weights ~N(0, 0.02) (see random_blocks.h), norm weights
// ~N(1, 0.02), biases ~N(0, 0.02), and rope_freqs.weight (llama3 scaling)
// with its exact values. Tensor data is generated straight into the
// memory-mapped output, on all cores: a 3B Q4_K_M model takes seconds.
#ifndef VIBRANT_BENCH_SYNTH_SYNTH_H_
#define VIBRANT_BENCH_SYNTH_SYNTH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/synth/presets.h"
#include "bench/synth/quant_mix.h"

namespace vibrant::synth {

struct SynthOptions {
  std::string preset;              // a preset name (presets.h)
  FileType type = FileType::kQ4_K_M;
  uint64_t seed = 0;               // same options and seed: same bytes
  // Number of layers to write instead of the preset's (> 0), for small test
  // models. The quantization mix is computed for the layers written, as
  // llama-quantize would for such a model.
  int64_t layers = 0;
  // Number of tokens instead of the preset's (> 0), for small test models:
  // the embedding (and output) matrices shrink, and the vocabulary is then
  // always the synthetic one, with fewer regular tokens.
  int64_t vocab = 0;
  // The Qwen2 vocabulary GGUF for qwen presets; "" = synthetic vocabulary.
  std::string qwen2_vocab;
  int threads = 0;                 // 0 = hardware concurrency
};

struct SynthReport {
  std::string path;
  uint64_t file_bytes = 0;
  int64_t n_params = 0;
  int64_t n_tensors = 0;
  int64_t n_layer = 0;
  std::string vocabulary;  // what tokenizer was written (vocab.h)
  // Tensor count per type name, e.g. {"q4_K", 170}, in order of first use.
  std::vector<std::pair<std::string, int64_t>> types;
};

// Writes the model to `path` (atomically, via GgufWriter::WriteFile).
absl::StatusOr<SynthReport> SynthesizeModel(const SynthOptions& opts, const std::string& path);

}  // namespace vibrant::synth

#endif  // VIBRANT_BENCH_SYNTH_SYNTH_H_
