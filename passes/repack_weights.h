// The slot for weight re-layout passes.
#ifndef VIBRANT_PASSES_REPACK_WEIGHTS_H_
#define VIBRANT_PASSES_REPACK_WEIGHTS_H_

#include "passes/pass.h"

namespace vibrant::passes {

// The pass "repack-weights" (optional). Weight re-layout for a backend's
// kernels: e.g. repacking quantized blocks of weights that live on the GPU
// into the layout its matmul kernels read. It runs after device assignment
// and fusion (a layout depends on the device and on the kernel that reads
// the weight) and before memory planning (weights are not in the arena).
//
// Today it is a no-op: the CPU backend reads weights in their GGUF layout
// straight from the mapped file. The CUDA backend adds its repacking here;
// a repacked weight is expected to become a weight value whose `source`
// names the GGUF tensor and whose dtype names the new layout, its bytes
// produced at compile time into a plan section (runtime/plan.h reserves
// KERNELS; repacked layouts will be further sections).
Pass RepackWeights();

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_REPACK_WEIGHTS_H_
