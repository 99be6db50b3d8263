// Writes the seed corpora of the fuzz targets (`.ci/fuzz.sh`; the copies
// committed under tests/fuzz/seeds/ were written by this program):
//
//   fuzz_seeds OUT_DIR
//
// OUT_DIR/lower/      tiny llama, qwen2, qwen3, gemma3, phi3 and qwen3moe GGUFs
//                     (f32, f16, q8_0 matrices)
// OUT_DIR/plan/       plans compiled from them (and sharded for 2 ranks:
//                     *.tp2.plan), the GGUF embedded; in a build
//                     with CUDA also cuda plans (DISPATCH; a stand-in KERNELS),
//                     one rank and two (*.cuda-tp2.plan), split with
//                     the CPU (*.cuda-ngl1.plan)
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
#include "runtime/kernel_bundle.h"

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

// A GGUF of `shapes` with small random weights and, when `vocab`, a
// SentencePiece vocabulary of n_vocab tokens.
absl::StatusOr<std::string> TinyModel(const ModelShapes& shapes, int64_t n_vocab, bool vocab) {
  GgufWriter w;
  for (const auto& [key, value] : shapes.metadata) w.AddMetadata(key, value);
  if (vocab) {
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    std::vector<float> scores = {0, 0, 0};
    std::vector<int32_t> types = {2, 3, 3};
    while (static_cast<int64_t>(tokens.size()) < n_vocab) {
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
  s.n_layer = arch == "gemma3" ? 2 : 1;  // gemma3: a local and a global layer
  s.n_embd = 32;
  s.n_head = 2;
  s.n_head_kv = 1;
  s.n_ff = 32;
  s.n_vocab = 32;
  s.n_ctx_train = 64;
  s.qkv_bias = arch == "qwen2";
  s.tied_embeddings = arch == "qwen2" || arch == "gemma3";
  s.matrix_type = type;
  return s;
}

GgufTensorInfo Tensor(std::string name, std::vector<int64_t> dims, DType type) {
  GgufTensorInfo t;
  t.name = std::move(name);
  t.dims = std::move(dims);
  t.type = type;
  int64_t n = 1;
  for (int64_t d : t.dims) n *= d;
  t.bytes = static_cast<uint64_t>(DTypeBytes(type, n).value_or(0));
  return t;
}

// The tensors and keys the newer architectures add to (or replace in) the
// llama-shaped table ShapesFromSpec writes under their name, as
// llama.cpp's converter writes them (frontends/lower/lower.cc reads them):
// qwen3 q/k head norms; gemma3 those plus post-norms and a sliding window
// (pattern 2: layer 0 local, layer 1 global); phi3 the fused attn_qkv and
// gate+up in ffn_up (weight views, GRAPH format 4); qwen3moe head norms and
// 4 experts, 2 used (moe_topk, moe_weights, matmul_id, moe_sum).
ModelShapes ShapesFor(const TransformerSpec& spec) {
  ModelShapes m = ShapesFromSpec(spec);
  const std::string& a = spec.arch;
  if (a == "llama" || a == "qwen2") return m;
  const int64_t D = spec.n_embd, hd = D / spec.n_head, F = spec.n_ff, E = 4;
  const int64_t q = spec.n_head * hd, kv = spec.n_head_kv * hd;
  const DType mat = spec.matrix_type;
  auto u32 = [&](const std::string& key, int64_t v) {
    m.metadata.emplace_back(a + "." + key, GgufValue::Uint(GgufType::kUint32, static_cast<uint64_t>(v)));
  };
  std::vector<GgufTensorInfo> out;
  for (GgufTensorInfo& t : m.tensors) {
    const std::string& n = t.name;
    auto ends = [&](const std::string& suffix) {
      return n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    const std::string blk = n.substr(0, n.find('.', 4) + 1);  // "blk.L."
    if (a == "phi3" && (ends("attn_k.weight") || ends("attn_v.weight") || ends("ffn_gate.weight"))) continue;
    if (a == "phi3" && ends("attn_q.weight")) {
      out.push_back(Tensor(blk + "attn_qkv.weight", {D, q + 2 * kv}, mat));
      continue;
    }
    if (a == "phi3" && ends("ffn_up.weight")) {
      out.push_back(Tensor(blk + "ffn_up.weight", {D, 2 * F}, mat));
      continue;
    }
    if (a == "qwen3moe" && (ends("ffn_gate.weight") || ends("ffn_up.weight"))) continue;
    if (a == "qwen3moe" && ends("ffn_down.weight")) {
      out.push_back(Tensor(blk + "ffn_gate_inp.weight", {D, E}, DType::kF32));
      out.push_back(Tensor(blk + "ffn_gate_exps.weight", {D, F, E}, mat));
      out.push_back(Tensor(blk + "ffn_up_exps.weight", {D, F, E}, mat));
      out.push_back(Tensor(blk + "ffn_down_exps.weight", {F, D, E}, mat));
      continue;
    }
    out.push_back(t);
    if (ends("attn_norm.weight") && a != "phi3") {
      out.push_back(Tensor(blk + "attn_q_norm.weight", {hd}, DType::kF32));
      out.push_back(Tensor(blk + "attn_k_norm.weight", {hd}, DType::kF32));
    }
    if (a == "gemma3" && ends("attn_norm.weight")) {
      out.push_back(Tensor(blk + "post_attention_norm.weight", {D}, DType::kF32));
      out.push_back(Tensor(blk + "post_ffw_norm.weight", {D}, DType::kF32));
    }
  }
  m.tensors = std::move(out);
  if (a == "gemma3") {
    u32("attention.sliding_window", 2);
    u32("attention.sliding_window_pattern", 2);
  }
  if (a == "qwen3moe") {
    u32("expert_count", E);
    u32("expert_used_count", 2);
    u32("expert_feed_forward_length", F);
  }
  return m;
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
                                                                {"qwen2", DType::kF16, "qwen2-f16"},
                                                                {"qwen3", DType::kF16, "qwen3-f16"},
                                                                {"gemma3", DType::kF32, "gemma3-f32"},
                                                                {"phi3", DType::kQ8_0, "phi3-q8_0"},
                                                                {"qwen3moe", DType::kF16, "qwen3moe-f16"}}) {
    const TransformerSpec spec = Spec(arch, type);
    absl::StatusOr<std::string> gguf = TinyModel(ShapesFor(spec), spec.n_vocab, arch == "llama");
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
    // A plan sharded for 2 ranks (rank offsets, row strides, collectives).
    compiler::CompileOptions tp = co;
    tp.tp = 2;
    absl::StatusOr<compiler::Compiled> sharded = compiler::CompileGguf(**file, tp);
    if (sharded.ok()) {
      ok &= WriteBytes(absl::StrCat(dir, "/ir_binary/", name, ".tp2.bin"), ir::SerializeGraph(sharded->graph));
      ok &= WriteBytes(absl::StrCat(dir, "/ir_text/", name, ".tp2.ir"), ir::PrintGraph(sharded->graph));
      if (absl::Status s = compiler::WritePlanFile(absl::StrCat(dir, "/plan/", name, ".tp2.plan"), *sharded,
                                                   **file, /*embed_weights=*/true);
          !s.ok()) {
        fail(absl::StrCat(name, " (tp 2)"), s);
      }
    } else {
      fail(absl::StrCat(name, " (tp 2)"), sharded.status());
    }
    // A cuda plan (in a build with CUDA: the committed seeds have them) for
    // the DISPATCH parser and LoadProgram's cross-checks: the dispatch table
    // as compiled, with a stand-in KERNELS section (CUBIN and PTX are opaque
    // to the host; the real ones are megabytes).
    co.device = "cuda";
    co.arch = "sm_90";
    co.sm_count = 132;
    co.compile_kernels = false;
    absl::StatusOr<compiler::Compiled> cu = compiler::CompileGguf(**file, co);
    if (cu.ok() && cu->dispatch.has_value()) {
      KernelBundle stand_in;
      stand_in.arch = "sm_90";
      stand_in.nvrtc_version = "0.0";
      stand_in.cubin = "cubin";
      stand_in.ptx = "ptx";
      cu->kernels = SerializeKernelBundle(stand_in);
      ok &= WriteBytes(absl::StrCat(dir, "/ir_binary/", name, ".cuda.bin"), ir::SerializeGraph(cu->graph));
      if (absl::Status s = compiler::WritePlanFile(absl::StrCat(dir, "/plan/", name, ".cuda.plan"), *cu, **file,
                                                   /*embed_weights=*/true);
          !s.ok()) {
        fail(absl::StrCat(name, " (cuda)"), s);
      }
      // Sharded for 2 ranks: the table's rank offsets and collective launches.
      co.tp = 2;
      absl::StatusOr<compiler::Compiled> cu2 = compiler::CompileGguf(**file, co);
      co.tp = 1;
      if (cu2.ok() && cu2->dispatch.has_value()) {
        cu2->kernels = cu->kernels;
        if (absl::Status s = compiler::WritePlanFile(absl::StrCat(dir, "/plan/", name, ".cuda-tp2.plan"), *cu2,
                                                     **file, /*embed_weights=*/true);
            !s.ok()) {
          fail(absl::StrCat(name, " (cuda, tp 2)"), s);
        }
      } else if (!cu2.ok()) {
        fail(absl::StrCat(name, " (cuda, tp 2)"), cu2.status());
      }
      // Split with the CPU (-ngl 1): host launches and transfers in the table.
      co.gpu_layers = 1;
      absl::StatusOr<compiler::Compiled> split = compiler::CompileGguf(**file, co);
      co.gpu_layers = -1;
      if (split.ok() && split->dispatch.has_value()) {
        split->kernels = cu->kernels;
        if (absl::Status s = compiler::WritePlanFile(absl::StrCat(dir, "/plan/", name, ".cuda-ngl1.plan"), *split,
                                                     **file, /*embed_weights=*/true);
            !s.ok()) {
          fail(absl::StrCat(name, " (cuda, -ngl 1)"), s);
        }
      } else if (!split.ok()) {
        fail(absl::StrCat(name, " (cuda, -ngl 1)"), split.status());
      }
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
