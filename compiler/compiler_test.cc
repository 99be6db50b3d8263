// The compile library for the cuda device (no GPU needed): the IR's kernel
// variants and the dispatch table agree, the table survives the plan file and
// rejects what would make the runtime read or write out of bounds, and a plan
// that lacks what this runtime needs is a named error.
#include "compiler/compiler.h"

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/serialize.h"
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
  auto c = CompileTinyQwen2({});
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
    // whose tasks are exactly these launches.
    for (const dispatch::Launch* l : dispatch::LaunchesFor(t, T, /*per_op=*/true)) from_table.push_back(l->name);
    EXPECT_EQ(from_ir, from_table) << "T=" << T;
    std::vector<std::string> plain;
    for (const dispatch::Launch* l : dispatch::LaunchesFor(t, T)) plain.push_back(l->name);
    if (T == 1) {
      EXPECT_EQ(plain, std::vector<std::string>{"vb_decode_step"});
    } else {
      EXPECT_EQ(plain, from_table) << "T=" << T;
    }
  }
  // --decode-schedule ops: T = 1 op by op too.
  CompileOptions ops;
  ops.decode_blocks_per_sm = 0;
  auto c_ops = CompileTinyQwen2(ops);
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
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("dispatch table format 9, this runtime reads 2: recompile"));
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

}  // namespace
}  // namespace vibrant::compiler
