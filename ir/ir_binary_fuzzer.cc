// libFuzzer target for the IR binary deserializer, the GRAPH section of a
// plan (`.ci/fuzz.sh ir_binary`). Every input must either fail with a status
// or decode into a verified graph that serializes back to the same bytes,
// prints and parses back, and goes through the runtime's plan validation
// (runtime/plan_validate.h) with a status.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ir/graph.h"
#include "ir/printer.h"
#include "ir/serialize.h"
#include "ir/verifier.h"
#include "runtime/plan_validate.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "ir_binary_fuzzer: invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<vibrant::ir::Graph> g =
      vibrant::ir::DeserializeGraph(absl::Span<const uint8_t>(data, size));
  if (!g.ok()) {
    Check(!g.status().message().empty(), "errors have a message");
    return 0;
  }
  Check(vibrant::ir::Verify(*g).ok(), "DeserializeGraph returns verified graphs");
  const std::string bytes = vibrant::ir::SerializeGraph(*g);
  absl::StatusOr<vibrant::ir::Graph> again = vibrant::ir::DeserializeGraph(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  Check(again.ok(), "a serialized graph deserializes");
  Check(vibrant::ir::SerializeGraph(*again) == bytes, "serialize(deserialize(b)) is a fixed point");
  const std::string printed = vibrant::ir::PrintGraph(*g);
  absl::StatusOr<vibrant::ir::Graph> parsed = vibrant::ir::ParseGraph(printed);
  if (!parsed.ok()) {
    std::fprintf(stderr, "%s\n--- does not parse back: %s\n", printed.c_str(),
                 std::string(parsed.status().message()).c_str());
  }
  Check(parsed.ok(), "a decoded graph prints to parseable text");
  absl::StatusOr<vibrant::GraphMemoryNeeds> needs = vibrant::ValidateExecutableGraph(*g);
  if (needs.ok()) {
    Check(needs->total() >= 0 && needs->arena_bytes() >= 0 && needs->kv_bytes() >= 0, "sizes");
  }
  return 0;
}
