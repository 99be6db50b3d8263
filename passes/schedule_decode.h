// schedule-decode: decides how a step of one token runs on a device with
// generated kernels. With a persistent schedule (the default for cuda plans)
// the whole step is one launch of a persistent kernel whose blocks run the
// step's launches as tasks in dependency order (codegen/kernels/persistent.h);
// the op-by-op launches stay in the plan for --verify and profiling. The
// decision is graph metadata, printed with the IR:
//   meta decode_schedule="persistent"
//   meta decode_blocks_per_sm=2
// Without it (the pass disabled, --decode-schedule ops, a cpu plan, or a step
// with a launch a task cannot be: a cuBLASLt GEMM at T = 1) every op launches
// on its own, as select-kernels listed.
#ifndef VIBRANT_PASSES_SCHEDULE_DECODE_H_
#define VIBRANT_PASSES_SCHEDULE_DECODE_H_

#include "passes/pass.h"

namespace vibrant::passes {

inline constexpr char kDecodeScheduleKey[] = "decode_schedule";
inline constexpr char kDecodeBlocksPerSmKey[] = "decode_blocks_per_sm";

Pass ScheduleDecode();

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_SCHEDULE_DECODE_H_
