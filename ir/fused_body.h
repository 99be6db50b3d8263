// The structure of a fused op's body (ir/ops.h, OpKind::kFused), analyzed in
// one place for the verifier, codegen (one kernel per body) and the CPU
// backend (which evaluates bodies row by row).
#ifndef VIBRANT_IR_FUSED_BODY_H_
#define VIBRANT_IR_FUSED_BODY_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace vibrant::ir {

struct FusedBody {
  // How a body input is read.
  enum class Input : uint8_t {
    kUnused,
    kRow,       // a row value: R elements per row
    kConstant,  // the same for every row (a broadcast operand, rope's frequency factors)
    kPerRow,    // one entry per row (rope's positions)
  };
  const Graph* body = nullptr;
  int64_t rows = 0;       // N: output 0's outer dim (kTokens for T)
  int64_t row_elems = 0;  // R: the product of output 0's other dims
  std::vector<ValueId> inputs;      // the body's input values, in op-input order
  std::vector<Input> input_roles;   // per op input
  std::vector<int> producer;        // per body value: its body op, -1 for inputs
  int coupling_op = -1;             // the body's rms_norm or rope op, or -1
  FusionRole coupling = FusionRole::kNone;  // kRowReduce, kPairRotate or kNone
};

// Checks the body of fused `op` against the row rules of ops.h and returns
// its structure. Errors name the body op and value ("body op 2 add: %x
// [T, 128] is not a row value (fused op is [T rows of 256])"); the caller
// adds the op. Assumes a body that verifies as a graph (ids in range, SSA).
absl::StatusOr<FusedBody> AnalyzeFusedBody(const Op& op);

}  // namespace vibrant::ir

#endif  // VIBRANT_IR_FUSED_BODY_H_
