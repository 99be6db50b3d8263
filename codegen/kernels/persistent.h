// The persistent decode kernel (issue #11): one launch runs a whole step of
// T = 1 as a task graph. The compiler builds it from the step's op-by-op
// launches (the dispatch table of select-kernels' variants):
//
//  - every launch becomes a *stage*; its grid's blocks are its tasks. A task
//    runs the launch's kernel: the module's source is emitted a second time
//    inside `namespace vbp`, its kernels as device functions, with blockIdx,
//    gridDim, threadIdx, blockDim and __syncthreads redefined as the task's
//    (read from the block's shared task record), so the persistent path runs
//    the same code as the per-op path.
//  - the kernel runs `blocks` co-resident blocks of `threads` threads. A
//    stage whose kernel uses fewer threads and no shared memory runs `subs`
//    tasks side by side in one block (sub-blocks, each with its own named
//    barrier); a *group* is the tasks one block runs at once.
//  - dependencies come from the bytes each launch touches: a stage waits for
//    every earlier stage that writes what it reads or writes, or reads what
//    it writes (the memory plan reuses buffers, so a write must not overtake
//    earlier reads); a kernel's `const T*` parameters are reads, its other
//    pointers reads and writes. Reduced transitively. Each stage has a
//    counter in the plan's state region; a block that finishes a group adds
//    1 (release); a block waits (acquire) until each dependency's counter
//    equals its group count. The last block out resets the counters.
//  - groups are dealt to blocks round-robin in stage order, so a block only
//    ever waits for groups earlier in that order: with every block resident
//    (the runtime checks the occupancy), the step cannot deadlock.
#ifndef VIBRANT_CODEGEN_KERNELS_PERSISTENT_H_
#define VIBRANT_CODEGEN_KERNELS_PERSISTENT_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/dispatch.h"

namespace vibrant::codegen {

inline constexpr char kPersistentKernelName[] = "vb_decode_step";

struct PersistentStage {
  int launch = -1;       // index of the op-by-op launch it replaces (Table::launches)
  int body = -1;         // index into PersistentSchedule::bodies
  int threads = 0;       // the launch's block size
  int subs = 1;          // tasks per group (sub-blocks of one block)
  int64_t grid[3] = {1, 1, 1};
  int64_t groups = 0;    // ceil(tasks / subs)
  std::vector<int> deps;  // earlier stages it waits for (transitively reduced)
  // Kernel arguments as 64-bit slots: a pointer is (region << 56) | offset,
  // a scalar its bits in the low bytes.
  std::vector<uint64_t> args;
  // Weight bytes the stage reads (offset, bytes in the weights region):
  // before waiting for its dependencies a block prefetches into L2 the
  // share of each that its group's tasks read, which overlaps the DRAM
  // latency with the wait (the slice is proportional to the group's tasks;
  // every byte is prefetched by exactly one group of the stage).
  std::vector<std::pair<int64_t, int64_t>> prefetch;
};

struct PersistentBody {
  std::string kernel;  // the module's kernel name ("" : the built-in copy)
  int threads = 0;
};

struct PersistentSchedule {
  int threads = 0;        // block size (the largest of the step's launches)
  int blocks = 0;         // co-resident blocks (sm_count * blocks_per_sm)
  int blocks_per_sm = 0;
  std::vector<PersistentBody> bodies;
  std::vector<PersistentStage> stages;
  // Per block, the groups it runs in order: (stage, group) pairs.
  std::vector<std::vector<std::pair<int, int64_t>>> block_groups;
  int64_t total_groups() const;
  int64_t total_deps() const;
};

// Builds the schedule of the launches of steps of T = 1 (`step`, in order;
// kernel and copy launches only). Errors when a launch cannot be a task (a
// GEMM, a block that is not a multiple of 32 threads or has y/z extents,
// dynamic shared memory).
// `module_source` is the module's source (ModuleSource): kernels that use
// shared memory (directly or through a helper) run one task per block.
absl::StatusOr<PersistentSchedule> BuildPersistentSchedule(const dispatch::Table& table,
                                                           const std::vector<int>& step,
                                                           const std::string& module_source, int sm_count,
                                                           int blocks_per_sm);

// What kernel `name` of the module does with each parameter, from its
// signature: a `const T*` is only read, any other pointer may be written.
// Empty when the module has no such kernel.
enum class ParamAccess { kValue, kRead, kReadWrite };
std::vector<ParamAccess> KernelParamAccess(const std::string& module_source, const std::string& name);

// The module's functions and kernels that declare __shared__ memory or call
// one that does (a conservative textual analysis of the generated source).
std::set<std::string> FunctionsUsingSharedMemory(const std::string& module_source);

// The kernel's CUDA source, appended to the module's (`module_source`, whose
// kernels it re-emits as device functions). Errors when a body it needs is
// not in the module or uses what a task cannot (__syncthreads_count & co).
absl::StatusOr<std::string> PersistentSource(const std::string& module_source,
                                             const PersistentSchedule& schedule);

// The persistent launch's arguments: the base of every region the tasks
// address, and the state (counters: one per stage, then the exit count).
int64_t PersistentStateBytes(const PersistentSchedule& schedule);

}  // namespace vibrant::codegen

#endif  // VIBRANT_CODEGEN_KERNELS_PERSISTENT_H_
