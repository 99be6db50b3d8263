// The persistent decode kernel's schedule on the host (no GPU): dependencies
// from the bytes launches touch, their transitive reduction, sub-blocks, the
// deal of groups to blocks (simulated: every group runs after its
// dependencies, and the step finishes for any block count), the split of the
// dispatch table, and the generated source (NVRTC compiles it where built).
#include "codegen/kernels/persistent.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "codegen/cuda_target.h"
#include "codegen/kernel_source.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "passes/pass.h"
#include "passes/schedule_decode.h"
#include "passes/test_models.h"
#include "runtime/dispatch.h"
#include "codegen/nvrtc.h"

namespace vibrant::codegen {
namespace {

using dispatch::Arg;
using dispatch::BufRef;
using dispatch::Launch;
using dispatch::Region;
using dispatch::TExpr;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

BufRef Buf(Region r, int64_t at, int64_t n) { return BufRef{r, TExpr::Const(at), TExpr::Const(n)}; }

Launch K(const std::string& name, int64_t grid, uint32_t threads, std::vector<BufRef> bufs) {
  Launch l;
  l.name = name;
  l.kernel = 0;
  l.grid[0] = TExpr::Const(grid);
  l.block[0] = threads;
  for (const BufRef& b : bufs) l.args.push_back(Arg::Ptr(b));
  l.args.push_back(Arg::I32(TExpr::Const(7)));
  return l;
}

// A module with one kernel that uses shared memory through a helper (and a
// helper behind an include guard, which the second copy must define too).
constexpr char kModule[] = R"(
#ifndef GUARDED_HELPER
#define GUARDED_HELPER
VB_INLINE float guarded(float v) { return v; }
#endif
VB_INLINE float helper_with_shared(float v) { __shared__ float s[32]; s[0] = v; return s[0]; }
VB_INLINE float calls_it(float v) { return helper_with_shared(v) + 1.0f; }
extern "C" __global__ void __launch_bounds__(128) k_plain(const float* a, float* b, int n) { b[0] = a[0]; }
extern "C" __global__ void k_shared(const float* a, float* b, int n) { b[0] = calls_it(a[0]); }
)";

TEST(PersistentSchedule, SharedMemoryUsersAreFoundThroughHelpers) {
  const std::set<std::string> s = FunctionsUsingSharedMemory(kModule);
  EXPECT_TRUE(s.count("helper_with_shared"));
  EXPECT_TRUE(s.count("calls_it"));
  EXPECT_TRUE(s.count("k_shared"));
  EXPECT_FALSE(s.count("k_plain"));
}

TEST(PersistentSchedule, DependenciesFollowOverlappingBytesReducedTransitively) {
  dispatch::Table t;
  t.kernels = {"k_plain"};
  // 0 writes A; 1 reads A writes B; 2 reads B writes C; 3 reads A and C
  // (0 is reached through 2); 4 touches only weights and D; 5 reads D and B.
  t.launches = {
      K("k_plain", 4, 128, {Buf(Region::kArena, 0, 64)}),
      K("k_plain", 4, 128, {Buf(Region::kArena, 0, 64), Buf(Region::kArena, 64, 64)}),
      K("k_plain", 4, 128, {Buf(Region::kArena, 64, 64), Buf(Region::kArena, 128, 64)}),
      K("k_plain", 3, 128, {Buf(Region::kArena, 32, 16), Buf(Region::kArena, 128, 8)}),
      K("k_plain", 1, 256, {Buf(Region::kWeights, 0, 1 << 20), Buf(Region::kKv, 0, 64)}),
      K("k_plain", 5, 64, {Buf(Region::kKv, 32, 64), Buf(Region::kArena, 100, 4), Buf(Region::kWeights, 0, 8)}),
  };
  auto p = BuildPersistentSchedule(t, {0, 1, 2, 3, 4, 5}, kModule, 4, 2);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->threads, 256);
  EXPECT_EQ(p->blocks, 8);
  ASSERT_EQ(p->stages.size(), 6u);
  EXPECT_THAT(p->stages[0].deps, ElementsAre());
  EXPECT_THAT(p->stages[1].deps, ElementsAre(0));
  EXPECT_THAT(p->stages[2].deps, ElementsAre(1));
  EXPECT_THAT(p->stages[3].deps, ElementsAre(2));  // 0 and 1 through 2
  EXPECT_THAT(p->stages[4].deps, ElementsAre());   // weights are read-only
  EXPECT_THAT(p->stages[5].deps, ElementsAre(2, 4));  // B (last touched by 2) and D
  // 128-thread tasks run two to a 256-thread block, 64-thread ones four.
  EXPECT_EQ(p->stages[0].subs, 2);
  EXPECT_EQ(p->stages[0].groups, 2);
  EXPECT_EQ(p->stages[3].groups, 2);
  EXPECT_EQ(p->stages[4].subs, 1);
  EXPECT_EQ(p->stages[5].subs, 4);
  EXPECT_EQ(p->stages[5].groups, 2);
  // Arguments: region and offset of pointers, scalars' bits.
  EXPECT_EQ(p->stages[1].args[1], (uint64_t{1} << 56) | 64);
  EXPECT_EQ(p->stages[1].args[2], 7u);
}

TEST(PersistentSchedule, ReadsOfTheSameBytesDoNotOrderStages) {
  // k_plain(const float* a, float* b, int n): a is read, b written.
  dispatch::Table t;
  t.kernels = {"k_plain"};
  t.launches = {
      K("k_plain", 1, 128, {Buf(Region::kArena, 0, 64), Buf(Region::kArena, 64, 64)}),    // A -> B
      K("k_plain", 1, 128, {Buf(Region::kArena, 64, 64), Buf(Region::kArena, 128, 64)}),  // B -> C
      K("k_plain", 1, 128, {Buf(Region::kArena, 64, 64), Buf(Region::kArena, 192, 64)}),  // B -> D
      K("k_plain", 1, 128, {Buf(Region::kArena, 256, 64), Buf(Region::kArena, 0, 64)}),   // E -> A
  };
  auto p = BuildPersistentSchedule(t, {0, 1, 2, 3}, kModule, 1, 1);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(p->stages[1].deps, ElementsAre(0));
  EXPECT_THAT(p->stages[2].deps, ElementsAre(0));  // not 1: both only read B
  EXPECT_THAT(p->stages[3].deps, ElementsAre(0));  // writes A, which 0 read
}

TEST(PersistentSchedule, ParamAccessAndSharedMemoryInsideNamespaces) {
  const std::string ns = std::string("namespace vbk {\n") + kModule + "}  // namespace vbk\n";
  EXPECT_THAT(KernelParamAccess(ns, "k_plain"),
              ElementsAre(ParamAccess::kRead, ParamAccess::kReadWrite, ParamAccess::kValue));
  EXPECT_TRUE(KernelParamAccess(ns, "nope").empty());
  const std::set<std::string> s = FunctionsUsingSharedMemory(ns);
  EXPECT_TRUE(s.count("k_shared"));
  EXPECT_FALSE(s.count("k_plain"));
}

TEST(PersistentSchedule, KernelsUsingSharedMemoryRunOneTaskPerBlock) {
  dispatch::Table t;
  t.kernels = {"k_shared", "k_plain"};
  t.launches = {K("k_shared", 6, 64, {Buf(Region::kArena, 0, 4)}), K("k_plain", 6, 256, {Buf(Region::kArena, 0, 4)})};
  auto p = BuildPersistentSchedule(t, {0, 1}, kModule, 2, 1);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->stages[0].subs, 1);
  EXPECT_EQ(p->stages[0].groups, 2);  // at most one group per block
}

TEST(PersistentSchedule, TheSecondCopyUndefinesIncludeGuards) {
  dispatch::Table t;
  t.kernels = {"k_plain"};
  t.launches = {K("k_plain", 1, 128, {Buf(Region::kArena, 0, 4), Buf(Region::kArena, 4, 4)})};
  auto p = BuildPersistentSchedule(t, {0}, kModule, 1, 1);
  ASSERT_TRUE(p.ok()) << p.status();
  auto src = PersistentSource(kModule, *p);
  ASSERT_TRUE(src.ok()) << src.status();
  const size_t undef = src->find("#undef GUARDED_HELPER");
  ASSERT_NE(undef, std::string::npos);
  EXPECT_LT(undef, src->find("VB_INLINE float guarded"));
}

TEST(PersistentSchedule, RejectsWhatCannotBeATask) {
  dispatch::Table t;
  t.kernels = {"k_plain"};
  Launch gemm;
  gemm.kind = dispatch::LaunchKind::kGemm;
  gemm.name = "cublaslt";
  t.launches = {gemm, K("k_plain", 1, 96, {})};
  auto p = BuildPersistentSchedule(t, {0}, kModule, 2, 1);
  EXPECT_THAT(p.status().message(), HasSubstr("GEMM"));
  p = BuildPersistentSchedule(t, {1}, kModule, 2, 1);
  EXPECT_THAT(p.status().message(), HasSubstr("power of two"));
  p = BuildPersistentSchedule(t, {1}, kModule, 0, 1);
  EXPECT_FALSE(p.ok());
}

// Runs the schedule as the kernel does, one block action at a time in a
// fixed rotation: a block runs its next group only when every dependency's
// counter is full. Returns false on a deadlock; records the completion order.
bool Simulate(const PersistentSchedule& p, std::vector<std::pair<int, int64_t>>* order) {
  std::vector<int64_t> done(p.stages.size(), 0);
  std::vector<size_t> next(p.blocks, 0);
  size_t remaining = 0;
  for (const auto& l : p.block_groups) remaining += l.size();
  while (remaining > 0) {
    bool progressed = false;
    for (int b = 0; b < p.blocks; ++b) {
      if (next[b] >= p.block_groups[b].size()) continue;
      const auto [stage, k] = p.block_groups[b][next[b]];
      bool ready = true;
      for (int d : p.stages[stage].deps) ready = ready && done[d] == p.stages[d].groups;
      if (!ready) continue;
      ++done[stage];
      ++next[b];
      --remaining;
      progressed = true;
      order->push_back({stage, k});
    }
    if (!progressed) return false;
  }
  return true;
}

// Tiny Qwen2 through the default cuda pipeline (schedule-decode with
// `decode_blocks_per_sm`; 0: one launch per op).
absl::StatusOr<ir::Graph> CompiledTinyQwen2(int decode_blocks_per_sm) {
  auto m = passes::test_models::TinyQwen2();
  if (!m.ok()) return m.status();
  LowerOptions lo;
  lo.max_tokens = 8;
  lo.n_ctx = 128;
  auto g = (*m)->Lower(lo);
  if (!g.ok()) return g.status();
  const CudaTarget target{CudaTargetOptions()};
  passes::PassContext ctx;
  ctx.device = passes::DevicePolicy::kCuda;
  const ir::Graph* gp = &*g;
  ctx.cuda_supports = [gp](const ir::Op& op) { return CheckCudaSupportsOp(*gp, op).ok(); };
  ctx.cuda_kernels = &target;
  ctx.decode_blocks_per_sm = decode_blocks_per_sm;
  std::ostringstream log;
  if (absl::Status s = passes::DefaultPipeline().Run(*g, ctx, {}, log); !s.ok()) return s;
  return g;
}

TEST(PersistentSchedule, EveryGroupRunsAfterItsDependenciesForAnyBlockCount) {
  // The real step: the default pipeline for cuda, then the op-by-op table.
  auto g = CompiledTinyQwen2(0);
  ASSERT_TRUE(g.ok()) << g.status();
  const CudaTargetOptions opts;
  auto t = LowerDispatch(*g, opts);
  ASSERT_TRUE(t.ok()) << t.status();
  std::vector<int> step;
  for (int i = 0; i < static_cast<int>(t->launches.size()); ++i) {
    if (t->launches[i].t_min <= 1 && 1 <= t->launches[i].t_max) step.push_back(i);
  }
  const std::string module = ModuleSource(KernelSetForGraph(*g));
  // The real module: kernels whose helpers use shared memory are found.
  const std::set<std::string> shared = FunctionsUsingSharedMemory(module);
  for (const char* k : {"vb_attn_split_f16", "vb_attn_combine", "vb_matmul1_f32"}) {
    if (module.find(std::string(" ") + k + "(") != std::string::npos && std::string(k) != "vb_attn_combine") {
      EXPECT_TRUE(shared.count(k)) << k;
    }
  }
  EXPECT_FALSE(shared.count("vb_rope"));
  for (int sms : {1, 3, 132}) {
    for (int bps : {1, 2}) {
      auto p = BuildPersistentSchedule(*t, step, module, sms, bps);
      ASSERT_TRUE(p.ok()) << p.status();
      // Every launch of the step is a stage, in order; with a dependency on
      // its predecessor where the op-by-op order mattered.
      ASSERT_EQ(p->stages.size(), step.size());
      std::vector<std::pair<int, int64_t>> order;
      ASSERT_TRUE(Simulate(*p, &order)) << sms << " SMs x " << bps;
      EXPECT_EQ(static_cast<int64_t>(order.size()), p->total_groups());
      // Completion order respects the (unreduced) overlap relation.
      std::vector<int64_t> finished(p->stages.size(), 0);
      std::vector<int> first_done_at(p->stages.size(), -1), last_done_at(p->stages.size(), -1);
      for (int i = 0; i < static_cast<int>(order.size()); ++i) {
        const int s = order[i].first;
        if (first_done_at[s] < 0) first_done_at[s] = i;
        last_done_at[s] = i;
      }
      for (size_t s = 0; s < p->stages.size(); ++s) {
        for (int d : p->stages[s].deps) EXPECT_LT(last_done_at[d], first_done_at[s]) << s << " after " << d;
      }
    }
  }
  // The attention of every layer waits for its KV store (through the cache).
  auto p = BuildPersistentSchedule(*t, step, module, 132, 2);
  ASSERT_TRUE(p.ok());
  int attention_stages = 0;
  for (const PersistentStage& s : p->stages) {
    const std::string& name = t->launches[s.launch].name;
    if ((name.rfind("vb_attn_dec_", 0) == 0 || name.rfind("vb_attn_split", 0) == 0) &&
        name.find("combine") == std::string::npos) {
      ++attention_stages;
      bool waits_for_store = false;
      std::vector<int> stack(s.deps.begin(), s.deps.end());
      std::set<int> seen;
      while (!stack.empty()) {
        const int d = stack.back();
        stack.pop_back();
        if (!seen.insert(d).second) continue;
        waits_for_store |= t->launches[p->stages[d].launch].name.rfind("vb_kv_store", 0) == 0;
        stack.insert(stack.end(), p->stages[d].deps.begin(), p->stages[d].deps.end());
      }
      EXPECT_TRUE(waits_for_store) << name;
    }
  }
  EXPECT_GT(attention_stages, 0);
}

TEST(PersistentSchedule, LoweringRunsTheStepAsOneLaunchAndKeepsTheOpByOpOnes) {
  auto g = CompiledTinyQwen2(2);
  ASSERT_TRUE(g.ok()) << g.status();
  const CudaTargetOptions opts;
  ASSERT_EQ(g->meta.count(passes::kDecodeScheduleKey), 1u);
  std::string src;
  auto t = LowerDispatch(*g, opts, &src);
  ASSERT_TRUE(t.ok()) << t.status();
  g->meta.erase(passes::kDecodeScheduleKey);
  auto ops = LowerDispatch(*g, opts);
  ASSERT_TRUE(ops.ok()) << ops.status();
  auto names = [](const std::vector<const Launch*>& ls) {
    std::vector<std::string> out;
    for (const Launch* l : ls) out.push_back(l->name);
    return out;
  };
  EXPECT_THAT(names(dispatch::LaunchesFor(*t, 1)), ElementsAre(kPersistentKernelName));
  EXPECT_EQ(names(dispatch::LaunchesFor(*t, 1, /*per_op=*/true)), names(dispatch::LaunchesFor(*ops, 1)));
  for (int64_t T : {2, 5, 8}) {
    EXPECT_EQ(names(dispatch::LaunchesFor(*t, T)), names(dispatch::LaunchesFor(*ops, T))) << T;
  }
  EXPECT_GT(t->region_bytes[static_cast<int>(Region::kState)], 0);
  // The plan round-trips and validates.
  auto back = dispatch::Parse(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(dispatch::Serialize(*t).data()),
                                dispatch::Serialize(*t).size()),
      "test");
  EXPECT_TRUE(back.ok()) << back.status();
  EXPECT_THAT(src, HasSubstr(std::string(" ") + kPersistentKernelName + "("));
  // NVRTC compiles the module with the persistent kernel.
  NvrtcOptions nv;
  nv.arch = "sm_90";
  bool hit = false;
  auto k = CompileCuda(ModuleSource(KernelSetForGraph(*g)) + src, kModuleName, nv, &hit);
  EXPECT_TRUE(k.ok()) << k.status().message().substr(0, 4000);
}

// A step that samples (passes/append_sample): the sampler's two launches
// stay launches of their own after the persistent kernel (vb_sample_pick's
// 1,024 threads and both kernels' shared memory would otherwise size every
// task's block); the module, whose sampler kernels the persistent source
// re-emits as device functions, still compiles.
TEST(PersistentSchedule, TheSamplerRunsAfterThePersistentKernel) {
  auto m = passes::test_models::TinyQwen2();
  ASSERT_TRUE(m.ok()) << m.status();
  LowerOptions lo;
  lo.max_tokens = 8;
  lo.n_ctx = 128;
  auto g = (*m)->Lower(lo);
  ASSERT_TRUE(g.ok()) << g.status();
  CudaTargetOptions opts;
  const CudaTarget target(opts);
  passes::PassContext ctx;
  ctx.device = passes::DevicePolicy::kCuda;
  ctx.cuda_supports = [&](const ir::Op& op) { return CheckCudaSupportsOp(*g, op).ok(); };
  ctx.cuda_kernels = &target;
  ctx.decode_blocks_per_sm = 2;
  passes::PipelineConfig config;
  config.append_sample = true;
  config.sample_required = true;
  std::ostringstream log;
  ASSERT_TRUE(passes::DefaultPipeline(config).Run(*g, ctx, {}, log).ok()) << log.str();
  std::string src;
  auto t = LowerDispatch(*g, opts, &src);
  ASSERT_TRUE(t.ok()) << t.status();
  g->meta.erase(passes::kDecodeScheduleKey);
  auto ops = LowerDispatch(*g, opts);
  ASSERT_TRUE(ops.ok()) << ops.status();
  auto names = [](const std::vector<const Launch*>& ls) {
    std::vector<std::string> out;
    for (const Launch* l : ls) out.push_back(l->name);
    return out;
  };
  EXPECT_THAT(names(dispatch::LaunchesFor(*t, 1)),
              ElementsAre(kPersistentKernelName, "vb_sample_gather", "vb_sample_pick"));
  EXPECT_EQ(names(dispatch::LaunchesFor(*t, 1, /*per_op=*/true)), names(dispatch::LaunchesFor(*ops, 1)));
  for (int64_t T : {2, 8}) {
    EXPECT_EQ(names(dispatch::LaunchesFor(*t, T)), names(dispatch::LaunchesFor(*ops, T))) << T;
  }
  // The kernel's block is the largest task's, not the sampler's 1,024.
  for (const Launch* l : dispatch::LaunchesFor(*t, 1)) {
    if (l->name == kPersistentKernelName) {
      EXPECT_LT(l->block[0], 1024u);
    }
  }
  EXPECT_THAT(src, ::testing::Not(HasSubstr("VBP_RUN_K(vb_sample")));
  NvrtcOptions nv;
  nv.arch = "sm_90";
  bool hit = false;
  auto k = CompileCuda(ModuleSource(KernelSetForGraph(*g)) + src, kModuleName, nv, &hit);
  EXPECT_TRUE(k.ok()) << k.status().message().substr(0, 4000);
}

}  // namespace
}  // namespace vibrant::codegen
