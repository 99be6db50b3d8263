// Device assignment: which device runs each op and holds each value, with
// explicit copies where data crosses devices.
#ifndef VIBRANT_PASSES_ASSIGN_DEVICES_H_
#define VIBRANT_PASSES_ASSIGN_DEVICES_H_

#include "absl/status/status.h"
#include "ir/graph.h"
#include "passes/pass.h"

namespace vibrant::passes {

// The pass "assign-devices" (required). Afterwards every op and every value
// has a device:
// - Ops: CUDA when the policy (PassContext::device) is cuda or auto and the
//   CUDA backend implements the op (PassContext::cuda_supports), else CPU;
//   policy cpu puts everything on the CPU. With PassContext::gpu_layers N
//   in [0, n_layer] (-ngl), an op's layer (OpLayer) decides first: the
//   input layer, layers 0 .. n_layer - N - 1 and the output head stay on
//   the CPU, as llama.cpp places its layers (N > n_layer: no split).
//   Ops that touch the same KV cache
//   (its kv_store updates and every reader of any version) run on one
//   device: CUDA only if the backend implements all of them.
// - Values: an op's outputs live on its device. Step inputs (tokens,
//   positions) and graph outputs (logits) live on the CPU (the host feeds and
//   reads them). KV caches live on the device of their ops. Weights live on
//   the device of their users; a weight used on both devices becomes two
//   weight values with the same GGUF source (the second named
//   "<name>.cuda"), loaded once per device, never copied per step.
// - Copies: a `copy` op is inserted only where a value is needed on a device
//   other than its own, once per (value, device), just before its first
//   user there (a graph output made on CUDA: right after its producer, which
//   then writes "<name>.cuda"). The copy's output "<name>.<device>" lives on
//   the destination; the copy op itself runs on the accelerator side of the
//   transfer (cuda in both directions: the CUDA runtime issues host<->device
//   copies). So a graph that runs entirely on CUDA has exactly two
//   boundaries per step: tokens and positions in, logits out.
// - With PassContext::explain_devices, one note per op (where and why), per
//   copy and per weight placed on two devices goes to PassContext::notes.
// Policy cuda without a CUDA backend (cuda_supports unset) is an error.
// Copy ops already in the graph keep their devices.
Pass AssignDevices();

// The repeating layer a value belongs to: a weight's by its GGUF tensor
// ("blk.N."), any other value's by the N its name ends with ("l_out.3",
// "attn_norm.3_rms", "cache_k.3": the lowering's names); -1 for none.
int64_t ValueLayer(const ir::Value& v);
// The repeating layer an op belongs to: the layer of a weight it reads, else
// its first output's, else -1 (the input layer or the output head).
int64_t OpLayer(const ir::Graph& g, const ir::Op& op);

absl::Status AssignGraphDevices(ir::Graph& g, PassContext& ctx);

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_ASSIGN_DEVICES_H_
