#include "passes/dce.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/graph.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/graph_edit.h"
#include "passes/test_models.h"

namespace vibrant::passes {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using vibrant::DType;
using ir::Graph;
using ir::kTokens;
using ir::OpKind;
using ir::ValueId;

std::vector<std::string> Names(const Graph& g) {
  std::vector<std::string> out;
  for (const ir::Value& v : g.values()) out.push_back(v.name);
  return out;
}

std::vector<std::string> OpNames(const Graph& g) {
  std::vector<std::string> out;
  for (const ir::Op& op : g.ops()) out.push_back(std::string(ir::OpName(op.kind)));
  return out;
}

// embedding -> {dead matmul -> dead silu}, {reshape -> kv_store (unused
// result, kept: side effect)}, {output matmul}; plus an unused weight and an
// unused KV cache.
Graph WithDeadCode() {
  Graph g;
  g.max_tokens = 4;
  const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  const ValueId positions = g.AddInput("positions", DType::kI32, {kTokens});
  const ValueId embd = g.AddWeight("w_embd", DType::kF32, {16, 8}, "w_embd");
  const ValueId dead_w = g.AddWeight("w_dead", DType::kF32, {8, 8}, "w_dead");
  const ValueId out_w = g.AddWeight("w_out", DType::kF32, {16, 8}, "w_out");
  g.AddWeight("w_unused", DType::kF32, {4}, "w_unused");
  const ValueId cache = g.AddKvCache("cache_k", DType::kF16, {8, 1, 8});
  g.AddKvCache("cache_unused", DType::kF16, {8, 1, 8});
  const ValueId x = *g.AddOp(OpKind::kEmbedding, {embd, tokens}, "x");
  const ValueId d1 = *g.AddOp(OpKind::kMatMul, {x, dead_w}, "d1");
  *g.AddOp(OpKind::kSilu, {d1}, "d2");
  const ValueId k3 = *g.AddOp(OpKind::kReshape, {x}, "k3", {{"shape", std::vector<int64_t>{kTokens, 1, 8}}});
  *g.AddOp(OpKind::kKvStore, {k3, cache, positions}, "kc");
  g.MarkOutput(*g.AddOp(OpKind::kMatMul, {x, out_w}, "logits"));
  return g;
}

TEST(DceTest, RemovesDeadOpsAndOrphanedValues) {
  Graph g = WithDeadCode();
  ASSERT_TRUE(ir::Verify(g).ok()) << ir::Verify(g);
  DceStats stats;
  ASSERT_TRUE(EliminateDeadCode(g, &stats).ok());
  EXPECT_EQ(stats.ops_removed, 2);     // d1, d2
  EXPECT_EQ(stats.values_removed, 5);  // d1, d2, w_dead, w_unused, cache_unused
  EXPECT_THAT(OpNames(g), ElementsAre("embedding", "reshape", "kv_store", "matmul"));
  EXPECT_THAT(Names(g), ElementsAre("tokens", "positions", "w_embd", "w_out", "cache_k", "x", "k3", "kc", "logits"));
  ASSERT_TRUE(ir::Verify(g).ok()) << ir::Verify(g);
  // Ids were compacted and every reference followed.
  EXPECT_EQ(g.value(g.FindValue("kc")).alias_of, g.FindValue("cache_k"));
  ASSERT_EQ(g.outputs().size(), 1u);
  EXPECT_EQ(g.value(g.outputs()[0]).name, "logits");
  EXPECT_EQ(g.ops()[3].inputs, (std::vector<ValueId>{g.FindValue("x"), g.FindValue("w_out")}));
  // A second run finds nothing.
  const std::string once = ir::PrintGraph(g);
  ASSERT_TRUE(EliminateDeadCode(g, &stats).ok());
  EXPECT_EQ(stats.ops_removed, 0);
  EXPECT_EQ(stats.values_removed, 0);
  EXPECT_EQ(ir::PrintGraph(g), once);
}

TEST(DceTest, KeepsUnusedStepInputs) {
  Graph g;
  g.max_tokens = 2;
  const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  g.AddInput("positions", DType::kI32, {kTokens});
  const ValueId w = g.AddWeight("w", DType::kF32, {4, 4}, "w");
  g.MarkOutput(*g.AddOp(OpKind::kEmbedding, {w, tokens}, "logits"));
  ASSERT_TRUE(EliminateDeadCode(g).ok());
  EXPECT_THAT(Names(g), ElementsAre("tokens", "positions", "w", "logits"));
}

TEST(DceTest, LoweredModelsHaveNoDeadCode) {
  for (auto make : {test_models::Stories260K, test_models::TinyQwen2}) {
    auto m = make();
    ASSERT_TRUE(m.ok()) << m.status();
    absl::StatusOr<Graph> g = (*m)->Lower();
    ASSERT_TRUE(g.ok()) << g.status();
    const std::string before = ir::PrintGraph(*g);
    DceStats stats;
    ASSERT_TRUE(EliminateDeadCode(*g, &stats).ok());
    EXPECT_EQ(stats.ops_removed, 0) << (*m)->name;
    EXPECT_EQ(stats.values_removed, 0) << (*m)->name;
    EXPECT_EQ(ir::PrintGraph(*g), before);
  }
}

TEST(GraphEditTest, RefusesToRemoveAValueInUse) {
  Graph g = WithDeadCode();
  const std::string before = ir::PrintGraph(g);
  std::vector<bool> keep_op(g.ops().size(), true);
  std::vector<bool> keep_value(g.values().size(), true);
  keep_value[g.FindValue("x")] = false;
  absl::Status s = RemoveOpsAndValues(g, keep_op, keep_value);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("refers to removed value"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("%x"));
  EXPECT_EQ(ir::PrintGraph(g), before);  // untouched
  EXPECT_FALSE(RemoveOpsAndValues(g, {true}, keep_value).ok());  // wrong mask size
}

TEST(GraphEditTest, UniqueNamesAndStorageRoots) {
  Graph g = WithDeadCode();
  EXPECT_EQ(UniqueValueName(g, "fresh"), "fresh");
  EXPECT_EQ(UniqueValueName(g, "x"), "x.1");
  EXPECT_EQ(StorageRoot(g, g.FindValue("k3")), g.FindValue("x"));
  EXPECT_EQ(StorageRoot(g, g.FindValue("kc")), g.FindValue("cache_k"));
  EXPECT_EQ(StorageRoot(g, g.FindValue("logits")), g.FindValue("logits"));
}

}  // namespace
}  // namespace vibrant::passes
