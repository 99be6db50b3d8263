// vibrantc compile's pass flags and report, and dump-ir --after, end to end
// on the bundled stories260K (llama: 5 layers of 24 ops, no biases) and on
// shapes alone. Expected counts are hand-derived from the lowering
// (frontends/lower/lower.h): 24 ops per layer (4 of them reshape views) plus
// embedding, final rms_norm and scale, last_row and the output matmul.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/printer.h"
#include "tests/cli_util.h"

namespace vibrant {
namespace {

using ::testing::HasSubstr;
using testing_util::RunBinary;

const std::string kVibrantc = VIBRANT_BINARY_DIR "/tools/vibrantc/vibrantc";
const std::string kModel = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";

std::string Plan() { return testing_util::ProcessTempDir() + "/passes.plan"; }

TEST(CliPasses, ReportsOpsKernelsAndArena) {
  auto r = RunBinary(kVibrantc, {"compile", kModel, "-o", Plan(), "--device", "cpu",
                                 "--disable-pass=fuse-elementwise", "--time-passes"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // 5 * 24 + 5 = 125 ops; minus 5 * 4 reshape views = 105 kernels; no copies on the CPU.
  EXPECT_THAT(r.out, HasSubstr("pipeline: 125 ops -> 125 ops (0 fused); 105 kernels per step\n"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex("memory: arena [0-9]+ bytes vs [0-9]+ bytes of activations "
                                              "\\([0-9.]+% saved\\) \\[cpu [0-9]+\\]; KV caches 1310720 bytes"));
  // KV: 5 layers x K,V x 2048 rows x 4 heads x 8 dims x 2 bytes = 1310720.
  EXPECT_THAT(r.err, HasSubstr("// pass timing"));
  EXPECT_THAT(r.err, ::testing::ContainsRegex("//   fuse-elementwise +disabled"));
  EXPECT_THAT(r.err, ::testing::ContainsRegex("//   plan-memory +[0-9.]+ +[0-9.]+ +125 -> 125"));
}

TEST(CliPasses, PrintsIrAfterAPass) {
  auto r = RunBinary(kVibrantc, {"compile", kModel, "-o", Plan(), "--print-ir-after=plan-memory"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string header = "// IR after plan-memory (pass 10 of 11)\n";
  ASSERT_EQ(r.err.rfind(header, 0), 0u) << r.err.substr(0, 200);
  auto g = ir::ParseGraph(r.err.substr(header.size()));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_FALSE(g->memory.empty());
  // dump-ir shows the same graph.
  auto d = RunBinary(kVibrantc, {"dump-ir", kModel, "--after=plan-memory"});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_EQ(d.out, r.err);
}

TEST(CliPasses, ExplainsDevices) {
  auto r = RunBinary(kVibrantc, {"compile", kModel, "-o", Plan(), "--device", "cpu", "--explain-devices"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("assign-devices: policy cpu"));
  EXPECT_THAT(r.err, HasSubstr("op 0 embedding inp_embd: cpu (--device cpu)\n"));
  EXPECT_THAT(r.err, HasSubstr("op 124 matmul logits: cpu (--device cpu)\n"));
}

TEST(CliPasses, BadPassNamesAreErrors) {
  auto r = RunBinary(kVibrantc, {"compile", kModel, "-o", Plan(), "--disable-pass=fusion"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--disable-pass=fusion: no such pass (passes: dce, assign-devices, "
                               "fold-bias, fuse-elementwise, combine-matmuls, quantize-activations, "
                               "repack-weights, select-kernels, plan-memory, schedule-decode)"));
  r = RunBinary(kVibrantc, {"compile", kModel, "-o", Plan(), "--disable-pass=assign-devices"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("pass assign-devices is required"));
}

TEST(CliPasses, CompilesFromShapesAlone) {
  // qwen2 with biases: 27 ops per layer (+3 bias adds), 3 layers: 3 * 27 + 5 = 86
  // ops, 86 - 3 * 4 = 74 kernels without fusion.
  const std::string spec =
      "arch=qwen2,n_layer=3,n_embd=128,n_head=4,n_head_kv=2,n_ff=256,n_vocab=1000,tied=1";
  auto r = RunBinary(kVibrantc, {"compile", "--shapes", spec, "--disable-pass=fuse-elementwise", "--max-tokens", "8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("qwen2 3 layers, d 128: 86 ops"));
  EXPECT_THAT(r.out, HasSubstr("pipeline: 86 ops -> 86 ops (0 fused); 74 kernels per step\n"));
  r = RunBinary(kVibrantc, {"compile", "--shapes", "arch=qwen2,bogus=1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--shapes: unknown key 'bogus'"));
  r = RunBinary(kVibrantc, {"compile", kModel, "--shapes", spec});
  EXPECT_EQ(r.exit_code, 2);
}

}  // namespace
}  // namespace vibrant
