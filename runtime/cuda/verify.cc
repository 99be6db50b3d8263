// --verify: a step op by op against the CPU reference (CudaExecutor::VerifyStep).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/cpu/eval_op.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/cuda/internal.h"
#include "runtime/cuda/verify.h"

namespace vibrant::cuda {
namespace {

// --verify's floor for matmuls run as GEMMs: f16 operands round each product
// by up to ~2^-10 relative (activations and, for quantized types, weights);
// over a dot product these errors are random, about 4e-4 of max |out| for
// random data (see the executor test), so 4e-3 leaves a 10x margin.
constexpr double kGemmVerifyTolerance = 4e-3;
// Tensor-core attention (vb_attn_dec_*, vb_attn_pre_*) rounds q, dequantized
// K/V and the softmax weights to f16: its bound, 4e-3 of max|v| for f16
// caches and 8e-3 for q8_0/f32 (codegen/kernels/attention_mma.h), relative to
// the output's max is at most that since the output is a convex combination
// of V rows.
constexpr double kFlashAttentionVerifyTolerance = 8e-3;

}  // namespace

absl::Status VerifyOps(const ir::Graph& g, const dispatch::Table& table, const DeviceMemory& mem,
                       Launcher& launcher, cudaStream_t stream, int64_t T, double tolerance,
                       VerifyReport* report) {
  cpu::ThreadPool pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  std::vector<std::vector<const dispatch::Launch*>> by_op(g.ops().size());
  for (const dispatch::Launch* l : dispatch::LaunchesFor(table, T, /*per_op=*/true)) by_op[l->op].push_back(l);
  auto bytes_at = [&](ir::ValueId v) {
    return DTypeBytes(g.value(v).dtype, ir::NumElements(g.value(v).shape, T)).value_or(0);
  };
  for (int i = 0; i < static_cast<int>(g.ops().size()); ++i) {
    if (by_op[i].empty()) continue;  // views and the step's I/O: no launch
    const ir::Op& op = g.ops()[i];
    // Inputs as the GPU holds them now (weights: the host bytes uploaded).
    std::vector<std::vector<uint8_t>> in_copy(op.inputs.size());
    std::vector<const uint8_t*> in(op.inputs.size());
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const ir::ValueId v = op.inputs[k];
      const dispatch::BufRef& b = table.values[v];
      if (b.region == dispatch::Region::kWeights) {
        in[k] = mem.HostWeight(b.offset.Eval(T));
        if (in[k] == nullptr) return absl::InternalError("verify: a weight without its host bytes");
        continue;
      }
      in_copy[k].resize(bytes_at(v));
      if (!in_copy[k].empty()) {
        VB_CUDA(cudaMemcpy(in_copy[k].data(), mem.Address(b, T), in_copy[k].size(), cudaMemcpyDeviceToHost),
                "verify: reading an input");
      }
      in[k] = in_copy[k].data();
    }
    std::vector<std::vector<uint8_t>> expect;
    for (ir::ValueId v : op.outputs) expect.emplace_back(bytes_at(v));
    if (op.kind == ir::OpKind::kKvStore) expect[0] = in_copy[1];
    // The GPU.
    bool via_gemm = false, via_flash = false, via_mmq = false;
    for (const dispatch::Launch* l : by_op[i]) {
      via_gemm |= l->kind == dispatch::LaunchKind::kGemm;
      via_mmq |= l->name.rfind("vb_mmq_", 0) == 0;
      via_flash |= l->name.rfind("vb_attn_dec_", 0) == 0 || l->name.rfind("vb_attn_pre_", 0) == 0;
      VB_RETURN_IF_ERROR(launcher.Enqueue(*l, T));
    }
    VB_CUDA(cudaStreamSynchronize(stream), absl::StrCat("verify: op ", OpDesc(g, i)));
    // The CPU on the same inputs.
    VB_RETURN_IF_ERROR(cpu::EvalOp(g, op, in, expect, T, &pool));
    double tol = via_gemm || via_mmq ? std::max(tolerance, kGemmVerifyTolerance) : tolerance;
    if (via_flash) tol = std::max(tol, kFlashAttentionVerifyTolerance);
    for (size_t j = 0; j < op.outputs.size(); ++j) {
      const ir::ValueId v = op.outputs[j];
      std::vector<uint8_t> got(expect[j].size());
      if (!got.empty()) {
        VB_CUDA(cudaMemcpy(got.data(), mem.Address(table.values[v], T), got.size(), cudaMemcpyDeviceToHost),
                "verify: reading an output");
      }
      const std::vector<double> a = cpu::AsDoubles(g.value(v).dtype, got);
      const std::vector<double> r = cpu::AsDoubles(g.value(v).dtype, expect[j]);
      VerifyOpResult res;
      res.op_index = i;
      res.desc = OpDesc(g, i);
      if (op.outputs.size() > 1) absl::StrAppend(&res.desc, " output ", j, " '", g.value(v).name, "'");
      if (via_gemm) absl::StrAppend(&res.desc, " [cuBLASLt, f16 operands]");
      if (via_mmq) absl::StrAppend(&res.desc, " [quantized tensor-core GEMM, f16 operands]");
      if (via_flash) absl::StrAppend(&res.desc, " [tensor-core attention, f16 operands]");
      bool nan = a.size() != r.size();
      for (size_t e = 0; e < std::min(a.size(), r.size()); ++e) {
        if (std::isnan(a[e]) != std::isnan(r[e])) nan = true;
        if (std::isnan(a[e]) || std::isnan(r[e])) continue;
        res.max_abs = std::max(res.max_abs, std::fabs(a[e] - r[e]));
        res.ref_max = std::max(res.ref_max, std::fabs(r[e]));
      }
      res.rel_err = nan ? std::numeric_limits<double>::infinity()
                        : (res.ref_max > 0 ? res.max_abs / res.ref_max : res.max_abs);
      res.ok = res.rel_err <= tol;
      if (!res.ok && report->first_bad < 0) report->first_bad = static_cast<int>(report->ops.size());
      report->ops.push_back(res);
    }
  }
  return absl::OkStatus();
}

}  // namespace vibrant::cuda
