#include "passes/schedule_decode.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace vibrant::passes {

namespace {

// Why op `i`'s step of one token cannot run inside the persistent kernel
// ("" if it can).
std::string Obstacle(const ir::Graph& g, int i, ir::Device device) {
  const ir::Op& op = g.ops()[i];
  if (op.device != device) return absl::StrCat("op ", i, " runs on the ", std::string(ir::DeviceName(op.device)));
  for (const ir::KernelVariant& v : op.kernels) {
    if (v.t_min > 1) continue;
    for (const std::string& l : v.launches) {
      if (l == "cublaslt") return absl::StrCat("op ", i, " runs a cuBLASLt GEMM at T = 1");
    }
  }
  return "";
}

}  // namespace

Pass ScheduleDecode() {
  Pass p;
  p.name = "schedule-decode";
  p.optional = true;
  p.run = [](ir::Graph& g, PassContext& ctx) -> absl::Status {
    g.meta.erase(kDecodeScheduleKey);
    g.meta.erase(kDecodeBlocksPerSmKey);
    if (ctx.cuda_kernels == nullptr || ctx.decode_blocks_per_sm <= 0) return absl::OkStatus();
    for (int i = 0; i < static_cast<int>(g.ops().size()); ++i) {
      const std::string why = Obstacle(g, i, ctx.cuda_kernels->device());
      if (!why.empty()) {
        ctx.notes.push_back(absl::StrCat("schedule-decode: one launch per op at T = 1: ", why));
        return absl::OkStatus();
      }
    }
    g.meta[kDecodeScheduleKey] = std::string("persistent");
    g.meta[kDecodeBlocksPerSmKey] = static_cast<int64_t>(ctx.decode_blocks_per_sm);
    return absl::OkStatus();
  };
  return p;
}

}  // namespace vibrant::passes
