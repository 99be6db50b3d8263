// Presets against the published models, vocabularies, and synthesized files
// end to end: GgufFile reads them, LowerGguf lowers them, the CPU executor
// runs them, the tokenizer builds from them.
#include "bench/synth/synth.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/synth/vocab.h"
#include "frontends/gguf/gguf.h"
#include "frontends/gguf/gguf_writer.h"
#include "frontends/lower/lower.h"
#include "frontends/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/cpu/executor.h"

namespace vibrant::synth {
namespace {

using ::testing::HasSubstr;

// Parameter counts of the published checkpoints (safetensors), which the
// presets' shapes must reproduce exactly; rope_freqs.weight is a GGUF-only
// tensor and is not counted there.
TEST(Presets, ParameterCountsMatchThePublishedModels) {
  auto hf_params = [](const char* name) {
    const ModelPreset p = *FindPreset(name);
    return ParameterCount(p, p.n_layer) - (p.llama3_rope.factor > 0 ? p.head_dim / 2 : 0);
  };
  EXPECT_EQ(hf_params("qwen2.5-0.5b"), 494032768);
  EXPECT_EQ(hf_params("qwen2.5-3b"), 3085938688);
  EXPECT_EQ(hf_params("llama3.2-1b"), 1235814400);
  EXPECT_EQ(hf_params("llama3.1-8b"), 8030261248);
  // Computed by hand (python) from each config.json: Qwen3-8B's model card
  // gives 8.2B (6.95B non-embedding), Qwen3-30B-A3B's 30.5B, Gemma 3 4B's
  // text model 3.88B of the 4.3B (the rest is the vision tower).
  //   Qwen3-8B: 2*151936*4096 + 4096 + 36*(4096*4096*2 + 2*4096*1024 +
  //     2*128 + 3*4096*12288 + 2*4096)
  EXPECT_EQ(hf_params("qwen3-8b"), 8190735360);
  //   Qwen3-30B-A3B: 2*151936*2048 + 2048 + 48*(2048*4096*2 + 2*2048*512 +
  //     2*128 + 2*2048 + 2048*128 + 128*3*2048*768)
  EXPECT_EQ(hf_params("qwen3-30b-a3b"), 30532122624);
  //   Gemma-3-4B text: 262208*2560 + 2560 + 34*(2560*2048*2 + 2*2560*1024 +
  //     2*256 + 4*2560 + 3*2560*10240)
  EXPECT_EQ(hf_params("gemma3-4b"), 3880263168);
}

TEST(Presets, TensorSetsOfTheNewArchitectures) {
  auto names = [](const char* preset) {
    std::map<std::string, std::vector<int64_t>> m;
    for (const TensorDesc& t : PresetTensors(*FindPreset(preset), 1)) m[t.name] = t.dims;
    return m;
  };
  const auto q3 = names("qwen3-8b");
  EXPECT_EQ(q3.at("blk.0.attn_q_norm.weight"), (std::vector<int64_t>{128}));
  EXPECT_EQ(q3.at("blk.0.attn_k_norm.weight"), (std::vector<int64_t>{128}));
  EXPECT_EQ(q3.at("blk.0.attn_q.weight"), (std::vector<int64_t>{4096, 4096}));
  EXPECT_EQ(q3.count("blk.0.attn_q.bias"), 0u);
  // output, output_norm, token_embd; per layer attn_{norm,q,k,v,output,q_norm,k_norm},
  // ffn_{norm,gate,up,down}.
  EXPECT_EQ(q3.size(), 3u + 11);

  const auto g3 = names("gemma3-4b");
  EXPECT_EQ(g3.count("output.weight"), 0u);  // tied
  EXPECT_EQ(g3.at("blk.0.attn_q.weight"), (std::vector<int64_t>{2560, 2048}));
  EXPECT_EQ(g3.at("blk.0.attn_output.weight"), (std::vector<int64_t>{2048, 2560}));
  EXPECT_EQ(g3.at("blk.0.attn_q_norm.weight"), (std::vector<int64_t>{256}));
  EXPECT_EQ(g3.at("blk.0.post_attention_norm.weight"), (std::vector<int64_t>{2560}));
  EXPECT_EQ(g3.at("blk.0.post_ffw_norm.weight"), (std::vector<int64_t>{2560}));
  EXPECT_EQ(g3.size(), 2u + 13);  // qwen3's 11 per layer + post_attention_norm, post_ffw_norm

  const auto moe = names("qwen3-30b-a3b");
  EXPECT_EQ(moe.at("blk.0.ffn_gate_inp.weight"), (std::vector<int64_t>{2048, 128}));
  EXPECT_EQ(moe.at("blk.0.ffn_gate_exps.weight"), (std::vector<int64_t>{2048, 768, 128}));
  EXPECT_EQ(moe.at("blk.0.ffn_up_exps.weight"), (std::vector<int64_t>{2048, 768, 128}));
  EXPECT_EQ(moe.at("blk.0.ffn_down_exps.weight"), (std::vector<int64_t>{768, 2048, 128}));
  EXPECT_EQ(moe.count("blk.0.ffn_gate.weight"), 0u);
  // attn_* 7, ffn_norm, ffn_gate_inp, ffn_{gate,up,down}_exps.
  EXPECT_EQ(moe.size(), 3u + 12);
}

// The tiny models of ../shared/next were written by llama.cpp's tools for the
// same architectures: their tensor sets (names and ranks) are what
// PresetTensors gives for the matching preset.
TEST(Presets, TensorNamesMatchLlamaCppFilesOfTheSameArchitecture) {
  const std::string dir = VIBRANT_SOURCE_DIR "/../shared/next/models";
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) GTEST_SKIP() << dir << " is absent";
  for (const auto& [file, preset] : std::vector<std::pair<std::string, std::string>>{
           {"tiny-qwen3-f16.gguf", "qwen3-8b"},
           {"tiny-gemma3-f16.gguf", "gemma3-4b"},
           {"tiny-qwen3moe-f16.gguf", "qwen3-30b-a3b"}}) {
    auto f = GgufFile::Open(dir + "/" + file);
    ASSERT_TRUE(f.ok()) << f.status();
    std::map<std::string, size_t> theirs, ours;
    for (const GgufTensorInfo& t : (*f)->tensors()) theirs[t.name] = t.dims.size();
    const ModelPreset p = *FindPreset(preset);
    for (const TensorDesc& t : PresetTensors(p, 2)) ours[t.name] = t.dims.size();
    EXPECT_EQ(ours, theirs) << file << " vs preset " << preset;
    EXPECT_EQ(*(*f)->Architecture(), std::string(p.arch));
  }
}

TEST(Presets, TensorNamesAndOrder) {
  const ModelPreset p = *FindPreset("llama3.1-8b");
  const std::vector<TensorDesc> t = PresetTensors(p, 11);
  ASSERT_EQ(t.size(), 4u + 11 * 9);
  EXPECT_EQ(t[0].name, "output.weight");
  EXPECT_EQ(t[0].dims, (std::vector<int64_t>{4096, 128256}));
  EXPECT_EQ(t[1].name, "output_norm.weight");
  EXPECT_EQ(t[2].name, "rope_freqs.weight");
  EXPECT_EQ(t[2].dims, (std::vector<int64_t>{64}));
  EXPECT_EQ(t[3].name, "token_embd.weight");
  // Block order by number, not by string (blk.10 after blk.9).
  EXPECT_EQ(t[4].name, "blk.0.attn_k.weight");
  EXPECT_EQ(t[4].dims, (std::vector<int64_t>{4096, 1024}));
  EXPECT_EQ(t[4 + 9 * 10].name, "blk.10.attn_k.weight");
  EXPECT_EQ(t[4 + 9 * 10 - 1].name, "blk.9.ffn_up.weight");
  EXPECT_FALSE(FindPreset("qwen2.5-7b").ok());
  EXPECT_THAT(std::string(FindPreset("x").status().message()), HasSubstr("qwen2.5-3b"));
}

// Values of rope_freqs.weight for Llama 3.1 (factor 8, base 500000, head_dim
// 128), computed by hand from convert_hf_to_gguf.py's formula: pair i has
// wavelength 2*pi*500000^(2i/128); below 8192/4 = 2048 the factor is 1, above
// 8192 it is 8; pair 0: wavelength 2*pi -> 1; pair 63: 8.
TEST(Presets, Llama3RopeFactors) {
  const std::vector<float> f = Llama3RopeFactors(*FindPreset("llama3.1-8b"));
  ASSERT_EQ(f.size(), 64u);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[63], 8.0f);
  // Pair 40: wavelength 2*pi*500000^(80/128) = 2*pi*3643.3 = 22891 > 8192 -> 8.
  EXPECT_EQ(f[40], 8.0f);
  // Pair 30: 2*pi*500000^(60/128) = 2*pi*469.24 = 2948.3: between -> smooth =
  // (8192/2948.3 - 1)/3 = 0.59285; 1/((1-0.59285)/8 + 0.59285) = 1.5534.
  EXPECT_NEAR(f[30], 1.5534, 1e-3);
  for (size_t i = 1; i < f.size(); ++i) EXPECT_GE(f[i], f[i - 1]);
  EXPECT_TRUE(Llama3RopeFactors(*FindPreset("qwen2.5-3b")).empty());
}

// A metadata-only GGUF with the vocabulary, read back.
std::unique_ptr<GgufFile> VocabFile(VocabKind kind, int64_t n, const std::string& qwen2,
                                    std::string* storage) {
  GgufWriter w;
  w.AddString("general.architecture", kind == VocabKind::kQwen2 ? "qwen2" : "llama");
  absl::StatusOr<std::string> desc = AddVocabulary(kind, n, qwen2, w);
  EXPECT_TRUE(desc.ok()) << desc.status();
  absl::StatusOr<std::string> bytes = w.Serialize();
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  *storage = *std::move(bytes);
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::FromBuffer(
      "vocab.gguf", absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(storage->data()),
                                              storage->size()));
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? *std::move(f) : nullptr;
}

TEST(Vocab, SyntheticLlama3VocabularyTokenizes) {
  std::string storage;
  std::unique_ptr<GgufFile> f = VocabFile(VocabKind::kLlama3, 128256, "", &storage);
  ASSERT_NE(f, nullptr);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromGguf(*f);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 128256);
  EXPECT_EQ((*tok)->pre(), "llama-bpe");
  EXPECT_EQ((*tok)->bos_id(), 128000);
  EXPECT_EQ((*tok)->TokenText(128009), "<|eot_id|>");
  EXPECT_EQ((*tok)->TokenText(128255), "<|reserved_special_token_247|>");
  const std::string text = "Hello, world! Synthetic tokens: 12345 \xc3\xa9t\xc3\xa9.";
  absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(text, true, true);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_FALSE(ids->empty());
  EXPECT_EQ((*ids)[0], 128000);
  // Merges join bytes into pairs and triples: fewer tokens than bytes.
  EXPECT_LT(ids->size(), text.size());
  EXPECT_EQ((*tok)->Detokenize(*ids, true, false), text);
}

TEST(Vocab, SmallSyntheticVocabularyKeepsTheSpecials) {
  std::string storage;
  std::unique_ptr<GgufFile> f = VocabFile(VocabKind::kQwen2, 1024, "", &storage);
  ASSERT_NE(f, nullptr);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromGguf(*f);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 1024);
  const int32_t first_special = 1024 - 22 - 0;  // no padding left: 1002 regular tokens
  EXPECT_EQ((*tok)->TokenText(first_special), "<|endoftext|>");
  EXPECT_EQ((*tok)->eos_id(), first_special + 2);
  EXPECT_EQ((*tok)->TokenText((*tok)->eos_id()), "<|im_end|>");
  EXPECT_FALSE(SyntheticVocab(VocabKind::kLlama3, 500).ok());
}

TEST(Vocab, SharedQwen2VocabularyIsCopiedAndPadded) {
  const std::string path = VIBRANT_SOURCE_DIR "/../shared/tokenizer/ggml-vocab-qwen2.gguf";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) GTEST_SKIP() << path << " is absent";
  std::string storage;
  std::unique_ptr<GgufFile> f = VocabFile(VocabKind::kQwen2, 151936, path, &storage);
  ASSERT_NE(f, nullptr);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromGguf(*f);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 151936);
  EXPECT_EQ((*tok)->TokenText(151935), "[PAD151935]");
  EXPECT_EQ((*tok)->token_type(151935), TokenType::kUnused);
  // Same token ids as the vocabulary file itself gives.
  absl::StatusOr<std::unique_ptr<GgufFile>> orig = GgufFile::Open(path);
  ASSERT_TRUE(orig.ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> ref = Tokenizer::FromGguf(**orig);
  ASSERT_TRUE(ref.ok());
  const std::string text = "Hello world, <|im_start|>user 1234";
  EXPECT_EQ(*(*tok)->Encode(text, true, true), *(*ref)->Encode(text, true, true));
  EXPECT_EQ(FindQwen2Vocab().empty(), false);
}

class SynthModelTest : public ::testing::Test {
 protected:
  static std::string TempPath(const std::string& name) {
    return (std::filesystem::temp_directory_path() /
            ("synth_test_" + std::to_string(::getpid()) + "_" + name))
        .string();
  }
};

// Runs one prefill and one decode step; returns the decode logits' size.
void RunSteps(const GgufFile& f, int64_t n_vocab) {
  LowerOptions lo;
  lo.max_tokens = 8;
  lo.n_ctx = 32;
  absl::StatusOr<ir::Graph> g = LowerGguf(f, lo);
  ASSERT_TRUE(g.ok()) << g.status();
  const GgufFile* file = &f;
  absl::StatusOr<std::unique_ptr<CpuExecutor>> exec = CpuExecutor::Create(
      *g,
      [file](const std::string& s) -> absl::StatusOr<absl::Span<const uint8_t>> {
        const GgufTensorInfo* t = file->FindTensor(s);
        if (t == nullptr) return absl::NotFoundError(s);
        return file->TensorData(*t);
      },
      CpuExecutorOptions{.threads = 2});
  ASSERT_TRUE(exec.ok()) << exec.status();
  const std::vector<int32_t> prompt = {1, 2, 3, static_cast<int32_t>(n_vocab - 1)};
  absl::StatusOr<absl::Span<const float>> out = (*exec)->Step(prompt, 0);
  ASSERT_TRUE(out.ok()) << out.status();
  const std::vector<int32_t> next = {5};
  out = (*exec)->Step(next, 4);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), static_cast<size_t>(n_vocab));
  double sum2 = 0;
  for (float v : *out) {
    ASSERT_TRUE(std::isfinite(v));
    sum2 += double(v) * v;
  }
  EXPECT_GT(sum2, 0.0);  // random weights give non-trivial logits
}

TEST_F(SynthModelTest, QwenModelOpensLowersAndRuns) {
  SynthOptions o;
  o.preset = "qwen2.5-0.5b";
  o.type = FileType::kQ4_K_M;
  o.layers = 3;
  o.vocab = 1024;
  o.seed = 9;
  const std::string path = TempPath("qwen.gguf");
  absl::StatusOr<SynthReport> r = SynthesizeModel(o, path);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->n_tensors, 2 + 3 * 12);
  EXPECT_EQ(r->n_layer, 3);
  EXPECT_THAT(r->vocabulary, HasSubstr("synthetic"));

  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->file_size(), r->file_bytes);
  EXPECT_EQ(*(*f)->GetString("general.architecture"), "qwen2");
  EXPECT_EQ(*(*f)->GetInt("general.file_type"), 15);
  EXPECT_EQ(*(*f)->GetInt("qwen2.block_count"), 3);
  EXPECT_EQ(*(*f)->GetInt("qwen2.embedding_length"), 896);
  EXPECT_EQ(*(*f)->GetInt("qwen2.feed_forward_length"), 4864);
  EXPECT_EQ(*(*f)->GetInt("qwen2.attention.head_count"), 14);
  EXPECT_EQ(*(*f)->GetInt("qwen2.attention.head_count_kv"), 2);
  EXPECT_EQ(*(*f)->GetInt("qwen2.context_length"), 32768);
  EXPECT_FLOAT_EQ(static_cast<float>(*(*f)->GetFloat("qwen2.rope.freq_base")), 1e6f);
  EXPECT_FLOAT_EQ(static_cast<float>(*(*f)->GetFloat("qwen2.attention.layer_norm_rms_epsilon")),
                  1e-6f);
  EXPECT_EQ((*f)->FindTensor("output.weight"), nullptr);  // tied
  // The Q4_K_M mix for 3 layers, by hand: use_more_bits(i, 3) holds for i = 2
  // only; rows of 896 are not a multiple of 256, so q4_K -> q5_0 and q6_K ->
  // q8_0, while ffn_down (rows of 4864 = 19 * 256) keeps q4_K / q6_K.
  auto type = [&](const char* name) {
    const GgufTensorInfo* t = (*f)->FindTensor(name);
    return t == nullptr ? std::string("absent") : std::string(DTypeName(t->type));
  };
  EXPECT_EQ(type("token_embd.weight"), "q8_0");
  EXPECT_EQ(type("blk.0.attn_v.weight"), "q5_0");
  EXPECT_EQ(type("blk.1.attn_v.weight"), "q5_0");
  EXPECT_EQ(type("blk.2.attn_v.weight"), "q8_0");
  EXPECT_EQ(type("blk.0.ffn_down.weight"), "q4_K");
  EXPECT_EQ(type("blk.2.ffn_down.weight"), "q6_K");
  EXPECT_EQ(type("blk.1.attn_q.weight"), "q5_0");
  EXPECT_EQ(type("blk.1.attn_q.bias"), "f32");
  EXPECT_EQ(type("blk.1.ffn_norm.weight"), "f32");

  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromGguf(**f);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 1024);
  RunSteps(**f, 1024);
  std::filesystem::remove(path);
}

// The new architectures' presets, with few layers and a small vocabulary:
// the file reads, lowers (so the tensor set and metadata are what the
// lowering expects of real files), tokenizes and runs on the CPU.
TEST_F(SynthModelTest, NewArchitecturePresetsOpenLowerAndRun) {
  struct Case { const char* preset; const char* arch; int64_t layers, tensors; };
  // (One qwen3moe layer already holds 128 experts: 0.3e9 weights.)
  for (const Case& c : {Case{"qwen3-8b", "qwen3", 2, 3 + 2 * 11}, Case{"gemma3-4b", "gemma3", 2, 2 + 2 * 13},
                        Case{"qwen3-30b-a3b", "qwen3moe", 1, 3 + 12}}) {
    SCOPED_TRACE(c.preset);
    SynthOptions o;
    o.preset = c.preset;
    o.type = FileType::kQ4_K_M;
    o.layers = c.layers;
    o.vocab = 800;
    const std::string path = TempPath(std::string(c.preset) + ".gguf");
    absl::StatusOr<SynthReport> r = SynthesizeModel(o, path);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->n_tensors, c.tensors);
    absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(*(*f)->GetString("general.architecture"), c.arch);
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromGguf(**f);
    ASSERT_TRUE(tok.ok()) << tok.status();
    EXPECT_EQ((*tok)->vocab_size(), 800);
    RunSteps(**f, 800);
    std::filesystem::remove(path);
  }
}

TEST_F(SynthModelTest, LlamaModelWithRopeFreqsOpensLowersAndRuns) {
  SynthOptions o;
  o.preset = "llama3.2-1b";
  o.type = FileType::kQ4_0;
  o.layers = 1;
  o.vocab = 600;
  const std::string path = TempPath("llama.gguf");
  absl::StatusOr<SynthReport> r = SynthesizeModel(o, path);
  ASSERT_TRUE(r.ok()) << r.status();
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*(*f)->GetInt("llama.attention.key_length"), 64);
  EXPECT_EQ(*(*f)->GetInt("llama.rope.dimension_count"), 64);
  EXPECT_EQ(*(*f)->GetInt("llama.vocab_size"), 600);
  const GgufTensorInfo* rf = (*f)->FindTensor("rope_freqs.weight");
  ASSERT_NE(rf, nullptr);
  EXPECT_EQ(rf->dims, (std::vector<int64_t>{32}));
  // Q4_0: tied token_embd is the output, so Q6_K.
  EXPECT_EQ(DTypeName((*f)->FindTensor("token_embd.weight")->type), "q6_K");
  EXPECT_EQ(DTypeName((*f)->FindTensor("blk.0.ffn_down.weight")->type), "q4_0");
  RunSteps(**f, 600);
  std::filesystem::remove(path);
}

TEST_F(SynthModelTest, SameSeedSameBytes) {
  SynthOptions o;
  o.preset = "qwen2.5-0.5b";
  o.type = FileType::kQ5_K_M;
  o.layers = 1;
  o.vocab = 512;
  o.seed = 77;
  auto read = [](const std::string& p) {
    std::unique_ptr<GgufFile> f = *GgufFile::Open(p);
    return std::vector<uint8_t>(f->bytes().begin(), f->bytes().end());
  };
  const std::string a = TempPath("a.gguf"), b = TempPath("b.gguf");
  o.threads = 1;
  ASSERT_TRUE(SynthesizeModel(o, a).ok());
  o.threads = 3;
  ASSERT_TRUE(SynthesizeModel(o, b).ok());
  EXPECT_TRUE(read(a) == read(b));
  o.seed = 78;
  ASSERT_TRUE(SynthesizeModel(o, b).ok());
  EXPECT_FALSE(read(a) == read(b));
  std::filesystem::remove(a);
  std::filesystem::remove(b);
}

TEST(Synth, Errors) {
  SynthOptions o;
  o.preset = "nope";
  EXPECT_FALSE(SynthesizeModel(o, "/nonexistent/x.gguf").ok());
  o.preset = "qwen2.5-0.5b";
  o.layers = 1;
  o.vocab = 100;
  absl::StatusOr<SynthReport> r = SynthesizeModel(o, "/tmp/never-written.gguf");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("256 bytes"));
  o.vocab = 1024;
  r = SynthesizeModel(o, "/nonexistent-dir/x.gguf");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("/nonexistent-dir/x.gguf"));
}

}  // namespace
}  // namespace vibrant::synth
