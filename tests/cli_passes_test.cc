// vibrantc compile's pass flags and report, and dump-ir --after, end to end
// on the bundled stories260K (llama: 5 layers of 24 ops, no biases) and on
// shapes alone. Expected counts are hand-derived from the lowering
// (frontends/lower/lower.h): 24 ops per layer (4 of them reshape views) plus
// embedding, final rms_norm and scale, last_row and the output matmul.
#include <fstream>
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
  // 5 * 24 + 5 = 125 ops; combine-matmuls makes q/k/v and gate/up one
  // multi_matmul each (3 ops fewer per layer): 110 ops; minus 5 * 4 reshape
  // views = 90 kernels; no copies on the CPU.
  EXPECT_THAT(r.out, HasSubstr("pipeline: 125 ops -> 110 ops (0 fused); 90 kernels per step\n"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex("memory: arena [0-9]+ bytes vs [0-9]+ bytes of activations "
                                              "\\([0-9.]+% saved\\) \\[cpu [0-9]+\\]; KV caches 1310720 bytes"));
  // KV: 5 layers x K,V x 2048 rows x 4 heads x 8 dims x 2 bytes = 1310720.
  EXPECT_THAT(r.err, HasSubstr("// pass timing"));
  EXPECT_THAT(r.err, ::testing::ContainsRegex("//   fuse-elementwise +disabled"));
  EXPECT_THAT(r.err, ::testing::ContainsRegex("//   plan-memory +[0-9.]+ +[0-9.]+ +110 -> 110"));
}

// The CPU's kernel choice is the compiler's, in the IR: select-kernels
// records a variant on every cpu op that has one (stories260K is F32: its
// matmuls take the f32 path), fast by default, exact with --exact.
TEST(CliPasses, CpuKernelChoiceIsInTheIr) {
  struct Want {
    std::vector<std::string> args;
    const char* matmul;
    const char* attention;
    const char* fused;
  };
  for (const Want& w : {Want{{}, "cpu.matmul.f32", "cpu.attention.flash", "cpu.fused.fast"},
                        Want{{"--exact"}, "cpu.matmul.exact", "cpu.attention.exact", "cpu.fused.exact"}}) {
    std::vector<std::string> args = {"compile", kModel, "-o", Plan(), "--device", "cpu",
                                     "--max-tokens", "16", "--print-ir-after=select-kernels"};
    args.insert(args.end(), w.args.begin(), w.args.end());
    auto r = RunBinary(kVibrantc, args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string header = "// IR after select-kernels";
    ASSERT_EQ(r.err.rfind(header, 0), 0u) << r.err.substr(0, 200);
    auto g = ir::ParseGraph(r.err.substr(r.err.find('\n') + 1));
    ASSERT_TRUE(g.ok()) << g.status();
    int matmuls = 0, attentions = 0, fused = 0;
    for (const ir::Op& op : g->ops()) {
      const char* want = nullptr;
      if (op.kind == ir::OpKind::kMatMul || op.kind == ir::OpKind::kMultiMatMul) {
        want = w.matmul;
        ++matmuls;
      } else if (op.kind == ir::OpKind::kAttention) {
        want = w.attention;
        ++attentions;
      } else if (op.kind == ir::OpKind::kFused) {
        want = w.fused;
        ++fused;
      }
      if (want == nullptr) continue;
      ASSERT_EQ(op.kernels.size(), 1u) << ir::OpName(op.kind);
      EXPECT_EQ(op.kernels[0].name, want);
      EXPECT_EQ(op.kernels[0].t_min, 1);
      EXPECT_EQ(op.kernels[0].t_max, 16);
    }
    // 5 layers: q/k/v, o, gate/up, down; the output matmul.
    EXPECT_EQ(matmuls, 5 * 4 + 1);
    EXPECT_EQ(attentions, 5);
    EXPECT_GT(fused, 0);
    EXPECT_THAT(r.err, HasSubstr(std::string("kernels[T=1..16: ") + w.matmul + "]"));
  }
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

// --mmq-max-rows: select-kernels gives the prefill matmuls on q4_K / q6_K
// weights the quantized tensor-core GEMM, visible in the IR and the launches
// (no GPU needed: dump-ir compiles no kernels).
TEST(CliPasses, DumpIrShowsTheQuantizedGemm) {
  const std::string model = VIBRANT_SOURCE_DIR "/../shared/models/tiny-llama-q4_k_m.gguf";
  if (!std::ifstream(model)) GTEST_SKIP() << "no " << model;
  auto on = RunBinary(kVibrantc, {"dump-ir", model, "--device", "cuda", "--after=select-kernels", "--launches",
                                  "--mmq-max-rows", "512"});
  ASSERT_EQ(on.exit_code, 0) << on.err;
  EXPECT_THAT(on.out, HasSubstr("gemm.mmq {bm=64} -> vb_q8a_to_f16, vb_mmq_q4_K_m64"));
  EXPECT_THAT(on.out, HasSubstr("vb_mmq_q4_K_m64"));
  EXPECT_THAT(on.out, ::testing::Not(HasSubstr("cublaslt")));
  auto off = RunBinary(kVibrantc, {"dump-ir", model, "--device", "cuda", "--launches"});
  ASSERT_EQ(off.exit_code, 0) << off.err;
  EXPECT_THAT(off.out, ::testing::Not(HasSubstr("vb_mmq_")));
  EXPECT_THAT(off.out, HasSubstr("cublaslt"));
  auto bad = RunBinary(kVibrantc, {"dump-ir", model, "--device", "cuda", "--launches", "--mmq-tile", "96"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("--mmq-tile must be 0 (the rule), 64 or 128"));
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
  // ops; combine-matmuls joins q/k/v and gate/up (3 ops fewer per layer): 77 ops,
  // 77 - 3 * 4 = 65 kernels without fusion.
  const std::string spec =
      "arch=qwen2,n_layer=3,n_embd=128,n_head=4,n_head_kv=2,n_ff=256,n_vocab=1000,tied=1";
  auto r = RunBinary(kVibrantc, {"compile", "--shapes", spec, "--disable-pass=fuse-elementwise", "--max-tokens", "8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("qwen2 3 layers, d 128: 77 ops"));  // the compiled graph
  EXPECT_THAT(r.out, HasSubstr("pipeline: 86 ops -> 77 ops (0 fused); 65 kernels per step\n"));
  r = RunBinary(kVibrantc, {"compile", "--shapes", "arch=qwen2,bogus=1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--shapes: unknown key 'bogus'"));
  r = RunBinary(kVibrantc, {"compile", kModel, "--shapes", spec});
  EXPECT_EQ(r.exit_code, 2);
}

}  // namespace
}  // namespace vibrant
