// A small SIMT emulator for running generated CUDA kernel text on the host
// (tests only): the threads of a block are cooperative contexts (ucontext) on
// one OS thread; they switch only at synchronization points (block barriers,
// warp collectives), in a seeded random order, so a missing barrier shows up
// as a wrong or seed-dependent result. Blocks run one after another; a
// kernel's `__shared__` arrays become function-local statics, shared by the
// threads of the running block (so, as on a GPU, a block must not rely on
// their initial contents). Warp-synchronous primitives are built on
// WarpExchange; the tests define the CUDA names (__shfl_xor_sync, mma, ...)
// on top of it with the PTX-specified semantics.
//
// Cost: a context switch per thread per synchronization, ~1 us (swapcontext
// saves the signal mask), so only small launches belong here.
#ifndef VIBRANT_CODEGEN_SIMT_EMULATOR_H_
#define VIBRANT_CODEGEN_SIMT_EMULATOR_H_

#include <cstddef>
#include <cstdint>
#include <functional>

#include "absl/status/status.h"

namespace vibrant::codegen::simt {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// Inside a running kernel body: the thread's and block's coordinates.
const Dim3& ThreadIdx();
const Dim3& BlockIdx();
const Dim3& BlockDim();
const Dim3& GridDim();
int LaneId();  // threadIdx.x % 32 (blocks are 1-D, a multiple of 32)

// __syncthreads(): every thread of the block waits for the others.
void SyncThreads();
// Every lane of the calling warp deposits `bytes` of `mine`; each receives
// all 32 deposits in lane order in `all` (32 * bytes). Warp-synchronous: all
// 32 lanes must call it.
void WarpExchange(const void* mine, size_t bytes, void* all);

// Runs `body` as every thread of every block of a 1-D block grid (block.y =
// block.z = 1, block.x a multiple of 32, at most 1024). Fails on a deadlock
// (threads waiting at barriers that can never complete, e.g. a barrier some
// threads skip).
absl::Status Launch(Dim3 grid, Dim3 block, const std::function<void()>& body, uint32_t seed = 1);

}  // namespace vibrant::codegen::simt

#endif  // VIBRANT_CODEGEN_SIMT_EMULATOR_H_
