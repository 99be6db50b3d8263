#include "passes/repack_weights.h"

#include "absl/status/status.h"

namespace vibrant::passes {

Pass RepackWeights() {
  Pass p;
  p.name = "repack-weights";
  p.optional = true;
  p.run = [](ir::Graph&, PassContext&) {
    // No backend repacks yet (see the header): every weight keeps its GGUF layout.
    return absl::OkStatus();
  };
  return p;
}

}  // namespace vibrant::passes
