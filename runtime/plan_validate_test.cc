// Issue #16: a crafted plan is an error, never an out-of-bounds access or an
// allocation nobody agreed to. The hostile graphs here are made the way an
// attacker would: compile the bundled model, then edit the compiled graph (or
// the plan's GRAPH section, recomputing its checksum).
#include "runtime/plan_validate.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/graph.h"
#include "ir/serialize.h"
#include "passes/pass.h"
#include "runtime/cpu/executor.h"
#include "runtime/plan.h"
#include "runtime/plan_edit.h"

namespace vibrant {
namespace {

using ::testing::HasSubstr;

const char kModel[] = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";

std::string TempPath(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/vibrant_plan_validate_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  return dir + "/" + name;
}

struct Compiled {
  std::unique_ptr<GgufFile> file;
  ir::Graph graph;
};

// stories260K through the default pipeline (what `vibrantc compile` does).
Compiled CompileStories(LowerOptions lower = {}) {
  Compiled c;
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(kModel);
  EXPECT_TRUE(f.ok()) << f.status();
  if (!f.ok()) return c;
  c.file = *std::move(f);
  absl::StatusOr<ir::Graph> g = LowerGguf(*c.file, lower);
  EXPECT_TRUE(g.ok()) << g.status();
  if (!g.ok()) return c;
  passes::PassContext ctx;
  std::ostringstream log;
  absl::Status s = passes::DefaultPipeline().Run(*g, ctx, passes::PipelineOptions(), log);
  EXPECT_TRUE(s.ok()) << s;
  c.graph = *std::move(g);
  return c;
}

WeightResolver Resolver(const GgufFile& file) {
  return [&file](const std::string& source) -> absl::StatusOr<absl::Span<const uint8_t>> {
    const GgufTensorInfo* t = file.FindTensor(source);
    if (t == nullptr) return absl::NotFoundError(source);
    return file.TensorData(*t);
  };
}

// The attack of issue #16: `tokens` moved onto the embedding's output, so
// that the embedding overwrites the ids it is reading.
void AliasTokensWithEmbedding(ir::Graph& g) {
  const ir::ValueId tokens = g.FindValue("tokens");
  ASSERT_GE(tokens, 0);
  for (const ir::Op& op : g.ops()) {
    if (op.kind != ir::OpKind::kEmbedding) continue;
    ASSERT_EQ(op.inputs[1], tokens);
    g.mutable_value(tokens).arena_offset = g.value(op.outputs[0]).arena_offset;
    ASSERT_NE(g.value(tokens).arena_offset, -1);
    return;
  }
  FAIL() << "no embedding op";
}

TEST(ValidateExecutableGraph, CompiledGraphPasses) {
  Compiled c = CompileStories();
  ASSERT_FALSE(c.graph.memory.empty());
  absl::StatusOr<GraphMemoryNeeds> needs = ValidateExecutableGraph(c.graph);
  ASSERT_TRUE(needs.ok()) << needs.status();
  EXPECT_TRUE(needs->planned);
  int64_t arena = 0, kv = 0;
  for (const auto& [device, mem] : c.graph.memory) {
    arena += mem.arena_bytes;
    kv += mem.kv_bytes;
    EXPECT_LE(mem.arena_bytes, needs->devices.at(device).unshared_arena_bytes);
  }
  EXPECT_EQ(needs->arena_bytes(), arena);
  EXPECT_EQ(needs->kv_bytes(), kv);
  // stories260K (its metadata): 5 layers, K and V caches of [n_ctx, 4 KV
  // heads, head_dim 64 / 8 heads = 8] in f16, n_ctx = context_length 2048.
  EXPECT_EQ(kv, 5 * 2 * 2048 * 4 * 8 * 2);
}

TEST(ValidateExecutableGraph, TokensAliasingTheEmbeddingOutputIsAnError) {
  Compiled c = CompileStories();
  AliasTokensWithEmbedding(c.graph);
  absl::StatusOr<GraphMemoryNeeds> needs = ValidateExecutableGraph(c.graph);
  ASSERT_FALSE(needs.ok());
  EXPECT_THAT(needs.status().message(), HasSubstr("memory plan: %tokens"));
  EXPECT_THAT(needs.status().message(), HasSubstr("overlap while both are live"));
  // The executor checks by itself, whoever hands it the graph.
  absl::StatusOr<std::unique_ptr<CpuExecutor>> e = CpuExecutor::Create(c.graph, Resolver(*c.file));
  ASSERT_FALSE(e.ok());
  EXPECT_THAT(e.status().message(), HasSubstr("CPU backend: memory plan: %tokens"));
}

TEST(ValidateExecutableGraph, ArenaLargerThanTheGraphNeedsIsAnError) {
  // Issue #16: a 22 KB plan asked for 16 GB.
  Compiled c = CompileStories();
  ASSERT_EQ(c.graph.memory.size(), 1u);
  c.graph.memory.begin()->second.arena_bytes = int64_t{16} << 30;
  absl::StatusOr<GraphMemoryNeeds> needs = ValidateExecutableGraph(c.graph);
  ASSERT_FALSE(needs.ok());
  EXPECT_THAT(needs.status().message(), HasSubstr("is larger than the"));
  EXPECT_FALSE(CpuExecutor::Create(c.graph, Resolver(*c.file)).ok());
}

TEST(ValidateExecutableGraph, KvBytesMustMatchTheCaches) {
  Compiled c = CompileStories();
  c.graph.memory.begin()->second.kv_bytes = int64_t{16} << 30;
  absl::StatusOr<GraphMemoryNeeds> needs = ValidateExecutableGraph(c.graph);
  ASSERT_FALSE(needs.ok());
  EXPECT_THAT(needs.status().message(), HasSubstr("KV bytes"));
}

TEST(ValidateExecutableGraph, UnplannedGraphsReportTheirSlots) {
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(kModel);
  ASSERT_TRUE(f.ok());
  absl::StatusOr<ir::Graph> g = LowerGguf(**f, LowerOptions());
  ASSERT_TRUE(g.ok());
  absl::StatusOr<GraphMemoryNeeds> needs = ValidateExecutableGraph(*g);
  ASSERT_TRUE(needs.ok()) << needs.status();
  EXPECT_FALSE(needs->planned);
  EXPECT_GT(needs->arena_bytes(), 0);
  EXPECT_EQ(needs->kv_bytes(), 5 * 2 * 2048 * 4 * 8 * 2);
}

// The same attack through the file: the GRAPH section edited and its
// checksum recomputed, so that the container's checks all pass.
TEST(PlanFile, CraftedGraphSectionIsAnErrorAtLoad) {
  Compiled c = CompileStories();
  PlanContents contents;
  contents.graph = ir::SerializeGraph(c.graph);
  contents.options = {{"device", "cpu"}};
  absl::StatusOr<ModelRef> ref = MakeModelRef(*c.file);
  ASSERT_TRUE(ref.ok());
  contents.model_ref = *ref;
  const std::string path = TempPath("plan.bin");
  ASSERT_TRUE(WritePlan(path, contents).ok());
  {
    absl::StatusOr<std::unique_ptr<PlanFile>> plan = PlanFile::Open(path);
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_TRUE((*plan)->LoadGraph().ok());
  }
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  absl::StatusOr<std::vector<RawPlanSection>> sections = SplitPlanSections(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  ASSERT_TRUE(sections.ok()) << sections.status();
  RawPlanSection* graph_section =
      FindPlanSection(*sections, static_cast<uint32_t>(PlanSectionKind::kGraph));
  ASSERT_NE(graph_section, nullptr);
  absl::StatusOr<ir::Graph> g = ir::DeserializeGraph(absl::Span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(graph_section->bytes.data()), graph_section->bytes.size()));
  ASSERT_TRUE(g.ok());
  AliasTokensWithEmbedding(*g);
  graph_section->bytes = ir::SerializeGraph(*g);
  const std::string crafted = AssemblePlan(*sections, kPlanFormatVersion);
  {
    std::ofstream out(TempPath("crafted.bin"), std::ios::binary);
    out << crafted;
  }
  absl::StatusOr<std::unique_ptr<PlanFile>> plan = PlanFile::Open(TempPath("crafted.bin"));
  ASSERT_TRUE(plan.ok()) << plan.status();  // the container is intact
  absl::StatusOr<ir::Graph> loaded = (*plan)->LoadGraph();
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("crafted.bin: section GRAPH: memory plan: %tokens"));
}

TEST(MemoryLimit, ParseSizes) {
  EXPECT_EQ(*ParseMemorySize("4096"), 4096);
  EXPECT_EQ(*ParseMemorySize("512M"), int64_t{512} << 20);
  EXPECT_EQ(*ParseMemorySize("64g"), int64_t{64} << 30);
  EXPECT_EQ(*ParseMemorySize("1.5K"), 1536);
  EXPECT_EQ(*ParseMemorySize("2T"), int64_t{2} << 40);
  EXPECT_FALSE(ParseMemorySize("none")->has_value());
  for (const char* bad : {"", "-1", "12Q", "G", "1e9", "lots", "99999999999T"}) {
    EXPECT_FALSE(ParseMemorySize(bad).ok()) << bad;
  }
}

TEST(MemoryLimit, CheckNamesTheLimitAndHowToRaiseIt) {
  MemoryLimit limit{int64_t{1} << 20, "a test"};
  EXPECT_TRUE(CheckMemoryLimit(int64_t{1} << 20, "x", limit).ok());
  absl::Status s = CheckMemoryLimit(int64_t{16} << 30, "its arenas and KV caches", limit);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("needs 16.0 GiB"));
  EXPECT_THAT(s.message(), HasSubstr("limit of 1.0 MiB (a test)"));
  EXPECT_THAT(s.message(), HasSubstr("VIBRANT_MAX_MEMORY"));
  EXPECT_TRUE(CheckMemoryLimit(int64_t{16} << 30, "x", MemoryLimit{std::nullopt, "none"}).ok());
}

TEST(MemoryLimit, EnvironmentVariable) {
  ASSERT_EQ(::setenv(kMaxMemoryEnv, "3G", 1), 0);
  absl::StatusOr<MemoryLimit> limit = HostMemoryLimit();
  ASSERT_TRUE(limit.ok());
  EXPECT_EQ(limit->bytes, int64_t{3} << 30);
  EXPECT_EQ(limit->source, "VIBRANT_MAX_MEMORY=3G");
  ASSERT_EQ(::setenv(kMaxMemoryEnv, "three gigs", 1), 0);
  EXPECT_THAT(HostMemoryLimit().status().message(), HasSubstr("VIBRANT_MAX_MEMORY: 'three gigs'"));
  ASSERT_EQ(::unsetenv(kMaxMemoryEnv), 0);
  limit = HostMemoryLimit();
  ASSERT_TRUE(limit.ok());
  EXPECT_GT(limit->bytes.value_or(0), 0);
  EXPECT_EQ(limit->source, "this machine's physical memory");
}

TEST(CpuExecutorMemory, PlanOverTheLimitIsRefusedBeforeAllocating) {
  Compiled c = CompileStories();
  CpuExecutorOptions opts;
  opts.threads = 1;
  opts.memory_limit = MemoryLimit{int64_t{64} << 10, "the test's 64 KiB"};
  absl::StatusOr<std::unique_ptr<CpuExecutor>> e = CpuExecutor::Create(c.graph, Resolver(*c.file), opts);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(e.status().message(), HasSubstr("the test's 64 KiB"));
  opts.memory_limit = MemoryLimit{int64_t{64} << 20, "64 MiB"};
  EXPECT_TRUE(CpuExecutor::Create(c.graph, Resolver(*c.file), opts).ok());
}

int64_t ResidentBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t size = 0, resident = 0;
  in >> size >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

// Issue #16: a 2^22-row KV cache reached 2.6 GB resident in 4 s, zero-filled
// eagerly. KV caches and the arena are now zeroed lazily: creating the
// executor touches none of it, and Reset hands the pages back.
TEST(CpuExecutorMemory, KvCacheIsZeroedLazily) {
  LowerOptions lower;
  lower.n_ctx = int64_t{1} << 20;  // 5 layers x (K, V) x 2^20 rows x 32 x 2 B = 640 MiB
  lower.max_tokens = 8;
  Compiled c = CompileStories(lower);
  ASSERT_EQ(c.graph.memory.begin()->second.kv_bytes, int64_t{640} << 20);
  const int64_t before = ResidentBytes();
  CpuExecutorOptions opts;
  opts.threads = 1;
  opts.memory_limit = MemoryLimit{std::nullopt, "none"};
  absl::StatusOr<std::unique_ptr<CpuExecutor>> e = CpuExecutor::Create(c.graph, Resolver(*c.file), opts);
  ASSERT_TRUE(e.ok()) << e.status();
  const int64_t created = ResidentBytes();
  EXPECT_LT(created - before, int64_t{64} << 20) << "resident after Create";
  const std::vector<int32_t> ids = {1, 400, 30};
  ASSERT_TRUE((*e)->Step(ids, 0).ok());
  (*e)->Reset();
  ASSERT_TRUE((*e)->Step(ids, 1000).ok());
  EXPECT_LT(ResidentBytes() - before, int64_t{64} << 20) << "resident after two steps";
}

}  // namespace
}  // namespace vibrant
