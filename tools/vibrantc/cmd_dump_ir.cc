// vibrantc dump-ir: the IR of a model (lowered with default options) or of a
// compiled plan (the graph it stores), in the textual form of ir/printer.h.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "frontends/gguf/gguf.h"
#include "frontends/io/file.h"
#include "frontends/io/text.h"
#include "frontends/lower/lower.h"
#include "ir/graph.h"
#include "ir/printer.h"
#include "passes/pass.h"
#include "runtime/plan.h"
#include "tools/vibrantc/commands.h"

namespace vibrant::cli {
namespace {

constexpr char kDumpIrUsage[] =
    "usage: vibrantc dump-ir MODEL.gguf|PLAN [--after=PASS | --after-all]\n"
    "  prints the IR graph: a GGUF lowered with the default compile options, or the\n"
    "  graph stored in a plan (after the compiler's passes)\n"
    "  --after=PASS   a GGUF: run the default pass pipeline (device cpu) and print\n"
    "                 the IR after PASS (repeatable; a pass that runs twice prints twice)\n"
    "  --after-all    a GGUF: print the IR after every pass\n";

absl::StatusOr<ir::Graph> LoadGraph(const std::string& path) {
  char magic[8] = {};
  {
    absl::StatusOr<std::string> head = io::ReadFileHead(path, sizeof(magic));
    if (!head.ok()) return head.status();
    std::memcpy(magic, head->data(), head->size());
  }
  if (std::memcmp(magic, kPlanMagic, sizeof(kPlanMagic)) == 0) {
    absl::StatusOr<std::unique_ptr<PlanFile>> plan = PlanFile::Open(path);
    if (!plan.ok()) return plan.status();
    return (*plan)->LoadGraph();
  }
  if (std::memcmp(magic, "GGUF", 4) == 0) {
    absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(path);
    if (!file.ok()) return file.status();
    return LowerGguf(**file, LowerOptions());
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": neither a GGUF model nor a Vibrant plan (magic at offset 0)"));
}

}  // namespace

int RunDumpIr(const std::vector<std::string>& args) {
  if (args.size() == 1 && (args[0] == "-h" || args[0] == "--help")) {
    std::fputs(kDumpIrUsage, stdout);
    return 0;
  }
  std::string path;
  passes::PipelineOptions pipeline;
  for (const std::string& a : args) {
    if (a == "--after-all") {
      pipeline.print_after_all = true;
    } else if (a.rfind("--after=", 0) == 0) {
      pipeline.print_after.insert(a.substr(std::string("--after=").size()));
    } else if (path.empty() && !a.empty() && a[0] != '-') {
      path = a;
    } else {
      std::fputs(kDumpIrUsage, stderr);
      return 2;
    }
  }
  if (path.empty()) {
    std::fputs(kDumpIrUsage, stderr);
    return 2;
  }
  absl::StatusOr<ir::Graph> graph = LoadGraph(path);
  if (!graph.ok()) {
    std::fprintf(stderr, "vibrantc dump-ir: %s\n", vibrant::io::EscapeForTerminal(graph.status().message(), true).c_str());
    return 1;
  }
  if (pipeline.print_after_all || !pipeline.print_after.empty()) {
    // The dumps are the output; the final graph is the last one of them.
    passes::PassContext ctx;
    ctx.device = passes::DevicePolicy::kCpu;
    std::ostringstream log;
    absl::Status st = passes::DefaultPipeline().Run(*graph, ctx, pipeline, log);
    const std::string text = log.str();
    std::fwrite(text.data(), 1, text.size(), stdout);
    if (!st.ok()) {
      std::string msg(st.message());
      if (msg.rfind("--print-ir-after=", 0) == 0) msg = "--after=" + msg.substr(17);  // this command's flag
      std::fprintf(stderr, "vibrantc dump-ir: %s\n", msg.c_str());
      return 1;
    }
    return 0;
  }
  std::string text = ir::PrintGraph(*graph);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace vibrant::cli
