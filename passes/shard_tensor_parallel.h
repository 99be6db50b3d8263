// Tensor parallelism as a pass: the step graph becomes the program each of N
// ranks runs on its own shard of the weights (Megatron-style), with the
// collectives where the shards' results meet.
#ifndef VIBRANT_PASSES_SHARD_TENSOR_PARALLEL_H_
#define VIBRANT_PASSES_SHARD_TENSOR_PARALLEL_H_

#include <cstdint>

#include "absl/status/status.h"
#include "ir/graph.h"
#include "passes/pass.h"

namespace vibrant::passes {

// The pass "shard-tensor-parallel" (vibrantc compile --tp N), first in the
// pipeline when N > 1 (PipelineConfig::tp). On a lowered model step it sets
// meta tp = N and rewrites the graph, op by op, into one rank's program:
//
// - column-parallel: the q, k, v, gate and up projections (and their biases)
//   read a block of the weight's rows per rank (Value::rank_offsets): each
//   rank computes its heads / its slice of the FFN. Attention, RoPE, the KV
//   caches and the q/k norms then work on the rank's heads: a cache holds the
//   rank's KV heads ([n_ctx, n_kv_heads / N, head_dim]). With more ranks than
//   KV heads (N a multiple of n_kv_heads) each KV head is replicated on the
//   N / n_kv_heads ranks whose query heads read it, as vLLM does.
// - row-parallel: the attention output and FFN down projections read a block
//   of every row's columns (rank offsets with Value::source_row_stride), the
//   columns of the rank's heads / FFN slice; their partial sums meet in an
//   all_reduce (ir/ops.h) before the residual add.
// - vocab-parallel: the output projection reads a block of the vocabulary's
//   rows; an all_gather makes the logits whole on every rank.
// - everything else (embedding, norms, residuals, sampling, MoE routing and
//   experts) is replicated: every rank computes it on the whole value.
//
// Where a split is not possible the pass keeps the graph correct and says so
// in PassContext::notes: a row-parallel projection whose columns per rank are
// not whole quantization blocks (768 columns of q4_K, 256 per block, across
// 2 ranks) gathers its input (all_gather) and runs replicated; heads that N
// does not divide (neither n_head nor n_kv_heads, nor N a multiple of
// n_kv_heads) keep attention replicated; a vocabulary N does not divide keeps
// the output projection replicated. A paged (continuous batching) graph, or
// one already sharded, is an error.
Pass ShardTensorParallel(int64_t ranks);

absl::Status ShardTensorParallelGraph(ir::Graph& g, int64_t ranks, PassContext& ctx);

}  // namespace vibrant::passes

#endif  // VIBRANT_PASSES_SHARD_TENSOR_PARALLEL_H_
