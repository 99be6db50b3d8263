// Issue #16, end to end on the real binaries: hostile files and arguments are
// errors (named, non-zero exit, no hang, no signal, no destroyed input),
// never crashes. One test per finding of the issue; each builds its hostile
// input here (a FIFO with mkfifo, a GGUF rewritten with GgufWriter, a plan
// whose GRAPH section is edited and re-checksummed).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "frontends/gguf/gguf.h"
#include "frontends/gguf/gguf_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/graph.h"
#include "ir/serialize.h"
#include "runtime/plan.h"
#include "runtime/plan_edit.h"
#include "tests/cli_util.h"

namespace vibrant {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using testing_util::CliResult;
using testing_util::ReadFile;
using testing_util::ShellQuote;

const std::string kVibrantc = VIBRANT_BINARY_DIR "/tools/vibrantc/vibrantc";
const std::string kVibrantRun = VIBRANT_BINARY_DIR "/tools/vibrant-run/vibrant-run";
const std::string kVibrantBench = VIBRANT_BINARY_DIR "/tools/vibrant-bench/vibrant-bench";
const std::string kModel = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";

#if defined(__SANITIZE_ADDRESS__)
#define VIBRANT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VIBRANT_ASAN 1
#endif
#endif

// Runs `prefix binary args...` through the shell with a time limit: a hang is
// a failure (exit 124), not a stuck test. `prefix` sets the environment or
// limits ("VIBRANT_MAX_MEMORY=1K", "ulimit -v 100000;").
CliResult RunCmd(const std::string& binary, const std::vector<std::string>& args,
              const std::string& prefix = "") {
  static int counter = 0;
  const std::string base = testing_util::ProcessTempDir() + "/hrun" + std::to_string(counter++);
  std::string cmd = prefix + " timeout -k 5 60 " + ShellQuote(binary);
  for (const std::string& a : args) cmd += " " + ShellQuote(a);
  cmd += " >" + ShellQuote(base + ".out") + " 2>" + ShellQuote(base + ".err") + " </dev/null";
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = ReadFile(base + ".out");
  r.err = ReadFile(base + ".err");
  return r;
}

// A copy of the bundled model rewritten through GgufWriter: `meta` may edit
// or drop (return false) each metadata entry, `extra` metadata and tensors
// are appended, `alignment` is the data alignment.
struct Rewrite {
  std::function<bool(const std::string& key, GgufValue* value)> meta;
  std::vector<std::pair<std::string, GgufValue>> extra_meta;
  std::vector<std::string> extra_f32_tensors;  // names of 1-element tensors
  uint32_t alignment = 32;
};

void WriteModel(const std::string& path, const Rewrite& rw) {
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(kModel);
  ASSERT_TRUE(f.ok()) << f.status();
  GgufWriter w;
  w.SetAlignment(rw.alignment);
  for (const auto& [key, value] : (*f)->metadata()) {
    GgufValue v = value;
    if (key == "general.alignment") continue;
    if (rw.meta && !rw.meta(key, &v)) continue;
    w.AddMetadata(key, v);
  }
  for (const auto& [key, value] : rw.extra_meta) w.AddMetadata(key, value);
  for (const GgufTensorInfo& t : (*f)->tensors()) w.AddTensor(t.name, t.dims, t.type, (*f)->TensorData(t));
  const float one = 1.0f;
  for (const std::string& name : rw.extra_f32_tensors) {
    w.AddTensor(name, {1}, DType::kF32,
                absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&one), sizeof(one)));
  }
  absl::Status s = w.WriteFile(path);
  ASSERT_TRUE(s.ok()) << s;
}

class HardeningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const std::string& bin : {kVibrantc, kVibrantRun, kVibrantBench}) {
      ASSERT_TRUE(fs::exists(bin)) << bin << " is not built";
    }
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("hardening_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Compiles `model` into `plan`; the test fails if it does not.
  void Compile(const std::string& model, const std::string& plan) {
    CliResult r = RunCmd(kVibrantc, {"compile", model, "-o", plan});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // Greedy generation of 16 tokens.
  CliResult Generate(const std::string& plan, const std::string& prefix = "",
                     std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {plan, "-p", "Once upon a time", "--temp", "0", "-n", "16"};
    args.insert(args.end(), extra.begin(), extra.end());
    return RunCmd(kVibrantRun, args, prefix);
  }

  fs::path dir_;
};

// Finding 3: `vibrantc compile M.gguf -o M.gguf` renamed the plan over the
// model. Also through a symlink, a hard link and another spelling.
TEST_F(HardeningTest, CompileRefusesToOverwriteItsInput) {
  const std::string model = Path("m.gguf");
  fs::copy_file(kModel, model);
  const std::string original = ReadFile(model);
  fs::create_symlink(model, Path("link.gguf"));
  fs::create_hard_link(model, Path("hard.gguf"));
  for (const std::string& out : {model, Path("link.gguf"), Path("hard.gguf"), Path("./m.gguf")}) {
    CliResult r = RunCmd(kVibrantc, {"compile", model, "-o", out});
    EXPECT_EQ(r.exit_code, 1) << out;
    EXPECT_THAT(r.err, HasSubstr("would destroy the input")) << out;
  }
  EXPECT_EQ(ReadFile(model), original);
  EXPECT_TRUE(fs::is_symlink(Path("link.gguf")));
  Compile(model, Path("plan.bin"));  // another output is fine
}

// Finding 4: a FIFO as the model blocked every tool forever in open().
TEST_F(HardeningTest, FifoIsRefusedByEveryTool) {
  const std::string fifo = Path("model.gguf");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string want = fifo + ": not a regular file (a FIFO)";
  const std::vector<std::pair<std::string, std::vector<std::string>>> runs = {
      {kVibrantc, {"inspect", fifo}},
      {kVibrantc, {"inspect", fifo, "--json"}},
      {kVibrantc, {"tokenize", fifo, "hello"}},
      {kVibrantc, {"tokenize", kModel, "--file", fifo}},
      {kVibrantc, {"compile", fifo, "-o", Path("plan.bin")}},
      {kVibrantc, {"dump-ir", fifo}},
      {kVibrantRun, {fifo, "-p", "hi"}},
      {kVibrantBench, {"-m", fifo, "-p", "8", "-n", "0"}},
  };
  for (const auto& [bin, args] : runs) {
    CliResult r = RunCmd(bin, args);
    EXPECT_NE(r.exit_code, 0) << args[0];
    EXPECT_NE(r.exit_code, 124) << args[0] << ": timed out (blocked on the FIFO?)";
    EXPECT_THAT(r.err, HasSubstr(want)) << fs::path(bin).filename() << " " << args[0];
  }
  EXPECT_FALSE(fs::exists(Path("plan.bin")));
}

// Finding 4: the GGUF a plan references replaced by a FIFO.
TEST_F(HardeningTest, FifoAsTheReferencedModel) {
  const std::string model = Path("m.gguf");
  fs::copy_file(kModel, model);
  Compile(model, Path("plan.bin"));
  fs::remove(model);
  ASSERT_EQ(::mkfifo(model.c_str(), 0600), 0);
  CliResult r = Generate(Path("plan.bin"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(model));
}

// Finding 1: a plan whose GRAPH section was edited (tokens moved onto the
// embedding's output) and re-checksummed read out of bounds (SIGSEGV).
TEST_F(HardeningTest, CraftedPlanIsAnError) {
  Compile(kModel, Path("plan.bin"));
  const std::string bytes = ReadFile(Path("plan.bin"));
  absl::StatusOr<std::vector<RawPlanSection>> sections = SplitPlanSections(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  ASSERT_TRUE(sections.ok()) << sections.status();
  RawPlanSection* gs = FindPlanSection(*sections, static_cast<uint32_t>(PlanSectionKind::kGraph));
  ASSERT_NE(gs, nullptr);
  absl::StatusOr<ir::Graph> g = ir::DeserializeGraph(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(gs->bytes.data()), gs->bytes.size()));
  ASSERT_TRUE(g.ok()) << g.status();
  const ir::ValueId tokens = g->FindValue("tokens");
  ASSERT_GE(tokens, 0);
  for (const ir::Op& op : g->ops()) {
    if (op.kind == ir::OpKind::kEmbedding) {
      g->mutable_value(tokens).arena_offset = g->value(op.outputs[0]).arena_offset;
    }
  }
  gs->bytes = ir::SerializeGraph(*g);
  {
    std::ofstream out(Path("crafted.bin"), std::ios::binary);
    out << AssemblePlan(*sections, kPlanFormatVersion);
  }
  CliResult r = Generate(Path("crafted.bin"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("section GRAPH: memory plan: %tokens"));
  EXPECT_EQ(r.out, "");
  r = RunCmd(kVibrantBench, {"-m", Path("crafted.bin"), "-p", "8", "-n", "0"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.exit_code, 128) << "killed by a signal: " << r.err;
  EXPECT_THAT(r.err, HasSubstr("memory plan: %tokens"));
}

// Finding 2: what a plan may allocate is bounded by a limit the user sets.
TEST_F(HardeningTest, MemoryLimitFromTheEnvironment) {
  Compile(kModel, Path("plan.bin"));
  CliResult r = Generate(Path("plan.bin"), "VIBRANT_MAX_MEMORY=64K");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("VIBRANT_MAX_MEMORY=64K"));
  EXPECT_THAT(r.err, HasSubstr("more than the limit of 64.0 KiB"));
  r = Generate(Path("plan.bin"), "VIBRANT_MAX_MEMORY=bogus");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("VIBRANT_MAX_MEMORY: 'bogus' is not a size"));
  r = Generate(Path("plan.bin"), "VIBRANT_MAX_MEMORY=64M");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// Finding 2: `compile --ctx-size 16777216` for a model trained at 2,048.
TEST_F(HardeningTest, ContextBeyondTrainingIsRefused) {
  CliResult r = RunCmd(kVibrantc, {"compile", kModel, "--ctx-size", "16777216", "-o", Path("plan.bin")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--ctx-size 16777216 exceeds the context the model was trained for "
                               "(2048 tokens, llama.context_length"));
  EXPECT_FALSE(fs::exists(Path("plan.bin")));
  Compile(kModel, Path("plan.bin"));  // the default (2048) is fine
}

// Finding 7: broken vocabularies were accepted; a 100-token vocabulary on a
// 512-row embedding then generated nothing.
TEST_F(HardeningTest, BrokenVocabularyIsRefusedAtCompile) {
  Rewrite small;
  small.meta = [](const std::string& key, GgufValue* v) {
    if (key == "tokenizer.ggml.tokens" || key == "tokenizer.ggml.scores" ||
        key == "tokenizer.ggml.token_type") {
      GgufArray a = **v->AsArray();
      a.elems.resize(100);
      *v = GgufValue::Array(std::move(a));
    }
    return true;
  };
  WriteModel(Path("small.gguf"), small);
  CliResult r = RunCmd(kVibrantc, {"compile", Path("small.gguf"), "-o", Path("plan.bin")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("tokenizer.ggml.tokens: 100 tokens, but the embedding "
                               "(token_embd.weight) has 512 rows"));
  Rewrite bad_id;
  bad_id.meta = [](const std::string& key, GgufValue* v) {
    if (key == "tokenizer.ggml.eos_token_id") *v = GgufValue::Uint(GgufType::kUint32, 512);
    return true;
  };
  WriteModel(Path("bad_id.gguf"), bad_id);
  r = RunCmd(kVibrantc, {"compile", Path("bad_id.gguf"), "-o", Path("plan.bin")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("tokenizer.ggml.eos_token_id: 512 is outside the vocabulary [0, 512)"));
  EXPECT_FALSE(fs::exists(Path("plan.bin")));
}

bool HasEscapeByte(const std::string& s) { return s.find('\x1b') != std::string::npos; }

// Finding 6: file strings reached the terminal unescaped (inspect, errors).
TEST_F(HardeningTest, FileStringsAreEscapedOnTheTerminal) {
  Rewrite evil;
  evil.extra_meta = {{"general.\x1b]0;pwned\x07", GgufValue::String("v")},
                     {"general.description", GgufValue::String("\x1b[2J\x1b[Hcleared \xc2\x9b" "31m")}};
  evil.extra_f32_tensors = {"blk.0.\x1b[31mred"};
  WriteModel(Path("evil.gguf"), evil);
  CliResult r = RunCmd(kVibrantc, {"inspect", Path("evil.gguf")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(HasEscapeByte(r.out));
  EXPECT_THAT(r.out, HasSubstr("general.\\x1b]0;pwned\\x07"));
  EXPECT_THAT(r.out, HasSubstr("\\x1b[2J\\x1b[Hcleared \\u{009b}31m"));
  EXPECT_THAT(r.out, HasSubstr("blk.0.\\x1b[31mred"));
  r = RunCmd(kVibrantc, {"inspect", Path("evil.gguf"), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(HasEscapeByte(r.out));
  EXPECT_THAT(r.out, Not(HasSubstr("\xc2\x9b")));

  Rewrite arch;
  arch.meta = [](const std::string& key, GgufValue* v) {
    if (key == "general.architecture") *v = GgufValue::String("ll\x1b]0;pwned\x07" "ama");
    return true;
  };
  WriteModel(Path("arch.gguf"), arch);
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"compile", Path("arch.gguf"), "-o", Path("plan.bin")},
                                             {"dump-ir", Path("arch.gguf")}}) {
    r = RunCmd(kVibrantc, args);
    EXPECT_EQ(r.exit_code, 1) << args[0];
    EXPECT_FALSE(HasEscapeByte(r.err)) << args[0] << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("\\x1b]0;pwned\\x07")) << args[0];
  }
  // vibrant-run compiles a GGUF itself (the plan cache): its error too.
  r = RunCmd(kVibrantRun, {Path("arch.gguf"), "-p", "hi", "--plan-cache", Path("cache")});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_FALSE(HasEscapeByte(r.err)) << r.err;
  EXPECT_THAT(r.err, HasSubstr("\\x1b]0;pwned\\x07"));
}

// Finding 5: general.alignment = 1 left f32 weights misaligned and the
// kernels loaded them anyway (UBSan: misaligned load). The misaligned model
// must generate exactly what the aligned one does. (A plain x86 build
// tolerates misaligned loads; the sanitizer job aborts on them, so this test
// fails there without the fix.)
TEST_F(HardeningTest, MisalignedModelRunsLikeTheAlignedOne) {
  Rewrite packed;
  packed.alignment = 1;
  WriteModel(Path("packed.gguf"), packed);
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(Path("packed.gguf"));
  ASSERT_TRUE(f.ok()) << f.status();
  int misaligned = 0;
  for (const GgufTensorInfo& t : (*f)->tensors()) misaligned += t.type == DType::kF32 && t.file_offset % 4 != 0;
  ASSERT_GT(misaligned, 0) << "the rewritten model has no misaligned f32 tensor to test";
  Compile(kModel, Path("aligned.bin"));
  Compile(Path("packed.gguf"), Path("packed.bin"));
  CliResult want = Generate(Path("aligned.bin"));
  CliResult got = Generate(Path("packed.bin"));
  ASSERT_EQ(want.exit_code, 0) << want.err;
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_FALSE(want.out.empty());
  EXPECT_EQ(got.out, want.out);
}

// Finding 4: `-t N` that cannot be created aborted (uncaught
// std::system_error). vibrant-run caps -t at the machine's cores with a
// message; the CPU backend itself (vibrant-bench and the C API pass the count
// through) caps it at 1024 and does without threads the system refuses, with
// a message each.
TEST_F(HardeningTest, ThreadCountIsCappedWithAMessage) {
  Compile(kModel, Path("plan.bin"));
  CliResult want = Generate(Path("plan.bin"));
  ASSERT_EQ(want.exit_code, 0) << want.err;
  CliResult r = Generate(Path("plan.bin"), "", {"-t", "100000"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const unsigned cores = std::thread::hardware_concurrency();
  if (cores > 0) {
    EXPECT_THAT(r.err, HasSubstr(absl::StrCat("-t 100000: this machine has ", cores, " cores; using ", cores)));
  }
  EXPECT_EQ(r.out, want.out);
  const std::vector<std::string> bench = {"-m", Path("plan.bin"), "-p", "8", "-n", "2", "-r", "1",
                                          "--no-warmup", "-t"};
  std::vector<std::string> args = bench;
  args.push_back("100000");
  r = RunCmd(kVibrantBench, args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("100000 threads requested; using at most 1024"));
#ifndef VIBRANT_ASAN
  // 1 GiB of address space holds far fewer than 1000 thread stacks of 8 MiB.
  args = bench;
  args.push_back("1000");
  r = RunCmd(kVibrantBench, args, "ulimit -v 1048576;");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("1000 threads requested, but only"));
#endif
}

}  // namespace
}  // namespace vibrant
