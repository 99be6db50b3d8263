// CudaExecutor: a program's dispatch table on one GPU (runtime/cuda/executor.h).
#include "runtime/cuda/executor.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ir/verifier.h"
#include "runtime/cuda/collectives.h"
#include "runtime/cuda/internal.h"
#include "runtime/cuda/verify.h"

namespace vibrant {

using cuda::DeviceMemory;
using cuda::KernelModule;
using cuda::Launcher;

namespace {

// The cuBLASLt workspace (the GEMM launches' algorithms may use it).
constexpr int64_t kGemmWorkspace = int64_t{32} << 20;

// "sm_90" -> 90.
int ArchNumber(const std::string& arch) { return arch.size() > 3 ? std::atoi(arch.c_str() + 3) : 0; }

bool EnvIs(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::string(v) == value;
}

}  // namespace

struct CudaExecutor::Impl {
  ir::Graph graph;
  dispatch::Table table;
  CudaExecutorOptions opts;
  CudaDeviceInfo device;
  cudaStream_t stream = nullptr;
  std::unique_ptr<KernelModule> module;
  std::unique_ptr<DeviceMemory> mem;
  std::unique_ptr<RowMajorGemm> gemm;
  std::string gemm_lib;
  std::unique_ptr<CpuExecutor> host;  // a split plan's host side (-ngl)
  std::unique_ptr<Launcher> launcher;
  bool pdl = false;
  absl::Status pending;

  ~Impl() {
    if (stream != nullptr) cudaSetDevice(device.index);  // a rank of a tensor-parallel plan: its GPU
    launcher.reset();  // prints the profile, destroys graphs
    if (stream != nullptr) cudaStreamSynchronize(stream);
    gemm.reset();
    mem.reset();
    module.reset();
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  absl::Status CheckStep(absl::Span<const int32_t> toks, int32_t pos0) const {
    if (!pending.ok()) return pending;
    const int64_t T = static_cast<int64_t>(toks.size());
    if (T < 1 || T > table.max_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("Step: ", T, " tokens; a step takes 1..", table.max_tokens, " (max_tokens)"));
    }
    if (pos0 < 0) return absl::InvalidArgumentError(absl::StrCat("Step: negative position ", pos0));
    if (static_cast<int64_t>(pos0) + T - 1 > INT32_MAX) {
      return absl::OutOfRangeError(
          absl::StrCat("Step: position ", static_cast<int64_t>(pos0) + T - 1, " overflows int32"));
    }
    if (table.n_ctx > 0 && pos0 + T > table.n_ctx) {
      return absl::OutOfRangeError(absl::StrCat("Step: positions ", pos0, "..", pos0 + T - 1,
                                                " exceed the KV cache of ", table.n_ctx, " tokens"));
    }
    for (int64_t t = 0; t < T; ++t) {
      if (toks[t] < 0 || toks[t] >= table.n_vocab) {
        return absl::InvalidArgumentError(absl::StrCat("Step: token id ", toks[t], " at index ", t,
                                                       " is outside the vocabulary [0, ", table.n_vocab, ")"));
      }
    }
    return absl::OkStatus();
  }

  // A paged step's inputs against the table's shape (the GPU's kernels
  // trust them).
  absl::Status CheckBatch(const BatchInputs& in) const {
    const dispatch::Table& t = table;
    const int64_t T = static_cast<int64_t>(in.tokens.size());
    if (in.positions.size() != in.tokens.size() || in.seq_ids.size() != in.tokens.size() ||
        static_cast<int64_t>(in.block_table.size()) != t.n_seq * t.max_blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "StepBatch: ", T, " tokens, ", in.positions.size(), " positions, ", in.seq_ids.size(),
          " sequence ids and a block table of ", in.block_table.size(), " entries (the plan's: ",
          t.n_seq * t.max_blocks, ")"));
    }
    const int64_t n_blocks = t.n_ctx / t.block_size;
    for (int64_t i = 0; i < T; ++i) {
      if (in.tokens[i] < 0 || in.tokens[i] >= t.n_vocab) {
        return absl::InvalidArgumentError(absl::StrCat("StepBatch: token id ", in.tokens[i], " at index ",
                                                       i, " is outside the vocabulary [0, ", t.n_vocab, ")"));
      }
      const int64_t s = in.seq_ids[i], p = in.positions[i];
      if (s < 0 || s >= t.n_seq) {
        return absl::OutOfRangeError(absl::StrCat("StepBatch: sequence id ", s, " at index ", i,
                                                  " is outside [0, ", t.n_seq, ")"));
      }
      if (p < 0 || p / t.block_size >= t.max_blocks) {
        return absl::OutOfRangeError(absl::StrCat("StepBatch: position ", p, " at index ", i,
                                                  " is outside a sequence's ", t.max_blocks, " blocks of ",
                                                  t.block_size));
      }
      for (int64_t b = 0; b <= p / t.block_size; ++b) {
        const int32_t blk = in.block_table[s * t.max_blocks + b];
        if (blk < 0 || blk >= n_blocks) {
          return absl::OutOfRangeError(absl::StrCat("StepBatch: sequence ", s, " block ", b, " is ", blk,
                                                    ", outside the cache's ", n_blocks, " blocks"));
        }
      }
    }
    return absl::OkStatus();
  }

  // The step's inputs in pinned memory: ids, positions and, for a plan that
  // samples, the draw's parameters (greedy unless a draw is given).
  void FillIo(absl::Span<const int32_t> toks, int32_t pos0, const SampleDraw& draw = SampleDraw{}) {
    int32_t* io = mem->io_host();
    for (size_t t = 0; t < toks.size(); ++t) {
      io[t] = toks[t];
      io[table.max_tokens + t] = pos0 + static_cast<int32_t>(t);
    }
    const std::array<int32_t, kSampleParamWords> w = PackSampleParams(draw);
    std::copy(w.begin(), w.end(), mem->sampling_host());
  }
};

CudaExecutor::CudaExecutor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaExecutor::~CudaExecutor() = default;

absl::StatusOr<std::unique_ptr<CudaExecutor>> CudaExecutor::Create(const Program& program,
                                                                   WeightResolver weights,
                                                                   CudaExecutorOptions opts) {
  if (program.device != "cuda" || !program.dispatch || !program.kernels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CUDA backend: the program is compiled for device '", program.device,
        "' (a cuda plan carries a dispatch table and kernels: compile with --device cuda)"));
  }
  auto impl = std::make_unique<Impl>();
  Impl& m = *impl;
  m.graph = program.graph;
  m.table = *program.dispatch;
  m.opts = opts;
  if (EnvIs("VIBRANT_CUDA_SYNC", "1")) m.opts.sync_each_op = true;
  if (absl::Status s = ir::Verify(m.graph); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA backend: invalid graph: ", s.message()));
  }
  if (absl::Status s = dispatch::Validate(m.table, "CUDA backend: dispatch table"); !s.ok()) return s;
  if (m.table.values.size() != m.graph.values().size()) {
    return absl::InvalidArgumentError("CUDA backend: the dispatch table does not describe this graph");
  }
  if (m.table.tp_ranks > 1) {
    if (opts.collectives == nullptr || opts.collectives->ranks() != m.table.tp_ranks || opts.rank < 0 ||
        opts.rank >= m.table.tp_ranks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CUDA backend: the plan is sharded for ", m.table.tp_ranks,
          " tensor-parallel ranks; it runs as one executor per rank (runtime/cuda/tp_executor.h; vibrant-run "
          "does this), not as one"));
    }
  }
  absl::StatusOr<CudaDeviceInfo> dev = QueryCudaDevice(opts.device);
  if (!dev.ok()) return dev.status();
  m.device = *dev;
  VB_CUDA(cudaSetDevice(m.device.index), "CUDA backend: cudaSetDevice");
  VB_CUDA(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking), "CUDA backend: creating a stream");
  absl::StatusOr<std::unique_ptr<KernelModule>> module =
      KernelModule::Load(*program.kernels, m.table.kernels, m.device);
  if (!module.ok()) return module.status();
  m.module = *std::move(module);
  // Kernels launched with more than 48 KiB of dynamic shared memory (the
  // quantized GEMM's tiles) must be allowed it first.
  {
    std::vector<uint32_t> smem(m.table.kernels.size(), 0);
    for (const dispatch::Launch& l : m.table.launches) {
      if (l.kind == dispatch::LaunchKind::kKernel) smem[l.kernel] = std::max(smem[l.kernel], l.smem);
    }
    for (size_t k = 0; k < smem.size(); ++k) {
      if (smem[k] <= 48 * 1024) continue;
      VB_CUDA(cudaKernelSetAttributeForDevice(m.module->kernel(static_cast<int>(k)),
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              static_cast<int>(smem[k]), m.device.index),
              absl::StrCat("CUDA backend: kernel ", m.table.kernels[k], " needs ", smem[k],
                           " bytes of shared memory, more than this GPU allows a block"));
    }
  }
  // A persistent kernel's blocks wait for each other's tasks: all of them
  // must be resident at once, or the step would never finish.
  for (const dispatch::Launch& l : m.table.launches) {
    if (l.runs_in != dispatch::RunsIn::kScheduledOnly || l.kind != dispatch::LaunchKind::kKernel) continue;
    const int threads = static_cast<int>(l.block[0] * l.block[1] * l.block[2]);
    int per_sm = 0;
    VB_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                &per_sm, reinterpret_cast<const void*>(m.module->kernel(l.kernel)), threads, l.smem),
            absl::StrCat("CUDA backend: occupancy of ", l.name));
    const int64_t blocks = l.grid[0].Eval(1) * l.grid[1].Eval(1) * l.grid[2].Eval(1);
    if (static_cast<int64_t>(per_sm) * m.device.sm_count < blocks) {
      return absl::FailedPreconditionError(absl::StrCat(
          "CUDA backend: the plan's persistent decode kernel ", l.name, " needs ", blocks,
          " resident blocks of ", threads, " threads; ", m.device.name, " holds ", per_sm, " per SM x ",
          m.device.sm_count, " SMs. Recompile the plan on this GPU, with a smaller --decode-blocks-per-sm, "
          "or with --decode-schedule ops"));
    }
  }
  bool uses_gemm = false;
  for (const dispatch::Launch& l : m.table.launches) uses_gemm |= l.kind == dispatch::LaunchKind::kGemm;
  if (uses_gemm) {
    absl::StatusOr<std::shared_ptr<const CublasLtLib>> lib =
        opts.cublaslt_names.empty() ? LoadCublasLt() : LoadCublasLt(opts.cublaslt_names);
    if (!lib.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "CUDA backend: this plan runs prefill matmuls as cuBLASLt GEMMs, but libcublasLt does not load (",
          lib.status().message(),
          "): install the CUDA toolkit's cuBLAS, or recompile the plan with --gemm-min-rows 0"));
    }
    absl::StatusOr<std::unique_ptr<RowMajorGemm>> gm = RowMajorGemm::Create(*lib, kGemmWorkspace);
    if (!gm.ok()) return gm.status();
    m.gemm = *std::move(gm);
    m.gemm_lib = CublasLtDescribe(**lib);
  }
  if (m.table.has_host_ops()) {
    // A plan split between the GPU and the host (-ngl): the CPU backend runs
    // the ops the table hands to the host, on memory of its own.
    for (size_t i = 0; i < m.table.launches.size(); ++i) {
      const dispatch::Launch& l = m.table.launches[i];
      if (!dispatch::IsHostSide(l.kind)) continue;
      const bool in_range = l.op >= 0 && l.op < static_cast<int32_t>(m.graph.ops().size());
      const ir::Op* op = in_range ? &m.graph.ops()[l.op] : nullptr;
      bool ok = op != nullptr;
      if (ok && l.kind == dispatch::LaunchKind::kHost) ok = op->device == ir::Device::kCpu;
      if (ok && l.kind != dispatch::LaunchKind::kHost) {
        const bool to_host = l.kind == dispatch::LaunchKind::kToHost;
        ok = op->kind == ir::OpKind::kCopy && op->inputs.size() == 1 && op->outputs.size() == 1 &&
             m.graph.value(op->inputs[0]).device == (to_host ? ir::Device::kCuda : ir::Device::kCpu) &&
             m.graph.value(op->outputs[0]).device == (to_host ? ir::Device::kCpu : ir::Device::kCuda);
        if (ok) {
          absl::StatusOr<int64_t> b = DTypeBytes(m.graph.value(op->outputs[0]).dtype,
                                                 ir::NumElements(m.graph.value(op->outputs[0]).shape, l.t_max));
          ok = b.ok() && l.bytes.Eval(l.t_max) <= *b && l.bytes.Eval(l.t_min) <= *b;
        }
      }
      if (!ok) {
        return absl::InvalidArgumentError(absl::StrCat(
            "CUDA backend: dispatch table launch ", i, " (", l.name, ", op ", l.op,
            ") does not match the graph: host launches name an op placed on the cpu, transfers a copy between "
            "the devices of at most its size"));
      }
    }
    CpuExecutorOptions host_opts;
    host_opts.threads = opts.host_threads;
    host_opts.host_ops_only = true;
    absl::StatusOr<std::unique_ptr<CpuExecutor>> host = CpuExecutor::Create(m.graph, weights, host_opts);
    if (!host.ok()) {
      return absl::Status(host.status().code(),
                          absl::StrCat("CUDA backend: the host's part of the plan: ", host.status().message()));
    }
    m.host = *std::move(host);
  }
  absl::StatusOr<std::unique_ptr<DeviceMemory>> mem =
      DeviceMemory::Allocate(m.table, weights, m.device, m.table.tp_ranks > 1 ? opts.rank : 0);
  if (!mem.ok()) return mem.status();
  m.mem = *std::move(mem);
  m.pdl = m.table.pdl && !EnvIs("VIBRANT_CUDA_PDL", "0") && ArchNumber(m.device.arch) >= 90;
  m.launcher = std::make_unique<Launcher>(m.graph, m.table, *m.mem, *m.module, m.gemm.get(), m.stream, m.pdl,
                                          m.opts.sync_each_op, EnvIs("VIBRANT_CUDA_PROFILE", "1"),
                                          m.table.tp_ranks > 1 ? opts.collectives : nullptr, opts.rank,
                                          m.host.get());
  return std::unique_ptr<CudaExecutor>(new CudaExecutor(std::move(impl)));
}

absl::StatusOr<absl::Span<const float>> CudaExecutor::StepBatch(const BatchInputs& in) {
  Impl& m = *impl_;
  VB_CUDA(cudaSetDevice(m.device.index), "CUDA backend: cudaSetDevice");  // the caller's thread
  if (!m.pending.ok()) return m.pending;
  const dispatch::Table& t = m.table;
  // A split plan whose paged ops all run on the host (the GPU has no paged
  // kernel for them) reads the slots and block table there alone.
  const bool gpu_paged = t.seq_ids.region != dispatch::Region::kNone;
  if (!gpu_paged && !(m.host != nullptr && m.host->paged())) {
    return absl::FailedPreconditionError(
        "StepBatch: the plan is not paged (compile it with a sequence count for continuous batching)");
  }
  const int64_t T = static_cast<int64_t>(in.tokens.size());
  if (T < 1 || T > t.max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("StepBatch: ", T, " tokens; a step takes 1..", t.max_tokens, " (max_tokens)"));
  }
  if (gpu_paged) VB_RETURN_IF_ERROR(m.CheckBatch(in));
  // The host's side checks what it reads (a split plan).
  if (m.host != nullptr) VB_RETURN_IF_ERROR(m.host->BeginBatch(in));
  int32_t* io = m.mem->io_host();
  std::copy(in.tokens.begin(), in.tokens.end(), io);
  std::copy(in.positions.begin(), in.positions.end(), io + t.max_tokens);
  if (gpu_paged) {
    std::copy(in.seq_ids.begin(), in.seq_ids.end(), m.mem->seq_ids_host());
    std::copy(in.block_table.begin(), in.block_table.end(), m.mem->block_table_host());
  }
  VB_RETURN_IF_ERROR(m.launcher->RunStep(T));
  VB_CUDA(cudaStreamSynchronize(m.stream), "CUDA backend: step (set VIBRANT_CUDA_SYNC=1 to name the failing op)");
  if (t.logits.region == dispatch::Region::kNone && m.host != nullptr) return m.host->StepLogits();
  return absl::Span<const float>(m.mem->logits_host(), t.logits_elems.Eval(T));
}

absl::StatusOr<absl::Span<const float>> CudaExecutor::Step(absl::Span<const int32_t> tokens, int32_t pos0) {
  Impl& m = *impl_;
  VB_CUDA(cudaSetDevice(m.device.index), "CUDA backend: cudaSetDevice");  // the caller's thread
  if (m.table.seq_ids.region != dispatch::Region::kNone) {
    return absl::FailedPreconditionError("Step: the plan is paged (continuous batching); run it with StepBatch");
  }
  VB_RETURN_IF_ERROR(m.CheckStep(tokens, pos0));
  const int64_t T = static_cast<int64_t>(tokens.size());
  m.FillIo(tokens, pos0);
  if (m.host != nullptr) VB_RETURN_IF_ERROR(m.host->BeginStep(tokens, pos0));
  VB_RETURN_IF_ERROR(m.launcher->RunStep(T));
  VB_CUDA(cudaStreamSynchronize(m.stream), "CUDA backend: step (set VIBRANT_CUDA_SYNC=1 to name the failing op)");
  if (m.table.logits.region == dispatch::Region::kNone && m.host != nullptr) return m.host->StepLogits();
  return absl::Span<const float>(m.mem->logits_host(), m.table.logits_elems.Eval(T));
}

bool CudaExecutor::samples() const {
  return impl_->table.token.region != dispatch::Region::kNone || (impl_->host != nullptr && impl_->host->samples());
}

absl::StatusOr<int32_t> CudaExecutor::StepSample(absl::Span<const int32_t> tokens, int32_t pos0,
                                                 const SampleDraw& draw) {
  Impl& m = *impl_;
  VB_CUDA(cudaSetDevice(m.device.index), "CUDA backend: cudaSetDevice");  // the caller's thread
  if (!samples()) {
    return absl::FailedPreconditionError(
        "StepSample: this plan has no sample op (compile it with --gpu-sampling)");
  }
  VB_RETURN_IF_ERROR(CheckSampleDraw(draw));
  VB_RETURN_IF_ERROR(m.CheckStep(tokens, pos0));
  const int64_t T = static_cast<int64_t>(tokens.size());
  m.FillIo(tokens, pos0, draw);
  if (m.host != nullptr) VB_RETURN_IF_ERROR(m.host->BeginStep(tokens, pos0, draw));
  VB_RETURN_IF_ERROR(m.launcher->RunStep(T, Launcher::Output::kToken));
  VB_CUDA(cudaStreamSynchronize(m.stream), "CUDA backend: step (set VIBRANT_CUDA_SYNC=1 to name the failing op)");
  if (m.table.token.region == dispatch::Region::kNone && m.host != nullptr) return m.host->StepToken();
  // The sampler draws a column of the logits row (whether it is a token the
  // model can read back is the next step's check).
  const int32_t id = *m.mem->token_host();
  if (id < 0 || id >= m.table.logits_elems.Eval(1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampler: ", id < 0 ? "no finite logit (the model produced NaN or inf)"
                            : absl::StrCat("the GPU sampler returned token ", id, ", outside the logits row")));
  }
  return id;
}

absl::StatusOr<std::vector<float>> CudaExecutor::ProfileStep(absl::Span<const int32_t> tokens, int32_t pos0,
                                                             bool per_op) {
  Impl& m = *impl_;
  VB_RETURN_IF_ERROR(m.CheckStep(tokens, pos0));
  const int64_t T = static_cast<int64_t>(tokens.size());
  m.FillIo(tokens, pos0);
  if (m.host != nullptr) VB_RETURN_IF_ERROR(m.host->BeginStep(tokens, pos0));
  std::vector<float> ms;
  VB_RETURN_IF_ERROR(m.launcher->RunStep(T, Launcher::Output::kLogits, &ms, per_op));
  return ms;
}

const dispatch::Table& CudaExecutor::table() const { return impl_->table; }

absl::Status CudaExecutor::CheckStepInputs(absl::Span<const int32_t> tokens, int32_t pos0) const {
  return impl_->CheckStep(tokens, pos0);
}

void CudaExecutor::Reset() {
  Impl& m = *impl_;
  if (m.host != nullptr) m.host->Reset();
  cudaSetDevice(m.device.index);  // the caller's thread may drive another rank's GPU
  const int64_t kv = m.mem->bytes(dispatch::Region::kKv);
  if (kv == 0) return;
  absl::Status s = CudaStatus(cudaMemsetAsync(m.mem->base(dispatch::Region::kKv), 0, kv, m.stream),
                              "CUDA backend: clearing the KV cache");
  if (s.ok()) s = CudaStatus(cudaStreamSynchronize(m.stream), "CUDA backend: clearing the KV cache");
  if (!s.ok()) m.pending = s;
}

std::string CudaExecutor::Describe() const {
  const Impl& m = *impl_;
  std::string out = absl::StrFormat(
      "cuda: %s (%s), weights %s, KV cache %s, activations %s, scratch %s; kernels from %s; %s "
      "per decode step%s",
      m.device.name, m.device.arch, HumanBytes(weight_bytes()), HumanBytes(kv_bytes()),
      HumanBytes(arena_bytes()), HumanBytes(scratch_bytes()), m.module->origin(),
      LaunchesEnqueuedPerStep(1).value_or(0) < KernelLaunchesPerStep(1).value_or(0)
          ? absl::StrCat(LaunchesEnqueuedPerStep(1).value_or(0), " launches (a persistent kernel running ",
                         KernelLaunchesPerStep(1).value_or(0), " as tasks)")
          : absl::StrCat(KernelLaunchesPerStep(1).value_or(0), " launches"),
      m.table.graph_max_tokens >= 1 && m.launcher->graphs_used() ? " as a CUDA graph" : "");
  if (m.table.token.region != dispatch::Region::kNone) absl::StrAppend(&out, "; sampling on the GPU");
  if (m.pdl) absl::StrAppend(&out, " with programmatic dependent launch");
  if (m.table.tp_ranks > 1) {
    absl::StrAppend(&out, "; tensor-parallel rank ", m.opts.rank, " of ", m.table.tp_ranks, " (",
                    m.opts.collectives != nullptr ? m.opts.collectives->Describe() : "", ")");
  } else if (!m.launcher->graph_note().empty()) {
    absl::StrAppend(&out, " (graph capture failed: ", m.launcher->graph_note(), ")");
  }
  if (m.gemm != nullptr) absl::StrAppend(&out, "; prefill GEMMs through ", m.gemm_lib);
  if (m.host != nullptr) {
    absl::StrAppend(&out, "; split with the CPU (--gpu-layers): ", m.host->ops_run_here(), " of ",
                    m.graph.ops().size(), " ops on the host, ", m.host->KernelSummary(), ", ",
                    m.host->num_threads(), " threads");
  }
  return out;
}

absl::StatusOr<VerifyReport> CudaExecutor::VerifyStep(absl::Span<const int32_t> tokens, int32_t pos0,
                                                      double tolerance, const SampleDraw* draw) {
  Impl& m = *impl_;
  if (m.host != nullptr) {
    return absl::UnimplementedError(
        "--verify: a plan split between the GPU and the CPU (--gpu-layers) is not compared op by op; verify the "
        "plan compiled without the split");
  }
  VB_RETURN_IF_ERROR(m.CheckStep(tokens, pos0));
  if (draw != nullptr) VB_RETURN_IF_ERROR(CheckSampleDraw(*draw));
  const int64_t T = static_cast<int64_t>(tokens.size());
  m.FillIo(tokens, pos0, draw != nullptr ? *draw : SampleDraw{});
  if (m.table.sampling.region != dispatch::Region::kNone) {
    VB_CUDA(cudaMemcpy(m.mem->Address(m.table.sampling, T), m.mem->sampling_host(), 8 * sizeof(int32_t),
                       cudaMemcpyHostToDevice),
            "verify: sampling parameters copy");
  }
  VB_CUDA(cudaMemcpy(m.mem->Address(m.table.tokens, T), m.mem->io_host(), T * sizeof(int32_t),
                     cudaMemcpyHostToDevice),
          "verify: input copy");
  if (m.table.positions.region != dispatch::Region::kNone) {
    VB_CUDA(cudaMemcpy(m.mem->Address(m.table.positions, T), m.mem->io_host() + m.table.max_tokens,
                       T * sizeof(int32_t), cudaMemcpyHostToDevice),
            "verify: input copy");
  }
  VerifyReport report;
  VB_RETURN_IF_ERROR(cuda::VerifyOps(m.graph, m.table, *m.mem, *m.launcher, m.stream, T, tolerance, &report));
  const int64_t n = m.table.logits_elems.Eval(T);
  VB_CUDA(cudaMemcpy(m.mem->logits_host(), m.mem->Address(m.table.logits, T), n * sizeof(float),
                     cudaMemcpyDeviceToHost),
          "verify: logits copy");
  report.logits = absl::Span<const float>(m.mem->logits_host(), n);
  if (samples()) {
    VB_CUDA(cudaMemcpy(m.mem->token_host(), m.mem->Address(m.table.token, T), sizeof(int32_t),
                       cudaMemcpyDeviceToHost),
            "verify: token copy");
    report.token = *m.mem->token_host();
  }
  return report;
}

std::string CudaExecutor::kernel_origin() const { return impl_->module->origin(); }
int64_t CudaExecutor::weight_bytes() const { return impl_->mem->bytes(dispatch::Region::kWeights); }
int64_t CudaExecutor::kv_bytes() const { return impl_->mem->bytes(dispatch::Region::kKv); }
int64_t CudaExecutor::arena_bytes() const { return impl_->mem->bytes(dispatch::Region::kArena); }
int64_t CudaExecutor::scratch_bytes() const {
  return impl_->mem->bytes(dispatch::Region::kScratch) +
         (impl_->gemm != nullptr ? impl_->gemm->workspace_bytes() : 0);
}
int64_t CudaExecutor::device_bytes() const {
  return weight_bytes() + kv_bytes() + arena_bytes() + scratch_bytes();
}
int64_t CudaExecutor::launches_enqueued() const { return impl_->launcher->enqueued(); }
int64_t CudaExecutor::gemm_calls() const { return impl_->launcher->gemm_calls(); }

absl::StatusOr<int> CudaExecutor::KernelLaunchesPerStep(int64_t tokens) const {
  if (tokens < 1 || tokens > impl_->table.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("KernelLaunchesPerStep: ", tokens,
                                                   " tokens; a step takes 1..", impl_->table.max_tokens));
  }
  int n = 0;
  for (const dispatch::Launch* l : dispatch::LaunchesFor(impl_->table, tokens, /*per_op=*/true)) {
    n += l->kind != dispatch::LaunchKind::kCopy && !dispatch::IsHostSide(l->kind);
  }
  return n;
}

absl::StatusOr<int> CudaExecutor::LaunchesEnqueuedPerStep(int64_t tokens) const {
  if (tokens < 1 || tokens > impl_->table.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchesEnqueuedPerStep: ", tokens,
                                                   " tokens; a step takes 1..", impl_->table.max_tokens));
  }
  int n = 0;
  for (const dispatch::Launch* l : dispatch::LaunchesFor(impl_->table, tokens)) {
    n += l->kind != dispatch::LaunchKind::kCopy && !dispatch::IsHostSide(l->kind);
  }
  return n;
}

}  // namespace vibrant
