#include "bench/synth/synth.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/synth/random_blocks.h"
#include "bench/synth/vocab.h"
#include "frontends/gguf/gguf_writer.h"

namespace vibrant::synth {
namespace {

// Standard deviation of the random weights and biases; norm weights are
// centred on 1 with the same spread.
constexpr float kSigma = 0.02f;

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

absl::StatusOr<SynthReport> SynthesizeModel(const SynthOptions& opts, const std::string& path) {
  absl::StatusOr<ModelPreset> preset = FindPreset(opts.preset);
  if (!preset.ok()) return preset.status();
  const ModelPreset& p = *preset;
  if (opts.layers < 0) {
    return absl::InvalidArgumentError(absl::StrCat("layers ", opts.layers, " must be >= 0"));
  }
  if (opts.vocab < 0) {
    return absl::InvalidArgumentError(absl::StrCat("vocab ", opts.vocab, " must be >= 0"));
  }
  const int64_t n_layer = opts.layers > 0 ? opts.layers : p.n_layer;
  ModelPreset shape = p;
  if (opts.vocab > 0) shape.n_vocab = opts.vocab;
  const FileTypeInfo& ft = GetFileTypeInfo(opts.type);
  const std::string a(p.arch);

  GgufWriter w;
  w.AddString("general.architecture", a);
  w.AddString("general.type", "model");
  std::string name = absl::StrCat(std::string(p.source.substr(p.source.find('/') + 1)), " (synthetic");
  if (n_layer != p.n_layer) absl::StrAppend(&name, ", ", n_layer, " layers");
  if (shape.n_vocab != p.n_vocab) absl::StrAppend(&name, ", ", shape.n_vocab, " tokens");
  w.AddString("general.name", name + ")");
  w.AddString("vibrant.synth.preset", std::string(p.name));
  w.AddUint64("vibrant.synth.seed", opts.seed);
  w.AddUint32(a + ".block_count", static_cast<uint32_t>(n_layer));
  w.AddUint32(a + ".context_length", static_cast<uint32_t>(p.n_ctx_train));
  w.AddUint32(a + ".embedding_length", static_cast<uint32_t>(p.n_embd));
  w.AddUint32(a + ".feed_forward_length", static_cast<uint32_t>(p.n_ff));
  w.AddUint32(a + ".attention.head_count", static_cast<uint32_t>(p.n_head));
  w.AddUint32(a + ".attention.head_count_kv", static_cast<uint32_t>(p.n_head_kv));
  w.AddFloat32(a + ".rope.freq_base", static_cast<float>(p.rope_freq_base));
  w.AddFloat32(a + ".attention.layer_norm_rms_epsilon", static_cast<float>(p.rms_eps));
  if (p.head_dim_keys) {
    w.AddUint32(a + ".attention.key_length", static_cast<uint32_t>(p.head_dim));
    w.AddUint32(a + ".attention.value_length", static_cast<uint32_t>(p.head_dim));
  }
  if (p.n_expert > 0) {
    w.AddUint32(a + ".expert_count", static_cast<uint32_t>(p.n_expert));
    w.AddUint32(a + ".expert_used_count", static_cast<uint32_t>(p.n_expert_used));
    w.AddUint32(a + ".expert_feed_forward_length", static_cast<uint32_t>(p.n_ff_exp));
  }
  if (p.sliding_window > 0) {
    w.AddUint32(a + ".attention.sliding_window", static_cast<uint32_t>(p.sliding_window));
  }
  if (p.rope_scaling_linear > 0) {
    w.AddString(a + ".rope.scaling.type", "linear");
    w.AddFloat32(a + ".rope.scaling.factor", static_cast<float>(p.rope_scaling_linear));
  }
  w.AddUint32("general.file_type", ft.llama_ftype);
  if (p.vocab_size_key) w.AddUint32(a + ".vocab_size", static_cast<uint32_t>(shape.n_vocab));
  if (p.rope_dim_key) w.AddUint32(a + ".rope.dimension_count", static_cast<uint32_t>(p.head_dim));
  w.AddUint32("general.quantization_version", 2);

  SynthReport report;
  report.path = path;
  report.n_layer = n_layer;
  absl::StatusOr<std::string> vocab = AddVocabulary(
      p.vocab, shape.n_vocab, opts.vocab > 0 ? std::string() : opts.qwen2_vocab, w);
  if (!vocab.ok()) return vocab.status();
  report.vocabulary = *vocab;

  const std::vector<TensorDesc> tensors = PresetTensors(shape, n_layer);
  absl::StatusOr<std::vector<DType>> types = QuantMix(opts.type, tensors, n_layer);
  if (!types.ok()) return types.status();
  const std::vector<float> rope_factors = Llama3RopeFactors(p);
  const int threads = opts.threads;

  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorDesc& t = tensors[i];
    const DType type = (*types)[i];
    const uint64_t seed = Mix64(opts.seed ^ Mix64(i + 1));
    GgufWriter::FillFn fill;
    if (t.name == "rope_freqs.weight") {
      fill = [&rope_factors](absl::Span<uint8_t> out) -> absl::Status {
        if (out.size() != rope_factors.size() * sizeof(float)) {
          return absl::InternalError("rope_freqs.weight: size mismatch");
        }
        std::memcpy(out.data(), rope_factors.data(), out.size());
        return absl::OkStatus();
      };
    } else {
      const float mean = EndsWith(t.name, "_norm.weight") ? 1.0f : 0.0f;
      fill = [type, seed, mean, threads](absl::Span<uint8_t> out) {
        return FillRandom(type, seed, kSigma, mean, out, threads);
      };
    }
    w.AddTensor(t.name, t.dims, type, std::move(fill));

    int64_t e = 1;
    for (int64_t d : t.dims) e *= d;
    report.n_params += e;
    const std::string name(DTypeName(type));
    auto it = std::find_if(report.types.begin(), report.types.end(),
                           [&](const auto& kv) { return kv.first == name; });
    if (it == report.types.end()) {
      report.types.emplace_back(name, 1);
    } else {
      ++it->second;
    }
  }
  report.n_tensors = static_cast<int64_t>(tensors.size());
  absl::StatusOr<uint64_t> size = w.FileSize();
  if (!size.ok()) return size.status();
  report.file_bytes = *size;
  if (absl::Status s = w.WriteFile(path); !s.ok()) return s;
  return report;
}

}  // namespace vibrant::synth
