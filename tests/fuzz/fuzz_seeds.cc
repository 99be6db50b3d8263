// Writes the seed corpora of the fuzz targets (`.ci/fuzz.sh`; the copies
// committed under tests/fuzz/seeds/ were written by this program):
//
//   fuzz_seeds OUT_DIR
//
// OUT_DIR/lower/      tiny llama and qwen2 GGUFs (f32, f16, q8_0 matrices)
// OUT_DIR/plan/       plans compiled from them, the GGUF embedded
// OUT_DIR/ir_binary/  their graphs, serialized, before and after the passes
// OUT_DIR/ir_text/    the same graphs as text
// OUT_DIR/tokenizer/  a selector byte, a flags byte, then text; and 0xFF then
//                     a vocabulary-only GGUF (SentencePiece and byte BPE)
//
// Everything is small (the largest file is a few tens of kilobytes) so that
// libFuzzer spends its time on mutations, not on parsing megabytes.
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/synth/vocab.h"
#include "compiler/compiler.h"
#include "frontends/gguf/gguf.h"
#include "frontends/gguf/gguf_writer.h"
#include "frontends/lower/lower.h"
#include "ir/printer.h"
#include "ir/serialize.h"

namespace vibrant {
namespace {

bool WriteBytes(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    std::perror(path.c_str());
    return false;
  }
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  return std::fclose(f) == 0 && ok;
}

// A GGUF of `spec` with small random weights and, when `vocab`, a
// SentencePiece vocabulary of spec.n_vocab tokens.
absl::StatusOr<std::string> TinyModel(const TransformerSpec& spec, bool vocab) {
  const ModelShapes shapes = ShapesFromSpec(spec);
  GgufWriter w;
  for (const auto& [key, value] : shapes.metadata) w.AddMetadata(key, value);
  if (vocab) {
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    std::vector<float> scores = {0, 0, 0};
    std::vector<int32_t> types = {2, 3, 3};
    while (static_cast<int64_t>(tokens.size()) < spec.n_vocab) {
      tokens.push_back(absl::StrCat("\xE2\x96\x81t", tokens.size()));
      scores.push_back(-static_cast<float>(tokens.size()));
      types.push_back(1);
    }
    w.AddString("tokenizer.ggml.model", "llama");
    w.AddStringArray("tokenizer.ggml.tokens", tokens);
    w.AddFloat32Array("tokenizer.ggml.scores", scores);
    w.AddInt32Array("tokenizer.ggml.token_type", types);
    w.AddUint32("tokenizer.ggml.bos_token_id", 1);
    w.AddUint32("tokenizer.ggml.eos_token_id", 2);
  }
  std::mt19937 rng(7);
  for (const GgufTensorInfo& t : shapes.tensors) {
    absl::StatusOr<int64_t> bytes = DTypeBytes(t.type, t.elements());
    if (!bytes.ok()) return bytes.status();
    std::vector<uint8_t> data(*bytes);
    if (t.type == DType::kF32) {
      std::uniform_real_distribution<float> dist(-0.25f, 0.25f);
      for (size_t i = 0; i + 4 <= data.size(); i += 4) {
        const float f = t.name.find("norm") != std::string::npos ? 1.0f : dist(rng);
        std::memcpy(&data[i], &f, 4);
      }
    } else {
      // f16 and q8_0 (whose blocks start with an f16 scale): byte pairs
      // (random low byte, 0x2c) are f16 values near 1/16, so every weight
      // and every scale is small and finite.
      for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>((i % 2) ? 0x2c : (rng() & 0x3f));
    }
    w.AddTensor(t.name, t.dims, t.type, data);
  }
  return w.Serialize();
}

TransformerSpec Spec(const std::string& arch, DType type) {
  TransformerSpec s;
  s.name = "seed";
  s.arch = arch;
  s.n_layer = 1;
  s.n_embd = 32;
  s.n_head = 2;
  s.n_head_kv = 1;
  s.n_ff = 32;
  s.n_vocab = 32;
  s.n_ctx_train = 64;
  s.qkv_bias = arch == "qwen2";
  s.tied_embeddings = arch == "qwen2";
  s.matrix_type = type;
  return s;
}

absl::StatusOr<std::string> VocabOnly(const GgufFile& src) {
  GgufWriter w;
  for (const auto& [key, value] : src.metadata()) {
    if (key.rfind("tokenizer.", 0) == 0 || key == "general.architecture") w.AddMetadata(key, value);
  }
  return w.Serialize();
}

absl::StatusOr<std::string> SyntheticBpeVocab(synth::VocabKind kind, int64_t n) {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  absl::StatusOr<std::string> added = synth::AddVocabulary(kind, n, "", w);
  if (!added.ok()) return added.status();
  return w.Serialize();
}

int Main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds OUT_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  bool ok = true;
  auto fail = [&](const std::string& what, const absl::Status& s) {
    std::fprintf(stderr, "fuzz_seeds: %s: %s\n", what.c_str(), std::string(s.message()).c_str());
    ok = false;
  };
  for (const auto& [arch, type, name] :
       std::vector<std::tuple<std::string, DType, std::string>>{{"llama", DType::kF32, "llama-f32"},
                                                                {"llama", DType::kQ8_0, "llama-q8_0"},
                                                                {"qwen2", DType::kF16, "qwen2-f16"}}) {
    absl::StatusOr<std::string> gguf = TinyModel(Spec(arch, type), arch == "llama");
    if (!gguf.ok()) {
      fail(name, gguf.status());
      continue;
    }
    ok &= WriteBytes(absl::StrCat(dir, "/lower/", name, ".gguf"), *gguf);
    absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::FromBuffer(
        name, absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(gguf->data()), gguf->size()));
    if (!file.ok()) {
      fail(name, file.status());
      continue;
    }
    LowerOptions lower;
    lower.max_tokens = 4;
    lower.n_ctx = 16;
    absl::StatusOr<ir::Graph> lowered = LowerGguf(**file, lower);
    if (!lowered.ok()) {
      fail(name, lowered.status());
      continue;
    }
    compiler::CompileOptions co;
    co.lower = lower;
    absl::StatusOr<compiler::Compiled> c = compiler::CompileGguf(**file, co);
    if (!c.ok()) {
      fail(name, c.status());
      continue;
    }
    ok &= WriteBytes(absl::StrCat(dir, "/ir_binary/", name, ".lowered.bin"), ir::SerializeGraph(*lowered));
    ok &= WriteBytes(absl::StrCat(dir, "/ir_binary/", name, ".planned.bin"), ir::SerializeGraph(c->graph));
    ok &= WriteBytes(absl::StrCat(dir, "/ir_text/", name, ".lowered.ir"), ir::PrintGraph(*lowered));
    ok &= WriteBytes(absl::StrCat(dir, "/ir_text/", name, ".planned.ir"), ir::PrintGraph(c->graph));
    if (absl::Status s = compiler::WritePlanFile(absl::StrCat(dir, "/plan/", name, ".plan"), *c, **file,
                                                 /*embed_weights=*/true);
        !s.ok()) {
      fail(name, s);
    }
  }

  // Tokenizer: vocabularies (selector 0xFF), then texts for the tokenizers
  // the fuzzer builds at start (selector = index; flags byte).
  absl::StatusOr<std::unique_ptr<GgufFile>> stories =
      GgufFile::Open(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf");
  if (stories.ok()) {
    absl::StatusOr<std::string> v = VocabOnly(**stories);
    if (v.ok()) ok &= WriteBytes(dir + "/tokenizer/vocab-spm.bin", "\xFF" + *v);
  } else {
    fail("stories260K", stories.status());
  }
  absl::StatusOr<std::string> bpe = SyntheticBpeVocab(synth::VocabKind::kLlama3, 600);
  if (bpe.ok()) {
    ok &= WriteBytes(dir + "/tokenizer/vocab-bpe.bin", "\xFF" + *bpe);
  } else {
    fail("bpe vocab", bpe.status());
  }
  const std::vector<std::string> texts = {
      "Once upon a time, there was a little girl.",
      "  leading spaces\tand\ttabs\n\nnewlines  ",
      "Hello <s> world </s> <|im_start|>user\nhi<|im_end|>",
      "numbers 1234567890 3.14159 and punctuation!?;:'\"()[]{}",
      "caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80 \xE2\x96\x81",
      "I'm you're he's we'll they've don't",
      "\x01\x02\x7f raw controls",
  };
  for (size_t i = 0; i < texts.size(); ++i) {
    for (int sel : {0, 1, 2, 7}) {
      const std::string in = std::string(1, static_cast<char>(sel)) +
                             std::string(1, static_cast<char>(i % 2 ? 0x03 : 0x00)) + texts[i];
      ok &= WriteBytes(absl::StrCat(dir, "/tokenizer/text-", i, "-", sel, ".bin"), in);
    }
  }
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace vibrant

int main(int argc, char** argv) { return vibrant::Main(argc, argv); }
