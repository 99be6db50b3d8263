// Golden IR text after every pass of the default pipeline, for the bundled
// stories260K (llama) and the synthetic tiny-qwen2, so that what each pass
// does to a real model is a readable diff under passes/testdata/.
//
// The goldens are compared, never rewritten by a test run. After an intended
// change, regenerate them on purpose and review the diff:
//   VIBRANT_UPDATE_GOLDEN=1 build/passes/passes_test --gtest_filter='GoldenTest.*'
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ir/graph.h"
#include "ir/printer.h"
#include "codegen/cpu_target.h"
#include "codegen/cuda_target.h"
#include "passes/pass.h"
#include "passes/test_models.h"

namespace vibrant::passes {
namespace {

const std::string kGoldenDir = VIBRANT_SOURCE_DIR "/passes/testdata";

bool UpdateGoldens() {
  const char* env = std::getenv("VIBRANT_UPDATE_GOLDEN");
  return env != nullptr && std::string(env) == "1";
}

// Splits a --print-ir-after-all log into (file suffix, IR text) per pass: a
// pass that runs twice (dce) gets "dce.2" the second time.
std::vector<std::pair<std::string, std::string>> SplitDumps(const std::string& log) {
  std::vector<std::pair<std::string, std::string>> out;
  std::map<std::string, int> seen;
  const std::string header = "// IR after ";
  size_t at = log.find(header);
  while (at != std::string::npos) {
    const size_t name_end = log.find(' ', at + header.size());
    const std::string name = log.substr(at + header.size(), name_end - at - header.size());
    const size_t body = log.find('\n', at) + 1;
    const size_t next = log.find(header, body);
    const int n = ++seen[name];
    out.emplace_back(n == 1 ? name : absl::StrCat(name, ".", n), log.substr(body, next == std::string::npos
                                                                                      ? std::string::npos
                                                                                      : next - body));
    at = next;
  }
  return out;
}

// Compares `text` with the golden file, or writes it when updating.
void ExpectGolden(const std::string& file, const std::string& text) {
  const std::string path = kGoldenDir + "/" + file;
  if (UpdateGoldens()) {
    std::ofstream out(path, std::ios::binary);
    out << text;
    ASSERT_TRUE(out.good()) << "cannot write " << path;
    return;
  }
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << path << " is missing; create it with VIBRANT_UPDATE_GOLDEN=1 (see golden_test.cc)";
  std::stringstream want;
  want << in.rdbuf();
  if (want.str() == text) return;
  // Point at the first differing line rather than dumping both graphs.
  std::istringstream a(want.str()), b(text);
  std::string la, lb;
  int line = 1;
  while (true) {
    const bool ga = static_cast<bool>(std::getline(a, la)), gb = static_cast<bool>(std::getline(b, lb));
    if (!ga && !gb) break;
    if (!ga || !gb || la != lb) {
      ADD_FAILURE() << path << " differs at line " << line << ":\n  golden: " << (ga ? la : "<end>")
                    << "\n  actual: " << (gb ? lb : "<end>")
                    << "\nIf the change is intended, regenerate with VIBRANT_UPDATE_GOLDEN=1 and review the diff.";
      return;
    }
    ++line;
  }
}

struct Config {
  // In file names: "" (device cpu, no fusion), ".fused" (device cpu; both
  // with the CPU target's fast kernels),
  // ".cuda" (every op on the GPU, the CUDA target's kernels; fusion on).
  const char* suffix;
  DevicePolicy policy;
  bool fuse;
};

void CheckGoldens(const test_models::TestModel& m, const Config& c) {
  LowerOptions lo;
  lo.max_tokens = 64;
  lo.n_ctx = 256;
  absl::StatusOr<ir::Graph> g = m.Lower(lo);
  ASSERT_TRUE(g.ok()) << g.status();
  const absl::StatusOr<ir::Graph> lowered = g;
  // The lowered graph does not depend on the device: one file per model.
  if (c.suffix[0] == '\0') ExpectGolden(absl::StrCat(m.name, ".0-lowered.ir"), ir::PrintGraph(*g));
  PassContext ctx;
  ctx.device = c.policy;
  // The CUDA kernels' target (codegen/cuda_target.h) for the cuda pipeline:
  // combine-matmuls, quantize-activations and select-kernels show in its goldens.
  const codegen::CudaTarget cuda_target;
  if (c.policy != DevicePolicy::kCpu) {
    ctx.cuda_supports = [](const ir::Op&) { return true; };
    ctx.cuda_kernels = &cuda_target;
    ctx.decode_blocks_per_sm = 2;  // --decode-schedule persistent: schedule-decode shows too
  }
  // The CPU target (fast kernels) for cpu plans, as vibrantc compile: its
  // combine-matmuls and select-kernels show in their goldens.
  const codegen::CpuTarget cpu_target;
  if (c.policy == DevicePolicy::kCpu) ctx.cpu_kernels = &cpu_target;
  PipelineOptions opts;
  opts.print_after_all = true;
  if (!c.fuse) opts.disabled.insert("fuse-elementwise");
  const Pipeline pipeline = DefaultPipeline();
  std::ostringstream log;
  ASSERT_TRUE(pipeline.Run(*g, ctx, opts, log).ok());
  const auto dumps = SplitDumps(log.str());
  ASSERT_FALSE(dumps.empty());
  // A golden per pass that changed the IR; a pass that changed nothing has
  // no file (so that its absence is pinned too, a stale file is an error).
  std::string previous = ir::PrintGraph(*lowered);
  int n = 1;
  for (const auto& [name, text] : dumps) {
    const std::string file = absl::StrCat(m.name, c.suffix, ".", n++, "-", name, ".ir");
    const std::string path = kGoldenDir + "/" + file;
    if (text != previous) {
      ExpectGolden(file, text);
    } else if (UpdateGoldens()) {
      std::remove(path.c_str());
    } else {
      EXPECT_FALSE(std::ifstream(path).good())
          << path << ": pass " << name << " no longer changes the IR; regenerate the goldens";
    }
    previous = text;
  }
}

TEST(GoldenTest, Stories260K) {
  auto m = test_models::Stories260K();
  ASSERT_TRUE(m.ok()) << m.status();
  CheckGoldens(**m, {"", DevicePolicy::kCpu, false});
  CheckGoldens(**m, {".fused", DevicePolicy::kCpu, true});
}

TEST(GoldenTest, TinyQwen2) {
  auto m = test_models::TinyQwen2();
  ASSERT_TRUE(m.ok()) << m.status();
  CheckGoldens(**m, {"", DevicePolicy::kCpu, false});
  CheckGoldens(**m, {".fused", DevicePolicy::kCpu, true});
  CheckGoldens(**m, {".cuda", DevicePolicy::kCuda, true});
}

}  // namespace
}  // namespace vibrant::passes
