#include "runtime/cuda/executor.h"

#include <cuda_runtime_api.h>
#include <math.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codegen/kernel_source.h"
#include "codegen/kernels/families.h"
#include "codegen/nvrtc.h"
#include "ir/verifier.h"
#include "runtime/cpu/dequantize.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu/quantize.h"
#include "runtime/cpu/thread_pool.h"
#include "runtime/cuda/cublaslt.h"
#include "runtime/cuda/device.h"

namespace vibrant {
namespace {

using ir::Graph;
using ir::Op;
using ir::OpKind;
using ir::Shape;
using ir::Storage;
using ir::Value;
using ir::ValueId;

#define VB_RETURN_IF_ERROR(expr)  \
  do {                            \
    absl::Status _s = (expr);     \
    if (!_s.ok()) return _s;      \
  } while (0)
#define VB_CUDA(call, what) VB_RETURN_IF_ERROR(CudaStatus((call), (what)))

constexpr int64_t kAlign = 256;
int64_t AlignUp(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

std::string ValueDesc(const Graph& g, ValueId v) {
  const Value& val = g.value(v);
  return absl::StrCat("'", val.name, "' ", std::string(DTypeName(val.dtype)),
                      ir::ShapeToString(val.shape));
}

std::string OpDesc(const Graph& g, int i) {
  const Op& op = g.ops()[i];
  std::string out = absl::StrCat("#", i, " ", std::string(ir::OpName(op.kind)));
  if (!op.outputs.empty()) absl::StrAppend(&out, " -> ", ValueDesc(g, op.outputs[0]));
  return out;
}

double NumberAttr(const Op& op, const std::string& key, double dflt) {
  auto it = op.attrs.find(key);
  if (it == op.attrs.end()) return dflt;
  if (const auto* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  if (const auto* d = std::get_if<double>(&it->second)) return *d;
  return dflt;
}

std::vector<int> Producers(const Graph& g) {
  std::vector<int> producer(g.values().size(), -1);
  for (size_t i = 0; i < g.ops().size(); ++i) {
    for (ValueId o : g.ops()[i].outputs) {
      if (o >= 0 && o < static_cast<ValueId>(producer.size())) producer[o] = static_cast<int>(i);
    }
  }
  return producer;
}

int64_t Elems(const Graph& g, ValueId v, int64_t T) { return ir::NumElements(g.value(v).shape, T); }

int64_t Bytes(const Graph& g, ValueId v, int64_t T) {
  return DTypeBytes(g.value(v).dtype, Elems(g, v, T)).value_or(0);
}

// The prefill GEMM's scratch: the f16 weight chunk and the f16 activations
// (one allocation), plus the cuBLASLt workspace. ~96 MiB in all, whatever
// the model: the weight chunk bounds the rows dequantized at once (an
// output matrix of 151936 x 2048 takes 13 chunks), the activations bound the
// tokens per GEMM (more are run in token chunks).
constexpr int64_t kGemmWeightScratch = int64_t{48} << 20;
constexpr int64_t kGemmActScratch = int64_t{16} << 20;
constexpr int64_t kGemmWorkspace = int64_t{32} << 20;
// Weight chunks are whole multiples of this many rows, so that every chunk's
// output columns (and bias) start 256-byte aligned.
constexpr int64_t kGemmRowQuantum = 64;
// --verify's floor for matmuls run as GEMMs: f16 operands round each product
// by up to ~2^-10 relative (activations and, for quantized types, weights);
// over a dot product these errors are random, about 4e-4 of max |out| for
// random data (see the executor test), so 4e-3 leaves a 10x margin.
constexpr double kGemmVerifyTolerance = 4e-3;

// One kernel launch, device-to-device copy or cuBLASLt GEMM of a step.
struct Launch {
  cudaKernel_t kernel = nullptr;  // null: a copy, or a GEMM when `gemm`
  std::string name;
  dim3 grid{1, 1, 1};
  dim3 block{1, 1, 1};
  std::vector<uint64_t> args;  // each parameter in an 8-byte slot
  void* dst = nullptr;
  const void* src = nullptr;
  size_t bytes = 0;
  unsigned smem = 0;  // dynamic shared memory of a kernel
  const Graph* graph = nullptr;  // the op it belongs to, for errors
  int op_index = -1;
  // GEMM: out = a · bᵀ (+ bias), see RowMajorGemm.
  bool gemm = false;
  GemmShape gemm_shape;
  const void* gemm_a = nullptr;
  const void* gemm_b = nullptr;
  const float* gemm_bias = nullptr;
  float* gemm_out = nullptr;

  template <class T>
  Launch& Arg(T v) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "kernel argument too large");
    uint64_t slot = 0;
    std::memcpy(&slot, &v, sizeof(T));
    args.push_back(slot);
    return *this;
  }
};

unsigned GridFor(int64_t n, int threads) {
  return static_cast<unsigned>(std::clamp<int64_t>((n + threads - 1) / threads, 1, 8192));
}

}  // namespace

// Device (and, for weights, host) addresses of one graph's values.
struct Binding {
  const Graph* graph = nullptr;
  std::vector<uint8_t*> dev;
  std::vector<const uint8_t*> host;  // weights: the resolver's bytes
  std::vector<int> body_index;       // per op: index into Impl::bodies, or -1
};

struct CudaExecutor::Impl {
  Graph graph;
  CudaExecutorOptions opts;
  CudaDeviceInfo device;
  int64_t max_tokens = 1;
  cudaStream_t stream = nullptr;
  cudaLibrary_t library = nullptr;
  std::map<std::string, cudaKernel_t> kernels;
  std::string kernel_origin;
  std::string kernel_note;
  uint8_t* weights_mem = nullptr;
  int64_t weights_size = 0;
  uint8_t* kv_mem = nullptr;
  int64_t kv_size = 0;
  uint8_t* arena_mem = nullptr;
  int64_t arena_size = 0;
  bool planned = false;  // the arena follows the graph's memory plan
  int32_t* io_dev = nullptr;   // tokens at [0, max_tokens), positions after
  int32_t* io_host = nullptr;  // pinned, the same layout
  float* logits_host = nullptr;
  float* attn_part = nullptr;
  // Activations rounded to 8 bits for the q8 mat-vec (matvec_q8.cc): codes
  // [max_tokens * q8_max_k] then {d, d * sum} per 32; the last value
  // quantized is remembered so that matmuls sharing an input (q/k/v, gate/up)
  // quantize it once per step.
  int8_t* q8_codes = nullptr;
  float* q8_ds = nullptr;
  int64_t q8_max_k = 0;
  const Binding* q8_binding = nullptr;
  ValueId q8_value = -1;
  int64_t q8_T = -1;
  Binding main;
  std::deque<Binding> bodies;  // a deque: references stay valid as bodies are added
  ValueId tokens = -1, positions = -1, logits = -1;
  int64_t n_vocab = -1, n_ctx = -1;
  cudaGraph_t decode_graph = nullptr;
  cudaGraphExec_t decode_exec = nullptr;
  bool graph_unavailable = false;
  std::string graph_note;
  absl::Status pending;
  // VIBRANT_CUDA_PROFILE=1: per-kernel GPU time (direct launches, events
  // around each), printed to stderr when the executor is destroyed.
  bool profile = false;
  // Programmatic dependent launch in use (opts and an sm_90+ device).
  bool pdl = false;
  struct ProfileEntry {
    int64_t calls = 0;
    double ms = 0;
  };
  std::map<std::string, ProfileEntry> profile_by_kernel;
  std::vector<cudaEvent_t> events;
  int64_t profiled_steps = 0;
  // The prefill GEMM path (null gemm: off, gemm_note says why).
  std::unique_ptr<RowMajorGemm> gemm;
  std::string gemm_note;
  std::string gemm_lib;  // "libcublasLt.so.13, version ..."
  uint8_t* gemm_mem = nullptr;  // w16 then x16
  uint16_t* w16 = nullptr;
  uint16_t* x16 = nullptr;
  int64_t w16_bytes = 0, x16_bytes = 0;
  int64_t gemm_calls = 0;

  ~Impl();
  void PrintProfile();
  absl::Status Init(WeightResolver& weights);
  absl::Status CheckGraph();
  absl::Status LoadKernels();
  absl::Status LoadImage(const std::string& image, const std::string& what);
  absl::StatusOr<cudaKernel_t> Kernel(const std::string& name);
  // An intermediate of a fused body that needs scratch memory.
  struct BodySlot {
    Binding* binding;
    ValueId value;
    int body;   // index into bodies
    int depth;  // 1: the body of a step-graph op
  };
  absl::Status BindBody(Binding& outer, int op_index, int depth, std::vector<BodySlot>* slots);
  absl::Status Emit(Binding& b, int op_index, int64_t T, std::vector<Launch>* out);
  // Whether matmul `op` of `g` runs on 8-bit activations.
  bool UsesQ8Matvec(const Graph& g, const Op& op) const;
  // A fused op: its generated kernel, else its body's ops one by one.
  absl::Status EmitFused(Binding& b, int op_index, int64_t T, std::vector<Launch>* out);
  // Generated kernels by body (index into bodies); null: none (op by op).
  std::map<int, std::shared_ptr<const codegen::FusedKernel>> fused_kernels;
  absl::Status EmitAll(Binding& b, int64_t T, std::vector<Launch>* out);
  // One-token mat-vecs on 8-bit activations (vb_mvs_*): whether matmul `op`
  // qualifies at T = 1, and one launch for up to three such matmuls `ops` of
  // `b` that read the same input (after its vb_quantize_q8, once per input).
  bool UsesMultiMatvec(const Graph& g, const Op& op, int64_t T) const;
  absl::Status EmitMultiMatvec(Binding& b, const std::vector<int>& ops, std::vector<Launch>* out);
  absl::Status EmitQuantizeQ8(Binding& b, int op_index, int64_t T, std::vector<Launch>* out);
  void InitGemm();
  // The matmul op as f16 conversions + cuBLASLt GEMMs, when the GEMM path is
  // on and the op has enough rows; false (nothing emitted): use the kernels.
  bool EmitGemm(Binding& b, int op_index, int64_t T, std::vector<Launch>* out);
  absl::Status Enqueue(const Launch& l);
  absl::Status RunLaunches(const std::vector<Launch>& ls, int64_t T = 0);
  absl::Status CheckStep(absl::Span<const int32_t> tokens, int32_t pos0);
  void FillIo(absl::Span<const int32_t> tokens, int32_t pos0);
  absl::Status CaptureDecodeGraph();
  absl::Status VerifyOp(Binding& b, int op_index, int64_t T, cpu::ThreadPool* pool,
                        double tolerance, VerifyReport* report);
};

CudaExecutor::Impl::~Impl() {
  if (profile) PrintProfile();
  for (cudaEvent_t e : events) cudaEventDestroy(e);
  if (decode_exec != nullptr) cudaGraphExecDestroy(decode_exec);
  if (decode_graph != nullptr) cudaGraphDestroy(decode_graph);
  if (stream != nullptr) cudaStreamSynchronize(stream);
  gemm.reset();
  if (gemm_mem != nullptr) cudaFree(gemm_mem);
  if (library != nullptr) cudaLibraryUnload(library);
  if (weights_mem != nullptr) cudaFree(weights_mem);
  if (kv_mem != nullptr) cudaFree(kv_mem);
  if (arena_mem != nullptr) cudaFree(arena_mem);
  if (io_host != nullptr) cudaFreeHost(io_host);
  if (logits_host != nullptr) cudaFreeHost(logits_host);
  if (stream != nullptr) cudaStreamDestroy(stream);
}

// ---- setup -------------------------------------------------------------------

absl::Status CudaExecutor::Impl::CheckGraph() {
  const Graph& g = graph;
  if (absl::Status s = ir::Verify(g); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA backend: invalid graph: ", std::string(s.message())));
  }
  std::vector<int> producer = Producers(g);
  for (ValueId v = 0; v < static_cast<ValueId>(g.values().size()); ++v) {
    const Value& val = g.value(v);
    if (std::count(val.shape.begin(), val.shape.end(), ir::kTokens) > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("CUDA backend: ", ValueDesc(g, v), " has T more than once"));
    }
    if (val.storage == Storage::kInput) {
      if (val.name != "tokens" && val.name != "positions") {
        return absl::InvalidArgumentError(absl::StrCat(
            "CUDA backend: unknown graph input '", val.name, "' (expected tokens, positions)"));
      }
      if (val.dtype != DType::kI32 || val.shape != Shape{ir::kTokens} || producer[v] >= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("CUDA backend: input ", ValueDesc(g, v), " must be an i32[T] input"));
      }
      (val.name == "tokens" ? tokens : positions) = v;
    }
    if ((val.storage == Storage::kWeight ||
         (val.storage == Storage::kKvCache && producer[v] < 0)) &&
        std::count(val.shape.begin(), val.shape.end(), ir::kTokens) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("CUDA backend: ", ValueDesc(g, v), " must have a static shape"));
    }
  }
  absl::StatusOr<ValueId> found_logits = ir::FindLogitsOutput(g);
  if (!found_logits.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA backend: ", found_logits.status().message()));
  }
  logits = *found_logits;
  if (tokens < 0) return absl::InvalidArgumentError("CUDA backend: graph has no input 'tokens'");
  for (const Op& op : g.ops()) {
    VB_RETURN_IF_ERROR(codegen::CheckCudaSupportsOp(g, op));
    if (op.kind == OpKind::kKvStore) {
      ValueId c = op.inputs[1];
      const bool ok = g.value(c).storage == Storage::kKvCache;
      if (!ok) {
        return absl::InvalidArgumentError(absl::StrCat(
            "CUDA backend: kv_store into ", ValueDesc(g, c), ", which is not a KV cache"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CudaExecutor::Impl::LoadImage(const std::string& image, const std::string& what) {
  if (library != nullptr) {
    cudaLibraryUnload(library);
    library = nullptr;
  }
  kernels.clear();
  return CudaStatus(cudaLibraryLoadData(&library, image.data(), nullptr, nullptr, 0, nullptr,
                                        nullptr, 0),
                    absl::StrCat("CUDA backend: loading the kernels (", what, ")"));
}

absl::Status CudaExecutor::Impl::LoadKernels() {
  const std::string source = codegen::ModuleSource(codegen::KernelSetForGraph(graph));
  const uint64_t hash = codegen::HashText(source);
  if (const KernelBundle* b = opts.kernels; b != nullptr) {
    if (b->source_hash != hash) {
      kernel_note = "the plan's kernels come from another kernel source (an older or newer "
                    "Vibrant); recompiled them";
    } else {
      absl::Status s = absl::NotFoundError("no CUBIN");
      if (!b->cubin.empty() && b->arch == device.arch) s = LoadImage(b->cubin, "plan CUBIN");
      if (!s.ok() && !b->ptx.empty()) {
        // PTX JIT-compiles for newer GPUs; it needs a terminating NUL.
        std::string ptx = b->ptx;
        if (ptx.back() != '\0') ptx.push_back('\0');
        s = LoadImage(ptx, "plan PTX");
      }
      if (s.ok()) {
        kernel_origin = b->arch == device.arch ? "plan" : "plan (PTX, JIT-compiled by the driver)";
        return absl::OkStatus();
      }
      kernel_note = absl::StrCat("the plan's kernels (", b->arch, ") do not load on this ",
                                 device.arch, " GPU (", std::string(s.message()),
                                 "); recompiled them");
    }
  }
  codegen::NvrtcOptions o;
  o.arch = device.arch;
  o.cache_dir = opts.kernel_cache_dir;
  bool hit = false;
  absl::StatusOr<KernelBundle> b =
      codegen::CompileCuda(source, codegen::kModuleName, o, &hit);
  if (!b.ok()) {
    return absl::Status(b.status().code(), absl::StrCat("CUDA backend: ", b.status().message()));
  }
  VB_RETURN_IF_ERROR(LoadImage(b->cubin, absl::StrCat("CUBIN for ", device.arch)));
  kernel_origin = hit ? "kernel cache" : "NVRTC";
  return absl::OkStatus();
}

absl::StatusOr<cudaKernel_t> CudaExecutor::Impl::Kernel(const std::string& name) {
  auto it = kernels.find(name);
  if (it != kernels.end()) return it->second;
  cudaKernel_t k = nullptr;
  VB_CUDA(cudaLibraryGetKernel(&k, library, name.c_str()),
          absl::StrCat("CUDA backend: kernel ", name, " is missing from the module"));
  kernels[name] = k;
  return k;
}

absl::Status CudaExecutor::Impl::BindBody(Binding& outer, int op_index, int depth,
                                          std::vector<BodySlot>* slots) {
  const Graph& g = *outer.graph;
  const Op& op = g.ops()[op_index];
  const Graph& body = *op.body;
  if (depth > 8) return absl::InvalidArgumentError("CUDA backend: fused bodies nested too deep");
  auto err = [&](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA backend: fused op ", OpDesc(g, op_index), ": ", what));
  };
  std::vector<int> producer = Producers(body);
  std::vector<ValueId> body_inputs;
  for (ValueId v = 0; v < static_cast<ValueId>(body.values().size()); ++v) {
    if (producer[v] < 0) body_inputs.push_back(v);
  }
  if (body_inputs.size() != op.inputs.size() || body.outputs().size() != op.outputs.size()) {
    return err("the body's inputs/outputs do not match the op's");
  }
  auto same_type = [&](ValueId o, ValueId bv) {
    return g.value(o).dtype == body.value(bv).dtype && g.value(o).shape == body.value(bv).shape;
  };
  Binding nb;
  nb.graph = &body;
  nb.dev.assign(body.values().size(), nullptr);
  nb.host.assign(body.values().size(), nullptr);
  nb.body_index.assign(body.ops().size(), -1);
  for (size_t i = 0; i < body_inputs.size(); ++i) {
    if (!same_type(op.inputs[i], body_inputs[i])) return err(absl::StrCat("input ", i, " type"));
    nb.dev[body_inputs[i]] = outer.dev[op.inputs[i]];
    nb.host[body_inputs[i]] = outer.host[op.inputs[i]];
  }
  std::vector<bool> bound(body.values().size(), false);
  for (ValueId v : body_inputs) bound[v] = true;
  for (size_t i = 0; i < op.outputs.size(); ++i) {
    const ValueId bo = body.outputs()[i];
    if (!same_type(op.outputs[i], bo)) return err(absl::StrCat("output ", i, " type"));
    if (producer[bo] < 0) return err("a body output is a body input");
    if (bound[bo]) return err("a body value is output twice");
    nb.dev[bo] = outer.dev[op.outputs[i]];  // may still be null: fixed up after allocation
    bound[bo] = true;
  }
  const int index = static_cast<int>(bodies.size());
  outer.body_index[op_index] = index;
  bodies.push_back(std::move(nb));
  Binding& self = bodies.back();
  for (ValueId v = 0; v < static_cast<ValueId>(body.values().size()); ++v) {
    if (bound[v]) continue;
    const OpKind k = body.ops()[producer[v]].kind;
    if (k == OpKind::kReshape) continue;  // a view, resolved below
    if (k == OpKind::kKvStore || k == OpKind::kAttention || k == OpKind::kEmbedding ||
        k == OpKind::kMatMul) {
      return err(absl::StrCat("op ", std::string(ir::OpName(k)), " in a fused body"));
    }
    slots->push_back({&self, v, index, depth});
  }
  for (size_t i = 0; i < body.ops().size(); ++i) {
    if (body.ops()[i].kind == OpKind::kFused) {
      VB_RETURN_IF_ERROR(BindBody(self, static_cast<int>(i), depth + 1, slots));
    }
  }
  return absl::OkStatus();
}

absl::Status CudaExecutor::Impl::Init(WeightResolver& weights) {
  const Graph& g = graph;
  max_tokens = g.max_tokens;
  if (max_tokens < 1) return absl::InvalidArgumentError("CUDA backend: max_tokens < 1");
  VB_RETURN_IF_ERROR(CheckGraph());

  absl::StatusOr<CudaDeviceInfo> dev = QueryCudaDevice(opts.device);
  if (!dev.ok()) return dev.status();
  device = *dev;
  VB_CUDA(cudaSetDevice(device.index), "CUDA backend: cudaSetDevice");
  VB_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
          "CUDA backend: creating a stream");
  VB_RETURN_IF_ERROR(LoadKernels());

  const size_t nv = g.values().size();
  std::vector<int> producer = Producers(g);
  main.graph = &g;
  main.dev.assign(nv, nullptr);
  main.host.assign(nv, nullptr);
  main.body_index.assign(g.ops().size(), -1);

  // Weights (one slot per GGUF tensor) and KV caches.
  std::map<std::string, int64_t> weight_offset;
  std::vector<std::pair<absl::Span<const uint8_t>, int64_t>> uploads;
  std::vector<int64_t> weight_at(nv, -1), kv_at(nv, -1);
  for (ValueId v = 0; v < static_cast<ValueId>(nv); ++v) {
    const Value& val = g.value(v);
    if (producer[v] >= 0) continue;
    if (val.storage != Storage::kWeight && val.storage != Storage::kKvCache) continue;
    absl::StatusOr<int64_t> nb = DTypeBytes(val.dtype, ir::NumElements(val.shape, 1));
    if (!nb.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("CUDA backend: ", ValueDesc(g, v), ": ",
                                                     std::string(nb.status().message())));
    }
    if (val.storage == Storage::kKvCache) {
      kv_at[v] = kv_size;
      kv_size += AlignUp(std::max<int64_t>(*nb, 1));
      const int64_t rows = val.shape.empty() ? 0 : val.shape[0];
      n_ctx = n_ctx < 0 ? rows : std::min(n_ctx, rows);
      continue;
    }
    absl::StatusOr<absl::Span<const uint8_t>> data = weights(val.source);
    if (!data.ok()) {
      return absl::Status(data.status().code(),
                          absl::StrCat("CUDA backend: weight '", val.name, "' (source '",
                                       val.source, "'): ", std::string(data.status().message())));
    }
    if (static_cast<int64_t>(data->size()) != *nb || (*nb > 0 && data->data() == nullptr)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CUDA backend: weight ", ValueDesc(g, v), " (source '", val.source, "') needs ", *nb,
          " bytes, the resolver gave ", data->size()));
    }
    main.host[v] = data->data();
    auto it = weight_offset.find(val.source);
    if (it == weight_offset.end()) {
      it = weight_offset.emplace(val.source, weights_size).first;
      uploads.push_back({*data, weights_size});
      weights_size += AlignUp(std::max<int64_t>(*nb, 1));
    }
    weight_at[v] = it->second;
  }

  // Arena slots: the step inputs, activations, fused-body intermediates and
  // attention partials.
  // With a memory plan for the cuda device (passes/plan_memory.h), its
  // values sit at their planned offsets at the start of the arena; values
  // without one (no plan, or planned for the host: the logits the device pass
  // copies back) get a slot each after it. The step inputs always live in a
  // block of their own that one host-to-device copy fills (their planned
  // host slots stay unused).
  std::vector<std::pair<Binding*, ValueId>> slots;
  std::vector<int64_t> planned_at(nv, -1);
  planned = g.memory.count(ir::Device::kCuda) == 1;
  const int64_t planned_bytes = planned ? AlignUp(g.memory.at(ir::Device::kCuda).arena_bytes) : 0;
  for (ValueId v = 0; v < static_cast<ValueId>(nv); ++v) {
    const Value& val = g.value(v);
    if (val.storage == Storage::kInput || val.storage == Storage::kWeight) continue;
    if (producer[v] < 0) continue;  // KV cache declarations
    const OpKind k = g.ops()[producer[v]].kind;
    if (k == OpKind::kReshape || k == OpKind::kKvStore) continue;  // views
    if (!planned || val.device != ir::Device::kCuda) {
      slots.push_back({&main, v});
      continue;
    }
    const int64_t nb = Bytes(g, v, max_tokens);
    if (val.arena_offset < 0 || val.arena_offset % kAlign != 0 ||
        val.arena_offset > planned_bytes - nb) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CUDA backend: the memory plan puts ", ValueDesc(g, v), " (", nb, " bytes) at offset ",
          val.arena_offset, ", outside the planned arena of ", planned_bytes, " bytes"));
    }
    planned_at[v] = val.arena_offset;
  }
  std::vector<BodySlot> body_slots;
  for (size_t i = 0; i < g.ops().size(); ++i) {
    if (g.ops()[i].kind == OpKind::kFused) {
      VB_RETURN_IF_ERROR(BindBody(main, static_cast<int>(i), 1, &body_slots));
    }
  }
  int64_t attn_part_bytes = 0;
  for (const Op& op : g.ops()) {
    if (op.kind != OpKind::kAttention) continue;
    const Shape& qs = g.value(op.inputs[0]).shape;
    const Shape& ks = g.value(op.inputs[1]).shape;
    const int64_t n_split = (ks[0] + codegen::kAttnChunk - 1) / codegen::kAttnChunk;
    const int64_t n_split1 = (ks[0] + codegen::kAttnDecodeChunk - 1) / codegen::kAttnDecodeChunk;
    const int64_t rows = Elems(g, op.inputs[0], max_tokens) / (qs[1] * qs[2]);
    attn_part_bytes = std::max(
        attn_part_bytes, std::max(rows * n_split, n_split1) * qs[1] * (qs[2] + 2) * int64_t{4});
  }
  for (const Op& op : g.ops()) {
    if (op.kind == OpKind::kMatMul && UsesQ8Matvec(g, op)) {
      q8_max_k = std::max(q8_max_k, g.value(op.inputs[1]).shape[1]);
    }
  }
  const int64_t q8_codes_bytes = AlignUp(max_tokens * q8_max_k);
  const int64_t q8_bytes = q8_codes_bytes + AlignUp(max_tokens * (q8_max_k / 32) * 8);
  const int64_t io_bytes = AlignUp(2 * max_tokens * int64_t{4});
  std::vector<int64_t> slot_at(slots.size(), -1);
  const int64_t io_at = planned_bytes;
  arena_size = planned_bytes + io_bytes + AlignUp(attn_part_bytes) + q8_bytes;
  for (size_t i = 0; i < slots.size(); ++i) {
    auto [b, v] = slots[i];
    const Value& val = b->graph->value(v);
    absl::StatusOr<int64_t> nb = DTypeBytes(val.dtype, ir::NumElements(val.shape, max_tokens));
    if (!nb.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("CUDA backend: ", ValueDesc(*b->graph, v), ": ",
                       std::string(nb.status().message())));
    }
    slot_at[i] = arena_size;
    arena_size += AlignUp(std::max<int64_t>(*nb, 1));
  }
  // Fused bodies run one after another and their intermediates die inside
  // them, so the bodies of step-graph ops share one scratch region, each
  // laying out its intermediates from its start (nested bodies, which the IR
  // does not form today, get space of their own after it).
  std::vector<int64_t> body_slot_at(body_slots.size(), -1);
  {
    const int64_t base = arena_size;
    int64_t shared = 0;
    std::map<int, int64_t> cursor;
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t i = 0; i < body_slots.size(); ++i) {
        const BodySlot& bs = body_slots[i];
        if ((bs.depth == 1) != (pass == 0)) continue;
        const int64_t nb = AlignUp(std::max<int64_t>(Bytes(*bs.binding->graph, bs.value, max_tokens), 1));
        if (pass == 0) {
          body_slot_at[i] = base + cursor[bs.body];
          cursor[bs.body] += nb;
          shared = std::max(shared, cursor[bs.body]);
        } else {
          body_slot_at[i] = arena_size;
          arena_size += nb;
        }
      }
      if (pass == 0) arena_size = base + shared;
    }
  }

  // Allocate and upload.
  auto alloc = [&](uint8_t** p, int64_t bytes, const char* what) -> absl::Status {
    if (bytes == 0) return absl::OkStatus();
    cudaError_t e = cudaMalloc(reinterpret_cast<void**>(p), static_cast<size_t>(bytes));
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free allocation error
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      return absl::ResourceExhaustedError(absl::StrCat(
          "CUDA backend: out of GPU memory allocating ", HumanBytes(bytes), " for the ", what,
          " (", HumanBytes(static_cast<int64_t>(free_b)), " free of ",
          HumanBytes(static_cast<int64_t>(total_b)), " on ", device.name, "): ",
          cudaGetErrorString(e)));
    }
    return absl::OkStatus();
  };
  VB_RETURN_IF_ERROR(alloc(&weights_mem, weights_size, "weights"));
  VB_RETURN_IF_ERROR(alloc(&kv_mem, kv_size, "KV cache"));
  VB_RETURN_IF_ERROR(alloc(&arena_mem, arena_size, "activations"));
  for (const auto& [data, off] : uploads) {
    VB_CUDA(cudaMemcpy(weights_mem + off, data.data(), data.size(), cudaMemcpyHostToDevice),
            "CUDA backend: uploading the weights");
  }
  if (kv_size > 0) VB_CUDA(cudaMemset(kv_mem, 0, kv_size), "CUDA backend: clearing the KV cache");
  VB_CUDA(cudaMemset(arena_mem, 0, arena_size), "CUDA backend: clearing the arena");
  VB_CUDA(cudaMallocHost(reinterpret_cast<void**>(&io_host), 2 * max_tokens * sizeof(int32_t)),
          "CUDA backend: pinned host memory for the inputs");
  std::memset(io_host, 0, 2 * max_tokens * sizeof(int32_t));
  VB_CUDA(cudaMallocHost(reinterpret_cast<void**>(&logits_host),
                         std::max<int64_t>(Bytes(g, logits, max_tokens), 4)),
          "CUDA backend: pinned host memory for the logits");

  // Bind.
  io_dev = reinterpret_cast<int32_t*>(arena_mem + io_at);
  attn_part = reinterpret_cast<float*>(arena_mem + io_at + io_bytes);
  if (q8_max_k > 0) {
    uint8_t* q8 = arena_mem + io_at + io_bytes + AlignUp(attn_part_bytes);
    q8_codes = reinterpret_cast<int8_t*>(q8);
    q8_ds = reinterpret_cast<float*>(q8 + q8_codes_bytes);
  }
  main.dev[tokens] = reinterpret_cast<uint8_t*>(io_dev);
  if (positions >= 0) main.dev[positions] = reinterpret_cast<uint8_t*>(io_dev + max_tokens);
  for (ValueId v = 0; v < static_cast<ValueId>(nv); ++v) {
    if (weight_at[v] >= 0) main.dev[v] = weights_mem + weight_at[v];
    if (kv_at[v] >= 0) main.dev[v] = kv_mem + kv_at[v];
    if (planned_at[v] >= 0) main.dev[v] = arena_mem + planned_at[v];
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slot_at[i] >= 0) slots[i].first->dev[slots[i].second] = arena_mem + slot_at[i];
  }
  for (size_t i = 0; i < body_slots.size(); ++i) {
    body_slots[i].binding->dev[body_slots[i].value] = arena_mem + body_slot_at[i];
  }
  for (size_t i = 0; i < g.ops().size(); ++i) {  // views, in op order so chains resolve
    const Op& op = g.ops()[i];
    if (op.kind == OpKind::kReshape) main.dev[op.outputs[0]] = main.dev[op.inputs[0]];
    if (op.kind == OpKind::kKvStore) main.dev[op.outputs[0]] = main.dev[op.inputs[1]];
    // Host <-> device copies the device pass inserted: here everything is in
    // VRAM, so a copy of a step input (never written during a step) and the
    // step's last op copying out the logits become views (no copy runs).
    if (op.kind == OpKind::kCopy &&
        (g.value(op.inputs[0]).storage == Storage::kInput ||
         (op.outputs[0] == logits && i + 1 == g.ops().size()))) {
      main.dev[op.outputs[0]] = main.dev[op.inputs[0]];
    }
  }
  // Body bindings, outermost first (a deque keeps creation order: a body is
  // always created after the binding that contains it).
  std::vector<Binding*> outer_of(bodies.size(), nullptr);
  std::vector<int> op_of(bodies.size(), -1);
  auto note_parents = [&](Binding& b) {
    for (size_t i = 0; i < b.body_index.size(); ++i) {
      if (b.body_index[i] >= 0) {
        outer_of[b.body_index[i]] = &b;
        op_of[b.body_index[i]] = static_cast<int>(i);
      }
    }
  };
  note_parents(main);
  for (Binding& b : bodies) note_parents(b);
  for (size_t bi = 0; bi < bodies.size(); ++bi) {
    Binding& b = bodies[bi];
    const Op& op = outer_of[bi]->graph->ops()[op_of[bi]];
    std::vector<int> bprod = Producers(*b.graph);
    ValueId in_i = 0;
    for (ValueId v = 0; v < static_cast<ValueId>(b.graph->values().size()); ++v) {
      if (bprod[v] < 0) {
        b.dev[v] = outer_of[bi]->dev[op.inputs[in_i]];
        b.host[v] = outer_of[bi]->host[op.inputs[in_i]];
        ++in_i;
      }
    }
    for (size_t i = 0; i < op.outputs.size(); ++i) {
      b.dev[b.graph->outputs()[i]] = outer_of[bi]->dev[op.outputs[i]];
    }
    for (const Op& bop : b.graph->ops()) {
      if (bop.kind == OpKind::kReshape && b.dev[bop.outputs[0]] == nullptr) {
        b.dev[bop.outputs[0]] = b.dev[bop.inputs[0]];
      }
    }
  }
  // The vocabulary bound for token ids.
  for (const Op& op : g.ops()) {
    if (op.kind == OpKind::kEmbedding && op.inputs[1] == tokens) {
      const int64_t rows = g.value(op.inputs[0]).shape[0];
      n_vocab = n_vocab < 0 ? rows : std::min(n_vocab, rows);
    }
  }
  if (const char* p = std::getenv("VIBRANT_CUDA_PROFILE"); p != nullptr && std::string(p) == "1") {
    profile = true;
  }
  if (opts.sync_each_op || profile) opts.cuda_graphs = false;
  {
    int sm = 0;
    pdl = opts.programmatic_launch && std::sscanf(device.arch.c_str(), "sm_%d", &sm) == 1 &&
          sm >= 90;
  }
  InitGemm();
  return absl::OkStatus();
}

void CudaExecutor::Impl::InitGemm() {
  const Graph& g = graph;
  if (opts.gemm_min_rows <= 0) {
    gemm_note = "off (gemm_min_rows 0)";
    return;
  }
  if (max_tokens < std::max(opts.gemm_min_rows, 2)) {
    gemm_note = absl::StrCat("off (max_tokens ", max_tokens, " < ", opts.gemm_min_rows, ")");
    return;
  }
  // Sizes: every matmul of the step graph (fused bodies hold none).
  int64_t w_need = 0, w_min = 0, x_need = 0, x_min = 0;
  for (const Op& op : g.ops()) {
    if (op.kind != OpKind::kMatMul) continue;
    const Value& w = g.value(op.inputs[1]);
    const int64_t N = w.shape[0], K = w.shape[1];
    const int64_t rows = Elems(g, op.inputs[0], max_tokens) / std::max<int64_t>(K, 1);
    const int64_t n_pad = (N + kGemmRowQuantum - 1) / kGemmRowQuantum * kGemmRowQuantum;
    w_need = std::max(w_need, n_pad * K * 2);
    w_min = std::max(w_min, kGemmRowQuantum * K * 2);
    x_need = std::max(x_need, rows * K * 2);
    x_min = std::max(x_min, K * 2);
  }
  if (w_need == 0) {
    gemm_note = "off (no matmul)";
    return;
  }
  absl::StatusOr<std::shared_ptr<const CublasLtLib>> lib =
      opts.cublaslt_names.empty() ? LoadCublasLt() : LoadCublasLt(opts.cublaslt_names);
  if (!lib.ok()) {
    gemm_note = absl::StrCat("off: ", std::string(lib.status().message()));
    return;
  }
  const int64_t w_cap =
      opts.gemm_weight_scratch_bytes > 0 ? opts.gemm_weight_scratch_bytes : kGemmWeightScratch;
  const int64_t x_cap =
      opts.gemm_act_scratch_bytes > 0 ? opts.gemm_act_scratch_bytes : kGemmActScratch;
  w16_bytes = AlignUp(std::max(std::min(w_need, w_cap), w_min));
  x16_bytes = AlignUp(std::max(std::min(x_need, x_cap), x_min));
  cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&gemm_mem),
                             static_cast<size_t>(w16_bytes + x16_bytes));
  if (e != cudaSuccess) {
    cudaGetLastError();
    gemm_mem = nullptr;
    gemm_note = absl::StrCat("off: no VRAM for its ", HumanBytes(w16_bytes + x16_bytes),
                             " of scratch (", cudaGetErrorString(e), ")");
    w16_bytes = x16_bytes = 0;
    return;
  }
  absl::StatusOr<std::unique_ptr<RowMajorGemm>> gm = RowMajorGemm::Create(*lib, kGemmWorkspace);
  if (!gm.ok()) {
    cudaFree(gemm_mem);
    gemm_mem = nullptr;
    w16_bytes = x16_bytes = 0;
    gemm_note = absl::StrCat("off: ", std::string(gm.status().message()));
    return;
  }
  gemm = *std::move(gm);
  w16 = reinterpret_cast<uint16_t*>(gemm_mem);
  x16 = reinterpret_cast<uint16_t*>(gemm_mem + w16_bytes);
  gemm_lib = CublasLtDescribe(**lib);
}

// ---- launches -------------------------------------------------------------------

absl::Status CudaExecutor::Impl::Emit(Binding& b, int op_index, int64_t T,
                                      std::vector<Launch>* out) {
  const Graph& g = *b.graph;
  const Op& op = g.ops()[op_index];
  auto D = [&](ValueId v) { return static_cast<void*>(b.dev[v]); };
  auto E = [&](ValueId v) { return Elems(g, v, T); };
  auto kernel = [&](const std::string& name, dim3 grid, dim3 block) -> absl::StatusOr<Launch> {
    absl::StatusOr<cudaKernel_t> k = Kernel(name);
    if (!k.ok()) return k.status();
    Launch l;
    l.kernel = *k;
    l.name = name;
    l.grid = grid;
    l.block = block;
    l.graph = &g;
    l.op_index = op_index;
    return l;
  };
  auto copy = [&](void* dst, const void* src, int64_t bytes) {
    if (bytes <= 0 || dst == src) return;
    Launch l;
    l.name = "copy";
    l.dst = dst;
    l.src = src;
    l.bytes = static_cast<size_t>(bytes);
    l.graph = &g;
    l.op_index = op_index;
    out->push_back(std::move(l));
  };
  auto too_big = [&](int64_t n, int64_t limit, const char* what) -> absl::Status {
    if (n > limit) {
      return absl::InvalidArgumentError(absl::StrCat("CUDA backend: op ", OpDesc(g, op_index),
                                                     ": ", what, " ", n, " exceeds ", limit));
    }
    return absl::OkStatus();
  };
  const ValueId o = op.outputs.empty() ? -1 : op.outputs[0];
  switch (op.kind) {
    case OpKind::kEmbedding: {
      const Value& table = g.value(op.inputs[0]);
      const int64_t V = table.shape[0], dim = table.shape[1];
      const int64_t rows = E(op.inputs[1]);
      if (rows == 0) return absl::OkStatus();
      VB_RETURN_IF_ERROR(too_big(rows, INT32_MAX, "rows"));
      absl::StatusOr<Launch> l = kernel(codegen::EmbeddingKernelName(table.dtype),
                                        dim3(static_cast<unsigned>(rows)),
                                        dim3(codegen::kEmbedThreads));
      if (!l.ok()) return l.status();
      l->Arg(D(op.inputs[0]))
          .Arg(static_cast<int64_t>(DTypeBytes(table.dtype, dim).value_or(0)))
          .Arg(D(op.inputs[1]))
          .Arg(D(o))
          .Arg(static_cast<int>(dim))
          .Arg(static_cast<int>(V));
      out->push_back(*std::move(l));
      return absl::OkStatus();
    }
    case OpKind::kMatMul: {
      if (gemm != nullptr && EmitGemm(b, op_index, T, out)) return absl::OkStatus();
      const Value& w = g.value(op.inputs[1]);
      const int64_t N = w.shape[0], K = w.shape[1];
      const int64_t rows = E(op.inputs[0]) / K;
      if (rows == 0) return absl::OkStatus();
      if (UsesMultiMatvec(g, op, T)) return EmitMultiMatvec(b, {op_index}, out);
      if (UsesQ8Matvec(g, op)) {
        const int tt = rows == 1 ? 1 : 8;
        const int64_t gy = (rows + tt - 1) / tt;
        const int64_t rows_per_block = codegen::kMatvecQ8Threads / 32;
        VB_RETURN_IF_ERROR(too_big(gy, 65535, "token blocks"));
        VB_RETURN_IF_ERROR(too_big(N, INT32_MAX / 2, "rows"));
        VB_RETURN_IF_ERROR(EmitQuantizeQ8(b, op_index, T, out));
        absl::StatusOr<Launch> l = kernel(
            codegen::MatvecQ8KernelName(w.dtype, tt),
            dim3(static_cast<unsigned>((N + rows_per_block - 1) / rows_per_block),
                 static_cast<unsigned>(gy)),
            dim3(codegen::kMatvecQ8Threads));
        if (!l.ok()) return l.status();
        l->Arg(D(op.inputs[1]))
            .Arg(static_cast<int64_t>(DTypeBytes(w.dtype, K).value_or(0)))
            .Arg(static_cast<void*>(q8_codes))
            .Arg(static_cast<void*>(q8_ds))
            .Arg(op.inputs.size() == 3 ? D(op.inputs[2]) : static_cast<void*>(nullptr))
            .Arg(D(o))
            .Arg(static_cast<int>(K))
            .Arg(static_cast<int>(N))
            .Arg(static_cast<int>(rows));
        out->push_back(*std::move(l));
        return absl::OkStatus();
      }
      const int tt = rows == 1 ? 1 : 8;
      const int wpr = codegen::MatmulWarpsPerRow(N, K, device.sm_count);
      const int64_t rows_per_block = codegen::kMatmulThreads / 32 / wpr;
      const int64_t gy = (rows + tt - 1) / tt;
      VB_RETURN_IF_ERROR(too_big(gy, 65535, "token blocks"));
      absl::StatusOr<Launch> l = kernel(
          codegen::MatmulKernelName(w.dtype, tt),
          dim3(static_cast<unsigned>((N + rows_per_block - 1) / rows_per_block),
               static_cast<unsigned>(gy)),
          dim3(codegen::kMatmulThreads));
      if (!l.ok()) return l.status();
      l->Arg(D(op.inputs[1]))
          .Arg(static_cast<int64_t>(DTypeBytes(w.dtype, K).value_or(0)))
          .Arg(D(op.inputs[0]))
          .Arg(op.inputs.size() == 3 ? D(op.inputs[2]) : static_cast<void*>(nullptr))
          .Arg(D(o))
          .Arg(static_cast<int>(K))
          .Arg(static_cast<int>(N))
          .Arg(static_cast<int>(rows))
          .Arg(wpr);
      out->push_back(*std::move(l));
      return absl::OkStatus();
    }
    case OpKind::kRmsNorm: {
      const int64_t dim = g.value(op.inputs[0]).shape.back();
      const int64_t rows = E(op.inputs[0]) / dim;
      if (rows == 0) return absl::OkStatus();
      absl::StatusOr<Launch> l = kernel("vb_rms_norm", dim3(static_cast<unsigned>(rows)),
                                        dim3(codegen::kNormThreads));
      if (!l.ok()) return l.status();
      l->Arg(D(op.inputs[0]))
          .Arg(D(o))
          .Arg(static_cast<int>(dim))
          .Arg(static_cast<float>(NumberAttr(op, "eps", 0)));
      out->push_back(*std::move(l));
      return absl::OkStatus();
    }
    case OpKind::kAdd:
    case OpKind::kMul: {
      const int64_t n = E(op.inputs[0]), nb = E(op.inputs[1]);
      if (n == 0) return absl::OkStatus();
      absl::StatusOr<Launch> l =
          kernel(op.kind == OpKind::kAdd ? "vb_add" : "vb_mul",
                 dim3(GridFor(n, codegen::kElementwiseThreads)), dim3(codegen::kElementwiseThreads));
      if (!l.ok()) return l.status();
      l->Arg(D(op.inputs[0])).Arg(D(op.inputs[1])).Arg(D(o)).Arg(n).Arg(nb);
      out->push_back(*std::move(l));
      return absl::OkStatus();
    }
    case OpKind::kSilu: {
      const int64_t n = E(op.inputs[0]);
      if (n == 0) return absl::OkStatus();
      absl::StatusOr<Launch> l = kernel("vb_silu", dim3(GridFor(n, codegen::kElementwiseThreads)),
                                        dim3(codegen::kElementwiseThreads));
      if (!l.ok()) return l.status();
      l->Arg(D(op.inputs[0])).Arg(D(o)).Arg(n);
      out->push_back(*std::move(l));
      return absl::OkStatus();
    }
    case OpKind::kReshape:
    case OpKind::kCopy:
      copy(D(o), D(op.inputs[0]), Bytes(g, o, T));
      return absl::OkStatus();
    case OpKind::kRope: {
      const Shape& s = g.value(op.inputs[0]).shape;
      const int64_t H = s[1], hd = s[2];
      const int64_t rows = E(op.inputs[0]) / (H * hd);
      if (rows == 0) return absl::OkStatus();
      const int mode = static_cast<int>(NumberAttr(op, "mode", 0));
      const int64_t n_rot = static_cast<int64_t>(NumberAttr(op, "n_rot", 0));
      if ((mode != 0 && mode != 2) || n_rot <= 0 || n_rot % 2 != 0 || n_rot > hd) {
        return absl::InvalidArgumentError(absl::StrCat(
            "CUDA backend: op ", OpDesc(g, op_index), ": unsupported rope mode ", mode,
            " / n_rot ", n_rot));
      }
      // Exactly the CPU reference's expression (runtime/cpu/kernels.cc, Rope).
      const float freq_base = static_cast<float>(NumberAttr(op, "freq_base", 10000.0));
      const float theta_scale = powf(freq_base, -2.0f / static_cast<float>(n_rot));
      VB_RETURN_IF_ERROR(too_big(rows * H, INT32_MAX, "rows"));
      absl::StatusOr<Launch> l = kernel("vb_rope", dim3(static_cast<unsigned>(rows * H)),
                                        dim3(codegen::kRopeThreads));
      if (!l.ok()) return l.status();
      l->Arg(D(op.inputs[0]))
          .Arg(D(op.inputs[1]))
          .Arg(op.inputs.size() == 3 ? D(op.inputs[2]) : static_cast<void*>(nullptr))
          .Arg(D(o))
          .Arg(static_cast<int>(H))
          .Arg(static_cast<int>(hd))
          .Arg(static_cast<int>(n_rot))
          .Arg(mode)
          .Arg(theta_scale)
          .Arg(static_cast<float>(NumberAttr(op, "freq_scale", 1.0)));
      out->push_back(*std::move(l));
      return absl::OkStatus();
    }
    case OpKind::kKvStore: {
      const Value& c = g.value(op.inputs[1]);
      const int64_t row = c.shape[1] * c.shape[2];
      const int64_t rows = E(op.inputs[0]) / row;
      if (rows == 0) return absl::OkStatus();
      absl::StatusOr<Launch> l =
          kernel(c.dtype == DType::kF16 ? "vb_kv_store_f16" : "vb_kv_store_f32",
                 dim3(GridFor(rows * row, codegen::kKvStoreThreads)), dim3(codegen::kKvStoreThreads));
      if (!l.ok()) return l.status();
      l->Arg(D(op.inputs[0]))
          .Arg(D(op.inputs[2]))
          .Arg(D(op.inputs[1]))
          .Arg(rows)
          .Arg(static_cast<int>(row))
          .Arg(static_cast<int>(c.shape[0]));
      out->push_back(*std::move(l));
      return absl::OkStatus();
    }
    case OpKind::kAttention: {
      const Shape& qs = g.value(op.inputs[0]).shape;
      const Value& k = g.value(op.inputs[1]);
      const int64_t H = qs[1], hd = qs[2], KVH = k.shape[1], C = k.shape[0];
      const int64_t rows = E(op.inputs[0]) / (H * hd);
      if (rows == 0) return absl::OkStatus();
      const int64_t chunk = rows == 1 ? codegen::kAttnDecodeChunk : codegen::kAttnChunk;
      const int64_t n_split = (C + chunk - 1) / chunk;
      VB_RETURN_IF_ERROR(too_big(n_split, 65535, "context splits"));
      VB_RETURN_IF_ERROR(too_big(rows * H, INT32_MAX, "rows"));
      absl::StatusOr<Launch> split =
          kernel(k.dtype == DType::kF16 ? "vb_attn_split_f16" : "vb_attn_split_f32",
                 dim3(static_cast<unsigned>(rows * H), static_cast<unsigned>(n_split)),
                 dim3(codegen::kAttnThreads));
      if (!split.ok()) return split.status();
      split->Arg(D(op.inputs[0]))
          .Arg(D(op.inputs[1]))
          .Arg(D(op.inputs[2]))
          .Arg(D(op.inputs[3]))
          .Arg(static_cast<void*>(attn_part))
          .Arg(static_cast<int>(H))
          .Arg(static_cast<int>(KVH))
          .Arg(static_cast<int>(hd))
          .Arg(static_cast<int>(C))
          .Arg(static_cast<float>(NumberAttr(op, "scale", 1.0)))
          .Arg(static_cast<int>(n_split))
          .Arg(static_cast<int>(chunk));
      out->push_back(*std::move(split));
      absl::StatusOr<Launch> combine = kernel(
          "vb_attn_combine", dim3(static_cast<unsigned>(rows * H)), dim3(codegen::kAttnThreads));
      if (!combine.ok()) return combine.status();
      combine->Arg(static_cast<void*>(attn_part))
          .Arg(D(o))
          .Arg(static_cast<int>(hd))
          .Arg(static_cast<int>(n_split));
      out->push_back(*std::move(combine));
      return absl::OkStatus();
    }
    case OpKind::kLastRow: {
      const int64_t dim = g.value(op.inputs[0]).shape.back();
      const int64_t rows = E(op.inputs[0]) / dim;
      if (rows == 0) return absl::OkStatus();
      copy(D(o), b.dev[op.inputs[0]] + (rows - 1) * dim * 4, dim * 4);
      return absl::OkStatus();
    }
    case OpKind::kFused:
      return EmitFused(b, op_index, T, out);
  }
  return absl::InternalError("CUDA backend: unknown op kind");
}

bool CudaExecutor::Impl::UsesQ8Matvec(const Graph& g, const Op& op) const {
  if (!opts.int8_activations || op.kind != OpKind::kMatMul || op.inputs.size() < 2) return false;
  const Value& w = g.value(op.inputs[1]);
  return codegen::MatvecQ8Supports(w.dtype) && w.shape.size() == 2 && w.shape[1] % 32 == 0 &&
         g.value(op.inputs[0]).dtype == DType::kF32;
}

absl::Status CudaExecutor::Impl::EmitFused(Binding& b, int op_index, int64_t T,
                                           std::vector<Launch>* out) {
  const Graph& g = *b.graph;
  const Op& op = g.ops()[op_index];
  const int body = b.body_index[op_index];
  auto it = fused_kernels.find(body);
  if (it == fused_kernels.end()) {
    // Generated once per op; a body the generator does not handle (or
    // fused_kernels off) keeps the op-by-op path, silently.
    std::shared_ptr<const codegen::FusedKernel> k;
    if (opts.fused_kernels) {
      absl::StatusOr<codegen::FusedKernel> gen = codegen::GenerateFused(g, op);
      if (gen.ok()) k = std::make_shared<const codegen::FusedKernel>(*std::move(gen));
    }
    it = fused_kernels.emplace(body, std::move(k)).first;
  }
  if (it->second == nullptr) return EmitAll(bodies[body], T, out);
  const codegen::FusedKernel& fk = *it->second;
  const int64_t rows = Elems(g, op.outputs[0], T) / fk.row_elems;
  if (rows == 0) return absl::OkStatus();
  int64_t blocks = 0;
  switch (fk.shape) {
    case codegen::FusedKernel::Shape::kElementwise:
      blocks = GridFor(rows * fk.row_elems, fk.threads);
      break;
    case codegen::FusedKernel::Shape::kRowReduce:
      blocks = rows;
      break;
    case codegen::FusedKernel::Shape::kRope:
      blocks = rows * fk.heads;
      break;
  }
  if (blocks > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA backend: op ", OpDesc(g, op_index),
                                                   ": ", blocks, " blocks exceed ", INT32_MAX));
  }
  absl::StatusOr<cudaKernel_t> k = Kernel(fk.name);
  if (!k.ok()) return k.status();
  Launch l;
  l.kernel = *k;
  l.name = fk.name;
  l.grid = dim3(static_cast<unsigned>(blocks));
  l.block = dim3(static_cast<unsigned>(fk.threads));
  l.graph = &g;
  l.op_index = op_index;
  for (ValueId v : op.inputs) l.Arg(static_cast<void*>(b.dev[v]));
  for (ValueId v : op.outputs) l.Arg(static_cast<void*>(b.dev[v]));
  l.Arg(rows);
  out->push_back(std::move(l));
  return absl::OkStatus();
}

bool CudaExecutor::Impl::UsesMultiMatvec(const Graph& g, const Op& op, int64_t T) const {
  return UsesQ8Matvec(g, op) && Elems(g, op.inputs[0], T) == g.value(op.inputs[1]).shape[1];
}

absl::Status CudaExecutor::Impl::EmitMultiMatvec(Binding& b, const std::vector<int>& ops,
                                                 std::vector<Launch>* out) {
  const Graph& g = *b.graph;
  const Op& first = g.ops()[ops[0]];
  const Value& w = g.value(first.inputs[1]);
  const int64_t K = w.shape[1];
  int64_t rows = 0;
  for (int i : ops) rows += g.value(g.ops()[i].inputs[1]).shape[0];
  if (rows > INT32_MAX / 2) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA backend: op ", OpDesc(g, ops[0]), ": ",
                                                   rows, " rows exceed ", INT32_MAX / 2));
  }
  VB_RETURN_IF_ERROR(EmitQuantizeQ8(b, ops[0], 1, out));
  const int64_t per_block = codegen::kMatvecQ8Threads / 32;
  absl::StatusOr<cudaKernel_t> k = Kernel(codegen::MatvecQ8MultiKernelName(w.dtype));
  if (!k.ok()) return k.status();
  Launch l;
  l.kernel = *k;
  l.name = codegen::MatvecQ8MultiKernelName(w.dtype);
  l.grid = dim3(static_cast<unsigned>((rows + per_block - 1) / per_block));
  l.block = dim3(codegen::kMatvecQ8Threads);
  l.graph = &g;
  l.op_index = ops[0];
  l.Arg(static_cast<void*>(q8_codes))
      .Arg(static_cast<void*>(q8_ds))
      .Arg(static_cast<int>(K))
      .Arg(static_cast<int64_t>(DTypeBytes(w.dtype, K).value_or(0)));
  for (size_t s = 0; s < 3; ++s) {
    if (s < ops.size()) {
      const Op& op = g.ops()[ops[s]];
      l.Arg(static_cast<void*>(b.dev[op.inputs[1]]))
          .Arg(op.inputs.size() == 3 ? static_cast<void*>(b.dev[op.inputs[2]])
                                     : static_cast<void*>(nullptr))
          .Arg(static_cast<void*>(b.dev[op.outputs[0]]))
          .Arg(static_cast<int>(g.value(op.inputs[1]).shape[0]));
    } else {
      l.Arg(static_cast<void*>(nullptr))
          .Arg(static_cast<void*>(nullptr))
          .Arg(static_cast<void*>(nullptr))
          .Arg(0);
    }
  }
  out->push_back(std::move(l));
  return absl::OkStatus();
}

absl::Status CudaExecutor::Impl::EmitQuantizeQ8(Binding& b, int op_index, int64_t T,
                                                std::vector<Launch>* out) {
  const Graph& g = *b.graph;
  const Op& op = g.ops()[op_index];
  if (q8_binding == &b && q8_value == op.inputs[0] && q8_T == T) return absl::OkStatus();
  const int64_t nblocks = Elems(g, op.inputs[0], T) / 32;
  const int64_t per_block = codegen::kQuantizeQ8Threads / 32;
  const int64_t grid = (nblocks + per_block - 1) / per_block;
  if (grid > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA backend: op ", OpDesc(g, op_index), ": ",
                                                   grid, " activation blocks exceed ", INT32_MAX));
  }
  absl::StatusOr<cudaKernel_t> k = Kernel("vb_quantize_q8");
  if (!k.ok()) return k.status();
  Launch l;
  l.kernel = *k;
  l.name = "vb_quantize_q8";
  l.grid = dim3(static_cast<unsigned>(std::max<int64_t>(grid, 1)));
  l.block = dim3(codegen::kQuantizeQ8Threads);
  l.graph = &g;
  l.op_index = op_index;
  l.Arg(static_cast<void*>(b.dev[op.inputs[0]]))
      .Arg(static_cast<void*>(q8_codes))
      .Arg(static_cast<void*>(q8_ds))
      .Arg(nblocks);
  out->push_back(std::move(l));
  q8_binding = &b;
  q8_value = op.inputs[0];
  q8_T = T;
  return absl::OkStatus();
}

absl::Status CudaExecutor::Impl::EmitAll(Binding& b, int64_t T, std::vector<Launch>* out) {
  if (&b == &main) q8_binding = nullptr;  // a new step: nothing quantized yet
  const std::vector<Op>& ops = b.graph->ops();
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].kind == OpKind::kMatMul && UsesMultiMatvec(*b.graph, ops[i], T)) {
      // Matmuls in a row that read the same input with the same weight type
      // and width (q/k/v, gate/up) share one launch.
      std::vector<int> group = {static_cast<int>(i)};
      const Value& w = b.graph->value(ops[i].inputs[1]);
      while (group.size() < 3 && i + 1 < ops.size()) {
        const Op& next = ops[i + 1];
        if (next.kind != OpKind::kMatMul || next.inputs[0] != ops[i].inputs[0] ||
            !UsesMultiMatvec(*b.graph, next, T)) {
          break;
        }
        const Value& nw = b.graph->value(next.inputs[1]);
        if (nw.dtype != w.dtype || nw.shape[1] != w.shape[1]) break;
        // One grid computes the group: no member may read another's output.
        // (Defensive: a bias is a [N] value, so such a read goes through a
        // reshape op, which already ends the run of consecutive matmuls.)
        bool reads_group = false;
        for (int gi : group) {
          for (ValueId in : next.inputs) reads_group |= in == ops[gi].outputs[0];
        }
        if (reads_group) break;
        group.push_back(static_cast<int>(++i));
      }
      VB_RETURN_IF_ERROR(EmitMultiMatvec(b, group, out));
      continue;
    }
    VB_RETURN_IF_ERROR(Emit(b, static_cast<int>(i), T, out));
  }
  return absl::OkStatus();
}

bool CudaExecutor::Impl::EmitGemm(Binding& b, int op_index, int64_t T,
                                  std::vector<Launch>* out) {
  const Graph& g = *b.graph;
  const Op& op = g.ops()[op_index];
  const Value& w = g.value(op.inputs[1]);
  const int64_t N = w.shape[0], K = w.shape[1];
  const int64_t rows = Elems(g, op.inputs[0], T) / K;
  if (rows < std::max(opts.gemm_min_rows, 2) || K < 1 || N < 1) return false;
  if (K * 2 > x16_bytes || kGemmRowQuantum * K * 2 > w16_bytes) return false;
  if (N > INT32_MAX || K > INT32_MAX) return false;
  const int64_t row_bytes = DTypeBytes(w.dtype, K).value_or(0);
  if (row_bytes <= 0) return false;
  // Weight chunks of whole kGemmRowQuantum rows; token chunks of what x16 holds.
  int64_t chunk_rows = w16_bytes / (K * 2) / kGemmRowQuantum * kGemmRowQuantum;
  chunk_rows = std::min(chunk_rows, N);
  const int64_t chunk_tokens = std::min(rows, x16_bytes / (K * 2));
  uint8_t* const x = b.dev[op.inputs[0]];
  const float* const bias =
      op.inputs.size() == 3 ? reinterpret_cast<const float*>(b.dev[op.inputs[2]]) : nullptr;
  float* const y = reinterpret_cast<float*>(b.dev[op.outputs[0]]);
  absl::StatusOr<cudaKernel_t> cvt = Kernel("vb_f32_to_f16");
  const std::string deq_name = codegen::DequantF16KernelName(w.dtype);
  absl::StatusOr<cudaKernel_t> deq = Kernel(deq_name);
  absl::StatusOr<cudaKernel_t> add = Kernel("vb_add");
  if (!cvt.ok() || !deq.ok() || !add.ok()) {
    gemm_note = absl::StrCat("kernels for some matmuls: ",
                             std::string((!cvt.ok() ? cvt : !deq.ok() ? deq : add)
                                             .status().message()));
    return false;
  }
  auto launch = [&](cudaKernel_t k, const std::string& name, int64_t n) {
    Launch l;
    l.kernel = k;
    l.name = name;
    l.grid = dim3(GridFor(n, codegen::kDequantThreads));
    l.block = dim3(codegen::kDequantThreads);
    l.graph = &g;
    l.op_index = op_index;
    return l;
  };
  // Builds the launches; with `epilogue`, the bias through cuBLASLt's BIAS
  // epilogue (fails when a chunk's shape has no such algorithm), else one
  // vb_add per token chunk after its GEMMs.
  std::vector<Launch> ls;
  auto build = [&](bool epilogue) -> absl::Status {
    ls.clear();
    for (int64_t t0 = 0; t0 < rows; t0 += chunk_tokens) {
      const int64_t tc = std::min(chunk_tokens, rows - t0);
      Launch c = launch(*cvt, "vb_f32_to_f16", tc * K);
      c.Arg(static_cast<const void*>(x + t0 * K * 4))
          .Arg(static_cast<void*>(x16))
          .Arg(static_cast<int64_t>(tc * K));
      ls.push_back(std::move(c));
      for (int64_t r0 = 0; r0 < N; r0 += chunk_rows) {
        const int64_t rc = std::min(chunk_rows, N - r0);
        Launch d = launch(*deq, deq_name, rc * ((K + 7) / 8));
        d.Arg(static_cast<const void*>(b.dev[op.inputs[1]]))
            .Arg(row_bytes)
            .Arg(static_cast<void*>(w16))
            .Arg(static_cast<int>(K))
            .Arg(static_cast<int>(r0))
            .Arg(static_cast<int>(rc));
        ls.push_back(std::move(d));
        Launch m;
        m.gemm = true;
        m.name = "cublasLt gemm";
        m.graph = &g;
        m.op_index = op_index;
        m.gemm_a = x16;
        m.gemm_b = w16;
        m.gemm_out = y + t0 * N + r0;
        m.gemm_bias = epilogue ? bias + r0 : nullptr;
        GemmShape& sh = m.gemm_shape;
        sh.M = tc;
        sh.N = rc;
        sh.K = K;
        sh.lda = K;
        sh.ldb = K;
        sh.ldo = N;
        sh.bias = epilogue;
        sh.align_a = PointerAlignment(m.gemm_a);
        sh.align_b = PointerAlignment(m.gemm_b);
        sh.align_out = PointerAlignment(m.gemm_out);
        sh.align_bias = epilogue ? PointerAlignment(m.gemm_bias) : 256;
        VB_RETURN_IF_ERROR(gemm->Prepare(sh, m.gemm_bias));
        ls.push_back(std::move(m));
      }
      if (bias != nullptr && !epilogue) {
        float* yt = y + t0 * N;
        Launch a = launch(*add, "vb_add", tc * N);
        a.Arg(static_cast<const void*>(yt))
            .Arg(static_cast<const void*>(bias))
            .Arg(static_cast<void*>(yt))
            .Arg(static_cast<int64_t>(tc * N))
            .Arg(static_cast<int64_t>(N));
        ls.push_back(std::move(a));
      }
    }
    return absl::OkStatus();
  };
  absl::Status st = build(bias != nullptr);
  if (!st.ok() && bias != nullptr) st = build(false);
  if (!st.ok()) {
    gemm_note = absl::StrCat("kernels for some matmuls: ", std::string(st.message()));
    return false;
  }
  out->insert(out->end(), std::make_move_iterator(ls.begin()), std::make_move_iterator(ls.end()));
  return true;
}

absl::Status CudaExecutor::Impl::Enqueue(const Launch& l) {
  if (l.gemm) {
    ++gemm_calls;
    return gemm->Run(l.gemm_shape, l.gemm_a, l.gemm_b, l.gemm_bias, l.gemm_out, stream);
  }
  if (l.kernel == nullptr) {
    return CudaStatus(cudaMemcpyAsync(l.dst, l.src, l.bytes, cudaMemcpyDeviceToDevice, stream),
                      absl::StrCat("CUDA backend: copy for op ", OpDesc(*l.graph, l.op_index)));
  }
  std::vector<void*> argp(l.args.size());
  for (size_t i = 0; i < l.args.size(); ++i) argp[i] = const_cast<uint64_t*>(&l.args[i]);
  if (pdl) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = l.grid;
    cfg.blockDim = l.block;
    cfg.dynamicSmemBytes = l.smem;
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    return CudaStatus(
        cudaLaunchKernelExC(&cfg, reinterpret_cast<const void*>(l.kernel), argp.data()),
        absl::StrCat("CUDA backend: launching ", l.name, " for op ", OpDesc(*l.graph, l.op_index)));
  }
  return CudaStatus(
      cudaLaunchKernel(reinterpret_cast<const void*>(l.kernel), l.grid, l.block, argp.data(),
                       l.smem, stream),
      absl::StrCat("CUDA backend: launching ", l.name, " for op ", OpDesc(*l.graph, l.op_index)));
}

void CudaExecutor::Impl::PrintProfile() {
  std::vector<std::pair<std::string, ProfileEntry>> rows(profile_by_kernel.begin(),
                                                         profile_by_kernel.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  double total = 0;
  for (const auto& r : rows) total += r.second.ms;
  std::fprintf(stderr, "vibrant cuda profile: %lld steps, %.3f ms of kernels (direct launches)\n",
               static_cast<long long>(profiled_steps), total);
  for (const auto& [name, e] : rows) {
    std::fprintf(stderr, "  %-34s %7lld calls %10.3f ms %5.1f%% %9.2f us/call\n", name.c_str(),
                 static_cast<long long>(e.calls), e.ms, total > 0 ? 100 * e.ms / total : 0.0,
                 1000 * e.ms / std::max<int64_t>(e.calls, 1));
  }
}

absl::Status CudaExecutor::Impl::RunLaunches(const std::vector<Launch>& ls, int64_t T) {
  if (profile) {
    while (events.size() < 2 * ls.size()) {
      cudaEvent_t e = nullptr;
      VB_CUDA(cudaEventCreate(&e), "CUDA backend: profiling event");
      events.push_back(e);
    }
    for (size_t i = 0; i < ls.size(); ++i) {
      VB_CUDA(cudaEventRecord(events[2 * i], stream), "CUDA backend: profiling event");
      VB_RETURN_IF_ERROR(Enqueue(ls[i]));
      VB_CUDA(cudaEventRecord(events[2 * i + 1], stream), "CUDA backend: profiling event");
    }
    VB_CUDA(cudaStreamSynchronize(stream), "CUDA backend: profiled step");
    for (size_t i = 0; i < ls.size(); ++i) {
      float ms = 0;
      cudaEventElapsedTime(&ms, events[2 * i], events[2 * i + 1]);
      ProfileEntry& e =
          profile_by_kernel[absl::StrCat(ls[i].name, T == 1 ? " (T=1)" : " (T>1)")];
      ++e.calls;
      e.ms += ms;
    }
    ++profiled_steps;
    return absl::OkStatus();
  }
  for (const Launch& l : ls) {
    VB_RETURN_IF_ERROR(Enqueue(l));
    if (opts.sync_each_op) {
      VB_CUDA(cudaStreamSynchronize(stream),
              absl::StrCat("CUDA backend: ", l.name, " for op ", OpDesc(*l.graph, l.op_index),
                           " failed"));
    }
  }
  return absl::OkStatus();
}

absl::Status CudaExecutor::Impl::CheckStep(absl::Span<const int32_t> toks, int32_t pos0) {
  if (!pending.ok()) return pending;
  const int64_t T = static_cast<int64_t>(toks.size());
  if (T < 1 || T > max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("Step: ", T, " tokens; a step takes 1..", max_tokens, " (max_tokens)"));
  }
  if (pos0 < 0) return absl::InvalidArgumentError(absl::StrCat("Step: negative position ", pos0));
  if (static_cast<int64_t>(pos0) + T - 1 > INT32_MAX) {
    return absl::OutOfRangeError(
        absl::StrCat("Step: position ", static_cast<int64_t>(pos0) + T - 1, " overflows int32"));
  }
  if (n_ctx >= 0 && pos0 + T > n_ctx) {
    return absl::OutOfRangeError(absl::StrCat("Step: positions ", pos0, "..", pos0 + T - 1,
                                              " exceed the KV cache of ", n_ctx, " tokens"));
  }
  for (int64_t t = 0; t < T; ++t) {
    if (toks[t] < 0 || (n_vocab >= 0 && toks[t] >= n_vocab)) {
      return absl::InvalidArgumentError(absl::StrCat("Step: token id ", toks[t], " at index ", t,
                                                     " is outside the vocabulary [0, ", n_vocab,
                                                     ")"));
    }
  }
  return absl::OkStatus();
}

void CudaExecutor::Impl::FillIo(absl::Span<const int32_t> toks, int32_t pos0) {
  for (size_t t = 0; t < toks.size(); ++t) {
    io_host[t] = toks[t];
    io_host[max_tokens + t] = pos0 + static_cast<int32_t>(t);
  }
}

absl::Status CudaExecutor::Impl::CaptureDecodeGraph() {
  std::vector<Launch> ls;
  VB_RETURN_IF_ERROR(EmitAll(main, 1, &ls));
  VB_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal),
          "CUDA backend: beginning the decode graph capture");
  absl::Status s = CudaStatus(cudaMemcpyAsync(io_dev, io_host, 2 * max_tokens * sizeof(int32_t),
                                              cudaMemcpyHostToDevice, stream),
                              "CUDA backend: input copy");
  for (size_t i = 0; s.ok() && i < ls.size(); ++i) s = Enqueue(ls[i]);
  if (s.ok()) {
    s = CudaStatus(cudaMemcpyAsync(logits_host, main.dev[logits], Bytes(graph, logits, 1),
                                   cudaMemcpyDeviceToHost, stream),
                   "CUDA backend: logits copy");
  }
  cudaGraph_t g = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream, &g);
  if (s.ok()) s = CudaStatus(end, "CUDA backend: ending the decode graph capture");
  if (s.ok()) {
    s = CudaStatus(cudaGraphInstantiate(&decode_exec, g, 0),
                   "CUDA backend: instantiating the decode graph");
  }
  if (!s.ok()) {
    if (g != nullptr) cudaGraphDestroy(g);
    decode_exec = nullptr;
    cudaGetLastError();
    return s;
  }
  decode_graph = g;
  return absl::OkStatus();
}

// ---- verification (vibrant-run --verify) --------------------------------------------

namespace {

// Runs `op` of `g` with the CPU reference kernels on host buffers: in[i] the
// bytes of input i, outs[j] sized for output j (kv_store: holding the cache
// before the op). Fused bodies are evaluated op by op.
absl::Status CpuRunOp(const Graph& g, const Op& op, const std::vector<const uint8_t*>& in,
                      std::vector<std::vector<uint8_t>>& outs, int64_t T, cpu::ThreadPool* pool) {
  auto F = [&](size_t i) { return reinterpret_cast<const float*>(in[i]); };
  auto I = [&](size_t i) { return reinterpret_cast<const int32_t*>(in[i]); };
  auto E = [&](ValueId v) { return Elems(g, v, T); };
  float* out = outs.empty() ? nullptr : reinterpret_cast<float*>(outs[0].data());
  switch (op.kind) {
    case OpKind::kEmbedding: {
      const Value& t = g.value(op.inputs[0]);
      return cpu::Embedding(t.dtype, in[0], t.shape[0], t.shape[1], I(1), E(op.inputs[1]), out);
    }
    case OpKind::kMatMul: {
      const Value& w = g.value(op.inputs[1]);
      const int64_t K = w.shape[1];
      return cpu::MatMul(pool, F(0), E(op.inputs[0]) / K, K, w.dtype, in[1], w.shape[0],
                         op.inputs.size() == 3 ? F(2) : nullptr, out);
    }
    case OpKind::kRmsNorm: {
      const int64_t dim = g.value(op.inputs[0]).shape.back();
      cpu::RmsNorm(F(0), E(op.inputs[0]) / dim, dim,
                   static_cast<float>(NumberAttr(op, "eps", 0)), out);
      return absl::OkStatus();
    }
    case OpKind::kAdd:
      cpu::Add(F(0), E(op.inputs[0]), F(1), E(op.inputs[1]), out);
      return absl::OkStatus();
    case OpKind::kMul:
      cpu::Mul(F(0), E(op.inputs[0]), F(1), E(op.inputs[1]), out);
      return absl::OkStatus();
    case OpKind::kSilu:
      cpu::Silu(F(0), E(op.inputs[0]), out);
      return absl::OkStatus();
    case OpKind::kReshape:
    case OpKind::kCopy:
      std::memcpy(outs[0].data(), in[0], outs[0].size());
      return absl::OkStatus();
    case OpKind::kRope: {
      const Shape& s = g.value(op.inputs[0]).shape;
      cpu::RopeParams p;
      p.mode = static_cast<int>(NumberAttr(op, "mode", 0));
      p.n_rot = static_cast<int64_t>(NumberAttr(op, "n_rot", 0));
      p.freq_base = static_cast<float>(NumberAttr(op, "freq_base", 10000.0));
      p.freq_scale = static_cast<float>(NumberAttr(op, "freq_scale", 1.0));
      p.freq_factors = op.inputs.size() == 3 ? F(2) : nullptr;
      return cpu::Rope(F(0), E(op.inputs[0]) / (s[1] * s[2]), s[1], s[2], I(1), p, out);
    }
    case OpKind::kKvStore: {
      const Value& c = g.value(op.inputs[1]);
      const int64_t row = c.shape[1] * c.shape[2];
      return cpu::KvStore(F(0), E(op.inputs[0]) / row, row, I(2), c.dtype, outs[0].data(),
                          c.shape[0]);
    }
    case OpKind::kAttention: {
      const Value& k = g.value(op.inputs[1]);
      const Shape& qs = g.value(op.inputs[0]).shape;
      cpu::AttentionShape shape;
      shape.n_head = qs[1];
      shape.head_dim = qs[2];
      shape.T = E(op.inputs[0]) / (qs[1] * qs[2]);
      shape.n_head_kv = k.shape[1];
      shape.n_ctx = k.shape[0];
      return cpu::Attention(pool, F(0), in[1], in[2], k.dtype, I(3), shape,
                            static_cast<float>(NumberAttr(op, "scale", 1.0)), out);
    }
    case OpKind::kLastRow: {
      const int64_t dim = g.value(op.inputs[0]).shape.back();
      cpu::LastRow(F(0), E(op.inputs[0]) / dim, dim, out);
      return absl::OkStatus();
    }
    case OpKind::kFused: {
      const Graph& body = *op.body;
      std::vector<int> producer = Producers(body);
      std::vector<std::vector<uint8_t>> vals(body.values().size());
      std::vector<const uint8_t*> ptr(body.values().size(), nullptr);
      size_t in_i = 0;
      for (ValueId v = 0; v < static_cast<ValueId>(body.values().size()); ++v) {
        if (producer[v] < 0) ptr[v] = in[in_i++];
      }
      for (const Op& bop : body.ops()) {
        std::vector<const uint8_t*> bin;
        for (ValueId v : bop.inputs) bin.push_back(ptr[v]);
        std::vector<std::vector<uint8_t>> bout;
        for (ValueId v : bop.outputs) bout.emplace_back(Bytes(body, v, T));
        VB_RETURN_IF_ERROR(CpuRunOp(body, bop, bin, bout, T, pool));
        for (size_t j = 0; j < bop.outputs.size(); ++j) {
          vals[bop.outputs[j]] = std::move(bout[j]);
          ptr[bop.outputs[j]] = vals[bop.outputs[j]].data();
        }
      }
      for (size_t j = 0; j < outs.size(); ++j) {
        const ValueId bo = body.outputs()[j];
        std::memcpy(outs[j].data(), ptr[bo], std::min(outs[j].size(), vals[bo].size()));
      }
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unknown op kind");
}

// The elements of a host buffer of `dtype` as doubles (f16/bf16 decoded).
std::vector<double> AsDoubles(DType dtype, const std::vector<uint8_t>& bytes) {
  std::vector<double> out;
  if (dtype == DType::kF32) {
    out.resize(bytes.size() / 4);
    for (size_t i = 0; i < out.size(); ++i) {
      float f;
      std::memcpy(&f, bytes.data() + 4 * i, 4);
      out[i] = f;
    }
  } else if (dtype == DType::kF16 || dtype == DType::kBF16) {
    out.resize(bytes.size() / 2);
    for (size_t i = 0; i < out.size(); ++i) {
      uint16_t h;
      std::memcpy(&h, bytes.data() + 2 * i, 2);
      out[i] = dtype == DType::kF16 ? HalfToFloat(h) : BF16ToFloat(h);
    }
  } else if (dtype == DType::kI32) {
    out.resize(bytes.size() / 4);
    for (size_t i = 0; i < out.size(); ++i) {
      int32_t v;
      std::memcpy(&v, bytes.data() + 4 * i, 4);
      out[i] = v;
    }
  }
  return out;
}

}  // namespace

absl::Status CudaExecutor::Impl::VerifyOp(Binding& b, int op_index, int64_t T,
                                          cpu::ThreadPool* pool, double tolerance,
                                          VerifyReport* report) {
  const Graph& g = *b.graph;
  const Op& op = g.ops()[op_index];
  // Inputs, as the GPU holds them now.
  std::vector<std::vector<uint8_t>> in_copy(op.inputs.size());
  std::vector<const uint8_t*> in(op.inputs.size());
  for (size_t i = 0; i < op.inputs.size(); ++i) {
    const ValueId v = op.inputs[i];
    if (b.host[v] != nullptr) {  // a weight: the host bytes the GPU copy came from
      in[i] = b.host[v];
      continue;
    }
    in_copy[i].resize(Bytes(g, v, T));
    if (!in_copy[i].empty()) {
      VB_CUDA(cudaMemcpy(in_copy[i].data(), b.dev[v], in_copy[i].size(), cudaMemcpyDeviceToHost),
              "verify: reading an input");
    }
    in[i] = in_copy[i].data();
  }
  std::vector<std::vector<uint8_t>> expect;
  for (ValueId v : op.outputs) expect.emplace_back(Bytes(g, v, T));
  if (op.kind == OpKind::kKvStore) expect[0] = in_copy[1];
  // The GPU.
  std::vector<Launch> ls;
  VB_RETURN_IF_ERROR(Emit(b, op_index, T, &ls));
  const bool via_gemm =
      std::any_of(ls.begin(), ls.end(), [](const Launch& l) { return l.gemm; });
  if (via_gemm) tolerance = std::max(tolerance, kGemmVerifyTolerance);
  VB_RETURN_IF_ERROR(RunLaunches(ls));
  VB_CUDA(cudaStreamSynchronize(stream), absl::StrCat("verify: op ", OpDesc(g, op_index)));
  // The CPU (on the activations the GPU rounded to 8 bits, where it did).
  std::vector<float> rounded;
  const bool via_q8 = std::any_of(ls.begin(), ls.end(),
                                  [](const Launch& l) {
                                    return l.name == "vb_quantize_q8" ||
                                           l.name.rfind("vb_mvs_", 0) == 0;
                                  }) ||
                      (!via_gemm && op.kind == OpKind::kMatMul && UsesQ8Matvec(g, op));
  if (via_q8) {
    rounded.resize(in_copy[0].size() / sizeof(float));
    std::memcpy(rounded.data(), in_copy[0].data(), in_copy[0].size());
    VB_RETURN_IF_ERROR(
        RoundActivationsToQ8(rounded.data(), static_cast<int64_t>(rounded.size()), rounded.data()));
    in[0] = reinterpret_cast<const uint8_t*>(rounded.data());
  }
  VB_RETURN_IF_ERROR(CpuRunOp(g, op, in, expect, T, pool));
  for (size_t j = 0; j < op.outputs.size(); ++j) {
    const ValueId v = op.outputs[j];
    std::vector<uint8_t> got(expect[j].size());
    if (!got.empty()) {
      VB_CUDA(cudaMemcpy(got.data(), b.dev[v], got.size(), cudaMemcpyDeviceToHost),
              "verify: reading an output");
    }
    const std::vector<double> a = AsDoubles(g.value(v).dtype, got);
    const std::vector<double> r = AsDoubles(g.value(v).dtype, expect[j]);
    VerifyOpResult res;
    res.op_index = op_index;
    res.desc = OpDesc(g, op_index);
    if (b.graph != &graph) res.desc = "(fused body) " + res.desc;
    if (via_gemm) absl::StrAppend(&res.desc, " [cuBLASLt, f16 operands]");
    bool nan = a.size() != r.size();
    for (size_t i = 0; i < std::min(a.size(), r.size()); ++i) {
      if (std::isnan(a[i]) != std::isnan(r[i])) nan = true;
      if (std::isnan(a[i]) || std::isnan(r[i])) continue;
      res.max_abs = std::max(res.max_abs, std::fabs(a[i] - r[i]));
      res.ref_max = std::max(res.ref_max, std::fabs(r[i]));
    }
    res.rel_err = nan ? std::numeric_limits<double>::infinity()
                      : (res.ref_max > 0 ? res.max_abs / res.ref_max : res.max_abs);
    res.ok = res.rel_err <= tolerance;
    if (!res.ok && report->first_bad < 0) report->first_bad = static_cast<int>(report->ops.size());
    report->ops.push_back(res);
  }
  return absl::OkStatus();
}

// ---- the public class ------------------------------------------------------------------

CudaExecutor::CudaExecutor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaExecutor::~CudaExecutor() = default;

absl::StatusOr<std::unique_ptr<CudaExecutor>> CudaExecutor::Create(const ir::Graph& graph,
                                                                   WeightResolver weights,
                                                                   CudaExecutorOptions opts) {
  auto impl = std::make_unique<Impl>();
  impl->graph = graph;
  impl->opts = opts;
  if (const char* s = std::getenv("VIBRANT_CUDA_SYNC"); s != nullptr && std::string(s) == "1") {
    impl->opts.sync_each_op = true;
  }
  if (const char* s = std::getenv("VIBRANT_CUDA_PDL"); s != nullptr && std::string(s) == "0") {
    impl->opts.programmatic_launch = false;
  }
  if (const char* s = std::getenv("VIBRANT_CUDA_FLOAT_MATVEC"); s != nullptr && std::string(s) == "1") {
    impl->opts.int8_activations = false;
  }
  if (const char* s = std::getenv("VIBRANT_GEMM_MIN_ROWS"); s != nullptr && *s != '\0') {
    int v = 0;
    if (!absl::SimpleAtoi(s, &v) || v < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CUDA backend: VIBRANT_GEMM_MIN_ROWS='", s,
          "' is not a row count (0 = never use the cuBLASLt GEMM)"));
    }
    impl->opts.gemm_min_rows = v;
  }
  if (absl::Status s = impl->Init(weights); !s.ok()) return s;
  return std::unique_ptr<CudaExecutor>(new CudaExecutor(std::move(impl)));
}

absl::StatusOr<absl::Span<const float>> CudaExecutor::Step(absl::Span<const int32_t> tokens,
                                                          int32_t pos0) {
  Impl& m = *impl_;
  VB_RETURN_IF_ERROR(m.CheckStep(tokens, pos0));
  const int64_t T = static_cast<int64_t>(tokens.size());
  m.FillIo(tokens, pos0);
  const int64_t out_elems = Elems(m.graph, m.logits, T);
  if (T == 1 && m.opts.cuda_graphs && !m.graph_unavailable) {
    if (m.decode_exec == nullptr) {
      if (absl::Status s = m.CaptureDecodeGraph(); !s.ok()) {
        m.graph_unavailable = true;  // fall back to plain launches
        m.graph_note = std::string(s.message());
      }
    }
    if (m.decode_exec != nullptr) {
      VB_CUDA(cudaGraphLaunch(m.decode_exec, m.stream), "CUDA backend: launching the decode graph");
      VB_CUDA(cudaStreamSynchronize(m.stream),
              "CUDA backend: decode step (set VIBRANT_CUDA_SYNC=1 to name the failing op)");
      return absl::Span<const float>(m.logits_host, out_elems);
    }
  }
  std::vector<Launch> ls;
  VB_RETURN_IF_ERROR(m.EmitAll(m.main, T, &ls));
  VB_CUDA(cudaMemcpyAsync(m.io_dev, m.io_host, 2 * m.max_tokens * sizeof(int32_t),
                          cudaMemcpyHostToDevice, m.stream),
          "CUDA backend: input copy");
  VB_RETURN_IF_ERROR(m.RunLaunches(ls, T));
  VB_CUDA(cudaMemcpyAsync(m.logits_host, m.main.dev[m.logits], out_elems * sizeof(float),
                          cudaMemcpyDeviceToHost, m.stream),
          "CUDA backend: logits copy");
  VB_CUDA(cudaStreamSynchronize(m.stream),
          "CUDA backend: step (set VIBRANT_CUDA_SYNC=1 to name the failing op)");
  return absl::Span<const float>(m.logits_host, out_elems);
}

void CudaExecutor::Reset() {
  Impl& m = *impl_;
  if (m.kv_size == 0) return;
  absl::Status s = CudaStatus(cudaMemsetAsync(m.kv_mem, 0, m.kv_size, m.stream),
                              "CUDA backend: clearing the KV cache");
  if (s.ok()) s = CudaStatus(cudaStreamSynchronize(m.stream), "CUDA backend: clearing the KV cache");
  if (!s.ok()) m.pending = s;
}

std::string CudaExecutor::Describe() const {
  const Impl& m = *impl_;
  std::string out = absl::StrFormat(
      "cuda: %s (%s), weights %s, KV cache %s, activations %s (%s); kernels from %s; "
      "decode %s",
      m.device.name, m.device.arch, HumanBytes(m.weights_size), HumanBytes(m.kv_size),
      HumanBytes(m.arena_size), m.planned ? "memory plan" : "a slot per value", m.kernel_origin,
      m.opts.cuda_graphs && !m.graph_unavailable ? "as a CUDA graph" : "without a CUDA graph");
  if (m.pdl) absl::StrAppend(&out, " with programmatic dependent launch");
  if (!m.kernel_note.empty()) absl::StrAppend(&out, " (", m.kernel_note, ")");
  if (!m.graph_note.empty()) absl::StrAppend(&out, " (graph capture failed: ", m.graph_note, ")");
  if (m.gemm != nullptr) {
    absl::StrAppend(&out, "; prefill matmuls of >= ", std::max(m.opts.gemm_min_rows, 2),
                    " rows as cuBLASLt GEMMs (", m.gemm_lib, "; scratch ",
                    HumanBytes(m.w16_bytes + m.x16_bytes + m.gemm->workspace_bytes()), ")");
    if (!m.gemm_note.empty()) absl::StrAppend(&out, " (", m.gemm_note, ")");
  } else {
    absl::StrAppend(&out, "; prefill GEMM ", m.gemm_note);
  }
  return out;
}

absl::StatusOr<VerifyReport> CudaExecutor::VerifyStep(absl::Span<const int32_t> tokens,
                                                      int32_t pos0, double tolerance) {
  Impl& m = *impl_;
  VB_RETURN_IF_ERROR(m.CheckStep(tokens, pos0));
  const int64_t T = static_cast<int64_t>(tokens.size());
  m.FillIo(tokens, pos0);
  VB_CUDA(cudaMemcpy(m.io_dev, m.io_host, 2 * m.max_tokens * sizeof(int32_t),
                     cudaMemcpyHostToDevice),
          "verify: input copy");
  cpu::ThreadPool pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  VerifyReport report;
  m.q8_binding = nullptr;
  for (size_t i = 0; i < m.graph.ops().size(); ++i) {
    VB_RETURN_IF_ERROR(m.VerifyOp(m.main, static_cast<int>(i), T, &pool, tolerance, &report));
  }
  const int64_t out_elems = Elems(m.graph, m.logits, T);
  VB_CUDA(cudaMemcpy(m.logits_host, m.main.dev[m.logits], out_elems * sizeof(float),
                     cudaMemcpyDeviceToHost),
          "verify: logits copy");
  report.logits = absl::Span<const float>(m.logits_host, out_elems);
  return report;
}

std::string CudaExecutor::kernel_origin() const { return impl_->kernel_origin; }
int64_t CudaExecutor::weight_bytes() const { return impl_->weights_size; }
int64_t CudaExecutor::kv_bytes() const { return impl_->kv_size; }
int64_t CudaExecutor::arena_bytes() const { return impl_->arena_size; }
int64_t CudaExecutor::scratch_bytes() const {
  const Impl& m = *impl_;
  return m.gemm == nullptr ? 0 : m.w16_bytes + m.x16_bytes + m.gemm->workspace_bytes();
}
int64_t CudaExecutor::gemm_calls() const { return impl_->gemm_calls; }

absl::StatusOr<int> CudaExecutor::KernelLaunchesPerStep(int64_t tokens) {
  if (tokens < 1 || tokens > impl_->max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("KernelLaunchesPerStep: ", tokens, " tokens; a step takes 1..",
                     impl_->max_tokens));
  }
  std::vector<Launch> ls;
  VB_RETURN_IF_ERROR(impl_->EmitAll(impl_->main, tokens, &ls));
  int n = 0;
  for (const Launch& l : ls) n += l.kernel != nullptr;
  return n;
}

}  // namespace vibrant
