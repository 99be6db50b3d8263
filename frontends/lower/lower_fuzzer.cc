// libFuzzer target for lowering and the compile pipeline behind it
// (`.ci/fuzz.sh lower`). Input: a GGUF. Every input must either fail with a
// status or lower into a graph that verifies, compiles through the default
// passes (compiler::CompileGguf, device cpu) and passes the runtime's plan
// validation (runtime/plan_validate.h), which is what vibrant-run checks
// before it allocates anything.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "compiler/compiler.h"
#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "ir/serialize.h"
#include "ir/verifier.h"
#include "runtime/plan_validate.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "lower_fuzzer: invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::unique_ptr<vibrant::GgufFile>> f =
      vibrant::GgufFile::FromBuffer("fuzz.gguf", absl::Span<const uint8_t>(data, size));
  if (!f.ok()) return 0;
  vibrant::LowerOptions lower;
  lower.max_tokens = 1 + size % 8;
  lower.n_ctx = size % 3 == 0 ? 0 : 16;
  lower.all_logits = size % 2 == 0;
  // Cache types as --cache-type-k/-v give them (q8_0 needs head_dim % 32 == 0).
  constexpr vibrant::DType kCache[] = {vibrant::DType::kF16, vibrant::DType::kF32, vibrant::DType::kQ8_0};
  lower.cache_type_k = kCache[size % 5 % 3];
  lower.cache_type_v = kCache[size % 7 % 3];
  absl::StatusOr<vibrant::ir::Graph> g = vibrant::LowerGguf(**f, lower);
  if (!g.ok()) {
    Check(!g.status().message().empty(), "errors have a message");
    return 0;
  }
  Check(vibrant::ir::Verify(*g).ok(), "a lowered graph verifies");
  vibrant::compiler::CompileOptions co;
  co.lower = lower;
  absl::StatusOr<vibrant::compiler::Compiled> c = vibrant::compiler::CompileGguf(**f, co);
  if (!c.ok()) std::fprintf(stderr, "%s\n", std::string(c.status().message()).c_str());
  Check(c.ok(), "a graph that lowers compiles");
  absl::StatusOr<vibrant::GraphMemoryNeeds> needs = vibrant::ValidateExecutableGraph(c->graph);
  if (!needs.ok()) std::fprintf(stderr, "%s\n", std::string(needs.status().message()).c_str());
  Check(needs.ok(), "a compiled graph passes the runtime's validation");
  const std::string bytes = vibrant::ir::SerializeGraph(c->graph);
  Check(vibrant::ir::DeserializeGraph(absl::Span<const uint8_t>(
                                          reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()))
            .ok(),
        "a compiled graph deserializes");
  return 0;
}
