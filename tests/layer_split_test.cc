// Plans split between the GPU and the CPU (vibrantc compile -ngl N, issues
// #13 and #18): the last N layers on the GPU, the embedding, the other layers
// and (for N <= n_layer) the output head on the CPU, in one plan whose
// dispatch table hands the CPU's ops to the host (runtime/dispatch.h:
// kHost, kToHost, kFromHost).
//
// Without a GPU (everywhere, CI included): the plan's shape (which ops are
// where, one transfer each way at the boundary, launches for the host's ops,
// no CUDA graph, a round trip through the DISPATCH section) and the CPU
// backend's host-only mode, which must compute the host's ops exactly as a
// CPU executor of the whole graph does (same kernels, its own memory).
//
// On a GPU (layer_split.LayerSplitGpu.*, skipped with the reason elsewhere):
// every shared model's split plans at -ngl 1 and -ngl n_layer, teacher-forced
// over its first reference case (the prompt in one step with logits at every
// position, then 8 tokens), against the CPU plan of the same model. Tolerance:
// kSplitVsCpuTolerance 0.2 sigma, gpu_conformance's bound for the GPU's 8-bit
// activation kernels against the CPU (kGpuInt8VsCpuTolerance); a split plan
// runs part of the model with the GPU's kernels and the rest with the CPU's,
// so it can differ from the CPU plan by at most as much. Each case prints the
// measured error against the CPU plan and against the unsplit cuda plan.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "compiler/compiler.h"
#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "passes/assign_devices.h"
#include "runtime/cpu/executor.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/executor.h"
#include "runtime/dispatch.h"
#include "tests/model_cases.h"

namespace vibrant {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing_util::GgufResolver;
using testing_util::LogitSigma;
using testing_util::ReferenceModelPath;
using testing_util::ReferenceModels;
using testing_util::ReferenceTokens;

constexpr double kSplitVsCpuTolerance = 0.2;
const char kStories[] = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";

// device "cpu" or "cuda"; gpu_layers -1: no split. Logits at every position,
// no sample op (the logits are what is compared).
absl::StatusOr<compiler::Compiled> Compile(const GgufFile& file, const std::string& device, int64_t gpu_layers,
                                           bool kernels = true) {
  absl::StatusOr<ir::Graph> g = LowerGguf(file, testing_util::ReferenceLowerOptions());
  if (!g.ok()) return g.status();
  compiler::CompileOptions o;
  o.device = device;
  o.gpu_layers = gpu_layers;
  o.sample = false;
  o.compile_kernels = kernels;
  return compiler::CompileGraph(*std::move(g), o);
}

int64_t Layers(const ir::Graph& g) { return std::get<int64_t>(g.meta.at("n_layer")); }

// stories260K has 5 layers. -ngl 2: layers 3 and 4 on the GPU; one copy of
// the residual stream to the GPU before layer 3, one back before the head.
TEST(LayerSplit, PlanPlacesTheLastLayersOnTheGpuWithOneTransferEachWay) {
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(kStories);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<compiler::Compiled> c = Compile(**file, "cuda", 2, /*kernels=*/false);
  ASSERT_TRUE(c.ok()) << c.status();
  const ir::Graph& g = c->graph;
  ASSERT_EQ(Layers(g), 5);
  int to_gpu = 0, to_host = 0, host_ops = 0;
  for (size_t i = 0; i < g.ops().size(); ++i) {
    const ir::Op& op = g.ops()[i];
    const int64_t layer = passes::OpLayer(g, op);
    if (op.kind == ir::OpKind::kCopy) {
      const ir::Value& src = g.value(op.inputs[0]);
      const ir::Value& dst = g.value(op.outputs[0]);
      if (src.storage == ir::Storage::kInput) continue;  // the step's positions
      (src.device == ir::Device::kCpu ? to_gpu : to_host)++;
      EXPECT_EQ(op.device, ir::Device::kCuda);
      EXPECT_TRUE(dst.name.rfind("l_out.", 0) == 0) << dst.name;  // the residual stream
      continue;
    }
    host_ops += op.device == ir::Device::kCpu;
    if (layer >= 3) {
      EXPECT_EQ(op.device, ir::Device::kCuda) << "op " << i << " of layer " << layer;
    } else {
      EXPECT_EQ(op.device, ir::Device::kCpu) << "op " << i << " (layer " << layer << ")";
    }
  }
  EXPECT_EQ(to_gpu, 1);
  EXPECT_EQ(to_host, 1);
  const dispatch::Table& t = *c->dispatch_table;
  int host_launches = 0, transfers = 0;
  for (const dispatch::Launch& l : t.launches) {
    host_launches += l.kind == dispatch::LaunchKind::kHost;
    transfers += l.kind == dispatch::LaunchKind::kToHost || l.kind == dispatch::LaunchKind::kFromHost;
    if (l.kind == dispatch::LaunchKind::kHost) {
      EXPECT_EQ(g.ops()[l.op].device, ir::Device::kCpu);
    }
  }
  EXPECT_EQ(host_launches, host_ops);
  EXPECT_EQ(transfers, 2);
  EXPECT_EQ(t.graph_max_tokens, 0) << "the host's work cannot be in a CUDA graph";
  EXPECT_EQ(t.tokens.region, dispatch::Region::kNone) << "the embedding is the host's";
  EXPECT_EQ(t.logits.region, dispatch::Region::kNone) << "the output head is the host's";
  absl::StatusOr<dispatch::Table> back = dispatch::Parse(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(c->dispatch->data()), c->dispatch->size()), "test");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, t);
  EXPECT_THAT(dispatch::Describe(t), HasSubstr("to_host"));
  bool has_ngl = false;
  for (const auto& [k, v] : c->options) has_ngl |= k == "gpu_layers" && v == "2";
  EXPECT_TRUE(has_ngl);

  // More than the layers: no split (the whole model on the GPU).
  absl::StatusOr<compiler::Compiled> all = Compile(**file, "cuda", 6, /*kernels=*/false);
  ASSERT_TRUE(all.ok()) << all.status();
  for (const ir::Op& op : all->graph.ops()) EXPECT_EQ(op.device, ir::Device::kCuda);
  EXPECT_FALSE(all->dispatch_table->has_host_ops());
  // -ngl with a cpu plan, or with --tp: named errors.
  absl::StatusOr<compiler::Compiled> cpu = Compile(**file, "cpu", 2, false);
  ASSERT_FALSE(cpu.ok());
  EXPECT_THAT(std::string(cpu.status().message()), HasSubstr("it needs --device cuda"));
}

// A paged (continuous-batching) plan splits too: the GPU's attention reads
// the step's sequence slots and block table, the host's through its own
// executor (BeginBatch), whose logits are the step's.
TEST(LayerSplit, PagedPlansSplitAndTheHostRunsItsPagedOps) {
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(kStories);
  ASSERT_TRUE(file.ok()) << file.status();
  LowerOptions lo;
  lo.n_ctx = 128;
  lo.max_tokens = 16;
  lo.n_seq = 2;
  lo.block_size = 16;
  absl::StatusOr<ir::Graph> g = LowerGguf(**file, lo);
  ASSERT_TRUE(g.ok()) << g.status();
  compiler::CompileOptions o;
  o.device = "cuda";
  o.gpu_layers = 2;
  o.compile_kernels = false;
  absl::StatusOr<compiler::Compiled> c = compiler::CompileGraph(*std::move(g), o);
  ASSERT_TRUE(c.ok()) << c.status();
  const dispatch::Table& t = *c->dispatch_table;
  EXPECT_TRUE(t.has_host_ops());
  // stories260K's head size (48) has no paged GPU kernel: its attention and
  // KV stores stay on the host, and the GPU's side of the step is not paged.
  bool gpu_attention = false;
  for (const ir::Op& op : c->graph.ops()) {
    gpu_attention |= op.kind == ir::OpKind::kAttention && op.device == ir::Device::kCuda;
  }
  EXPECT_EQ(t.seq_ids.region != dispatch::Region::kNone, gpu_attention);
  const int64_t max_blocks = std::get<int64_t>(c->graph.meta.at("max_blocks"));
  CpuExecutorOptions ho;
  ho.host_ops_only = true;
  ho.threads = 1;
  absl::StatusOr<std::unique_ptr<CpuExecutor>> host = CpuExecutor::Create(c->graph, GgufResolver(**file), ho);
  ASSERT_TRUE(host.ok()) << host.status();
  const std::vector<int32_t> toks = {1, 403, 1, 300}, pos = {0, 1, 0, 1}, seq = {0, 0, 1, 1};
  std::vector<int32_t> table(2 * max_blocks, 0);
  table[max_blocks] = 1;  // sequence 1's first block (positions 0 and 1 are in it)
  BatchInputs in{toks, pos, seq, table};
  ASSERT_TRUE((*host)->BeginBatch(in).ok());
  for (size_t i = 0; i < c->graph.ops().size(); ++i) {
    const ir::Op& op = c->graph.ops()[i];
    if (op.device != ir::Device::kCpu || passes::OpLayer(c->graph, op) > 2) continue;
    const absl::Status st = (*host)->RunOp(static_cast<int>(i));
    ASSERT_TRUE(st.ok()) << i << ": " << st;
  }
  BatchInputs bad = in;
  const std::vector<int32_t> short_seq = {0};
  bad.seq_ids = short_seq;
  EXPECT_FALSE((*host)->BeginBatch(bad).ok());
  EXPECT_FALSE((*host)->StepBatch(in).ok()) << "host-only: the GPU's executor drives the step";
}

// A table whose host launch names an op the GPU runs is refused when loaded
// (no GPU needed: the check comes before the device).
TEST(LayerSplit, TablesThatDisagreeWithTheGraphAreRefused) {
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(kStories);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<compiler::Compiled> c = Compile(**file, "cuda", 2, /*kernels=*/false);
  ASSERT_TRUE(c.ok()) << c.status();
  dispatch::Table t = *c->dispatch_table;
  // A transfer with a host-side buffer, and one from the device's null.
  for (dispatch::Launch& l : t.launches) {
    if (l.kind != dispatch::LaunchKind::kToHost) continue;
    dispatch::Table bad = t;
    bad.launches[&l - t.launches.data()].dst = l.src;
    EXPECT_FALSE(dispatch::Validate(bad, "test").ok());
    bad = t;
    bad.launches[&l - t.launches.data()].src = dispatch::BufRef{};
    EXPECT_FALSE(dispatch::Validate(bad, "test").ok());
  }
  // Host work is refused in a persistent kernel's step and in a sharded plan.
  for (const dispatch::Launch& l : t.launches) {
    if (l.kind != dispatch::LaunchKind::kHost) continue;
    dispatch::Table bad = t;
    bad.launches[&l - t.launches.data()].runs_in = dispatch::RunsIn::kPerOpOnly;
    EXPECT_THAT(std::string(dispatch::Validate(bad, "test").message()), HasSubstr("host work"));
    break;
  }
}

// The CPU backend's host-only mode computes the host's ops as a CPU executor
// of the whole graph does: the residual stream the host sends to the GPU is
// bit for bit the same (same kernels; the host-only executor has its own,
// smaller arena and loads only the cpu's weights). Every shared model, -ngl 1.
TEST(LayerSplit, HostOnlyExecutorMatchesTheWholeGraphUpToTheBoundary) {
  std::printf("[ INFO ] host-only mode against the whole graph on %zu models\n", ReferenceModels().size());
  for (const std::string& m : ReferenceModels()) {
    SCOPED_TRACE(m);
    absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(ReferenceModelPath(m).string());
    ASSERT_TRUE(file.ok()) << file.status();
    absl::StatusOr<compiler::Compiled> c = Compile(**file, "cuda", 1, /*kernels=*/false);
    ASSERT_TRUE(c.ok()) << c.status();
    const ir::Graph& g = c->graph;
    int boundary = -1;  // the copy to the GPU
    for (size_t i = 0; i < g.ops().size(); ++i) {
      const ir::Op& op = g.ops()[i];
      if (op.kind == ir::OpKind::kCopy && g.value(op.inputs[0]).device == ir::Device::kCpu &&
          g.value(op.inputs[0]).storage != ir::Storage::kInput) {
        boundary = static_cast<int>(i);
        break;
      }
    }
    ASSERT_GE(boundary, 0);
    CpuExecutorOptions host_opts;
    host_opts.host_ops_only = true;
    host_opts.threads = 2;
    absl::StatusOr<std::unique_ptr<CpuExecutor>> host = CpuExecutor::Create(g, GgufResolver(**file), host_opts);
    ASSERT_TRUE(host.ok()) << host.status();
    CpuExecutorOptions whole_opts;
    whole_opts.threads = 2;
    absl::StatusOr<std::unique_ptr<CpuExecutor>> whole = CpuExecutor::Create(g, GgufResolver(**file), whole_opts);
    ASSERT_TRUE(whole.ok()) << whole.status();
    EXPECT_LT((*host)->ops_run_here(), static_cast<int64_t>(g.ops().size()));
    // A crafted graph whose host op reads a value the GPU holds is refused
  // (host-only mode gives that value no memory).
  if (m == "stories260K") {
    // The head reads the host's copy of the last layer's output: make it
    // read the GPU's instead.
    ir::Graph bad = g;
    ir::ValueId gpu_side = -1, host_side = -1;
    for (const ir::Op& op : g.ops()) {
      if (op.kind == ir::OpKind::kCopy && g.value(op.inputs[0]).device == ir::Device::kCuda &&
          g.value(op.outputs[0]).storage != ir::Storage::kOutput) {
        gpu_side = op.inputs[0];
        host_side = op.outputs[0];
      }
    }
    ASSERT_GE(gpu_side, 0);
    for (ir::Op& op : bad.mutable_ops()) {
      if (op.device != ir::Device::kCpu) continue;
      for (ir::ValueId& in : op.inputs) {
        if (in == host_side) in = gpu_side;
      }
    }
    bad.Reindex();
    absl::StatusOr<std::unique_ptr<CpuExecutor>> refused = CpuExecutor::Create(bad, GgufResolver(**file), host_opts);
    ASSERT_FALSE(refused.ok());
    EXPECT_THAT(std::string(refused.status().message()), HasSubstr("runs on the host but touches"));
  }
  // The GPU's ops, and whole steps, are refused in host-only mode.
    EXPECT_FALSE((*host)->RunOp(boundary).ok());
    EXPECT_FALSE((*host)->Step({1, 2}, 0).ok());

    const ir::ValueId stream = g.ops()[boundary].inputs[0];
    absl::StatusOr<int64_t> bytes = DTypeBytes(g.value(stream).dtype, ir::NumElements(g.value(stream).shape, 1));
    ASSERT_TRUE(bytes.ok());
    const std::vector<int32_t> prompt = {1, 40, 47, 26, 37, 43, 26};
    int32_t pos = 0;
    for (const std::vector<int32_t>& step : {prompt, std::vector<int32_t>{30}, std::vector<int32_t>{28}}) {
      ASSERT_TRUE((*host)->BeginStep(step, pos).ok());
      ASSERT_TRUE((*whole)->BeginStep(step, pos).ok());
      for (int i = 0; i < boundary; ++i) {
        if (g.ops()[i].device != ir::Device::kCpu) continue;
        ASSERT_TRUE((*host)->RunOp(i).ok()) << i;
        ASSERT_TRUE((*whole)->RunOp(i).ok()) << i;
      }
      const size_t n = static_cast<size_t>(*bytes) * step.size();
      ASSERT_NE((*host)->ValueData(stream), nullptr);
      EXPECT_EQ(0, std::memcmp((*host)->ValueData(stream), (*whole)->ValueData(stream), n)) << "at position " << pos;
      // The GPU's values have no host bytes in host-only mode.
      EXPECT_EQ((*host)->ValueData(g.ops()[boundary].outputs[0]), nullptr);
      pos += static_cast<int32_t>(step.size());
    }
  }
}

// ---- on a GPU

class LayerSplitGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(LayerSplitGpu, SplitPlansStayWithinTheGpuBoundOfTheCpuPlan) {
  const std::string m = GetParam();
  if (absl::Status s = CudaDeviceAvailable(); !s.ok()) GTEST_SKIP() << "no usable CUDA GPU: " << s.message();
  const fs::path path = ReferenceModelPath(m);
  if (!fs::exists(path)) GTEST_SKIP() << "../shared absent: " << path;
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(path.string());
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<int32_t> prompt, gen;
  ReferenceTokens(m, &prompt, &gen);
  absl::StatusOr<compiler::Compiled> cpu = Compile(**file, "cpu", -1);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  absl::StatusOr<compiler::Compiled> whole = Compile(**file, "cuda", -1);
  ASSERT_TRUE(whole.ok()) << whole.status();
  absl::StatusOr<std::unique_ptr<CpuExecutor>> ref = CpuExecutor::Create(cpu->graph, GgufResolver(**file));
  ASSERT_TRUE(ref.ok()) << ref.status();
  absl::StatusOr<std::unique_ptr<CudaExecutor>> gpu =
      CudaExecutor::Create(compiler::ToProgram(*whole), GgufResolver(**file));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const int64_t n_layer = Layers(cpu->graph);
  for (int64_t ngl : {int64_t{1}, n_layer}) {
    absl::StatusOr<compiler::Compiled> split = Compile(**file, "cuda", ngl);
    ASSERT_TRUE(split.ok()) << split.status();
    ASSERT_TRUE(split->dispatch_table->has_host_ops());
    absl::StatusOr<std::unique_ptr<CudaExecutor>> s =
        CudaExecutor::Create(compiler::ToProgram(*split), GgufResolver(**file));
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_THAT((*s)->Describe(), HasSubstr("split with the CPU"));
    (*ref)->Reset();
    (*gpu)->Reset();
    const int64_t V = (*file)->FindTensor("token_embd.weight")->dims[1];
    double vs_cpu = 0, vs_gpu = 0;
    auto err = [&](absl::Span<const float> x, const std::vector<float>& y, double* worst) {
      ASSERT_EQ(x.size(), y.size());
      for (size_t p = 0; p * V < x.size(); ++p) {
        const float* u = y.data() + p * V;
        const float* v = x.data() + p * V;
        double max_abs = 0;
        for (int64_t i = 0; i < V; ++i) {
          max_abs = std::max(max_abs, std::isnan(v[i]) ? INFINITY : std::fabs(double(u[i]) - v[i]));
        }
        *worst = std::max(*worst, max_abs / std::max(LogitSigma(u, V), 1e-6));
      }
    };
    int32_t pos = 0;
    std::vector<std::vector<int32_t>> steps = {prompt};
    for (int32_t t : gen) steps.push_back({t});
    for (const std::vector<int32_t>& step : steps) {
      absl::StatusOr<absl::Span<const float>> a = (*ref)->Step(step, pos);
      ASSERT_TRUE(a.ok()) << a.status();
      const std::vector<float> want(a->begin(), a->end());
      absl::StatusOr<absl::Span<const float>> b = (*gpu)->Step(step, pos);
      ASSERT_TRUE(b.ok()) << b.status();
      const std::vector<float> want_gpu(b->begin(), b->end());
      absl::StatusOr<absl::Span<const float>> got = (*s)->Step(step, pos);
      ASSERT_TRUE(got.ok()) << got.status();
      err(*got, want, &vs_cpu);
      err(*got, want_gpu, &vs_gpu);
      pos += static_cast<int32_t>(step.size());
    }
    std::printf("[ MEASURED ] layer_split %s -ngl %lld of %lld: max %.3g sigma vs the cpu plan, %.3g vs the cuda "
                "plan\n",
                m.c_str(), static_cast<long long>(ngl), static_cast<long long>(n_layer), vs_cpu, vs_gpu);
    EXPECT_LE(vs_cpu, kSplitVsCpuTolerance) << "-ngl " << ngl;
  }
}

// A paged plan split -ngl 1 (two sequences in one step, as vibrant-server
// batches them) against the CPU's paged plan: tiny-qwen2 (head size 128, so
// the GPU's layer runs the paged attention kernels).
TEST(LayerSplitGpuPaged, TwoSequencesStayWithinTheGpuBoundOfTheCpuPlan) {
  const fs::path path = ReferenceModelPath("tiny-qwen2-q4_k_m");
  if (!fs::exists(path)) GTEST_SKIP() << "../shared absent: " << path;
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(path.string());
  ASSERT_TRUE(file.ok()) << file.status();
  auto compile = [&](const std::string& device, int64_t ngl) {
    LowerOptions lo;
    lo.n_ctx = 256;
    lo.max_tokens = 32;
    lo.n_seq = 2;
    lo.block_size = 16;
    lo.all_logits = true;
    absl::StatusOr<ir::Graph> g = LowerGguf(**file, lo);
    EXPECT_TRUE(g.ok()) << g.status();
    compiler::CompileOptions o;
    o.device = device;
    o.gpu_layers = ngl;
    o.sample = false;
    return compiler::CompileGraph(*std::move(g), o);
  };
  absl::StatusOr<compiler::Compiled> cpu = compile("cpu", -1);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  absl::StatusOr<compiler::Compiled> split = compile("cuda", 1);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_NE(split->dispatch_table->seq_ids.region, dispatch::Region::kNone) << "the GPU's layer is paged";
  {  // The host's side loads (its paged ops read the graph's own slots and table; the GPU's, their copies).
    CpuExecutorOptions ho;
    ho.host_ops_only = true;
    ho.threads = 1;
    absl::StatusOr<std::unique_ptr<CpuExecutor>> host = CpuExecutor::Create(split->graph, GgufResolver(**file), ho);
    ASSERT_TRUE(host.ok()) << host.status();
  }
  if (absl::Status st = CudaDeviceAvailable(); !st.ok()) GTEST_SKIP() << "no usable CUDA GPU: " << st.message();
  absl::StatusOr<std::unique_ptr<CpuExecutor>> ref = CpuExecutor::Create(cpu->graph, GgufResolver(**file));
  ASSERT_TRUE(ref.ok()) << ref.status();
  absl::StatusOr<std::unique_ptr<CudaExecutor>> s = CudaExecutor::Create(compiler::ToProgram(*split), GgufResolver(**file));
  ASSERT_TRUE(s.ok()) << s.status();
  const int64_t max_blocks = std::get<int64_t>(cpu->graph.meta.at("max_blocks"));
  std::vector<int32_t> table(2 * max_blocks, 0);
  for (int64_t b = 0; b < max_blocks; ++b) {
    table[b] = static_cast<int32_t>(b);
    table[max_blocks + b] = static_cast<int32_t>(max_blocks + b);
  }
  std::vector<int32_t> prompt, gen;
  ReferenceTokens("tiny-qwen2-q4_k_m", &prompt, &gen);
  if (prompt.size() > 12) prompt.resize(12);
  // Step 1: sequence 0's prompt and sequence 1's first half of it; step 2:
  // one token each.
  std::vector<int32_t> toks, pos, seq;
  for (size_t i = 0; i < prompt.size(); ++i) toks.push_back(prompt[i]), pos.push_back(i), seq.push_back(0);
  for (size_t i = 0; i < prompt.size() / 2; ++i) toks.push_back(prompt[i]), pos.push_back(i), seq.push_back(1);
  const int64_t V = (*file)->FindTensor("token_embd.weight")->dims[1];
  double worst = 0;
  for (int step = 0; step < 2; ++step) {
    BatchInputs in{toks, pos, seq, table};
    absl::StatusOr<absl::Span<const float>> a = (*ref)->StepBatch(in);
    ASSERT_TRUE(a.ok()) << a.status();
    const std::vector<float> want(a->begin(), a->end());
    absl::StatusOr<absl::Span<const float>> b = (*s)->StepBatch(in);
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_EQ(b->size(), want.size());
    for (size_t p = 0; p * V < want.size(); ++p) {
      double max_abs = 0;
      for (int64_t i = 0; i < V; ++i) {
        const float g = (*b)[p * V + i];
        max_abs = std::max(max_abs, std::isnan(g) ? INFINITY : std::fabs(double(want[p * V + i]) - g));
      }
      worst = std::max(worst, max_abs / std::max(LogitSigma(want.data() + p * V, V), 1e-6));
    }
    const int32_t p0 = static_cast<int32_t>(prompt.size()), p1 = static_cast<int32_t>(prompt.size() / 2);
    toks = {gen[0], prompt[p1]};
    pos = {p0, p1};
    seq = {0, 1};
  }
  std::printf("[ MEASURED ] layer_split paged tiny-qwen2-q4_k_m -ngl 1: max %.3g sigma vs the cpu plan\n", worst);
  EXPECT_LE(worst, kSplitVsCpuTolerance);
}

INSTANTIATE_TEST_SUITE_P(Models, LayerSplitGpu, ::testing::ValuesIn(ReferenceModels()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string s = i.param;
                           for (char& ch : s) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return s;
                         });

}  // namespace
}  // namespace vibrant
