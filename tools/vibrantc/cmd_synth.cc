// vibrantc synth: writes a synthetic GGUF with a real model's shapes, names,
// metadata and quantization mix, and random weights (bench/synth/).
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/synth/presets.h"
#include "bench/synth/quant_mix.h"
#include "bench/synth/synth.h"
#include "bench/synth/vocab.h"
#include "frontends/io/text.h"
#include "tools/vibrantc/commands.h"

namespace vibrant::cli {
namespace {

std::string Usage() {
  std::vector<std::string> presets, types;
  for (const synth::ModelPreset& p : synth::AllPresets()) {
    const std::string ffn =
        p.n_expert > 0 ? absl::StrFormat("%d experts (%d per token) of FFN %d", p.n_expert,
                                         p.n_expert_used, p.n_ff_exp)
                       : absl::StrFormat("FFN %d", p.n_ff);
    presets.push_back(absl::StrFormat("    %-14s %s: %d layers, d_model %d, %d/%d heads, %s, "
                                      "vocab %d%s",
                                      std::string(p.name), std::string(p.source), p.n_layer,
                                      p.n_embd, p.n_head, p.n_head_kv, ffn, p.n_vocab,
                                      p.tied_embeddings ? ", tied" : ""));
  }
  for (const synth::FileTypeInfo& t : synth::AllFileTypes()) types.emplace_back(t.name);
  return absl::StrCat(
      "usage: vibrantc synth --preset NAME --type TYPE -o MODEL.gguf [options]\n"
      "\n"
      "Writes a GGUF with the exact shapes, tensor names, metadata and per-tensor\n"
      "quantization types (llama-quantize's mix) of a real model, and random weights.\n"
      "\n"
      "  --preset NAME    the model:\n",
      absl::StrJoin(presets, "\n"),
      "\n"
      "  --type TYPE      ", absl::StrJoin(types, ", "),
      "\n"
      "  -o, --output F   the GGUF to write\n"
      "  --seed N         random seed (default 0); same options, same bytes\n"
      "  --layers N       write N layers instead of the preset's (small test models)\n"
      "  --vocab N        N tokens instead of the preset's, with a synthetic vocabulary\n"
      "                   (small test models)\n"
      "  --vocab-file F   for qwen presets: the Qwen2 vocabulary GGUF to copy (default:\n"
      "                   $VIBRANT_SHARED_DIR or ../shared tokenizer/ggml-vocab-qwen2.gguf;\n"
      "                   when absent the vocabulary is synthetic, with a warning)\n"
      "  -t, --threads N  threads generating the weights (default: all cores)\n");
}

bool UsageError(const std::string& msg) {
  std::fprintf(stderr, "vibrantc synth: %s\n%s", msg.c_str(), Usage().c_str());
  return false;
}

}  // namespace

int RunSynth(const std::vector<std::string>& args) {
  synth::SynthOptions o;
  std::string output, type;
  std::string vocab_file;
  bool have_vocab_file = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    std::string v;
    auto value = [&]() {
      if (i + 1 >= args.size()) return UsageError(a + " needs a value");
      v = args[++i];
      return true;
    };
    auto int_value = [&](int64_t min, int64_t* out) {
      if (!value()) return false;
      if (!absl::SimpleAtoi(v, out) || *out < min) {
        return UsageError(absl::StrCat(a, ": '", v, "' is not an integer >= ", min));
      }
      return true;
    };
    if (a == "-h" || a == "--help") {
      std::fputs(Usage().c_str(), stdout);
      return 0;
    } else if (a == "--preset") {
      if (!value()) return 2;
      o.preset = v;
    } else if (a == "--type") {
      if (!value()) return 2;
      type = v;
    } else if (a == "-o" || a == "--output") {
      if (!value()) return 2;
      output = v;
    } else if (a == "--seed") {
      if (!value()) return 2;
      if (!absl::SimpleAtoi(v, &o.seed)) {
        UsageError("--seed: '" + v + "' is not an unsigned 64-bit integer");
        return 2;
      }
    } else if (a == "--layers") {
      if (!int_value(1, &o.layers)) return 2;
    } else if (a == "--vocab") {
      if (!int_value(1, &o.vocab)) return 2;
    } else if (a == "--vocab-file") {
      if (!value()) return 2;
      vocab_file = v;
      have_vocab_file = true;
    } else if (a == "-t" || a == "--threads") {
      int64_t t;
      if (!int_value(1, &t)) return 2;
      o.threads = static_cast<int>(t);
    } else {
      UsageError(absl::StrCat(!a.empty() && a[0] == '-' ? "unknown option '" : "unexpected argument '",
                              a, "'"));
      return 2;
    }
  }
  if (o.preset.empty()) {
    UsageError("no preset given (--preset NAME)");
    return 2;
  }
  if (type.empty()) {
    UsageError("no type given (--type TYPE)");
    return 2;
  }
  if (output.empty()) {
    UsageError("no output given (-o MODEL.gguf)");
    return 2;
  }
  absl::StatusOr<synth::ModelPreset> preset = synth::FindPreset(o.preset);
  if (!preset.ok()) {
    UsageError(std::string(preset.status().message()));
    return 2;
  }
  absl::StatusOr<synth::FileType> ft = synth::FileTypeFromName(type);
  if (!ft.ok()) {
    UsageError(std::string(ft.status().message()));
    return 2;
  }
  o.type = *ft;

  if (preset->vocab == synth::VocabKind::kQwen2 && o.vocab == 0) {
    o.qwen2_vocab = have_vocab_file ? vocab_file : synth::FindQwen2Vocab();
    if (o.qwen2_vocab.empty()) {
      std::fprintf(stderr,
                   "vibrantc synth: warning: the Qwen2 vocabulary (tokenizer/ggml-vocab-qwen2.gguf "
                   "under $VIBRANT_SHARED_DIR or ../shared) was not found; writing a synthetic "
                   "byte-level vocabulary instead (same size and special tokens; give "
                   "--vocab-file to use the real one)\n");
    }
  } else if (have_vocab_file) {
    std::fprintf(stderr, "vibrantc synth: warning: --vocab-file is ignored for %s\n",
                 o.vocab > 0 ? "--vocab N" : "llama presets (their vocabulary is synthetic)");
  }

  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<synth::SynthReport> r = synth::SynthesizeModel(o, output);
  if (!r.ok()) {
    std::fprintf(stderr, "vibrantc synth: %s\n", vibrant::io::EscapeForTerminal(r.status().message(), true).c_str());
    return 1;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<std::string> counts;
  for (const auto& [name, n] : r->types) counts.push_back(absl::StrCat(n, " ", name));
  std::printf("%s: %s %s, %lld layers, %.2f B params, %.2f GiB, %lld tensors (%s), in %.2f s\n",
              output.c_str(), o.preset.c_str(), std::string(synth::GetFileTypeInfo(o.type).name).c_str(),
              static_cast<long long>(r->n_layer), r->n_params / 1e9, r->file_bytes / 1073741824.0,
              static_cast<long long>(r->n_tensors), absl::StrJoin(counts, ", ").c_str(), s);
  std::printf("vocabulary: %s\n", r->vocabulary.c_str());
  return 0;
}

}  // namespace vibrant::cli
