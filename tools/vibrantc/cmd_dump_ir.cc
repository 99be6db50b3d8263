// vibrantc dump-ir: the IR of a model (lowered with default options) or of a
// compiled plan (the graph it stores), in the textual form of ir/printer.h.
#include <climits>
#include <cstdio>
#include <cstdlib>
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
#include "compiler/compiler.h"
#include "runtime/dispatch.h"
#include "runtime/plan.h"
#include "runtime/program.h"
#include "tools/vibrantc/commands.h"

namespace vibrant::cli {
namespace {

constexpr char kDumpIrUsage[] =
    "usage: vibrantc dump-ir MODEL.gguf|PLAN [--after=PASS | --after-all] [--device cpu|cuda]\n"
    "                        [--launches] [--mmq-max-rows N] [--mmq-tile 0|64|128]\n"
    "  prints the IR graph: a GGUF lowered with the default compile options, or the\n"
    "  graph stored in a plan (after the compiler's passes)\n"
    "  --after=PASS   a GGUF: compile it (vibrantc compile's pipeline, for --device,\n"
    "                 default cpu) and print the IR after PASS (repeatable; a pass\n"
    "                 that runs twice prints twice)\n"
    "  --after-all    a GGUF: print the IR after every pass\n"
    "  --launches     a cuda plan (or a GGUF with --device cuda): print its dispatch\n"
    "                 table, every launch with its kernel, grid and arguments\n"
    "  --mmq-max-rows N, --mmq-tile T  a GGUF: as vibrantc compile's (the quantized\n"
    "                 tensor-core GEMM up to N token rows)\n";

}  // namespace

int RunDumpIr(const std::vector<std::string>& args) {
  if (args.size() == 1 && (args[0] == "-h" || args[0] == "--help")) {
    std::fputs(kDumpIrUsage, stdout);
    return 0;
  }
  std::string path;
  compiler::CompileOptions opts;
  bool launches = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--after-all") {
      opts.pipeline.print_after_all = true;
    } else if (a.rfind("--after=", 0) == 0) {
      opts.pipeline.print_after.insert(a.substr(std::string("--after=").size()));
    } else if (a == "--device" && i + 1 < args.size()) {
      opts.device = args[++i];
    } else if (a == "--launches") {
      launches = true;
    } else if ((a == "--mmq-max-rows" || a == "--mmq-tile") && i + 1 < args.size()) {
      char* end = nullptr;
      const std::string& v = args[++i];
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 0 || n > INT32_MAX) {
        std::fprintf(stderr, "vibrantc dump-ir: %s needs a count, not '%s'\n", a.c_str(), v.c_str());
        return 2;
      }
      (a == "--mmq-tile" ? opts.mmq_tile : opts.mmq_max_rows) = static_cast<int>(n);
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
  auto fail = [](const absl::Status& st) {
    std::string msg(st.message());
    if (msg.rfind("--print-ir-after=", 0) == 0) msg = "--after=" + msg.substr(17);  // this command's flag
    std::fprintf(stderr, "vibrantc dump-ir: %s\n", io::EscapeForTerminal(msg, true).c_str());
    return 1;
  };
  char magic[8] = {};
  {
    // Regular files only (a FIFO would block): frontends/io/file.h.
    absl::StatusOr<std::string> head = io::ReadFileHead(path, sizeof(magic));
    if (!head.ok()) return fail(head.status());
    std::memcpy(magic, head->data(), head->size());
  }
  if (std::memcmp(magic, kPlanMagic, sizeof(kPlanMagic)) == 0) {
    absl::StatusOr<std::unique_ptr<PlanFile>> plan = PlanFile::Open(path);
    if (!plan.ok()) return fail(plan.status());
    absl::StatusOr<Program> program = LoadProgram(**plan);
    if (!program.ok()) return fail(program.status());
    std::string text = ir::PrintGraph(program->graph);
    if (launches) {
      if (!program->dispatch) return fail(absl::InvalidArgumentError(absl::StrCat(path, ": a cpu plan has no launches")));
      text = dispatch::Describe(*program->dispatch);
    }
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat(path, ": neither a GGUF model nor a Vibrant plan (magic at offset 0)")));
  }
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(path);
  if (!file.ok()) return fail(file.status());
  const bool compile = opts.pipeline.print_after_all || !opts.pipeline.print_after.empty() || launches;
  if (!compile) {
    absl::StatusOr<ir::Graph> graph = LowerGguf(**file, LowerOptions());
    if (!graph.ok()) return fail(graph.status());
    std::string text = ir::PrintGraph(*graph);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  // The dumps are the output; the final graph is the last one of them.
  std::ostringstream log;
  opts.log = &log;
  opts.compile_kernels = false;  // the IR and the launches need no binaries
  absl::StatusOr<compiler::Compiled> c = compiler::CompileGguf(**file, opts);
  std::string text = log.str();
  if (c.ok() && launches) {
    if (!c->dispatch_table) return fail(absl::InvalidArgumentError("--launches: compile with --device cuda"));
    text += dispatch::Describe(*c->dispatch_table);
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (!c.ok()) {
    // The pipeline's errors carry the file name first: report them as they are.
    absl::Status st = c.status();
    const std::string prefix = path + ": ";
    std::string msg(st.message());
    if (msg.rfind(prefix, 0) == 0) msg = msg.substr(prefix.size());
    return fail(absl::Status(st.code(), msg));
  }
  return 0;
}

}  // namespace vibrant::cli
