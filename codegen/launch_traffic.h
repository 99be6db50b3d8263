// The bytes each launch of a step moves, for a roofline (vibrant-bench
// --roofline): from the dispatch table (each pointer argument's buffer and
// extent) and the IR (the op a launch belongs to), at the step's token count
// and positions. Lives beside the launch rules (cuda_target.h), which define
// what each argument points at.
//
// Counted per launch: every pointer argument's bytes (an in-place kernel's
// input and output are read and written: both count), except
//   * weights: an embedding reads the rows of its T ids, not the table;
//   * KV caches: attention reads the rows of positions < pos0 + T of K and V;
//     kv_store writes T rows;
//   * the sample op's scratch: a greedy draw passes only the blocks' maxima
//     (16 bytes per gather block), a non-greedy one its gathered keys;
//   * a cuBLASLt GEMM: its operands and output once each (tiles re-read
//     from L2 are not traffic to memory); a device copy: source and
//     destination.
// Everything else is the argument's extent at T: activations in the arena
// (reads and writes together) and kernel scratch.
// A persistent decode kernel (dispatch::RunsIn::kScheduledOnly) moves what
// the op-by-op launches it runs as tasks (kPerOpOnly) move, summed; its
// counters in the state region are not counted.
#ifndef VIBRANT_CODEGEN_LAUNCH_TRAFFIC_H_
#define VIBRANT_CODEGEN_LAUNCH_TRAFFIC_H_

#include <cstdint>
#include <vector>

#include "ir/graph.h"
#include "runtime/dispatch.h"

namespace vibrant::codegen {

struct LaunchBytes {
  int64_t weights = 0;      // read from the weights region
  int64_t kv = 0;           // KV cache rows read (attention) or written (kv_store)
  int64_t activations = 0;  // arena (step values) read and written
  int64_t scratch = 0;      // kernel scratch read and written
  int64_t total() const { return weights + kv + activations + scratch; }
};

struct TrafficOptions {
  int64_t pos0 = 0;         // the step's first position (its KV depth)
  bool greedy_sample = true;  // the sample op draws greedily
  int sample_top_k = 40;      // else: the keys each gather block passes on
  // The launches of dispatch::LaunchesFor(t, T, per_op): one per op even
  // where a persistent kernel runs the step.
  bool per_op = false;
};

// One entry per launch of dispatch::LaunchesFor(t, T, opts.per_op), in that order.
// `g` is the program's graph (the one `t` was lowered from).
std::vector<LaunchBytes> StepTraffic(const ir::Graph& g, const dispatch::Table& t, int64_t T,
                                     const TrafficOptions& opts = {});

}  // namespace vibrant::codegen

#endif  // VIBRANT_CODEGEN_LAUNCH_TRAFFIC_H_
