// The compile library for the cuda device (no GPU needed): the IR's kernel
// variants and the dispatch table agree, the table survives the plan file and
// rejects what would make the runtime read or write out of bounds, and a plan
// that lacks what this runtime needs is a named error.
#include "compiler/compiler.h"

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/printer.h"
#include "ir/serialize.h"
#include "frontends/lower/lower.h"
#include "passes/test_models.h"
#include "runtime/dispatch.h"
#include "runtime/plan.h"
#include "runtime/program.h"

namespace vibrant::compiler {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<Compiled> CompileTinyQwen2(CompileOptions o) {
  auto m = passes::test_models::TinyQwen2();
  if (!m.ok()) return m.status();
  LowerOptions lo;
  lo.max_tokens = 64;
  lo.n_ctx = 256;
  auto g = (*m)->Lower(lo);
  if (!g.ok()) return g.status();
  o.device = "cuda";
  o.compile_kernels = false;
  return CompileGraph(*std::move(g), o);
}

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

TEST(CompilerCuda, TheTableHoldsExactlyTheIrsLaunches) {
  CompileOptions persistent;
  persistent.decode_blocks_per_sm = 2;  // --decode-schedule persistent
  auto c = CompileTinyQwen2(persistent);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->dispatch_table.has_value());
  const dispatch::Table& t = *c->dispatch_table;
  for (int64_t T : {int64_t{1}, int64_t{2}, int64_t{31}, int64_t{32}, int64_t{64}}) {
    std::vector<std::string> from_ir, from_table;
    for (const ir::Op& op : c->graph.ops()) {
      for (const ir::KernelVariant& k : op.kernels) {
        if (k.t_min <= T && T <= k.t_max) from_ir.insert(from_ir.end(), k.launches.begin(), k.launches.end());
      }
    }
    // Per op; a plain run of T = 1 is the persistent kernel (schedule-decode)
    // whose tasks are exactly these launches but the sampler's, which run
    // after it (a cuda plan samples by default).
    for (const dispatch::Launch* l : dispatch::LaunchesFor(t, T, /*per_op=*/true)) from_table.push_back(l->name);
    EXPECT_EQ(from_ir, from_table) << "T=" << T;
    std::vector<std::string> plain;
    for (const dispatch::Launch* l : dispatch::LaunchesFor(t, T)) plain.push_back(l->name);
    if (T == 1) {
      EXPECT_EQ(plain, (std::vector<std::string>{"vb_decode_step", "vb_sample_gather", "vb_sample_pick"}));
    } else {
      EXPECT_EQ(plain, from_table) << "T=" << T;
    }
  }
  // --decode-schedule ops (the default): T = 1 op by op too.
  auto c_ops = CompileTinyQwen2({});
  ASSERT_TRUE(c_ops.ok()) << c_ops.status();
  EXPECT_EQ(c_ops->graph.meta.count("decode_schedule"), 0u);
  std::vector<std::string> ops_names, per_op_names;
  for (const dispatch::Launch* l : dispatch::LaunchesFor(*c_ops->dispatch_table, 1)) ops_names.push_back(l->name);
  for (const dispatch::Launch* l : dispatch::LaunchesFor(t, 1, true)) per_op_names.push_back(l->name);
  EXPECT_EQ(ops_names, per_op_names);
  // cuBLASLt GEMMs from 32 rows, none at decode.
  bool gemm_at_32 = false, gemm_at_1 = false;
  for (const dispatch::Launch* l : dispatch::LaunchesFor(t, 32)) gemm_at_32 |= l->kind == dispatch::LaunchKind::kGemm;
  for (const dispatch::Launch* l : dispatch::LaunchesFor(t, 1)) gemm_at_1 |= l->kind == dispatch::LaunchKind::kGemm;
  EXPECT_TRUE(gemm_at_32);
  EXPECT_FALSE(gemm_at_1);
  // --gemm-min-rows 0: no GEMM at any T.
  CompileOptions no_gemm;
  no_gemm.gemm_min_rows = 0;
  auto c2 = CompileTinyQwen2(no_gemm);
  ASSERT_TRUE(c2.ok()) << c2.status();
  for (const dispatch::Launch& l : c2->dispatch_table->launches) EXPECT_NE(l.kind, dispatch::LaunchKind::kGemm);
}

TEST(CompilerCuda, TheTableRoundTripsAndEveryTruncationIsAnError) {
  auto c = CompileTinyQwen2({});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string bytes = dispatch::Serialize(*c->dispatch_table);
  auto back = dispatch::Parse(Bytes(bytes), "t");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, *c->dispatch_table);
  for (size_t n = 0; n < bytes.size(); n += 97) {
    auto r = dispatch::Parse(Bytes(bytes.substr(0, n)), "t");
    EXPECT_FALSE(r.ok()) << "truncated at " << n;
  }
  std::string version = bytes;
  version[4] = 9;
  auto r = dispatch::Parse(Bytes(version), "plan.bin: section DISPATCH");
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr(absl::StrCat("dispatch table format 9, this runtime reads ", dispatch::kDispatchFormatVersion,
                                     ": recompile")));
}

// Tensor parallelism on the GPU (issue #17): a cuda plan compiled with
// --tp 2 carries its ranks, a shard per sharded weight (each rank's byte
// offsets into its tensor), and one collective launch per all_reduce /
// all_gather op of the IR; the table survives the plan file, and what would
// let a rank read outside its buffers is rejected.
TEST(CompilerCuda, TensorParallelPlansCarryShardsAndCollectives) {
  CompileOptions o;
  o.tp = 2;
  auto c = CompileTinyQwen2(o);
  ASSERT_TRUE(c.ok()) << c.status();
  const dispatch::Table& t = *c->dispatch_table;
  EXPECT_EQ(t.tp_ranks, 2);
  int reduce_ops = 0, gather_ops = 0;
  for (const ir::Op& op : c->graph.ops()) {
    reduce_ops += op.kind == ir::OpKind::kAllReduce;
    gather_ops += op.kind == ir::OpKind::kAllGather;
  }
  ASSERT_GE(reduce_ops, 1);
  EXPECT_EQ(gather_ops, 1);  // the vocab-parallel logits
  for (int64_t T : {int64_t{1}, int64_t{64}}) {
    int reduces = 0, gathers = 0;
    for (const dispatch::Launch* l : dispatch::LaunchesFor(t, T)) {
      reduces += l->kind == dispatch::LaunchKind::kAllReduce;
      gathers += l->kind == dispatch::LaunchKind::kAllGather;
    }
    EXPECT_EQ(reduces, reduce_ops) << "T=" << T;
    EXPECT_EQ(gathers, gather_ops) << "T=" << T;
  }
  int sharded = 0;
  for (const dispatch::WeightSlot& s : t.weights) {
    if (s.rank_offsets.empty()) continue;
    ++sharded;
    ASSERT_EQ(s.rank_offsets.size(), 2u) << s.source;
    EXPECT_EQ(s.bytes % s.row_bytes, 0) << s.source;
    if (s.row_stride == 0) {
      EXPECT_EQ(s.rank_offsets[1] - s.rank_offsets[0], s.bytes) << s.source << ": rank 1's rows follow rank 0's";
    } else {
      EXPECT_EQ(s.rank_offsets[1] - s.rank_offsets[0], s.row_bytes) << s.source << ": the next block of columns";
    }
  }
  EXPECT_GE(sharded, 4);
  const std::string bytes = dispatch::Serialize(t);
  auto back = dispatch::Parse(Bytes(bytes), "t");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, t);
  EXPECT_THAT(dispatch::Describe(t), HasSubstr("all_reduce arena"));

  // Crafted tables: a shard without an offset per rank, a collective in a
  // plan of one rank, an all_reduce larger than its buffers.
  dispatch::Table bad = t;
  for (dispatch::WeightSlot& s : bad.weights) {
    if (!s.rank_offsets.empty()) {
      s.rank_offsets.pop_back();
      break;
    }
  }
  EXPECT_THAT(std::string(dispatch::Validate(bad, "p").message()), HasSubstr("a shard needs 2 rank offsets"));
  bad = t;
  bad.tp_ranks = 1;
  for (dispatch::WeightSlot& s : bad.weights) s.rank_offsets.clear(), s.row_bytes = 0, s.row_stride = 0;
  EXPECT_THAT(std::string(dispatch::Validate(bad, "p").message()), HasSubstr("a collective in a plan of one rank"));
  bad = t;
  for (dispatch::Launch& l : bad.launches) {
    if (l.kind == dispatch::LaunchKind::kAllReduce) {
      l.bytes = dispatch::TExpr::Linear(0, l.dst.extent.Eval(l.t_max) + 4);
      break;
    }
  }
  EXPECT_THAT(std::string(dispatch::Validate(bad, "p").message()), HasSubstr("exceeds its buffers"));
  bad = t;
  bad.tp_ranks = 65;
  EXPECT_THAT(std::string(dispatch::Validate(bad, "p").message()), HasSubstr("tp_ranks 65"));
  // Sizes whose products overflow int64 are errors, not undefined behaviour
  // (the plan fuzzer's finds, run under UBSan: tests/fuzz/seeds/plan/huge-logits-elems.plan).
  bad = t;
  bad.logits_elems = dispatch::TExpr::Const(int64_t{1} << 61);
  EXPECT_THAT(std::string(dispatch::Validate(bad, "p").message()), HasSubstr("exceed the logits buffer"));
  bad = t;
  for (dispatch::Launch& l : bad.launches) {
    if (l.kind == dispatch::LaunchKind::kAllGather) {
      l.m = dispatch::TExpr::Const(INT32_MAX);
      l.n = INT32_MAX;
      break;
    }
  }
  EXPECT_THAT(std::string(dispatch::Validate(bad, "p").message()), HasSubstr("exceeds its buffers"));
}

// Sampling in the step (passes/append_sample): on by default for cuda plans,
// off for cpu plans, either way on request; the table names its buffers.
TEST(CompilerCuda, CudaPlansSampleOnTheGpuByDefault) {
  auto c = CompileTinyQwen2({});
  ASSERT_TRUE(c.ok()) << c.status();
  const dispatch::Table& t = *c->dispatch_table;
  EXPECT_EQ(t.sampling.region, dispatch::Region::kArena);
  EXPECT_EQ(t.token.region, dispatch::Region::kArena);
  EXPECT_EQ(t.sampling.extent.Eval(1), 32);
  EXPECT_EQ(t.token.extent.Eval(1), 4);
  bool option = false;
  for (const auto& [k, v] : c->options) option |= k == "sample" && v == "1";
  EXPECT_TRUE(option);
  // The sample op's two launches run at every T.
  for (int64_t T : {int64_t{1}, int64_t{64}}) {
    std::vector<std::string> names;
    for (const dispatch::Launch* l : dispatch::LaunchesFor(t, T)) names.push_back(l->name);
    ASSERT_GE(names.size(), 2u);
    EXPECT_EQ(names[names.size() - 2], "vb_sample_gather") << "T=" << T;
    EXPECT_EQ(names.back(), "vb_sample_pick") << "T=" << T;
  }
  EXPECT_THAT(dispatch::Describe(t), HasSubstr("sampling: params"));

  CompileOptions off;
  off.sample = false;
  auto c2 = CompileTinyQwen2(off);
  ASSERT_TRUE(c2.ok()) << c2.status();
  EXPECT_EQ(c2->dispatch_table->token.region, dispatch::Region::kNone);
  EXPECT_EQ(c2->graph.FindValue("token"), -1);
  EXPECT_LT(c2->dispatch_table->launches.size(), t.launches.size());
}

TEST(CompilerCuda, TheSampleBuffersAreChecked) {
  auto c = CompileTinyQwen2({});
  ASSERT_TRUE(c.ok()) << c.status();
  dispatch::Table t = *c->dispatch_table;
  t.token = dispatch::BufRef{};
  EXPECT_THAT(std::string(dispatch::Validate(t, "d").message()), HasSubstr("both buffers"));
  t = *c->dispatch_table;
  t.sampling.extent = dispatch::TExpr::Const(16);
  EXPECT_THAT(std::string(dispatch::Validate(t, "d").message()), HasSubstr("at least 32 bytes"));
  t = *c->dispatch_table;
  t.token.offset = dispatch::TExpr::Linear(4, 0);
  EXPECT_THAT(std::string(dispatch::Validate(t, "d").message()), HasSubstr("token: a fixed buffer"));
  t = *c->dispatch_table;
  t.token.offset = dispatch::TExpr::Const(t.region_bytes[static_cast<int>(dispatch::Region::kArena)]);
  EXPECT_THAT(std::string(dispatch::Validate(t, "d").message()), HasSubstr("exceed the region"));
}

TEST(Compiler, CpuPlansSampleOnlyWhenAsked) {
  auto m = passes::test_models::TinyQwen2();
  ASSERT_TRUE(m.ok()) << m.status();
  CompileOptions o;
  o.device = "cpu";
  auto plain = CompileGguf(*(*m)->file, o);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->graph.FindValue("token"), -1);
  o.sample = true;
  auto sampled = CompileGguf(*(*m)->file, o);
  ASSERT_TRUE(sampled.ok()) << sampled.status();
  const ir::ValueId token = sampled->graph.FindValue("token");
  ASSERT_GE(token, 0);
  EXPECT_EQ(sampled->graph.ops()[sampled->graph.value(token).producer].kind, ir::OpKind::kSample);
  EXPECT_EQ(sampled->graph.ops()[sampled->graph.value(token).producer].device, ir::Device::kCpu);
}

TEST(CompilerCuda, BuffersOutsideTheirRegionAreRejected) {
  auto c = CompileTinyQwen2({});
  ASSERT_TRUE(c.ok()) << c.status();
  dispatch::Table t = *c->dispatch_table;
  // A kernel argument moved past the end of the arena.
  for (dispatch::Launch& l : t.launches) {
    for (dispatch::Arg& a : l.args) {
      if (a.kind == dispatch::Arg::Kind::kPtr && a.buf.region == dispatch::Region::kArena) {
        a.buf.offset = dispatch::TExpr::Const(t.region_bytes[static_cast<int>(dispatch::Region::kArena)]);
        absl::Status s = dispatch::Validate(t, "plan.bin: section DISPATCH");
        EXPECT_THAT(std::string(s.message()), HasSubstr("exceed the region of"));
        return;
      }
    }
  }
  FAIL() << "no arena argument";
}

TEST(CompilerCuda, TExprRules) {
  using dispatch::TExpr;
  EXPECT_EQ(TExpr::Const(7).Eval(100), 7);
  EXPECT_EQ(TExpr::Linear(3, -2).Eval(5), 13);
  EXPECT_EQ(TExpr::CeilDiv(1, 0, 8).Eval(9), 2);
  EXPECT_EQ(TExpr::CeilDiv(1, 0, 8).Eval(16), 2);
  EXPECT_EQ(TExpr::CeilDiv(1, 0, 256, 1, 8192).Eval(1 << 30), 8192);
  EXPECT_EQ(TExpr::CeilDiv(1, -10, 4, 1).Eval(2), 1);  // ceil(-8 / 4) = -2, clamped to 1
}

TEST(CompilerCuda, PlansWithoutADispatchTableAskToRecompile) {
  auto m = passes::test_models::TinyQwen2();
  ASSERT_TRUE(m.ok()) << m.status();
  auto c = CompileTinyQwen2({});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string dir = ::testing::TempDir() + "/compiler_test";
  std::filesystem::create_directories(dir);
  PlanContents contents;
  contents.graph = std::string("not read");
  contents.options = {{"device", "cuda"}};
  contents.embedded_gguf = absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>((*m)->bytes.data()),
                                                     (*m)->bytes.size());
  contents.kernels = std::string("VBKERNEL");
  ASSERT_TRUE(WritePlan(dir + "/old.plan", contents).ok());
  auto plan = PlanFile::Open(dir + "/old.plan");
  ASSERT_TRUE(plan.ok()) << plan.status();
  // The graph is checked first; give it a real one.
  contents.graph = ir::SerializeGraph(c->graph);
  ASSERT_TRUE(WritePlan(dir + "/old.plan", contents).ok());
  plan = PlanFile::Open(dir + "/old.plan");
  ASSERT_TRUE(plan.ok()) << plan.status();
  auto p = LoadProgram(**plan);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("a cuda plan without a DISPATCH section (recompile it"));
}


// x [T, K] = embedding(tokens), then `weights` matmuls of x (combined into
// one multi_matmul when they share a type) summed into the logits' input.
ir::Graph MatmulGraph(DType t, const std::vector<int64_t>& rows, int64_t K, int64_t max_tokens) {
  ir::Graph g;
  g.max_tokens = max_tokens;
  const ir::ValueId tokens = g.AddInput("tokens", DType::kI32, {ir::kTokens});
  const ir::ValueId x =
      *g.AddOp(ir::OpKind::kEmbedding, {g.AddWeight("e", DType::kF32, {4, K}, "e"), tokens}, "x");
  ir::ValueId sum = -1;
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string w = "w" + std::to_string(i);
    ir::ValueId y = *g.AddOp(ir::OpKind::kMatMul, {x, g.AddWeight(w, t, {rows[i], K}, w)}, "y" + w);
    ir::ValueId last = *g.AddOp(ir::OpKind::kLastRow, {y}, "last" + w);
    ir::ValueId head = *g.AddOp(ir::OpKind::kReshape, {last}, "head" + w,
                                {{"shape", std::vector<int64_t>{rows[i] / 64, 64}}});
    ir::ValueId l = *g.AddOp(ir::OpKind::kLastRow, {head}, "l" + w);
    sum = sum < 0 ? l : *g.AddOp(ir::OpKind::kAdd, {sum, l}, "s" + w);
  }
  g.MarkOutput(*g.AddOp(ir::OpKind::kScale, {sum}, "logits", {{"scale", 1.0}}));
  return g;
}

const ir::Op* FirstMatmul(const ir::Graph& g) {
  for (const ir::Op& op : g.ops()) {
    if (op.kind == ir::OpKind::kMatMul || op.kind == ir::OpKind::kMultiMatMul) return &op;
  }
  return nullptr;
}

// --mmq-max-rows: the quantized tensor-core GEMM from gemm_min_rows to that
// many rows (64-row blocks, then 128 from where that grid fills the GPU
// twice), cuBLASLt above; its launches read the weights as stored.
TEST(CompilerCuda, MmqVariantsByTokenRangeAndType) {
  CompileOptions o;
  o.device = "cuda";
  o.compile_kernels = false;
  o.sm_count = 132;
  o.mmq_max_rows = 3000;
  auto c = CompileGraph(MatmulGraph(DType::kQ4_K, {2048}, 2048, 4096), o);
  ASSERT_TRUE(c.ok()) << c.status();
  const ir::Op* mm = FirstMatmul(c->graph);
  ASSERT_NE(mm, nullptr);
  // 16 weight tiles of 128 rows: the 128-row grid has 2 * 132 blocks from
  // ceil(T / 128) >= 17, i.e. T >= 2049.
  struct Want {
    int64_t lo, hi;
    std::string name;
    int64_t bm;
  };
  const std::vector<Want> want = {{1, 1, "matvec_q8.multi", 0},
                                  {2, 31, "matvec_q8", 0},
                                  {32, 2048, "gemm.mmq", 64},
                                  {2049, 3000, "gemm.mmq", 128},
                                  {3001, 4096, "gemm.cublaslt", 0}};
  ASSERT_EQ(mm->kernels.size(), want.size()) << ir::PrintGraph(c->graph);
  for (size_t i = 0; i < want.size(); ++i) {
    const ir::KernelVariant& v = mm->kernels[i];
    EXPECT_EQ(v.t_min, want[i].lo);
    EXPECT_EQ(v.t_max, want[i].hi);
    EXPECT_EQ(v.name, want[i].name);
    if (want[i].bm > 0) {
      EXPECT_EQ(std::get<int64_t>(v.params.at("bm")), want[i].bm);
      EXPECT_EQ(v.launches, (std::vector<std::string>{"vb_q8a_to_f16", "vb_mmq_q4_K_m" + std::to_string(want[i].bm)}));
    }
  }
  EXPECT_THAT(ir::PrintGraph(c->graph), HasSubstr("T=32..2048: gemm.mmq {bm=64} -> vb_q8a_to_f16, vb_mmq_q4_K_m64"));
  // T = 512: the launch's grid, shared memory and arguments; no cuBLASLt.
  const dispatch::Table& t = *c->dispatch_table;
  int mmq = 0;
  for (const dispatch::Launch* l : dispatch::LaunchesFor(t, 512)) {
    EXPECT_NE(l->kind, dispatch::LaunchKind::kGemm);
    if (l->name != "vb_mmq_q4_K_m64") continue;
    ++mmq;
    EXPECT_EQ(l->grid[0].Eval(512), 8);
    EXPECT_EQ(l->grid[1].Eval(512), 16);
    EXPECT_EQ(l->block[0], 256u);
    EXPECT_EQ(l->smem, 2u * 72 * (3 * 64 + 2 * 128));
    ASSERT_EQ(l->args.size(), 16u);
    EXPECT_EQ(l->args[1].value.Eval(512), 512);                       // T
    EXPECT_EQ(l->args[2].value.Eval(512), 2048);                      // K
    EXPECT_EQ(l->args[3].value.Eval(512), 2048 / 256 * 144);          // row bytes
    EXPECT_EQ(l->args[4].buf.region, dispatch::Region::kWeights);     // w0 as stored
    EXPECT_EQ(l->args[4].buf.extent.Eval(512), 2048 * 2048 / 256 * 144);
    EXPECT_EQ(l->args[5].buf.region, dispatch::Region::kNone);        // no bias
    EXPECT_EQ(l->args[7].value.Eval(512), 2048);                      // n0
    EXPECT_EQ(l->args[11].value.Eval(512), 0);                        // unused members
    EXPECT_EQ(l->args[15].value.Eval(512), 0);
  }
  EXPECT_EQ(mmq, 1);
  bool gemm_at_4096 = false;
  for (const dispatch::Launch* l : dispatch::LaunchesFor(t, 4096)) gemm_at_4096 |= l->kind == dispatch::LaunchKind::kGemm;
  EXPECT_TRUE(gemm_at_4096);

  // A forced tile; one launch for three weights of a type (q, k, v shapes).
  o.mmq_tile = 128;
  auto c2 = CompileGraph(MatmulGraph(DType::kQ6_K, {2048, 256, 256}, 2048, 512), o);
  ASSERT_TRUE(c2.ok()) << c2.status();
  const ir::Op* mm2 = FirstMatmul(c2->graph);
  ASSERT_NE(mm2, nullptr);
  EXPECT_EQ(mm2->kind, ir::OpKind::kMultiMatMul);
  ASSERT_EQ(mm2->kernels.size(), 3u);
  EXPECT_EQ(mm2->kernels[2].name, "gemm.mmq");
  EXPECT_EQ(mm2->kernels[2].launches, (std::vector<std::string>{"vb_q8a_to_f16", "vb_mmq_q6_K_m128"}));
  for (const dispatch::Launch* l : dispatch::LaunchesFor(*c2->dispatch_table, 300)) {
    if (l->name == "vb_mmq_q6_K_m128") EXPECT_EQ(l->grid[1].Eval(300), 16 + 2 + 2);
  }

  // Types without the kernel keep cuBLASLt; --mmq-max-rows 0 is today's plan.
  o.mmq_tile = 0;
  auto c3 = CompileGraph(MatmulGraph(DType::kF16, {256}, 2048, 512), o);
  ASSERT_TRUE(c3.ok()) << c3.status();
  EXPECT_EQ(FirstMatmul(c3->graph)->kernels.back().name, "gemm.cublaslt");
  o.mmq_max_rows = 0;
  auto c4 = CompileGraph(MatmulGraph(DType::kQ4_K, {2048}, 2048, 512), o);
  ASSERT_TRUE(c4.ok()) << c4.status();
  EXPECT_EQ(FirstMatmul(c4->graph)->kernels.back().name, "gemm.cublaslt");
  for (const ir::Op& op : c4->graph.ops()) {
    for (const ir::KernelVariant& v : op.kernels) EXPECT_NE(v.name, "gemm.mmq");
  }
  // A bad tile is a named error.
  o.mmq_tile = 96;
  auto bad = CompileGraph(MatmulGraph(DType::kQ4_K, {2048}, 2048, 512), o);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("--mmq-tile must be 0 (the rule), 64 or 128"));
}

// With kernels: the module holds the quantized GEMM's entry points exactly
// when a matmul chose it.
TEST(CompilerCuda, MmqKernelsAreCompiledOnlyWhenChosen) {
#ifndef VIBRANT_WITH_CUDA
  GTEST_SKIP() << "built without the CUDA backend (no NVRTC)";
#endif
  CompileOptions o;
  o.device = "cuda";
  o.arch = "sm_90";
  o.mmq_max_rows = 4096;
  auto c = CompileGraph(MatmulGraph(DType::kQ4_K, {256}, 256, 64), o);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->kernel_bundle.has_value());
  EXPECT_THAT(c->kernel_bundle->ptx, HasSubstr(".entry vb_mmq_q4_K_m64("));
  o.mmq_max_rows = 0;
  auto c2 = CompileGraph(MatmulGraph(DType::kQ4_K, {256}, 256, 64), o);
  ASSERT_TRUE(c2.ok()) << c2.status();
  EXPECT_THAT(c2->kernel_bundle->ptx, ::testing::Not(HasSubstr("vb_mmq_")));
}
// Continuous batching (LowerOptions::n_seq): qwen2.5-3b's shapes (head 64 x
// 2 = 128, G = 8) compiled for 8 sequences in KV blocks of 16. Every step size
// runs the paged kv_store and attention kernels (none of the contiguous
// ones), the table carries the paged inputs and their shape, and survives
// the plan file.
TEST(CompilerCuda, PagedGraphsRunThePagedKernels) {
  LowerOptions lo;
  lo.max_tokens = 64;
  lo.n_ctx = 4096;
  lo.n_seq = 8;
  lo.block_size = 16;
  auto g = LowerShapes(ShapesFromSpec(passes::test_models::Qwen25_3BSpec()), lo);
  ASSERT_TRUE(g.ok()) << g.status();
  CompileOptions o;
  o.device = "cuda";
  o.compile_kernels = false;
  o.sm_count = 132;
  auto c = CompileGraph(*std::move(g), o);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->dispatch_table.has_value());
  const dispatch::Table& t = *c->dispatch_table;
  EXPECT_EQ(t.n_seq, 8);
  EXPECT_EQ(t.block_size, 16);
  EXPECT_EQ(t.max_blocks, 4096 / 16);  // the context is below the model's 32768
  EXPECT_EQ(t.n_ctx, 4096);
  EXPECT_EQ(t.seq_ids.region, dispatch::Region::kArena);
  EXPECT_EQ(t.block_table.region, dispatch::Region::kArena);
  // No sample op: the batch engine samples each sequence's row on the host.
  EXPECT_EQ(t.token.region, dispatch::Region::kNone);
  EXPECT_TRUE(dispatch::Validate(t, "t").ok());
  for (int64_t T : {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{63}, int64_t{64}}) {
    int paged_attn = 0, paged_store = 0, combine = 0;
    // The op-by-op launches (at T = 1 a plain step may run them as tasks of
    // the persistent decode kernel).
    for (const dispatch::Launch* l : dispatch::LaunchesFor(t, T, /*per_op=*/true)) {
      EXPECT_EQ(l->name.find("vb_attn_dec_"), std::string::npos) << l->name << " at T=" << T;
      EXPECT_EQ(l->name.find("vb_attn_pre_"), std::string::npos) << l->name << " at T=" << T;
      EXPECT_NE(l->name, "vb_kv_store_f16") << "T=" << T;
      if (l->name == "vb_attn_paged_f16_f16_hd128") ++paged_attn;
      if (l->name == "vb_attn_paged_combine") ++combine;
      if (l->name == "vb_kv_store_paged_f16") ++paged_store;
    }
    EXPECT_EQ(paged_attn, 36) << "T=" << T;
    EXPECT_EQ(combine, 36) << "T=" << T;
    EXPECT_EQ(paged_store, 72) << "T=" << T;
  }
  const std::string bytes = dispatch::Serialize(t);
  auto back = dispatch::Parse(Bytes(bytes), "t");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->n_seq, 8);
  EXPECT_EQ(back->block_table, t.block_table);
  // Half of the paged I/O is an error, not a plan that reads past its table.
  dispatch::Table half = t;
  half.block_table = dispatch::BufRef();
  EXPECT_THAT(std::string(dispatch::Validate(half, "t").message()), HasSubstr("seq_ids and block_table"));
  dispatch::Table big = t;
  big.n_seq = 1 << 20;
  EXPECT_FALSE(dispatch::Validate(big, "t").ok());
}

}  // namespace
}  // namespace vibrant::compiler
