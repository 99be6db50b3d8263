#include "codegen/launch_traffic.h"

#include <algorithm>

#include "codegen/kernels/families.h"

namespace vibrant::codegen {
namespace {

using dispatch::BufRef;
using dispatch::Launch;
using dispatch::LaunchKind;
using dispatch::Region;

void Add(LaunchBytes* b, Region r, int64_t bytes) {
  switch (r) {
    case Region::kWeights: b->weights += bytes; break;
    case Region::kKv: b->kv += bytes; break;
    case Region::kArena: b->activations += bytes; break;
    case Region::kScratch: b->scratch += bytes; break;
    case Region::kState: break;  // the persistent kernel's counters
    case Region::kNone: break;
  }
}

LaunchBytes OneLaunch(const ir::Graph& g, const Launch* l, int64_t T, const TrafficOptions& opts) {
  LaunchBytes b;
  const ir::Op* op = l->op >= 0 && l->op < static_cast<int>(g.ops().size()) ? &g.ops()[l->op] : nullptr;
  switch (l->kind) {
    case LaunchKind::kCopy:
      Add(&b, l->src.region, l->bytes.Eval(T));
      Add(&b, l->dst.region, l->bytes.Eval(T));
      break;
    case LaunchKind::kHost:  // the host's memory, not the GPU's
      break;
    case LaunchKind::kToHost:
      Add(&b, l->src.region, l->bytes.Eval(T));
      break;
    case LaunchKind::kFromHost:
      Add(&b, l->dst.region, l->bytes.Eval(T));
      break;
    case LaunchKind::kAllReduce:  // what this rank reads and writes (NCCL's traffic between GPUs aside)
      Add(&b, l->src.region, l->bytes.Eval(T));
      Add(&b, l->dst.region, l->bytes.Eval(T));
      break;
    case LaunchKind::kAllGather: {
      const int64_t bytes = l->m.Eval(T) * l->n * 4;
      Add(&b, l->src.region, bytes);
      Add(&b, l->dst.region, bytes * ir::TpRanks(g));
      break;
    }
    case LaunchKind::kGemm: {
      const int64_t M = l->m.Eval(T);
      Add(&b, l->a.region, M * l->k * 2);
      Add(&b, l->b.region, l->n * l->k * 2);
      Add(&b, l->out.region, M * l->n * 4);
      break;
    }
    case LaunchKind::kKernel:
      for (const dispatch::Arg& a : l->args) {
        if (a.kind != dispatch::Arg::Kind::kPtr || a.buf.region == Region::kNone) continue;
        int64_t bytes = a.buf.extent.Eval(T);
        if (op != nullptr && a.buf.region == Region::kWeights && op->kind == ir::OpKind::kEmbedding) {
          // T rows of the table.
          const ir::Value& table = g.value(op->inputs[0]);
          const int64_t rows = std::max<int64_t>(table.shape[0], 1);
          const int64_t ids = ir::NumElements(g.value(op->inputs[1]).shape, T);
          bytes = bytes / rows * std::min(ids, rows);
        } else if (op != nullptr && a.buf.region == Region::kKv) {
          const int64_t rows = std::max<int64_t>(g.value(op->inputs[1]).shape[0], 1);  // the cache's C
          if (op->kind == ir::OpKind::kAttention) {
            bytes = bytes / rows * std::min(opts.pos0 + T, rows);
          } else if (op->kind == ir::OpKind::kKvStore) {
            bytes = bytes / rows * std::min(T, rows);
          }
        } else if (op != nullptr && a.buf.region == Region::kScratch && op->kind == ir::OpKind::kSample) {
          const int64_t blocks = SampleGatherBlocks(g.value(op->inputs[0]).shape.back());
          const int64_t keys = opts.greedy_sample ? 0 : std::clamp<int64_t>(opts.sample_top_k, 1, kSampleCap);
          bytes = std::min(bytes, 8 * blocks * (2 + keys));
        }
        Add(&b, a.buf.region, bytes);
      }
      break;
  }
  return b;
}

}  // namespace

std::vector<LaunchBytes> StepTraffic(const ir::Graph& g, const dispatch::Table& t, int64_t T,
                                     const TrafficOptions& opts) {
  std::vector<LaunchBytes> out;
  for (const Launch* l : dispatch::LaunchesFor(t, T, opts.per_op)) {
    if (l->runs_in != dispatch::RunsIn::kScheduledOnly) {
      out.push_back(OneLaunch(g, l, T, opts));
      continue;
    }
    // The persistent kernel: the op-by-op launches it runs as tasks.
    LaunchBytes sum;
    for (const Launch* task : dispatch::LaunchesFor(t, T, /*per_op=*/true)) {
      if (task->runs_in != dispatch::RunsIn::kPerOpOnly) continue;
      const LaunchBytes b = OneLaunch(g, task, T, opts);
      sum.weights += b.weights;
      sum.kv += b.kv;
      sum.activations += b.activations;
      sum.scratch += b.scratch;
    }
    out.push_back(sum);
  }
  return out;
}

}  // namespace vibrant::codegen
