// One op of a graph evaluated with the CPU reference kernels on buffers the
// caller owns: what --verify compares each GPU op against (the CPU executor
// runs whole graphs through its own bound arena). Input i at in[i] (laid out
// as the value's dtype and shape at T tokens); outputs are resized by the
// caller to their bytes at T. A q8a input is read as its values; a fused op
// evaluates its body op by op.
#ifndef VIBRANT_RUNTIME_CPU_EVAL_OP_H_
#define VIBRANT_RUNTIME_CPU_EVAL_OP_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "ir/graph.h"
#include "runtime/cpu/thread_pool.h"

namespace vibrant::cpu {

absl::Status EvalOp(const ir::Graph& g, const ir::Op& op, const std::vector<const uint8_t*>& in,
                    std::vector<std::vector<uint8_t>>& outs, int64_t T, ThreadPool* pool);

// The elements of a buffer of `dtype` as doubles (f16/bf16 decoded, q8a
// dequantized, i32 converted), for comparisons.
std::vector<double> AsDoubles(DType dtype, const std::vector<uint8_t>& bytes);

}  // namespace vibrant::cpu

#endif  // VIBRANT_RUNTIME_CPU_EVAL_OP_H_
