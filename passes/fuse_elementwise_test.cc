#include "passes/fuse_elementwise.h"
#include "passes/test_models.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "ir/graph.h"
#include "ir/printer.h"
#include "ir/serialize.h"
#include "ir/verifier.h"
#include "runtime/cpu/executor.h"

namespace vibrant::passes {
namespace {

using ir::Graph;
using ir::kTokens;
using ir::Op;
using ir::OpKind;
using ir::ValueId;
using ::testing::HasSubstr;

const std::string kShared = VIBRANT_SOURCE_DIR "/../shared";

int64_t MetaInt(const Graph& g, const std::string& key) { return std::get<int64_t>(g.meta.at(key)); }
std::string MetaString(const Graph& g, const std::string& key) { return std::get<std::string>(g.meta.at(key)); }

int CountOps(const Graph& g, OpKind k) {
  return static_cast<int>(std::count_if(g.ops().begin(), g.ops().end(), [k](const Op& op) { return op.kind == k; }));
}

// The op defining `name` (its producer), or null.
const Op* Producer(const Graph& g, const std::string& name) {
  const ValueId v = g.FindValue(name);
  if (v < 0 || g.value(v).producer < 0) return nullptr;
  return &g.ops()[g.value(v).producer];
}

// Kinds of a fused op's body ops, e.g. "add,rms_norm,mul".
std::string BodyKinds(const Op& op) {
  std::string out;
  for (const Op& b : op.body->ops()) out += (out.empty() ? "" : ",") + std::string(ir::OpName(b.kind));
  return out;
}

struct Model {
  std::unique_ptr<GgufFile> file;
  Graph graph;
};

Model Load(const std::string& path, bool all_logits) {
  Model m;
  auto file = GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return m;
  m.file = std::move(*file);
  LowerOptions opts;
  opts.all_logits = all_logits;
  opts.max_tokens = 16;
  opts.n_ctx = 64;
  auto g = LowerGguf(*m.file, opts);
  EXPECT_TRUE(g.ok()) << g.status();
  if (g.ok()) m.graph = std::move(*g);
  return m;
}

std::unique_ptr<CpuExecutor> Executor(const Model& m, const Graph& g) {
  const GgufFile* f = m.file.get();
  auto exec = CpuExecutor::Create(g, [f](const std::string& name) -> absl::StatusOr<absl::Span<const uint8_t>> {
    const GgufTensorInfo* t = f->FindTensor(name);
    if (t == nullptr) return absl::NotFoundError(name);
    return f->TensorData(*t);
  });
  EXPECT_TRUE(exec.ok()) << exec.status();
  return exec.ok() ? std::move(*exec) : nullptr;
}

// Runs a prefill of `prompt` and `decode_steps` greedy decode steps on both
// graphs (the decode tokens are the unfused graph's argmax) and returns the
// largest |fused - unfused| over all logits, relative to the largest
// |unfused| logit.
double MaxRelDiff(const Model& m, const Graph& plain, const Graph& fused, const std::vector<int32_t>& prompt,
                  int decode_steps) {
  std::unique_ptr<CpuExecutor> a = Executor(m, plain), b = Executor(m, fused);
  if (!a || !b) return INFINITY;
  double max_diff = 0, max_abs = 0;
  int32_t pos = 0;
  std::vector<int32_t> step = prompt;
  for (int s = 0; s <= decode_steps; ++s) {
    auto la = a->Step(step, pos);
    EXPECT_TRUE(la.ok()) << la.status();
    if (!la.ok()) return INFINITY;
    std::vector<float> va(la->begin(), la->end());
    auto lb = b->Step(step, pos);
    EXPECT_TRUE(lb.ok()) << lb.status();
    if (!lb.ok()) return INFINITY;
    EXPECT_EQ(va.size(), lb->size());
    for (size_t i = 0; i < va.size() && i < lb->size(); ++i) {
      max_diff = std::max(max_diff, std::fabs(static_cast<double>(va[i]) - (*lb)[i]));
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(va[i])));
    }
    pos += static_cast<int32_t>(step.size());
    const int64_t n_vocab = MetaInt(plain, "n_vocab");
    const float* last = va.data() + va.size() - n_vocab;
    step = {static_cast<int32_t>(std::max_element(last, last + n_vocab) - last)};
  }
  return max_abs > 0 ? max_diff / max_abs : max_diff;
}

// Fuses the model's graph and checks everything that must hold for a
// lowered llama / qwen2 graph.
void CheckModel(const std::string& path, bool all_logits) {
  SCOPED_TRACE(path);
  Model m = Load(path, all_logits);
  Graph fused = m.graph;
  FusionStats st;
  absl::Status s = FuseElementwiseGraph(fused, &st);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(ir::Verify(fused).ok());

  const int L = static_cast<int>(MetaInt(m.graph, "n_layer"));
  const bool qwen2 = MetaString(m.graph, "arch") == "qwen2";
  // Lowered, per layer: rms_norm, mul, 3 matmul, 3 reshape, 2 rope, 2 kv_store,
  // attention, reshape, matmul, add, rms_norm, mul, 2 matmul, silu, mul,
  // matmul, add (24; qwen2 + 3 bias adds); then embedding, rms_norm, mul,
  // [last_row], matmul.
  const int before = L * (qwen2 ? 27 : 24) + (all_logits ? 4 : 5);
  EXPECT_EQ(st.ops_before, before);
  // (a) layer 0's attn_norm; (d) every residual add with the norm after it
  // (ffn_inp + ffn_norm, l_out + the next attn_norm or output_norm);
  // (b) one per layer; (c) q and k of every qwen2 layer.
  EXPECT_EQ(st.rms_scale, 1);
  EXPECT_EQ(st.residual_norm, 2 * L);
  EXPECT_EQ(st.swiglu, L);
  EXPECT_EQ(st.bias_rope, qwen2 ? 2 * L : 0);
  EXPECT_EQ(st.generic, 0);  // nothing else chains in these graphs
  // Absorbed: 1 + 2 per (d) + 1 per (b) + 2 per (c).
  EXPECT_EQ(st.ops_after, before - 1 - 4 * L - L - (qwen2 ? 4 * L : 0));
  EXPECT_EQ(st.ops_after, static_cast<int>(fused.ops().size()));
  EXPECT_EQ(CountOps(fused, OpKind::kFused), 1 + 3 * L + (qwen2 ? 2 * L : 0));
  EXPECT_EQ(CountOps(fused, OpKind::kRmsNorm), 0);
  EXPECT_EQ(CountOps(fused, OpKind::kSilu), 0);
  std::cout << "[ fusion ] " << std::filesystem::path(path).filename().string() << ": " << st.ops_before
            << " ops -> " << st.ops_after << " (" << CountOps(fused, OpKind::kFused) << " fused)\n";

  // Outputs keep the names of the values they replace; absorbed values are gone.
  const Op* first = Producer(fused, "attn_norm.0");
  EXPECT_TRUE(first != nullptr && first->kind == OpKind::kFused && BodyKinds(*first) == "rms_norm,mul");
  EXPECT_EQ(fused.FindValue("attn_norm.0_rms"), -1);
  const Op* res = Producer(fused, "ffn_norm.0");
  if (res != nullptr) {
    EXPECT_EQ(BodyKinds(*res), "add,rms_norm,mul");
    ASSERT_EQ(res->outputs.size(), 2u);
    EXPECT_EQ(fused.value(res->outputs[0]).name, "ffn_inp.0");
    EXPECT_EQ(fused.value(res->outputs[1]).name, "ffn_norm.0");
  } else {
    ADD_FAILURE() << "ffn_norm.0 has no producer";
  }
  const Op* last = Producer(fused, "result_norm");
  if (last != nullptr) {  // the last residual is read only by the output norm
    EXPECT_EQ(BodyKinds(*last), "add,rms_norm,mul");
    EXPECT_EQ(last->outputs.size(), 1u);
    EXPECT_EQ(fused.FindValue("l_out." + std::to_string(L - 1)), -1);
  } else {
    ADD_FAILURE() << "result_norm has no producer";
  }
  if (L > 1) {  // earlier ones are also read by the next residual add
    const Op* next = Producer(fused, "attn_norm.1");
    ASSERT_NE(next, nullptr);
    ASSERT_EQ(next->outputs.size(), 2u);
    EXPECT_EQ(fused.value(next->outputs[0]).name, "l_out.0");
  }
  const Op* sw = Producer(fused, "ffn_act.0");
  EXPECT_TRUE(sw != nullptr && BodyKinds(*sw) == "silu,mul");
  EXPECT_EQ(fused.FindValue("ffn_silu.0"), -1);
  if (qwen2) {
    const Op* q = Producer(fused, "q_rope.0");
    EXPECT_TRUE(q != nullptr && q->kind == OpKind::kFused && BodyKinds(*q) == "add,reshape,rope");
    EXPECT_EQ(fused.FindValue("q.0"), -1);
    EXPECT_EQ(fused.FindValue("q_heads.0"), -1);
  }

  // The text and binary encodings carry multi-output fused ops and the new
  // body ops unchanged.
  const std::string text = ir::PrintGraph(fused);
  auto parsed = ir::ParseGraph(text);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  if (parsed.ok()) {
    EXPECT_EQ(ir::PrintGraph(*parsed), text);
  }
  const std::string bin = ir::SerializeGraph(fused);
  auto decoded = ir::DeserializeGraph(absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bin.data()), bin.size()));
  EXPECT_TRUE(decoded.ok()) << decoded.status();
  if (decoded.ok()) {
    EXPECT_EQ(ir::SerializeGraph(*decoded), bin);
  }

  // Fusing again finds nothing more.
  Graph twice = fused;
  FusionStats st2;
  EXPECT_TRUE(FuseElementwiseGraph(twice, &st2).ok());
  EXPECT_EQ(st2.ops_after, st2.ops_before);

  // Same logits, bit for bit: a prefill of 11 tokens and 4 decode steps.
  const int64_t n_vocab = MetaInt(m.graph, "n_vocab");
  std::vector<int32_t> prompt = {1};
  for (int i = 0; i < 10; ++i) prompt.push_back(static_cast<int32_t>((37 * i + 11) % n_vocab));
  const double rel = MaxRelDiff(m, m.graph, fused, prompt, 4);
  std::cout << "[ fusion ] max |fused - unfused| / max |logit| = " << rel << "\n";
  EXPECT_EQ(rel, 0.0);
}

TEST(FuseElementwiseTest, Stories260K) {
  CheckModel(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf", /*all_logits=*/true);
  CheckModel(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf", /*all_logits=*/false);
}

TEST(FuseElementwiseTest, SharedModels) {
  if (!std::filesystem::exists(kShared + "/models")) GTEST_SKIP() << kShared << "/models is absent";
  std::vector<std::string> paths;
  for (const auto& e : std::filesystem::directory_iterator(kShared + "/models")) {
    if (e.path().extension() == ".gguf") paths.push_back(e.path().string());
  }
  std::sort(paths.begin(), paths.end());
  ASSERT_FALSE(paths.empty());
  for (const std::string& p : paths) CheckModel(p, /*all_logits=*/true);
}

// Qwen2.5-3B's shapes (no weights needed): the op counts per decode step.
TEST(FuseElementwiseTest, Qwen25_3BShapes) {
  const TransformerSpec spec = test_models::Qwen25_3BSpec();
  LowerOptions opts;  // defaults: logits of the last row only
  auto g = LowerShapes(ShapesFromSpec(spec), opts);
  ASSERT_TRUE(g.ok()) << g.status();
  FusionStats st;
  ASSERT_TRUE(FuseElementwiseGraph(*g, &st).ok());
  const int L = 36;
  EXPECT_EQ(st.ops_before, 27 * L + 5);
  EXPECT_EQ(st.ops_after, 27 * L + 5 - 1 - 9 * L);
  EXPECT_EQ(CountOps(*g, OpKind::kFused), 1 + 5 * L);
  std::cout << "[ fusion ] qwen2.5-3b shapes: " << st.ops_before << " ops -> " << st.ops_after << " ("
            << CountOps(*g, OpKind::kFused) << " fused, " << CountOps(*g, OpKind::kReshape) << " reshape views)\n";
}

TEST(FuseElementwiseTest, PassInterface) {
  Pass p = FuseElementwise();
  EXPECT_EQ(p.name, "fuse-elementwise");
  EXPECT_TRUE(p.optional);
  Model m = Load(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf", false);
  PassContext ctx;
  const size_t before = m.graph.ops().size();
  ASSERT_TRUE(p.run(m.graph, ctx).ok());
  EXPECT_LT(m.graph.ops().size(), before);
}

// ---- hand-built graphs ------------------------------------------------------------

ValueId Must(absl::StatusOr<ValueId> v) {
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : -1;
}

constexpr int64_t kD = 8;

struct Small {
  Graph g;
  ValueId tokens, a, b, w, W;
  Small() {
    g.max_tokens = 4;
    tokens = g.AddInput("tokens", DType::kI32, {kTokens});
    const ValueId ta = g.AddWeight("ta", DType::kF32, {10, kD}, "ta");
    const ValueId tb = g.AddWeight("tb", DType::kF32, {10, kD}, "tb");
    w = g.AddWeight("w", DType::kF32, {kD}, "w");
    W = g.AddWeight("W", DType::kF32, {3, kD}, "W");
    a = Must(g.AddOp(OpKind::kEmbedding, {ta, tokens}, "a"));
    b = Must(g.AddOp(OpKind::kEmbedding, {tb, tokens}, "b"));
  }
};

// Weights for Small, deterministic.
std::vector<float> SmallWeight(const std::string& name) {
  const int64_t n = name == "w" ? kD : name == "W" ? 3 * kD : 10 * kD;
  std::vector<float> v(n);
  int seed = 0;
  for (char c : name) seed = seed * 31 + c;
  for (int64_t i = 0; i < n; ++i) v[i] = std::sin(static_cast<float>(i * 7 + seed)) * 2.0f;
  return v;
}

std::vector<float> RunSmall(const Graph& g, const std::vector<int32_t>& toks) {
  static std::map<std::string, std::vector<float>> store;
  auto exec = CpuExecutor::Create(g, [](const std::string& n) -> absl::StatusOr<absl::Span<const uint8_t>> {
    auto [it, _] = store.try_emplace(n, SmallWeight(n));
    return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(it->second.data()), it->second.size() * 4);
  });
  EXPECT_TRUE(exec.ok()) << exec.status();
  if (!exec.ok()) return {};
  auto out = (*exec)->Step(toks, 0);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? std::vector<float>(out->begin(), out->end()) : std::vector<float>{};
}

TEST(FuseElementwiseTest, GenericChain) {
  // y = silu(a) * w + b: the mul is broadcast (not swiglu), so the generic
  // chain takes silu, mul and add.
  Small s;
  ValueId t = Must(s.g.AddOp(OpKind::kSilu, {s.a}, "s"));
  t = Must(s.g.AddOp(OpKind::kMul, {t, s.w}, "m"));
  t = Must(s.g.AddOp(OpKind::kAdd, {t, s.b}, "y"));
  s.g.MarkOutput(Must(s.g.AddOp(OpKind::kMatMul, {t, s.W}, "logits")));
  Graph fused = s.g;
  FusionStats st;
  ASSERT_TRUE(FuseElementwiseGraph(fused, &st).ok());
  EXPECT_EQ(st.generic, 1);
  EXPECT_EQ(st.swiglu, 0);
  EXPECT_EQ(st.ops_before, 6);
  EXPECT_EQ(st.ops_after, 4);
  const Op* y = Producer(fused, "y");
  ASSERT_NE(y, nullptr);
  EXPECT_EQ(BodyKinds(*y), "silu,mul,add");
  EXPECT_EQ(fused.FindValue("s"), -1);
  EXPECT_EQ(fused.FindValue("m"), -1);
  const std::vector<int32_t> toks = {3, 9, 0};
  const std::vector<float> want = RunSmall(s.g, toks);
  ASSERT_EQ(want.size(), 9u);
  EXPECT_EQ(RunSmall(fused, toks), want);
}

TEST(FuseElementwiseTest, NeverFusesAcrossAValueUsedOutside) {
  // s = silu(a) is also read by a matmul: mul(s, b) is not swiglu-fused and
  // no chain absorbs s.
  {
    Small s;
    const ValueId si = Must(s.g.AddOp(OpKind::kSilu, {s.a}, "s"));
    const ValueId m = Must(s.g.AddOp(OpKind::kMul, {si, s.b}, "m"));
    const ValueId o1 = Must(s.g.AddOp(OpKind::kMatMul, {m, s.W}, "o1"));
    const ValueId o2 = Must(s.g.AddOp(OpKind::kMatMul, {si, s.W}, "o2"));
    s.g.MarkOutput(Must(s.g.AddOp(OpKind::kAdd, {o1, o2}, "logits")));
    Graph fused = s.g;
    FusionStats st;
    ASSERT_TRUE(FuseElementwiseGraph(fused, &st).ok());
    EXPECT_EQ(st.ops_after, st.ops_before);
    EXPECT_EQ(ir::PrintGraph(fused), ir::PrintGraph(s.g));
  }
  // r = rms_norm(a) is also read by a matmul: no rms-scale fusion.
  {
    Small s;
    const ValueId r = Must(s.g.AddOp(OpKind::kRmsNorm, {s.a}, "r", {{"eps", 1e-5}}));
    const ValueId y = Must(s.g.AddOp(OpKind::kMul, {r, s.w}, "y"));
    const ValueId o1 = Must(s.g.AddOp(OpKind::kMatMul, {y, s.W}, "o1"));
    const ValueId o2 = Must(s.g.AddOp(OpKind::kMatMul, {r, s.W}, "o2"));
    s.g.MarkOutput(Must(s.g.AddOp(OpKind::kAdd, {o1, o2}, "logits")));
    Graph fused = s.g;
    FusionStats st;
    ASSERT_TRUE(FuseElementwiseGraph(fused, &st).ok());
    EXPECT_EQ(st.ops_after, st.ops_before);
  }
  // A chain whose middle value is a graph output stays unfused there:
  // y = (a * b) + b with a*b an output: nothing to fuse.
  {
    Small s;
    const ValueId m = Must(s.g.AddOp(OpKind::kMul, {s.a, s.b}, "m"));
    const ValueId y = Must(s.g.AddOp(OpKind::kAdd, {m, s.b}, "y"));
    s.g.MarkOutput(m);
    s.g.MarkOutput(Must(s.g.AddOp(OpKind::kMatMul, {y, s.W}, "logits")));
    Graph fused = s.g;
    FusionStats st;
    ASSERT_TRUE(FuseElementwiseGraph(fused, &st).ok());
    EXPECT_EQ(st.ops_after, st.ops_before);
  }
  // The residual sum read later becomes a second output, not an absorbed value.
  {
    Small s;
    const ValueId x = Must(s.g.AddOp(OpKind::kAdd, {s.a, s.b}, "x"));
    const ValueId r = Must(s.g.AddOp(OpKind::kRmsNorm, {x}, "r", {{"eps", 1e-5}}));
    const ValueId n = Must(s.g.AddOp(OpKind::kMul, {r, s.w}, "n"));
    const ValueId o = Must(s.g.AddOp(OpKind::kMatMul, {n, s.W}, "o"));
    const ValueId o2 = Must(s.g.AddOp(OpKind::kMatMul, {x, s.W}, "o2"));
    s.g.MarkOutput(Must(s.g.AddOp(OpKind::kAdd, {o, o2}, "logits")));
    Graph fused = s.g;
    FusionStats st;
    ASSERT_TRUE(FuseElementwiseGraph(fused, &st).ok());
    EXPECT_EQ(st.residual_norm, 1);
    const Op* f = Producer(fused, "n");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(f->outputs.size(), 2u);
    EXPECT_EQ(fused.value(f->outputs[0]).name, "x");
    const std::vector<int32_t> toks = {1, 2, 3, 4};
    EXPECT_EQ(RunSmall(fused, toks), RunSmall(s.g, toks));
  }
}

// q = rope(reshape(a + bias), positions [, freq_factors]) over H heads of hd,
// then flattened into a matmul; wide enough (H * hd * 16 rows) that the CPU
// runs the fused body on several threads, in several chunks of rows.
Graph BiasRopeGraph(int64_t H, int64_t hd, int mode, bool factors) {
  Graph g;
  g.max_tokens = 16;
  const int64_t D = H * hd;
  const ValueId tokens = g.AddInput("tokens", DType::kI32, {kTokens});
  const ValueId pos = g.AddInput("positions", DType::kI32, {kTokens});
  const ValueId table = g.AddWeight("table", DType::kF32, {10, D}, "table");
  const ValueId bias = g.AddWeight("bias", DType::kF32, {D}, "bias");
  const ValueId W = g.AddWeight("W", DType::kF32, {3, D}, "W");
  ValueId x = Must(g.AddOp(OpKind::kEmbedding, {table, tokens}, "a"));
  x = Must(g.AddOp(OpKind::kAdd, {x, bias}, "q"));
  x = Must(g.AddOp(OpKind::kReshape, {x}, "q_heads", {{"shape", std::vector<int64_t>{kTokens, H, hd}}}));
  std::vector<ValueId> rope_in = {x, pos};
  if (factors) rope_in.push_back(g.AddWeight("ff", DType::kF32, {hd / 4}, "ff"));
  x = Must(g.AddOp(OpKind::kRope, rope_in, "q_rope",
                   {{"mode", int64_t{mode}}, {"n_rot", hd / 2}, {"freq_base", 1e4}, {"freq_scale", 0.5}}));
  x = Must(g.AddOp(OpKind::kReshape, {x}, "q_flat", {{"shape", std::vector<int64_t>{kTokens, D}}}));
  g.MarkOutput(Must(g.AddOp(OpKind::kMatMul, {x, W}, "logits")));
  return g;
}

std::vector<float> RunWith(const Graph& g, const std::vector<int32_t>& toks, int32_t pos0) {
  static std::map<std::string, std::vector<float>> store;
  auto exec = CpuExecutor::Create(g, [&g](const std::string& n) -> absl::StatusOr<absl::Span<const uint8_t>> {
    const ir::Value& v = g.value(g.FindValue(n));
    const std::string key = n + "/" + ir::ShapeToString(v.shape);
    auto it = store.find(key);
    if (it == store.end()) {
      std::vector<float> data(ir::NumElements(v.shape, 1));
      for (size_t i = 0; i < data.size(); ++i) {
        data[i] = n == "ff" ? 1.0f + 0.25f * (i % 4) : std::sin(static_cast<float>(i) * 0.37f + n.size());
      }
      it = store.emplace(key, std::move(data)).first;
    }
    return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(it->second.data()), it->second.size() * 4);
  });
  EXPECT_TRUE(exec.ok()) << exec.status();
  if (!exec.ok()) return {};
  auto out = (*exec)->Step(toks, pos0);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? std::vector<float>(out->begin(), out->end()) : std::vector<float>{};
}

TEST(FuseElementwiseTest, BiasRopeMatchesUnfusedAcrossChunksAndThreads) {
  const std::vector<int32_t> toks = {1, 5, 2, 9, 0, 3, 3, 7, 8, 4, 6, 1, 2};  // 13 rows: 2 chunks
  for (int mode : {0, 2}) {
    for (bool factors : {false, true}) {
      for (int64_t H : {int64_t{2}, int64_t{64}}) {  // 2 * 64 * 13 runs inline; 64 * 64 * 13 in parallel
        SCOPED_TRACE(testing::Message() << "mode " << mode << " factors " << factors << " H " << H);
        Graph plain = BiasRopeGraph(H, 64, mode, factors);
        Graph fused = plain;
        FusionStats st;
        ASSERT_TRUE(FuseElementwiseGraph(fused, &st).ok());
        EXPECT_EQ(st.bias_rope, 1);
        const Op* q = Producer(fused, "q_rope");
        ASSERT_NE(q, nullptr);
        EXPECT_EQ(BodyKinds(*q), "add,reshape,rope");
        const std::vector<float> want = RunWith(plain, toks, 40);
        ASSERT_EQ(want.size(), toks.size() * 3);
        EXPECT_EQ(RunWith(fused, toks, 40), want);
        EXPECT_EQ(RunWith(fused, {4}, 77), RunWith(plain, {4}, 77));
      }
    }
  }
}

// ---- the verifier's fused-body rules -------------------------------------------------

// A graph with inputs x f32[T, 2, 4] (rows of 8), v f32[8], positions, and one
// fused op built from `body` with outputs of the body's output shapes.
std::string VerifyFused(const std::shared_ptr<Graph>& body) {
  Graph g;
  g.max_tokens = 4;
  std::vector<ValueId> ins;
  for (ValueId v = 0; v < static_cast<ValueId>(body->values().size()); ++v) {
    const ir::Value& bv = body->value(v);
    if (bv.storage == ir::Storage::kInput) ins.push_back(g.AddInput(bv.name, bv.dtype, bv.shape));
  }
  Op op;
  op.kind = OpKind::kFused;
  op.inputs = ins;
  for (ValueId o : body->outputs()) {
    ir::Value out;
    out.name = "out_" + body->value(o).name;
    out.dtype = body->value(o).dtype;
    out.shape = body->value(o).shape;
    op.outputs.push_back(g.AddValue(out));
  }
  op.body = body;
  g.AddRawOp(op);
  absl::Status s = ir::Verify(g);
  return s.ok() ? "OK" : std::string(s.message());
}

std::shared_ptr<Graph> NewBody() {
  auto b = std::make_shared<Graph>();
  b->max_tokens = 4;
  return b;
}

TEST(FuseElementwiseTest, VerifierAcceptsThePatterns) {
  {  // residual + norm + scale, two outputs
    auto b = NewBody();
    ValueId x = b->AddInput("x", DType::kF32, {kTokens, 8});
    ValueId y = b->AddInput("y", DType::kF32, {kTokens, 8});
    ValueId w = b->AddInput("w", DType::kF32, {8});
    ValueId s = Must(b->AddOp(OpKind::kAdd, {x, y}, "s"));
    ValueId r = Must(b->AddOp(OpKind::kRmsNorm, {s}, "r", {{"eps", 1e-5}}));
    b->MarkOutput(s);
    b->MarkOutput(Must(b->AddOp(OpKind::kMul, {r, w}, "n")));
    EXPECT_EQ(VerifyFused(b), "OK");
  }
  {  // bias + reshape + rope with frequency factors
    auto b = NewBody();
    ValueId x = b->AddInput("x", DType::kF32, {kTokens, 8});
    ValueId bias = b->AddInput("bias", DType::kF32, {8});
    ValueId pos = b->AddInput("positions", DType::kI32, {kTokens});
    ValueId ff = b->AddInput("ff", DType::kF32, {2});
    ValueId s = Must(b->AddOp(OpKind::kAdd, {x, bias}, "s"));
    ValueId h = Must(b->AddOp(OpKind::kReshape, {s}, "h", {{"shape", std::vector<int64_t>{kTokens, 2, 4}}}));
    b->MarkOutput(Must(b->AddOp(OpKind::kRope, {h, pos, ff}, "r", {{"n_rot", int64_t{4}}, {"freq_base", 1e4}})));
    EXPECT_EQ(VerifyFused(b), "OK");
  }
}

TEST(FuseElementwiseTest, VerifierRejectsMalformedBodies) {
  {  // a matmul inside a body
    auto b = NewBody();
    ValueId x = b->AddInput("x", DType::kF32, {kTokens, 8});
    ValueId w = b->AddInput("w", DType::kF32, {8, 8});
    b->MarkOutput(Must(b->AddOp(OpKind::kMatMul, {x, w}, "m")));
    EXPECT_THAT(VerifyFused(b), HasSubstr("body op 0 is matmul; a fused body holds only elementwise ops, "
                                          "reshape, rms_norm, rope and quantize_q8"));
  }
  {  // rms_norm and rope in one body
    auto b = NewBody();
    ValueId x = b->AddInput("x", DType::kF32, {kTokens, 8});
    ValueId pos = b->AddInput("positions", DType::kI32, {kTokens});
    ValueId r = Must(b->AddOp(OpKind::kRmsNorm, {x}, "r", {{"eps", 1e-5}}));
    ValueId h = Must(b->AddOp(OpKind::kReshape, {r}, "h", {{"shape", std::vector<int64_t>{kTokens, 2, 4}}}));
    b->MarkOutput(Must(b->AddOp(OpKind::kRope, {h, pos}, "q", {{"n_rot", int64_t{4}}, {"freq_base", 1e4}})));
    EXPECT_THAT(VerifyFused(b), HasSubstr("body op 2 is rope but body op 0 is rms_norm; a body holds at most one "
                                          "row-coupling op"));
  }
  {  // rms_norm over part of a row (per head)
    auto b = NewBody();
    ValueId x = b->AddInput("x", DType::kF32, {kTokens, 2, 4});
    b->MarkOutput(Must(b->AddOp(OpKind::kRmsNorm, {x}, "r", {{"eps", 1e-5}})));
    EXPECT_THAT(VerifyFused(b), HasSubstr("must be [N, R]: rms_norm reduces over the whole row"));
  }
  {  // a broadcast operand computed inside the body
    auto b = NewBody();
    ValueId x = b->AddInput("x", DType::kF32, {kTokens, 8});
    ValueId w = b->AddInput("w", DType::kF32, {8});
    ValueId sw = Must(b->AddOp(OpKind::kSilu, {w}, "sw"));
    b->MarkOutput(Must(b->AddOp(OpKind::kMul, {x, sw}, "m")));
    EXPECT_THAT(VerifyFused(b), HasSubstr("body op 0 silu: %w [8] is not a row value (fused op is [T rows of 8])"));
  }
  {  // outputs of different row lengths
    auto b = NewBody();
    ValueId x = b->AddInput("x", DType::kF32, {kTokens, 8});
    ValueId y = b->AddInput("y", DType::kF32, {kTokens, 4});
    b->MarkOutput(Must(b->AddOp(OpKind::kSilu, {x}, "sx")));
    b->MarkOutput(Must(b->AddOp(OpKind::kSilu, {y}, "sy")));
    EXPECT_THAT(VerifyFused(b), HasSubstr("body op 1 silu: %y [T, 4] is not a row value"));
  }
  {  // a reshape that changes the rows (static N)
    auto b = NewBody();
    ValueId x = b->AddInput("x", DType::kF32, {4, 8});
    ValueId r = Must(b->AddOp(OpKind::kReshape, {x}, "r", {{"shape", std::vector<int64_t>{8, 4}}}));
    ValueId s = Must(b->AddOp(OpKind::kSilu, {r}, "s"));
    b->MarkOutput(Must(b->AddOp(OpKind::kReshape, {s}, "o", {{"shape", std::vector<int64_t>{4, 8}}})));
    EXPECT_THAT(VerifyFused(b), HasSubstr("body op 0 reshape: %r [8, 4] is not a row value"));
  }
  {  // a nested fused op
    auto inner = NewBody();
    ValueId ix = inner->AddInput("x", DType::kF32, {kTokens, 8});
    inner->MarkOutput(Must(inner->AddOp(OpKind::kSilu, {ix}, "s")));
    auto b = NewBody();
    ValueId x = b->AddInput("x", DType::kF32, {kTokens, 8});
    ir::Value out;
    out.name = "n";
    out.shape = {kTokens, 8};
    Op op;
    op.kind = OpKind::kFused;
    op.inputs = {x};
    op.outputs = {b->AddValue(out)};
    op.body = inner;
    b->AddRawOp(op);
    b->MarkOutput(op.outputs[0]);
    EXPECT_THAT(VerifyFused(b), HasSubstr("body op 0 is fused; a fused body holds only"));
  }
}

}  // namespace
}  // namespace vibrant::passes
