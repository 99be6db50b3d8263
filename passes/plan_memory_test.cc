#include "passes/plan_memory.h"

#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <tuple>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/graph.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/assign_devices.h"
#include "passes/memory_check.h"
#include "passes/pass.h"
#include "passes/stats.h"
#include "passes/test_models.h"
#include "runtime/cpu/executor.h"

namespace vibrant::passes {
namespace {

using ::testing::HasSubstr;
using ir::Device;
using vibrant::DType;
using ir::Graph;
using ir::kTokens;
using ir::Op;
using ir::OpKind;
using ir::ValueId;

// max_tokens 4:  tokens i32[T] (16 B)         live -1..0
//   op0 x = embedding(w, tokens) f32[T, 64]    (1024 B)  0..1
//   op1 s = silu(x)            in place on x             1..2
//   op2 n = rms_norm(s)        not in place              2..3
//   op3 y = mul(n, g)          in place on n             3..4
//   op4 logits = matmul(y, w)  f32[T, 16] (256 B), an output: 4..end
Graph Chain() {
  Graph g;
  g.max_tokens = 4;
  const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  const ValueId w = g.AddWeight("w", DType::kF32, {16, 64}, "w");
  const ValueId gw = g.AddWeight("g", DType::kF32, {64}, "g");
  const ValueId x = *g.AddOp(OpKind::kEmbedding, {w, tokens}, "x");
  const ValueId s = *g.AddOp(OpKind::kSilu, {x}, "s");
  const ValueId n = *g.AddOp(OpKind::kRmsNorm, {s}, "n", {{"eps", 1e-5}});
  const ValueId y = *g.AddOp(OpKind::kMul, {n, gw}, "y");
  g.MarkOutput(*g.AddOp(OpKind::kMatMul, {y, w}, "logits"));
  return g;
}

int64_t Offset(const Graph& g, const std::string& name) { return g.value(g.FindValue(name)).arena_offset; }

TEST(PlanMemoryTest, HandComputedChain) {
  Graph g = Chain();
  absl::StatusOr<MemoryPlanStats> st = PlanGraphMemory(g);
  ASSERT_TRUE(st.ok()) << st.status();
  // Slots: (x, s) 1024 B live 0..2; (n, y) 1024 B live 2..4; tokens 256 B
  // (aligned) live -1..0; logits 256 B live 4..5. Largest first: (x, s) at 0;
  // (n, y) meets it at op 2 -> 1024; tokens meets (x, s) only -> 1024; logits
  // meets (n, y) only -> 0. Arena 2048 B instead of 256 + 4 * 1024 + 256.
  EXPECT_EQ(st->in_place, 2);
  EXPECT_EQ(st->values, 6);
  EXPECT_EQ(st->arena_bytes.at(Device::kUnassigned), 2048);
  EXPECT_EQ(st->value_bytes.at(Device::kUnassigned), 4608);
  EXPECT_EQ(Offset(g, "x"), 0);
  EXPECT_EQ(Offset(g, "s"), 0);
  EXPECT_EQ(Offset(g, "n"), 1024);
  EXPECT_EQ(Offset(g, "y"), 1024);
  EXPECT_EQ(Offset(g, "tokens"), 1024);
  EXPECT_EQ(Offset(g, "logits"), 0);
  EXPECT_EQ(Offset(g, "w"), -1);
  EXPECT_EQ(g.memory.at(Device::kUnassigned).arena_bytes, 2048);
  EXPECT_EQ(g.memory.at(Device::kUnassigned).kv_bytes, 0);
  EXPECT_TRUE(CheckMemoryPlan(g).ok()) << CheckMemoryPlan(g);
  // Planning again gives the same plan.
  const std::string once = ir::PrintGraph(g);
  ASSERT_TRUE(PlanGraphMemory(g).ok());
  EXPECT_EQ(ir::PrintGraph(g), once);
}

TEST(MemoryCheckTest, RejectsOverlapsOfLiveValues) {
  Graph g = Chain();
  ASSERT_TRUE(PlanGraphMemory(g).ok());
  {
    // logits written by op 4 while y (read by op 4, a matmul) is live.
    Graph bad = g;
    bad.mutable_value(bad.FindValue("logits")).arena_offset = 1024;
    absl::Status s = CheckMemoryPlan(bad);
    ASSERT_FALSE(s.ok());
    EXPECT_THAT(std::string(s.message()), HasSubstr("%y"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("%logits"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("overlap while both are live (ops 4..4)"));
  }
  {
    // n over s at op 2: rms_norm may not work in place.
    Graph bad = g;
    bad.mutable_value(bad.FindValue("n")).arena_offset = 0;
    bad.mutable_value(bad.FindValue("y")).arena_offset = 0;
    absl::Status s = CheckMemoryPlan(bad);
    ASSERT_FALSE(s.ok());
    EXPECT_THAT(std::string(s.message()), HasSubstr("%s"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("%n"));
  }
  {
    // Partial overlap of an in-place pair is not in place.
    Graph bad = g;
    bad.memory[Device::kUnassigned].arena_bytes = 4096;
    bad.mutable_value(bad.FindValue("s")).arena_offset = 512;
    EXPECT_FALSE(CheckMemoryPlan(bad).ok());
  }
  {
    Graph bad = g;
    bad.mutable_value(bad.FindValue("tokens")).arena_offset = 1024 + 64;
    EXPECT_THAT(std::string(CheckMemoryPlan(bad).message()), HasSubstr("not a multiple of 256"));
  }
  {
    Graph bad = g;
    bad.mutable_value(bad.FindValue("x")).arena_offset = -1;
    EXPECT_THAT(std::string(CheckMemoryPlan(bad).message()), HasSubstr("%x (unassigned): no arena offset"));
  }
  {
    Graph bad = g;
    bad.memory[Device::kUnassigned].kv_bytes = 8;
    EXPECT_THAT(std::string(CheckMemoryPlan(bad).message()), HasSubstr("KV bytes 8, the caches take 0"));
  }
  Graph none = Chain();
  EXPECT_EQ(CheckMemoryPlan(none).code(), absl::StatusCode::kFailedPrecondition);
}

// Fused bodies: x * sigmoid(x) * u with the output written by the last op.
std::shared_ptr<Graph> SwigluBody(bool with_norm, bool two_outputs) {
  auto body = std::make_shared<Graph>();
  body->max_tokens = 4;
  const ValueId a = body->AddInput("a", DType::kF32, {kTokens, 8});
  const ValueId b = body->AddInput("b", DType::kF32, {kTokens, 8});
  ValueId s = *body->AddOp(OpKind::kSilu, {a}, "s");
  if (with_norm) s = *body->AddOp(OpKind::kRmsNorm, {s}, "r", {{"eps", 1e-5}});
  const ValueId m = *body->AddOp(OpKind::kMul, {s, b}, "m");
  body->MarkOutput(m);
  if (two_outputs) body->MarkOutput(s);
  return body;
}

TEST(MemoryCheckTest, InPlaceContract) {
  Graph g;
  g.max_tokens = 4;
  const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  const ValueId w = g.AddWeight("w", DType::kF32, {16, 8}, "w");
  const ValueId v = g.AddWeight("v", DType::kF32, {8}, "v");
  const ValueId x = *g.AddOp(OpKind::kEmbedding, {w, tokens}, "x");
  const ValueId y = *g.AddOp(OpKind::kSilu, {x}, "y");
  *g.AddOp(OpKind::kAdd, {x, v}, "z");
  *g.AddOp(OpKind::kMatMul, {x, w}, "mm");
  const Op& silu = g.ops()[1];
  const Op& add = g.ops()[2];
  EXPECT_TRUE(OpAllowsInPlace(g, silu, 0));
  EXPECT_TRUE(OpAllowsInPlace(g, add, 0));
  EXPECT_FALSE(OpAllowsInPlace(g, add, 1));  // broadcast [8] operand
  EXPECT_FALSE(OpAllowsInPlace(g, g.ops()[3], 0));
  EXPECT_FALSE(OpAllowsInPlace(g, g.ops()[0], 1));
  for (auto [norm, two, want] : {std::tuple{false, false, true}, {true, false, false}, {false, true, false}}) {
    Graph h = g;
    Op fused;
    fused.kind = OpKind::kFused;
    fused.inputs = {x, y};
    fused.body = SwigluBody(norm, two);
    for (int k = 0; k < (two ? 2 : 1); ++k) {
      ir::Value out;
      out.name = absl::StrCat("f", k);
      out.shape = {kTokens, 8};
      fused.outputs.push_back(h.AddValue(out));
    }
    h.AddRawOp(fused);
    ASSERT_TRUE(ir::Verify(h).ok()) << ir::Verify(h);
    EXPECT_EQ(OpAllowsInPlace(h, h.ops().back(), 0), want) << norm << two;
    EXPECT_EQ(OpAllowsInPlace(h, h.ops().back(), 1), want) << norm << two;
  }
}

// ---- randomized graphs ------------------------------------------------------

// A random DAG of elementwise ops (add, mul, silu, reshape views, fused
// swiglu) over f32 values of a few random widths, fed by embeddings and
// reduced into one output. Weights come from one table per width.
struct RandomGraph {
  Graph g;
  std::vector<std::vector<float>> tables;  // by weight value id order of `names`
  std::vector<std::string> names;
};

RandomGraph MakeRandomGraph(std::mt19937& rng) {
  RandomGraph r;
  Graph& g = r.g;
  g.max_tokens = 1 + static_cast<int64_t>(rng() % 6);
  const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  const int n_widths = 1 + static_cast<int>(rng() % 3);
  std::vector<int64_t> widths;
  std::vector<std::vector<ValueId>> pool(n_widths);
  std::vector<ValueId> bias(n_widths);
  for (int w = 0; w < n_widths; ++w) {
    const int64_t width = 2 * (1 + static_cast<int64_t>(rng() % 48));
    widths.push_back(width);
    const std::string t = absl::StrCat("table", w), b = absl::StrCat("bias", w);
    const ValueId table = g.AddWeight(t, DType::kF32, {8, width}, t);
    bias[w] = g.AddWeight(b, DType::kF32, {width}, b);
    for (const std::string& name : {t, b}) {
      std::vector<float> data(name == t ? 8 * width : width);
      for (float& f : data) f = std::uniform_real_distribution<float>(-1, 1)(rng);
      r.names.push_back(name);
      r.tables.push_back(std::move(data));
    }
    pool[w].push_back(*g.AddOp(OpKind::kEmbedding, {table, tokens}, absl::StrCat("e", w)));
  }
  const int n_ops = 5 + static_cast<int>(rng() % 40);
  for (int i = 0; i < n_ops; ++i) {
    const int w = static_cast<int>(rng() % n_widths);
    auto pick = [&]() { return pool[w][rng() % pool[w].size()]; };
    // Prefer recent values: long chains with some long-lived values.
    auto recent = [&]() { return pool[w][pool[w].size() - 1 - rng() % std::min<size_t>(3, pool[w].size())]; };
    const std::string name = absl::StrCat("v", i);
    ValueId out = -1;
    switch (rng() % 6) {
      case 0: out = *g.AddOp(OpKind::kAdd, {recent(), pick()}, name); break;
      case 1: out = *g.AddOp(OpKind::kMul, {recent(), bias[w]}, name); break;
      case 2: out = *g.AddOp(OpKind::kSilu, {recent()}, name); break;
      case 3: {
        // A view and an op through it.
        const ValueId v = *g.AddOp(OpKind::kReshape, {recent()}, name + "_view",
                                   {{"shape", std::vector<int64_t>{kTokens, 2, widths[w] / 2}}});
        const ValueId s = *g.AddOp(OpKind::kSilu, {v}, name + "_s");
        out = *g.AddOp(OpKind::kReshape, {s}, name, {{"shape", std::vector<int64_t>{kTokens, widths[w]}}});
        break;
      }
      case 4: {
        auto body = std::make_shared<Graph>();
        body->max_tokens = g.max_tokens;
        const ValueId a = body->AddInput("a", DType::kF32, {kTokens, widths[w]});
        const ValueId b = body->AddInput("b", DType::kF32, {kTokens, widths[w]});
        const ValueId s = *body->AddOp(OpKind::kSilu, {a}, "s");
        body->MarkOutput(*body->AddOp(OpKind::kMul, {s, b}, "m"));
        ir::Value v;
        v.name = name;
        v.shape = {kTokens, widths[w]};
        out = g.AddValue(v);
        Op f;
        f.kind = OpKind::kFused;
        f.inputs = {recent(), pick()};
        f.outputs = {out};
        f.body = body;
        g.AddRawOp(f);
        break;
      }
      default: out = *g.AddOp(OpKind::kMul, {recent(), pick()}, name); break;
    }
    pool[w].push_back(out);
  }
  // One output of width 0: the sum of that width's last values.
  ValueId acc = pool[0].back();
  for (size_t k = 2; k <= std::min<size_t>(4, pool[0].size()); ++k) {
    acc = *g.AddOp(OpKind::kAdd, {acc, pool[0][pool[0].size() - k]}, absl::StrCat("sum", k));
  }
  ValueId logits = *g.AddOp(OpKind::kAdd, {acc, bias[0]}, "logits");
  g.MarkOutput(logits);
  return r;
}

std::vector<float> RunRandom(const RandomGraph& r, const std::vector<int32_t>& tokens) {
  auto resolve = [&r](const std::string& name) -> absl::StatusOr<absl::Span<const uint8_t>> {
    for (size_t i = 0; i < r.names.size(); ++i) {
      if (r.names[i] == name) {
        return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(r.tables[i].data()), r.tables[i].size() * 4);
      }
    }
    return absl::NotFoundError(name);
  };
  CpuExecutorOptions opts;
  opts.threads = 1;
  absl::StatusOr<std::unique_ptr<CpuExecutor>> e = CpuExecutor::Create(r.g, resolve, opts);
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return {};
  absl::StatusOr<absl::Span<const float>> out = (*e)->Step(tokens, 0);
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  return std::vector<float>(out->begin(), out->end());
}

// Random DAGs: the plan passes the checker, is never larger than a slot per
// value, and computes bit-identical results to unplanned execution (a wrong
// overlap would corrupt a live value).
TEST(PlanMemoryTest, RandomGraphs) {
  std::mt19937 rng(4242);
  int in_place = 0;
  for (int trial = 0; trial < 200; ++trial) {
    RandomGraph r = MakeRandomGraph(rng);
    ASSERT_TRUE(ir::Verify(r.g).ok()) << "trial " << trial << ": " << ir::Verify(r.g);
    std::vector<int32_t> tokens(1 + rng() % r.g.max_tokens);
    for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % 8);
    const std::vector<float> want = RunRandom(r, tokens);
    absl::StatusOr<MemoryPlanStats> st = PlanGraphMemory(r.g);
    ASSERT_TRUE(st.ok()) << st.status();
    in_place += st->in_place;
    ASSERT_TRUE(CheckMemoryPlan(r.g).ok()) << "trial " << trial << ": " << CheckMemoryPlan(r.g) << "\n"
                                           << ir::PrintGraph(r.g);
    EXPECT_LE(st->arena_bytes.at(Device::kUnassigned), st->value_bytes.at(Device::kUnassigned));
    const std::vector<float> got = RunRandom(r, tokens);
    ASSERT_EQ(got.size(), want.size());
    ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0)
        << "trial " << trial << "\n" << ir::PrintGraph(r.g);
  }
  EXPECT_GT(in_place, 100);  // the generator does exercise in-place reuse
}

// The pairwise reference for CheckMemoryPlan's overlap rule (memory_check.h):
// two arena roots of one device whose lifetimes [first, last] intersect and
// whose bytes intersect, unless one took the other's storage in place.
bool BruteForceOverlapFree(const Graph& g) {
  const ValueId nv = static_cast<ValueId>(g.values().size());
  const int nops = static_cast<int>(g.ops().size());
  std::vector<ValueId> root(nv);
  for (ValueId v = 0; v < nv; ++v) root[v] = v;
  for (const Op& op : g.ops()) {
    if (op.kind == OpKind::kReshape) root[op.outputs[0]] = root[op.inputs[0]];
  }
  std::vector<int> first(nv, -1), last(nv, -1);
  for (int i = 0; i < nops; ++i) {
    for (ValueId o : g.ops()[i].outputs) first[o] = last[o] = i;
  }
  for (int i = 0; i < nops; ++i) {
    for (ValueId in : g.ops()[i].inputs) last[root[in]] = std::max(last[root[in]], i);
  }
  for (ValueId o : g.outputs()) last[root[o]] = nops;
  auto bytes = [&](ValueId v) { return *DTypeBytes(g.value(v).dtype, ir::NumElements(g.value(v).shape, g.max_tokens)); };
  auto arena = [&](ValueId v) {
    const ir::Storage st = g.value(v).storage;
    return root[v] == v && (st == ir::Storage::kInput || st == ir::Storage::kActivation || st == ir::Storage::kOutput);
  };
  auto in_place = [&](ValueId a, ValueId b) {
    const int i = first[b];
    if (i < 0 || last[a] != i || g.value(a).arena_offset != g.value(b).arena_offset) return false;
    const Op& op = g.ops()[i];
    if (op.outputs.size() != 1) return false;
    bool reads = false;
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      if (root[op.inputs[k]] != a) continue;
      reads = true;
      if (!OpAllowsInPlace(g, op, k)) return false;
    }
    return reads;
  };
  for (ValueId a = 0; a < nv; ++a) {
    for (ValueId b = a + 1; b < nv; ++b) {
      if (!arena(a) || !arena(b) || g.value(a).device != g.value(b).device) continue;
      if (first[a] > last[b] || first[b] > last[a] || bytes(a) == 0 || bytes(b) == 0) continue;
      const int64_t a0 = g.value(a).arena_offset, b0 = g.value(b).arena_offset;
      if (a0 >= b0 + bytes(b) || b0 >= a0 + bytes(a)) continue;
      if (!in_place(a, b) && !in_place(b, a)) return false;
    }
  }
  return true;
}

// The sweep in CheckMemoryPlan agrees with the pairwise rule on planned
// random graphs whose offsets are then moved at random (a moved value often
// lands on a live one, sometimes on a dead one or in place).
TEST(MemoryCheckTest, AgreesWithThePairwiseRule) {
  std::mt19937 rng(1616);
  int rejected = 0, accepted = 0;
  for (int trial = 0; trial < 300; ++trial) {
    RandomGraph r = MakeRandomGraph(rng);
    ASSERT_TRUE(PlanGraphMemory(r.g).ok());
    std::vector<ValueId> planned;
    for (ValueId v = 0; v < static_cast<ValueId>(r.g.values().size()); ++v) {
      if (r.g.value(v).arena_offset >= 0 && r.g.value(v).producer >= 0 &&
          r.g.ops()[r.g.value(v).producer].kind != OpKind::kReshape) {
        planned.push_back(v);
      }
    }
    if (planned.size() < 2) continue;
    const ValueId moved = planned[rng() % planned.size()];
    const ValueId onto = planned[rng() % planned.size()];
    const int64_t arena = r.g.memory.begin()->second.arena_bytes;
    const int64_t size = *DTypeBytes(r.g.value(moved).dtype, ir::NumElements(r.g.value(moved).shape, r.g.max_tokens));
    const int64_t off = r.g.value(onto).arena_offset;
    if (off + size > arena) continue;  // outside the arena: another check
    r.g.mutable_value(moved).arena_offset = off;
    // Views carry their root's offset.
    for (const Op& op : r.g.ops()) {
      if (op.kind == OpKind::kReshape) {
        r.g.mutable_value(op.outputs[0]).arena_offset = r.g.value(op.inputs[0]).arena_offset;
      }
    }
    const bool want = BruteForceOverlapFree(r.g);
    const absl::Status got = CheckMemoryPlan(r.g);
    ASSERT_EQ(got.ok(), want) << "trial " << trial << ": " << got << "\n" << ir::PrintGraph(r.g);
    (want ? accepted : rejected)++;
  }
  EXPECT_GT(rejected, 50);
  EXPECT_GT(accepted, 20);
}

// Issue #16: the check runs on graphs from untrusted plans, so it must not
// be quadratic in their size. 100,000 values live at the same time (the old
// pairwise sweep: 5e9 comparisons, minutes) take well under a second here;
// the bound of 20 s leaves room for a loaded machine and the sanitizers.
TEST(MemoryCheckTest, ManyLiveValuesInLinearithmicTime) {
  constexpr int kN = 50000;
  Graph g;
  g.max_tokens = 1;
  const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  const ValueId w = g.AddWeight("w", DType::kF32, {8, 64}, "w");
  const ValueId e = *g.AddOp(OpKind::kEmbedding, {w, tokens}, "e");
  // x_i = silu(e) at op i, read by the i-th add of a chain that starts after
  // the last of them: all 50,000 are live together.
  std::vector<ValueId> xs;
  for (int i = 0; i < kN; ++i) xs.push_back(*g.AddOp(OpKind::kSilu, {e}, absl::StrCat("x", i)));
  ValueId acc = xs[0];
  for (int i = 1; i < kN; ++i) acc = *g.AddOp(OpKind::kAdd, {acc, xs[i]}, absl::StrCat("y", i));
  g.MarkOutput(acc);
  int64_t offset = 0;
  for (ir::Value& v : g.mutable_values()) {
    if (v.storage == ir::Storage::kWeight) continue;
    v.arena_offset = offset;
    offset += 256;
  }
  g.memory[Device::kUnassigned].arena_bytes = offset;
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status s = CheckMemoryPlan(g);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_LT(seconds, 20.0);
  // And a conflict among them is still found: y1 over x2, which op 2 of the
  // chain reads after y1 is born.
  g.mutable_value(g.FindValue("y1")).arena_offset = g.value(xs[2]).arena_offset;
  s = CheckMemoryPlan(g);
  EXPECT_THAT(std::string(s.message()), HasSubstr("%x2"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("%y1"));
}
// ---- whole models ----------------------------------------------------------

absl::Status PlanWithPipeline(Graph& g, DevicePolicy policy) {
  PassContext ctx;
  ctx.device = policy;
  if (policy != DevicePolicy::kCpu) ctx.cuda_supports = [](const Op&) { return true; };
  PipelineOptions opts;
  std::ostringstream log;
  return DefaultPipeline().Run(g, ctx, opts, log);
}

void CheckModel(const test_models::TestModel& m) {
  SCOPED_TRACE(m.name);
  for (DevicePolicy policy : {DevicePolicy::kCpu, DevicePolicy::kCuda}) {
    absl::StatusOr<Graph> g = m.Lower();
    ASSERT_TRUE(g.ok()) << g.status();
    const GraphStats before = ComputeGraphStats(*g);
    ASSERT_TRUE(PlanWithPipeline(*g, policy).ok()) << PlanWithPipeline(*g, policy);
    EXPECT_TRUE(CheckMemoryPlan(*g).ok()) << CheckMemoryPlan(*g);
    const GraphStats after = ComputeGraphStats(*g);
    EXPECT_GT(after.arena_bytes, 0);
    EXPECT_LT(after.arena_bytes, before.activation_bytes / 2);
    EXPECT_EQ(g->memory.count(Device::kCuda), policy == DevicePolicy::kCuda ? 1u : 0u);
  }
}

TEST(PlanMemoryTest, BundledModels) {
  for (auto make : {test_models::Stories260K, test_models::TinyQwen2}) {
    auto m = make();
    ASSERT_TRUE(m.ok()) << m.status();
    CheckModel(**m);
  }
}

TEST(PlanMemoryTest, SharedModels) {
  const std::vector<std::string> paths = test_models::SharedModelPaths();
  if (paths.empty()) GTEST_SKIP() << "../shared/models not found";
  for (const std::string& p : paths) {
    auto m = test_models::OpenModel(p);
    ASSERT_TRUE(m.ok()) << m.status();
    CheckModel(**m);
  }
}

// Planned execution of whole models equals unplanned execution bit for bit,
// over a prefill and decode steps (the KV caches carry state between them).
TEST(PlanMemoryTest, PlannedModelsComputeTheSameLogits) {
  for (auto make : {test_models::Stories260K, test_models::TinyQwen2}) {
    auto m = make();
    ASSERT_TRUE(m.ok()) << m.status();
    LowerOptions lo;
    lo.max_tokens = 16;
    lo.n_ctx = 64;
    lo.all_logits = true;
    absl::StatusOr<Graph> plain = (*m)->Lower(lo);
    ASSERT_TRUE(plain.ok()) << plain.status();
    Graph planned = *plain;
    ASSERT_TRUE(PlanWithPipeline(planned, DevicePolicy::kCpu).ok());
    ASSERT_FALSE(planned.memory.empty());
    auto a = CpuExecutor::Create(*plain, (*m)->Resolver());
    auto b = CpuExecutor::Create(planned, (*m)->Resolver());
    ASSERT_TRUE(a.ok() && b.ok());
    std::vector<int32_t> prompt = {1, 5, 9, 14, 2, 33, 7};
    int32_t pos = 0;
    for (int step = 0; step < 4; ++step) {
      std::vector<int32_t> tokens = step == 0 ? prompt : std::vector<int32_t>{static_cast<int32_t>(11 * step)};
      auto la = (*a)->Step(tokens, pos);
      auto lb = (*b)->Step(tokens, pos);
      ASSERT_TRUE(la.ok() && lb.ok());
      ASSERT_EQ(la->size(), lb->size());
      EXPECT_EQ(std::memcmp(la->data(), lb->data(), la->size() * sizeof(float)), 0) << (*m)->name << " step " << step;
      pos += static_cast<int32_t>(tokens.size());
    }
  }
}

// The executor refuses a plan that would put a value outside its arena.
TEST(PlanMemoryTest, ExecutorChecksPlanBounds) {
  auto m = test_models::TinyQwen2();
  ASSERT_TRUE(m.ok()) << m.status();
  absl::StatusOr<Graph> g = (*m)->Lower();
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(PlanWithPipeline(*g, DevicePolicy::kCpu).ok());
  Graph bad = *g;
  // Past the verifier's bounds check: no offset at all.
  bad.mutable_value(bad.FindValue("inp_embd")).arena_offset = -1;
  auto e = CpuExecutor::Create(bad, (*m)->Resolver());
  ASSERT_FALSE(e.ok());
  EXPECT_THAT(std::string(e.status().message()), HasSubstr("memory plan: %inp_embd (cpu): no arena offset"));
}

}  // namespace
}  // namespace vibrant::passes
