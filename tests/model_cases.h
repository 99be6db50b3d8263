// Helpers shared by the tests that run every model with a llama.cpp
// reference (tp_gpu_test, layer_split_test): the models, their paths, the
// first reference case's tokens, a weight resolver and the logits' spread.
#ifndef VIBRANT_TESTS_MODEL_CASES_H_
#define VIBRANT_TESTS_MODEL_CASES_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "nlohmann/json.hpp"
#include "runtime/cpu/executor.h"

namespace vibrant::testing_util {

inline std::string SharedDir() {
  const char* env = std::getenv("VIBRANT_SHARED_DIR");
  return env != nullptr ? env : VIBRANT_SOURCE_DIR "/../shared";
}

// "stories260K" (bundled), then every shared model with a reference, as
// "<name>" or "next/<name>" (the landed next/ architectures: dense and MoE,
// every quant family), each sorted.
inline std::vector<std::string> ReferenceModels() {
  namespace fs = std::filesystem;
  std::vector<std::string> models = {"stories260K"};
  for (const std::string sub : {"", "next/"}) {
    const fs::path dir = fs::path(SharedDir()) / (sub + "reference");
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".json" &&
          fs::exists(fs::path(SharedDir()) / (sub + "models") / (e.path().stem().string() + ".gguf"), ec)) {
        names.push_back(sub + e.path().stem().string());
      }
    }
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) {
      if (n != "stories260K") models.push_back(n);  // bundled already
    }
  }
  return models;
}

inline std::filesystem::path ReferenceModelPath(const std::string& m) {
  if (m == "stories260K") return VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";
  const size_t slash = m.rfind('/');
  const std::string sub = slash == std::string::npos ? "" : m.substr(0, slash + 1);
  const std::string name = slash == std::string::npos ? m : m.substr(slash + 1);
  return std::filesystem::path(SharedDir()) / (sub + "models") / (name + ".gguf");
}

// The prompt (at most 100 tokens) and generated tokens (at most 8) of the
// model's first reference case (stories260K: a fixed prompt of its vocabulary).
inline void ReferenceTokens(const std::string& m, std::vector<int32_t>* prompt, std::vector<int32_t>* gen) {
  if (m == "stories260K") {
    *prompt = {1, 403, 407, 261, 378, 432, 269, 300, 289, 267, 410, 370, 286, 260, 425};
    *gen = {299, 302, 259, 300, 277, 274, 261, 330};
    return;
  }
  const size_t slash = m.rfind('/');
  const std::string sub = slash == std::string::npos ? "" : m.substr(0, slash + 1);
  const std::string name = slash == std::string::npos ? m : m.substr(slash + 1);
  std::ifstream in(std::filesystem::path(SharedDir()) / (sub + "reference") / (name + ".json"));
  const nlohmann::json j = nlohmann::json::parse(in);
  const auto& c = j.at("cases").at(0);
  *prompt = c.at("prompt_tokens").get<std::vector<int32_t>>();
  *gen = c.at("generated").get<std::vector<int32_t>>();
  if (prompt->size() > 100) prompt->resize(100);
  if (gen->size() > 8) gen->resize(8);
}

// The lowering these tests compile with: logits at every position (the
// prompt's included), a 256-token cache, steps of up to 128 tokens.
inline LowerOptions ReferenceLowerOptions() {
  LowerOptions lo;
  lo.all_logits = true;
  lo.n_ctx = 256;
  lo.max_tokens = 128;
  return lo;
}

inline WeightResolver GgufResolver(const GgufFile& f) {
  return [&f](const std::string& name) -> absl::StatusOr<absl::Span<const uint8_t>> {
    const GgufTensorInfo* t = f.FindTensor(name);
    if (t == nullptr) return absl::NotFoundError(name);
    return f.TensorData(*t);
  };
}

// The standard deviation of a row of logits (errors are measured in it).
inline double LogitSigma(const float* v, int64_t n) {
  double mean = 0, var = 0;
  for (int64_t i = 0; i < n; ++i) mean += v[i];
  mean /= n;
  for (int64_t i = 0; i < n; ++i) var += (v[i] - mean) * (v[i] - mean);
  return std::sqrt(var / n);
}

}  // namespace vibrant::testing_util

#endif  // VIBRANT_TESTS_MODEL_CASES_H_
