#include "api/plan_cache.h"

#include <cstdlib>
#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "api/version.h"
#include "runtime/plan.h"

namespace vibrant {

uint64_t PlanCacheHash(const PlanCacheKey& key) {
  // Fields joined with a separator that none of them contains at its end
  // (numbers are decimal; strings are followed by their length).
  std::string text;
  auto add = [&](const std::string& s) { absl::StrAppend(&text, s, "\x1f", s.size(), "\x1e"); };
  add("vibrant plan cache 1");
  add(std::string(VersionNumber()));
  add(std::string(GitDescribe()));
  add(absl::StrCat(kPlanFormatVersion));
  add(key.gguf_path);
  add(absl::StrCat(key.gguf_size));
  add(absl::StrCat(key.gguf_fingerprint));
  add(key.device);
  add(key.arch);
  add(absl::StrCat(key.n_ctx));
  add(absl::StrCat(key.max_tokens));
  add(key.kv_type);
  if (key.n_seq > 0) {  // unpaged keys hash as before
    add(absl::StrCat("paged ", key.n_seq, " ", key.block_size));
  }
  if (key.tp > 1) {
    add(absl::StrCat("tp ", key.tp));
  }
  if (key.gpu_layers >= 0) {  // unsplit keys hash as before
    add(absl::StrCat("gpu_layers ", key.gpu_layers));
  }
  return Fnv1a64(absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

std::string PlanCacheFileName(const PlanCacheKey& key) {
  std::string stem = std::filesystem::path(key.gguf_path).stem().string();
  if (stem.empty()) stem = "model";
  // Keep the name portable: letters, digits, '.', '_' and '-'.
  for (char& c : stem) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  if (stem.size() > 80) stem.resize(80);
  return absl::StrFormat("%s-%s-%016x.plan", stem, key.device, PlanCacheHash(key));
}

absl::StatusOr<std::string> DefaultPlanCacheDir() {
  if (const char* v = std::getenv("VIBRANT_PLAN_CACHE"); v != nullptr && *v != '\0') return std::string(v);
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0') {
    return (std::filesystem::path(x) / "vibrant" / "plans").string();
  }
  if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') {
    return (std::filesystem::path(h) / ".cache" / "vibrant" / "plans").string();
  }
  return absl::NotFoundError(
      "no plan cache directory: neither VIBRANT_PLAN_CACHE, XDG_CACHE_HOME nor HOME is set "
      "(give one with --plan-cache DIR)");
}

}  // namespace vibrant
