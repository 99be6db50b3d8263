// Fast random tensor data in any GGUF block format, for synthetic models.
//
// Quantized types are not produced by quantizing random floats (ggml's
// K-quant scale searches cost ~50-70 ns per weight: minutes for a 3B model)
// but written directly as random valid blocks: uniform random quants, and
// finite f16 scales chosen so that the dequantized values are close to
// zero-mean with standard deviation `sigma` (a trained LLM's weights are
// roughly N(0, 0.02)). Every bit pattern of a quant is valid, so the blocks
// are what a quantizer could have produced; the kernels that read them do the
// same work as on a real model.
//
// Output is a pure function of (type, seed, sigma, size): the data is cut into
// fixed chunks, each seeded from (seed, chunk index), so the thread count does
// not change the bytes.
#ifndef VIBRANT_BENCH_SYNTH_RANDOM_BLOCKS_H_
#define VIBRANT_BENCH_SYNTH_RANDOM_BLOCKS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "ir/dtype.h"

namespace vibrant::synth {

// Fills `out`, which holds a whole number of blocks of type `t`, with random
// data of standard deviation ~`sigma` around `mean` (mean is only supported
// for F32 and F16; quantized types are centred on zero). Supports F32, F16,
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K. `threads` <= 0 means
// hardware concurrency.
absl::Status FillRandom(DType t, uint64_t seed, float sigma, float mean,
                        absl::Span<uint8_t> out, int threads = 0);

// splitmix64 step: a well-mixed 64-bit value of `x` (for deriving seeds).
uint64_t Mix64(uint64_t x);

}  // namespace vibrant::synth

#endif  // VIBRANT_BENCH_SYNTH_RANDOM_BLOCKS_H_
