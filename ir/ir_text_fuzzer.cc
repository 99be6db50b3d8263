// libFuzzer target for the IR text parser (`.ci/fuzz.sh ir_text`). Every
// input must either fail with a status naming a line and column, or parse
// into a verified graph whose printed form parses back to the same text, and
// whose binary form reads back to the same graph.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "ir/graph.h"
#include "ir/printer.h"
#include "ir/serialize.h"
#include "ir/verifier.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "ir_text_fuzzer: invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<vibrant::ir::Graph> g = vibrant::ir::ParseGraph(text);
  if (!g.ok()) {
    Check(!g.status().message().empty(), "errors have a message");
    return 0;
  }
  Check(vibrant::ir::Verify(*g).ok(), "ParseGraph returns verified graphs");
  const std::string printed = vibrant::ir::PrintGraph(*g);
  absl::StatusOr<vibrant::ir::Graph> again = vibrant::ir::ParseGraph(printed);
  if (!again.ok()) {
    std::fprintf(stderr, "%s\n--- does not parse back: %s\n", printed.c_str(),
                 std::string(again.status().message()).c_str());
  }
  Check(again.ok(), "printed text parses");
  Check(vibrant::ir::PrintGraph(*again) == printed, "print(parse(print(g))) == print(g)");
  const std::string bytes = vibrant::ir::SerializeGraph(*g);
  absl::StatusOr<vibrant::ir::Graph> decoded = vibrant::ir::DeserializeGraph(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  Check(decoded.ok(), "a serialized graph deserializes");
  Check(vibrant::ir::PrintGraph(*decoded) == printed, "deserialize(serialize(g)) == g");
  return 0;
}
