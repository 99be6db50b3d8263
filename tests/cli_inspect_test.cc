// End to end: `vibrantc inspect` on real GGUF files, its JSON checked against
// what GgufFile reads, plus its errors and exit codes.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "frontends/gguf/gguf.h"
#include "frontends/gguf/gguf_writer.h"
#include "gmock/gmock.h"
#include "tests/cli_util.h"
#include "gtest/gtest.h"
#include "ir/dtype.h"
#include "nlohmann/json.hpp"

namespace vibrant {
namespace {

using ::testing::HasSubstr;

const char kVibrantc[] = VIBRANT_BINARY_DIR "/tools/vibrantc/vibrantc";

using Result = vibrant::testing_util::CliResult;
using vibrant::testing_util::ReadFile;

Result RunVibrantc(const std::vector<std::string>& args) {
  return vibrant::testing_util::RunBinary(kVibrantc, args);
}

std::vector<std::string> ModelFiles() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator(VIBRANT_SOURCE_DIR "/../shared/models", ec)) {
    if (e.path().extension() == ".gguf") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Checks `vibrantc inspect PATH --json` against GgufFile.
void CheckJsonMatchesReader(const std::string& path) {
  SCOPED_TRACE(path);
  Result r = RunVibrantc({"inspect", path, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << "output is not JSON";
  ASSERT_TRUE(j.is_object());
  ASSERT_TRUE(j.contains("metadata") && j["metadata"].is_object());
  ASSERT_TRUE(j.contains("tensors") && j["tensors"].is_array());

  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;

  const nlohmann::json& meta = j["metadata"];
  EXPECT_EQ(meta.size(), g.metadata().size());
  ASSERT_TRUE(meta.contains("general.architecture"));
  EXPECT_EQ(meta["general.architecture"], *g.Architecture());
  if (const GgufValue* bc = g.Find(*g.Architecture() + ".block_count")) {
    EXPECT_EQ(meta[*g.Architecture() + ".block_count"], *bc->AsInt());
  }
  // Arrays are included in full.
  const nlohmann::json& tokens = meta["tokenizer.ggml.tokens"];
  const GgufArray* want_tokens = *g.GetArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.is_array());
  ASSERT_EQ(tokens.size(), want_tokens->elems.size());
  EXPECT_EQ(tokens.back(), std::string(*want_tokens->elems.back().AsString()));

  const nlohmann::json& tensors = j["tensors"];
  ASSERT_EQ(tensors.size(), g.tensors().size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GgufTensorInfo& t = g.tensors()[i];
    const nlohmann::json& jt = tensors[i];
    EXPECT_EQ(jt["name"], t.name);
    EXPECT_EQ(jt["type"], std::string(DTypeName(t.type))) << t.name;
    EXPECT_EQ(jt["shape"].get<std::vector<int64_t>>(), t.dims) << t.name;
    EXPECT_EQ(jt["offset"].get<uint64_t>(), t.offset) << t.name;
    EXPECT_EQ(jt["bytes"].get<uint64_t>(), t.bytes) << t.name;
  }
}

TEST(CliInspect, JsonMatchesTheReaderOnTheBundledModel) {
  CheckJsonMatchesReader(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf");
}

TEST(CliInspect, JsonMatchesTheReaderOnEverySharedModel) {
  std::vector<std::string> models = ModelFiles();
  if (models.empty()) GTEST_SKIP() << "../shared/models absent";
  for (const std::string& m : models) CheckJsonMatchesReader(m);
}

TEST(CliInspect, JsonOfStories260K) {
  // Values read from the file with an independent parser.
  Result r = RunVibrantc({"inspect", VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["metadata"]["general.architecture"], "llama");
  EXPECT_EQ(j["metadata"]["llama.embedding_length"], 64);
  EXPECT_EQ(j["metadata"]["tokenizer.ggml.seperator_token_id"], 4294967295u);
  EXPECT_EQ(j["metadata"]["llama.attention.layer_norm_rms_epsilon"], 1e-5);
  EXPECT_EQ(j["tensors"].size(), 48u);
  EXPECT_EQ(j["tensors"][0]["name"], "token_embd.weight");
  EXPECT_EQ(j["tensors"][0]["shape"], nlohmann::json::array({64, 512}));
  EXPECT_EQ(j["tensors"][0]["type"], "f32");
  EXPECT_EQ(j["tensors"][0]["bytes"], 131072);
  EXPECT_EQ(j["tensors"][1]["offset"], 131072);
}

TEST(CliInspect, HumanReadableOutput) {
  std::string path = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";
  Result r = RunVibrantc({"inspect", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(path));
  EXPECT_THAT(r.out, HasSubstr("general.architecture"));
  EXPECT_THAT(r.out, HasSubstr("\"llama\""));
  EXPECT_THAT(r.out, HasSubstr("(512 items)"));  // long arrays are elided
  EXPECT_THAT(r.out, HasSubstr("blk.4.ffn_norm.weight"));
  EXPECT_THAT(r.out, HasSubstr("[172, 64]"));
  EXPECT_EQ(r.out.find("<0x30>"), std::string::npos);  // token 51 is not shown
}

TEST(CliInspect, BadFileIsAnErrorNamingTheFile) {
  std::string path = (std::filesystem::temp_directory_path() /
                      ("cli_inspect_bad_" + std::to_string(::getpid()) + ".gguf"))
                         .string();
  {
    std::ofstream out(path, std::ios::binary);
    out << "GGUF" << std::string("\x03\0\0\0", 4) << "short";
  }
  Result r = RunVibrantc({"inspect", path, "--json"});
  std::filesystem::remove(path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty());
  EXPECT_THAT(r.err, HasSubstr(path + ": tensor_count at offset 8"));

  Result missing = RunVibrantc({"inspect", "/nonexistent/model.gguf"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent/model.gguf"));
}

// stories260K with blk.0.ffn_up.weight re-typed as mxfp4 (32-element blocks
// of 17 bytes, zeros): a valid GGUF of a type Vibrant does not compute with.
std::string WriteModelWithUnsupportedType() {
  const std::string path = vibrant::testing_util::ProcessTempDir() + "/mxfp4.gguf";
  auto src = GgufFile::Open(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf");
  EXPECT_TRUE(src.ok()) << src.status();
  if (!src.ok()) return path;
  GgufWriter w;
  for (const auto& [key, value] : (*src)->metadata()) w.AddMetadata(key, value);
  for (const GgufTensorInfo& t : (*src)->tensors()) {
    if (t.name == "blk.0.ffn_up.weight") {
      const int64_t bytes = *DTypeBytes(DType::kMXFP4, t.elements());
      w.AddTensor(t.name, t.dims, DType::kMXFP4, std::vector<uint8_t>(bytes, 0));
    } else {
      w.AddTensor(t.name, t.dims, t.type, (*src)->TensorData(t));
    }
  }
  absl::Status s = w.WriteFile(path);
  EXPECT_TRUE(s.ok()) << s;
  return path;
}

TEST(CliInspect, DescribesUnsupportedTypesAndCompileRefusesThem) {
  const std::string path = WriteModelWithUnsupportedType();
  Result r = RunVibrantc({"inspect", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("mxfp4"));
  EXPECT_THAT(r.out, HasSubstr("types: f32 47, mxfp4 1"));
  EXPECT_THAT(r.out, HasSubstr("not supported by Vibrant: mxfp4 (39, 1 tensor)"));

  Result j = RunVibrantc({"inspect", path, "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  nlohmann::json js = nlohmann::json::parse(j.out, nullptr, false);
  ASSERT_FALSE(js.is_discarded());
  EXPECT_EQ(js["types"]["mxfp4"], 1);
  EXPECT_EQ(js["types"]["f32"], 47);
  EXPECT_EQ(js["unsupported_types"], nlohmann::json::array({"mxfp4"}));

  // The bundled model's types are all supported.
  Result ok = RunVibrantc({"inspect", VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf", "--json"});
  nlohmann::json jok = nlohmann::json::parse(ok.out, nullptr, false);
  EXPECT_EQ(jok["unsupported_types"], nlohmann::json::array());

  const std::string plan = vibrant::testing_util::ProcessTempDir() + "/mxfp4.plan";
  Result c = RunVibrantc({"compile", path, "-o", plan});
  EXPECT_EQ(c.exit_code, 1);
  EXPECT_THAT(c.err, HasSubstr("tensor blk.0.ffn_up.weight: tensor type mxfp4 (39) is not supported"));
  EXPECT_FALSE(std::filesystem::exists(plan));
}

TEST(CliInspect, UsageErrors) {
  EXPECT_EQ(RunVibrantc({"inspect"}).exit_code, 2);
  Result r = RunVibrantc({"inspect", "a.gguf", "--frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--frobnicate"));
  EXPECT_EQ(RunVibrantc({"inspect", "a.gguf", "b.gguf"}).exit_code, 2);
  EXPECT_EQ(RunVibrantc({"inspect", "--help"}).exit_code, 0);
}

}  // namespace
}  // namespace vibrant

namespace vibrant {
namespace {

// What llama.cpp's loader prints, for stories260K: its parameters worked out
// by hand from its shapes (dim 64, FFN 172, 5 layers, 8 heads / 4 KV heads of
// 8, vocab 512): embeddings and output 2 x 32768, per layer q 4096, k 2048,
// v 2048, o 4096, gate/up/down 3 x 11008, two norms 128, final norm 64.
TEST(CliInspect, ModelSummaryAsLlamaCppPrintsIt) {
  const int64_t per_layer = 4096 + 2048 + 2048 + 4096 + 3 * 11008 + 128;
  const int64_t params = 2 * 32768 + 5 * per_layer + 64;
  ASSERT_EQ(params, 292800);
  const std::string path = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";
  Result r = RunVibrantc({"inspect", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("file type:   all F32 (guessed)\n"));  // no general.file_type
  EXPECT_THAT(r.out, HasSubstr("params:      292.80 K (292800)\n"));
  EXPECT_THAT(r.out, HasSubstr("tensor data: 1.12 MiB (32.00 BPW)\n"));  // 292800 * 4 bytes
  EXPECT_THAT(r.out, HasSubstr("tensor types: 48 f32\n"));
  EXPECT_THAT(r.out, HasSubstr("vocab type:  SPM, 512 tokens\n"));
  EXPECT_THAT(r.out, HasSubstr("BOS token:   1 '<s>'\n"));
  EXPECT_THAT(r.out, HasSubstr("EOS token:   2 '</s>'\n"));
  EXPECT_THAT(r.out, HasSubstr("chat template: none\n"));
  r = RunVibrantc({"inspect", path, "--json"});
  nlohmann::json s = nlohmann::json::parse(r.out)["summary"];
  EXPECT_EQ(s["params"], params);
  EXPECT_EQ(s["tensor_bytes"], params * 4);
  EXPECT_DOUBLE_EQ(s["bits_per_weight"].get<double>(), 32.0);
  EXPECT_EQ(s["special_tokens"]["BOS"]["text"], "<s>");
  EXPECT_EQ(s["vocab_type"], "SPM");
}

// A quantized mix: the file type from general.file_type, types counted
// against the reader.
TEST(CliInspect, ModelSummaryOfAQuantizedModel) {
  const std::string path = VIBRANT_SOURCE_DIR "/../shared/models/tiny-qwen2-q4_k_m.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent";
  absl::StatusOr<std::unique_ptr<vibrant::GgufFile>> f = vibrant::GgufFile::Open(path);
  ASSERT_TRUE(f.ok());
  std::map<std::string, int> types;
  double elements = 0, bytes = 0;
  for (const vibrant::GgufTensorInfo& t : (*f)->tensors()) {
    ++types[std::string(vibrant::DTypeName(t.type))];
    elements += t.elements();
    bytes += t.bytes;
  }
  Result r = RunVibrantc({"inspect", path, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json s = nlohmann::json::parse(r.out)["summary"];
  EXPECT_EQ(s["file_type"], "Q4_K - Medium");  // llama_ftype 15
  EXPECT_EQ(s["file_type_id"], 15);
  for (const auto& [t, n] : types) EXPECT_EQ(s["tensor_types"][t], n) << t;
  EXPECT_DOUBLE_EQ(s["bits_per_weight"].get<double>(), bytes * 8 / elements);
  EXPECT_EQ(s["vocab_type"], "SPM");
}

TEST(CliInspect, APlanIsDescribed) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("cli_inspect_plan_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string model = (dir / "m.gguf").string(), plan = (dir / "p.bin").string();
  std::filesystem::copy_file(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf", model);
  Result c = RunVibrantc({"compile", model, "-o", plan, "--ctx-size", "96", "--max-tokens", "32"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  Result r = RunVibrantc({"inspect", plan});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("plan:        " + plan));
  EXPECT_THAT(r.out, HasSubstr("device=cpu, n_ctx=96, max_tokens=32"));
  EXPECT_THAT(r.out, HasSubstr(std::filesystem::canonical(model).string()));
  EXPECT_THAT(r.out, HasSubstr("): ok\n"));
  EXPECT_THAT(r.out, HasSubstr("graph:       llama, 5 layers, d 64, vocab 512, n_ctx 96:"));
  r = RunVibrantc({"inspect", plan, "--json"});
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["options"]["n_ctx"], "96");
  EXPECT_EQ(j["graph"]["max_tokens"], 32);
  EXPECT_EQ(j["graph"]["n_layer"], 5);
  // The model it references is gone: said, not a failure.
  std::filesystem::remove(model);
  r = RunVibrantc({"inspect", plan});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("cannot be found"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vibrant
