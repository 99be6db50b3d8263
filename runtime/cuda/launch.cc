// Enqueueing the dispatch table's launches (runtime/cuda/internal.h: Launcher).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/cuda/internal.h"

namespace vibrant::cuda {

using dispatch::Arg;
using dispatch::Launch;
using dispatch::LaunchKind;

std::string OpDesc(const ir::Graph& g, int op_index) {
  if (op_index < 0 || op_index >= static_cast<int>(g.ops().size())) return absl::StrCat("#", op_index);
  const ir::Op& op = g.ops()[op_index];
  std::string out = absl::StrCat("#", op_index, " ", std::string(ir::OpName(op.kind)));
  if (!op.outputs.empty()) {
    const ir::Value& v = g.value(op.outputs[0]);
    absl::StrAppend(&out, " -> '", v.name, "' ", std::string(DTypeName(v.dtype)), ir::ShapeToString(v.shape));
  }
  return out;
}

Launcher::Launcher(const ir::Graph& graph, const dispatch::Table& table, const DeviceMemory& mem,
                   const KernelModule& module, RowMajorGemm* gemm, cudaStream_t stream, bool pdl,
                   bool sync_each_op, bool profile, CudaCollectives* collectives, int rank,
                   CpuExecutor* host)
    : graph_(graph),
      table_(table),
      mem_(mem),
      module_(module),
      gemm_(gemm),
      collectives_(collectives),
      rank_(rank),
      host_(host),
      stream_(stream),
      pdl_(pdl),
      sync_each_op_(sync_each_op),
      profile_(profile) {
  // Ranks that share one GPU meet through host barriers and events between
  // their streams, which a CUDA graph of one rank cannot hold.
  if (collectives_ != nullptr && !collectives_->capturable()) {
    graph_note_ = absl::StrCat("no CUDA graphs: ", collectives_->Describe());
  }
  if (table_.has_host_ops()) graph_note_ = "no CUDA graphs: the host runs some of the step's ops (-ngl)";
}

Launcher::~Launcher() {
  if (profile_) PrintProfile();
  for (auto& [T, exec] : graphs_) cudaGraphExecDestroy(exec);
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
}

absl::Status Launcher::Enqueue(const Launch& l, int64_t T) {
  // The launch's name for errors, made only when one happens (this runs for
  // every launch of every step that is not a CUDA graph replay).
  auto what = [&] { return absl::StrCat(l.name, " for op ", OpDesc(graph_, l.op)); };
  auto named = [&](cudaError_t e, const char* prefix) {
    return e == cudaSuccess ? absl::OkStatus() : CudaStatus(e, absl::StrCat(prefix, what()));
  };
  const bool host_side = dispatch::IsHostSide(l.kind);
  if (host_side && host_ == nullptr) {
    return absl::InternalError(absl::StrCat("CUDA backend: ", what(), " without a host side"));
  }
  gpu_pending_ |= !host_side;
  switch (l.kind) {
    case LaunchKind::kHost:
      // The host's op reads what the GPU made before it: wait for the stream.
      if (gpu_pending_) {
        VB_RETURN_IF_ERROR(named(cudaStreamSynchronize(stream_), "CUDA backend: the GPU's work before "));
        gpu_pending_ = false;
      }
      return host_->RunOp(l.op);
    case LaunchKind::kToHost:
    case LaunchKind::kFromHost: {
      const ir::Op& op = graph_.ops()[l.op];  // a copy (checked at load)
      const bool to_host = l.kind == LaunchKind::kToHost;
      uint8_t* h = host_->ValueData(to_host ? op.outputs[0] : op.inputs[0]);
      if (h == nullptr) return absl::InternalError(absl::StrCat("CUDA backend: ", what(), ": no host buffer"));
      gpu_pending_ = true;  // a device-to-host copy is the GPU's until the stream is waited for
      // From pageable memory the copy returns once the bytes are staged, so
      // the host may overwrite its buffer afterwards.
      const size_t bytes = static_cast<size_t>(l.bytes.Eval(T));
      return named(to_host ? cudaMemcpyAsync(h, mem_.Address(l.src, T), bytes, cudaMemcpyDeviceToHost, stream_)
                           : cudaMemcpyAsync(mem_.Address(l.dst, T), h, bytes, cudaMemcpyHostToDevice, stream_),
                   "CUDA backend: ");
    }
    case LaunchKind::kCopy:
      return named(cudaMemcpyAsync(mem_.Address(l.dst, T), mem_.Address(l.src, T),
                                   static_cast<size_t>(l.bytes.Eval(T)), cudaMemcpyDeviceToDevice, stream_),
                   "CUDA backend: ");
    case LaunchKind::kGemm: {
      if (gemm_ == nullptr) return absl::InternalError("CUDA backend: a GEMM launch without cuBLASLt");
      GemmShape s;
      s.M = l.m.Eval(T);
      s.N = l.n;
      s.K = l.k;
      s.lda = l.lda;
      s.ldb = l.ldb;
      s.ldo = l.ldo;
      ++enqueued_;
      ++gemm_calls_;
      absl::Status st = gemm_->Run(s, mem_.Address(l.a, T), mem_.Address(l.b, T), nullptr,
                                   static_cast<float*>(mem_.Address(l.out, T)), stream_);
      if (!st.ok()) return absl::Status(st.code(), absl::StrCat("CUDA backend: ", what(), ": ", st.message()));
      return absl::OkStatus();
    }
    case LaunchKind::kAllReduce:
    case LaunchKind::kAllGather: {
      if (collectives_ == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(
            "CUDA backend: ", what(), ": a tensor-parallel plan (", table_.tp_ranks,
            " ranks) runs through its ranks' executor (runtime/cuda/tp_executor.h), not alone"));
      }
      ++enqueued_;
      absl::Status st;
      if (l.kind == LaunchKind::kAllReduce) {
        CudaCollectives::AddKernel add;
        add.fn = module_.kernel(l.kernel);
        add.grid = dim3(static_cast<unsigned>(l.grid[0].Eval(T)));
        add.block = dim3(l.block[0]);
        st = collectives_->AllReduceSum(rank_, static_cast<const float*>(mem_.Address(l.src, T)),
                                        static_cast<float*>(mem_.Address(l.dst, T)), l.bytes.Eval(T) / 4, stream_,
                                        add);
      } else {
        st = collectives_->AllGather(rank_, static_cast<const float*>(mem_.Address(l.src, T)), l.m.Eval(T), l.n,
                                     static_cast<float*>(mem_.Address(l.dst, T)),
                                     static_cast<float*>(mem_.Address(l.a, T)), stream_);
      }
      if (!st.ok()) return absl::Status(st.code(), absl::StrCat("CUDA backend: ", what(), ": ", st.message()));
      return absl::OkStatus();
    }
    case LaunchKind::kKernel:
      break;
  }
  std::vector<uint64_t> slots(l.args.size());
  std::vector<void*> argp(l.args.size());
  for (size_t i = 0; i < l.args.size(); ++i) {
    const Arg& a = l.args[i];
    uint64_t slot = 0;
    switch (a.kind) {
      case Arg::Kind::kPtr: {
        void* p = mem_.Address(a.buf, T);
        std::memcpy(&slot, &p, sizeof(p));
        break;
      }
      case Arg::Kind::kI32: {
        const int32_t v = static_cast<int32_t>(a.value.Eval(T));
        std::memcpy(&slot, &v, 4);
        break;
      }
      case Arg::Kind::kI64: {
        const int64_t v = a.value.Eval(T);
        std::memcpy(&slot, &v, 8);
        break;
      }
      case Arg::Kind::kF32:
        std::memcpy(&slot, &a.f, 4);
        break;
    }
    slots[i] = slot;
  }
  for (size_t i = 0; i < slots.size(); ++i) argp[i] = &slots[i];
  const dim3 grid(static_cast<unsigned>(l.grid[0].Eval(T)), static_cast<unsigned>(l.grid[1].Eval(T)),
                  static_cast<unsigned>(l.grid[2].Eval(T)));
  const dim3 block(l.block[0], l.block[1], l.block[2]);
  const void* fn = reinterpret_cast<const void*>(module_.kernel(l.kernel));
  ++enqueued_;
  if (pdl_) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = l.smem;
    cfg.stream = stream_;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    return named(cudaLaunchKernelExC(&cfg, fn, argp.data()), "CUDA backend: launching ");
  }
  return named(cudaLaunchKernel(fn, grid, block, argp.data(), l.smem, stream_), "CUDA backend: launching ");
}

absl::Status Launcher::EnqueueInputs(int64_t T) {
  gpu_pending_ = true;
  if (table_.tokens.region != dispatch::Region::kNone) {  // a split plan's host may read them alone
    VB_CUDA(cudaMemcpyAsync(mem_.Address(table_.tokens, T), mem_.io_host(), T * sizeof(int32_t),
                            cudaMemcpyHostToDevice, stream_),
            "CUDA backend: input copy");
  }
  if (table_.positions.region != dispatch::Region::kNone) {
    VB_CUDA(cudaMemcpyAsync(mem_.Address(table_.positions, T), mem_.io_host() + table_.max_tokens,
                            T * sizeof(int32_t), cudaMemcpyHostToDevice, stream_),
            "CUDA backend: input copy");
  }
  if (table_.seq_ids.region != dispatch::Region::kNone) {  // paged plans
    VB_CUDA(cudaMemcpyAsync(mem_.Address(table_.seq_ids, T), mem_.seq_ids_host(), T * sizeof(int32_t),
                            cudaMemcpyHostToDevice, stream_),
            "CUDA backend: input copy");
    VB_CUDA(cudaMemcpyAsync(mem_.Address(table_.block_table, T), mem_.block_table_host(),
                            table_.n_seq * table_.max_blocks * sizeof(int32_t), cudaMemcpyHostToDevice,
                            stream_),
            "CUDA backend: input copy");
  }
  if (table_.sampling.region != dispatch::Region::kNone) {
    VB_CUDA(cudaMemcpyAsync(mem_.Address(table_.sampling, T), mem_.sampling_host(), 8 * sizeof(int32_t),
                            cudaMemcpyHostToDevice, stream_),
            "CUDA backend: sampling parameters copy");
  }
  return absl::OkStatus();
}

absl::Status Launcher::EnqueueOutput(int64_t T, Output out) {
  // A split plan whose host makes the output: nothing to copy.
  if (host_ != nullptr && (out == Output::kToken ? table_.token : table_.logits).region == dispatch::Region::kNone) {
    return absl::OkStatus();
  }
  if (out == Output::kToken) {
    if (table_.token.region == dispatch::Region::kNone) {
      return absl::FailedPreconditionError("CUDA backend: the plan has no sample op");
    }
    return CudaStatus(cudaMemcpyAsync(mem_.token_host(), mem_.Address(table_.token, T), sizeof(int32_t),
                                      cudaMemcpyDeviceToHost, stream_),
                      "CUDA backend: token copy");
  }
  return CudaStatus(cudaMemcpyAsync(mem_.logits_host(), mem_.Address(table_.logits, T),
                                    table_.logits_elems.Eval(T) * sizeof(float), cudaMemcpyDeviceToHost, stream_),
                    "CUDA backend: logits copy");
}

absl::Status Launcher::Capture(int64_t T, Output out) {
  VB_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
          "CUDA backend: beginning a CUDA graph capture");
  const int64_t before = enqueued_;
  absl::Status s = EnqueueInputs(T);
  for (const Launch* l : dispatch::LaunchesFor(table_, T)) {
    if (!s.ok()) break;
    s = Enqueue(*l, T);
  }
  if (s.ok()) s = EnqueueOutput(T, out);
  cudaGraph_t g = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream_, &g);
  if (s.ok()) s = CudaStatus(end, "CUDA backend: ending the CUDA graph capture");
  cudaGraphExec_t exec = nullptr;
  if (s.ok()) s = CudaStatus(cudaGraphInstantiate(&exec, g, 0), "CUDA backend: instantiating the CUDA graph");
  if (g != nullptr) cudaGraphDestroy(g);
  // The launches were recorded, not run: the counters count replays.
  const int64_t captured = enqueued_ - before;
  enqueued_ = before;
  if (!s.ok()) {
    cudaGetLastError();
    return s;
  }
  graphs_[{T, out}] = exec;
  graph_launches_[{T, out}] = captured;
  return absl::OkStatus();
}

absl::Status Launcher::RunStep(int64_t T, Output out, std::vector<float>* launch_ms, bool per_op) {
  const bool timed = profile_ || launch_ms != nullptr;
  if (T <= table_.graph_max_tokens && graph_note_.empty() && !sync_each_op_ && !timed && !per_op) {
    const std::pair<int64_t, Output> key{T, out};
    if (graphs_.count(key) == 0) {
      if (absl::Status s = Capture(T, out); !s.ok()) graph_note_ = std::string(s.message());
    }
    auto it = graphs_.find(key);
    if (it != graphs_.end()) {
      enqueued_ += graph_launches_[key];
      return CudaStatus(cudaGraphLaunch(it->second, stream_), "CUDA backend: launching the CUDA graph");
    }
  }
  VB_RETURN_IF_ERROR(EnqueueInputs(T));
  // One launch per op (the persistent decode kernel's tasks as launches of
  // their own) when each op is synchronized or profiled, or asked for.
  const std::vector<const Launch*> ls = dispatch::LaunchesFor(table_, T, sync_each_op_ || profile_ || per_op);
  if (timed) {
    while (events_.size() < 2 * ls.size()) {
      cudaEvent_t e = nullptr;
      VB_CUDA(cudaEventCreate(&e), "CUDA backend: profiling event");
      events_.push_back(e);
    }
  }
  for (size_t i = 0; i < ls.size(); ++i) {
    if (timed) VB_CUDA(cudaEventRecord(events_[2 * i], stream_), "CUDA backend: profiling event");
    VB_RETURN_IF_ERROR(Enqueue(*ls[i], T));
    if (timed) VB_CUDA(cudaEventRecord(events_[2 * i + 1], stream_), "CUDA backend: profiling event");
    if (sync_each_op_) {
      VB_CUDA(cudaStreamSynchronize(stream_),
              absl::StrCat("CUDA backend: ", ls[i]->name, " for op ", OpDesc(graph_, ls[i]->op), " failed"));
    }
  }
  VB_RETURN_IF_ERROR(EnqueueOutput(T, out));
  if (timed) {
    VB_CUDA(cudaStreamSynchronize(stream_), "CUDA backend: profiled step");
    if (launch_ms != nullptr) launch_ms->assign(ls.size(), 0.0f);
    for (size_t i = 0; i < ls.size(); ++i) {
      float ms = 0;
      cudaEventElapsedTime(&ms, events_[2 * i], events_[2 * i + 1]);
      if (launch_ms != nullptr) (*launch_ms)[i] = ms;
      if (profile_) {
        ProfileEntry& e = profile_by_kernel_[absl::StrCat(ls[i]->name, T == 1 ? " (T=1)" : " (T>1)")];
        ++e.calls;
        e.ms += ms;
      }
    }
    if (profile_) ++profiled_steps_;
  }
  return absl::OkStatus();
}

void Launcher::PrintProfile() const {
  std::vector<std::pair<std::string, ProfileEntry>> rows(profile_by_kernel_.begin(), profile_by_kernel_.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  double total = 0;
  for (const auto& r : rows) total += r.second.ms;
  std::fprintf(stderr, "vibrant cuda profile: %lld steps, %.3f ms of kernels (direct launches)\n",
               static_cast<long long>(profiled_steps_), total);
  for (const auto& [name, e] : rows) {
    std::fprintf(stderr, "  %-34s %7lld calls %10.3f ms %5.1f%% %9.2f us/call\n", name.c_str(),
                 static_cast<long long>(e.calls), e.ms, total > 0 ? 100 * e.ms / total : 0.0,
                 1000 * e.ms / std::max<int64_t>(e.calls, 1));
  }
}

}  // namespace vibrant::cuda
