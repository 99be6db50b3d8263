#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/graph.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/dce.h"
#include "passes/pass.h"
#include "passes/test_models.h"

namespace vibrant::passes {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ir::Graph;

Pass Named(std::string name, bool optional, std::function<absl::Status(Graph&, PassContext&)> run) {
  Pass p;
  p.name = std::move(name);
  p.optional = optional;
  p.run = std::move(run);
  return p;
}

absl::StatusOr<Graph> Tiny() {
  auto m = test_models::TinyQwen2();
  if (!m.ok()) return m.status();
  return (*m)->Lower();
}

std::vector<std::string> Names(const Pipeline& p) {
  std::vector<std::string> out;
  for (const Pass& pass : p.passes()) out.push_back(pass.name);
  return out;
}

TEST(PipelineTest, DefaultPipelineOrder) {
  const std::vector<std::string> names = Names(DefaultPipeline());
  EXPECT_THAT(names, ElementsAre("dce", "assign-devices", "fold-bias", "fuse-elementwise", "combine-matmuls",
                                 "quantize-activations", "dce", "repack-weights", "select-kernels",
                                 "plan-memory", "schedule-decode"));
  const Pipeline pipeline = DefaultPipeline();
  for (const Pass& p : pipeline.passes()) {
    const bool optional =
        p.name != "assign-devices" && p.name != "plan-memory" && p.name != "select-kernels";
    EXPECT_EQ(p.optional, optional) << p.name;
  }
}

TEST(PipelineTest, DisablingUnknownOrRequiredPassesIsAnError) {
  absl::StatusOr<Graph> g = Tiny();
  ASSERT_TRUE(g.ok()) << g.status();
  PassContext ctx;
  std::ostringstream log;
  PipelineOptions opts;
  opts.disabled = {"fusion"};
  absl::Status s = DefaultPipeline().Run(*g, ctx, opts, log);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--disable-pass=fusion: no such pass (passes: dce, assign-devices, "));
  EXPECT_THAT(std::string(s.message()), HasSubstr("plan-memory, schedule-decode)"));
  opts.disabled = {"plan-memory"};
  s = DefaultPipeline().Run(*g, ctx, opts, log);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--disable-pass=plan-memory: pass plan-memory is required"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("(optional passes: dce, "));
  opts.disabled = {};
  opts.print_after = {"nope"};
  s = DefaultPipeline().Run(*g, ctx, opts, log);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--print-ir-after=nope: no such pass"));
  EXPECT_TRUE(log.str().empty());
}

TEST(PipelineTest, PrintsIrAfterTheNamedPasses) {
  absl::StatusOr<Graph> g = Tiny();
  ASSERT_TRUE(g.ok()) << g.status();
  PassContext ctx;
  std::ostringstream log;
  PipelineOptions opts;
  opts.print_after = {"dce"};
  ASSERT_TRUE(DefaultPipeline().Run(*g, ctx, opts, log).ok());
  const std::string text = log.str();
  // Both dce runs, each a parseable graph after its header.
  std::vector<size_t> at;
  for (size_t p = text.find("// IR after "); p != std::string::npos; p = text.find("// IR after ", p + 1)) at.push_back(p);
  ASSERT_EQ(at.size(), 2u) << text.substr(0, 2000);
  for (size_t i = 0; i < at.size(); ++i) {
    EXPECT_EQ(text.compare(at[i], 19, "// IR after dce (pa"), 0);
    const size_t end = i + 1 < at.size() ? at[i + 1] : text.size();
    absl::StatusOr<Graph> parsed = ir::ParseGraph(text.substr(at[i], end - at[i]));
    EXPECT_TRUE(parsed.ok()) << parsed.status();
  }
  // The last dump is the graph as it was then (before planning), so the
  // final graph differs from it by its memory plan alone.
  EXPECT_FALSE(g->memory.empty());
}

TEST(PipelineTest, PrintAfterAllAndTimePasses) {
  absl::StatusOr<Graph> g = Tiny();
  ASSERT_TRUE(g.ok()) << g.status();
  PassContext ctx;
  std::ostringstream log;
  PipelineOptions opts;
  opts.print_after_all = true;
  opts.time_passes = true;
  opts.disabled = {"repack-weights"};
  const Pipeline p = DefaultPipeline();
  ASSERT_TRUE(p.Run(*g, ctx, opts, log).ok());
  const std::string text = log.str();
  for (const Pass& pass : p.passes()) {
    if (pass.name == "repack-weights") {
      EXPECT_THAT(text, ::testing::Not(HasSubstr("// IR after repack-weights")));
      EXPECT_THAT(text, ::testing::ContainsRegex("//   repack-weights +disabled"));
    } else {
      EXPECT_THAT(text, HasSubstr("// IR after " + pass.name + " (pass "));
      EXPECT_THAT(text, ::testing::ContainsRegex("//   " + pass.name + " +[0-9]+\\.[0-9]{3} "));
    }
  }
  EXPECT_THAT(text, HasSubstr("// pass timing"));
  EXPECT_THAT(text, ::testing::ContainsRegex("//   total +[0-9]+\\.[0-9]{3}"));
  // The last dump is the final graph.
  const size_t last = text.rfind("// IR after schedule-decode");
  ASSERT_NE(last, std::string::npos);
  const size_t timing = text.find("// pass timing");
  EXPECT_EQ(text.substr(text.find('\n', last) + 1, timing - text.find('\n', last) - 1), ir::PrintGraph(*g));
}

TEST(PipelineTest, NamesThePassThatFailsOrBreaksTheGraph) {
  absl::StatusOr<Graph> g = Tiny();
  ASSERT_TRUE(g.ok()) << g.status();
  PassContext ctx;
  std::ostringstream log;
  Pipeline failing({DeadCodeElimination(),
                    Named("oops", false, [](Graph&, PassContext&) { return absl::UnimplementedError("not yet"); })});
  absl::Status s = failing.Run(*g, ctx, PipelineOptions(), log);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(std::string(s.message()), "pass oops: not yet");

  Pipeline breaking({Named("breaker", true, [](Graph& g, PassContext&) {
    g.mutable_ops().pop_back();  // logits loses its producer
    return absl::OkStatus();
  })});
  Graph copy = *g;
  s = breaking.Run(copy, ctx, PipelineOptions(), log);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(s.message()), HasSubstr("pass breaker produced a graph that does not verify: "));
  // Without verify_each the pipeline trusts the pass.
  Graph copy2 = *g;
  PipelineOptions no_verify;
  no_verify.verify_each = false;
  EXPECT_TRUE(breaking.Run(copy2, ctx, no_verify, log).ok());
  // An invalid input graph is reported as such, before any pass runs.
  EXPECT_THAT(std::string(breaking.Run(copy, ctx, PipelineOptions(), log).message()),
              HasSubstr("the graph given to the pipeline does not verify"));
}

TEST(PipelineTest, DisabledOptionalPassIsSkipped) {
  absl::StatusOr<Graph> g = Tiny();
  ASSERT_TRUE(g.ok()) << g.status();
  int runs = 0;
  Pipeline p({Named("count", true, [&runs](Graph&, PassContext&) {
    ++runs;
    return absl::OkStatus();
  })});
  PassContext ctx;
  std::ostringstream log;
  PipelineOptions opts;
  ASSERT_TRUE(p.Run(*g, ctx, opts, log).ok());
  opts.disabled = {"count"};
  ASSERT_TRUE(p.Run(*g, ctx, opts, log).ok());
  EXPECT_EQ(runs, 1);
}

}  // namespace
}  // namespace vibrant::passes
