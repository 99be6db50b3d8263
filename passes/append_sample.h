// The step picks its own next token: the sample op appended to a model step.
#ifndef VIBRANT_PASSES_APPEND_SAMPLE_H_
#define VIBRANT_PASSES_APPEND_SAMPLE_H_

#include "absl/status/status.h"
#include "ir/graph.h"
#include "passes/pass.h"

namespace vibrant::passes {

// The pass "append-sample" (optional), in the pipeline when the compile asks
// for it (PipelineConfig::append_sample; vibrantc compile --gpu-sampling, the
// default for cuda plans). To a step whose logits output is f32[R, V] it adds
//   input  %sampling : i32[8]                         the draw's parameters
//   %token : i32[1] = sample(%logits, %sampling)      a graph output
// (ir/ops.h: sample). The logits stay a graph output, so a runtime can still
// return them (--verify, tests); a step that samples returns the 4-byte id
// instead. It runs before assign-devices, which puts the op where the logits
// are made (the GPU in a cuda plan: the row never leaves it) and the new
// input and output on the host like tokens and logits.
// A graph that already has a value named "sampling" or "token" is left as it
// is; so is one without a suitable logits output, unless `required`, where
// that is an error. Unless `required`, only a model's step is sampled (meta
// n_vocab equal to the logits' row length): a hand-built graph is left alone.
Pass AppendSample(bool required);

absl::Status AppendSampleOp(ir::Graph& g, bool required);

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_APPEND_SAMPLE_H_
