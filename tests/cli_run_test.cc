// vibrant-run's command line, end to end on the bundled stories260K (CPU):
// running a GGUF through the plan cache, llama.cpp's generation flags, input
// checks, the timing summary, chat mode without a terminal, --version.
// (The terminal chat is in cli_chat_pty_test.cc.)
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "frontends/gguf/gguf.h"
#include "frontends/gguf/gguf_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli_util.h"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using vibrant::testing_util::CliResult;
using vibrant::testing_util::ReadFile;
using vibrant::testing_util::RunBinary;
using vibrant::testing_util::ShellQuote;

const std::string kRun = VIBRANT_BINARY_DIR "/tools/vibrant-run/vibrant-run";
const std::string kVibrantc = VIBRANT_BINARY_DIR "/tools/vibrantc/vibrantc";
const std::string kBench = VIBRANT_BINARY_DIR "/tools/vibrant-bench/vibrant-bench";
const std::string kModel = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";
const std::string kTinyLlama = VIBRANT_SOURCE_DIR "/../shared/models/tiny-llama-q8_0.gguf";

struct Reference {
  std::vector<int> prompt_tokens, generated;
  std::string text;
};

const Reference& Ref() {
  static const Reference ref = [] {
    std::ifstream in(VIBRANT_SOURCE_DIR "/tests/data/stories260K.reference.json");
    nlohmann::json j = nlohmann::json::parse(in);
    for (const auto& c : j["cases"]) {
      if (c["prompt"] == "Once upon a time") {
        return Reference{c["prompt_tokens"].get<std::vector<int>>(), c["generated"].get<std::vector<int>>(),
                         c["generated_text"].get<std::string>()};
      }
    }
    return Reference{};
  }();
  return ref;
}

struct JsonRun {
  std::vector<int> prompt_tokens;
  std::vector<int> ids;
  std::string text;
  std::vector<nlohmann::json> summaries;
};

JsonRun ParseJson(const std::string& out) {
  JsonRun jr;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      ADD_FAILURE() << "not JSON: " << line;
      continue;
    }
    if (j.contains("prompt_tokens") && j["prompt_tokens"].is_array()) {
      jr.prompt_tokens = j["prompt_tokens"].get<std::vector<int>>();
    } else if (j.contains("summary")) {
      jr.summaries.push_back(j["summary"]);
    } else {
      jr.ids.push_back(j["id"].get<int>());
      jr.text += j["piece"].get<std::string>();
    }
  }
  return jr;
}

class RunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kRun)) << kRun << " is not built";
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) / (std::string("cli_run_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // Every run's default plan cache: never the user's home.
    ::setenv("VIBRANT_PLAN_CACHE", (dir_ / "default-cache").c_str(), 1);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  CliResult Run(std::vector<std::string> args) { return RunBinary(kRun, args); }
  // Greedy run of the reference prompt plus `extra`, on the CPU unless
  // `extra` chooses (texts are compared with llama.cpp's CPU reference).
  CliResult Greedy(std::vector<std::string> extra, int n = 32) {
    std::vector<std::string> args = {"-m", kModel, "-p", "Once upon a time", "--temp", "0", "-n", std::to_string(n)};
    args.insert(args.end(), extra.begin(), extra.end());
    if (std::find(extra.begin(), extra.end(), "--device") == extra.end() &&
        std::find(extra.begin(), extra.end(), "-ngl") == extra.end()) {
      args.insert(args.end(), {"--device", "cpu"});
    }
    return Run(args);
  }
  int CountPlans(const std::string& dir) {
    if (!fs::exists(dir)) return 0;
    int n = 0;
    for (const auto& e : fs::directory_iterator(dir)) n += e.path().extension() == ".plan";
    return n;
  }

  fs::path dir_;
};

TEST_F(RunTest, AGgufCompilesIntoThePlanCacheOnceThenReusesIt) {
  const std::string cache = Path("cache");
  CliResult a = Greedy({"--plan-cache", cache});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, Ref().text);
  EXPECT_THAT(a.err, HasSubstr("into the plan cache: " + cache + "/stories260K-cpu-"));
  EXPECT_EQ(CountPlans(cache), 1);
  CliResult b = Greedy({"--plan-cache", cache});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(b.out, Ref().text);
  EXPECT_THAT(b.err, HasSubstr("plan cache: using " + cache + "/stories260K-cpu-"));
  EXPECT_THAT(b.err, Not(HasSubstr("compiled")));
  // Other options are another entry.
  CliResult c = Greedy({"--plan-cache", cache, "-c", "64"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(CountPlans(cache), 2);
  // The model given positionally; the default cache ($VIBRANT_PLAN_CACHE here).
  CliResult d = Run({kModel, "-p", "Once upon a time", "--temp", "0", "-n", "32", "--device", "cpu"});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_EQ(d.out, Ref().text);
  EXPECT_EQ(CountPlans(Path("default-cache")), 1);
}

TEST_F(RunTest, NoPlanCacheCompilesInMemory) {
  CliResult r = Greedy({"--no-plan-cache"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, Ref().text);
  EXPECT_THAT(r.err, HasSubstr("(in memory, not cached)"));
  EXPECT_FALSE(fs::exists(Path("default-cache")));
}

TEST_F(RunTest, APlanRunsPositionallyOrWithMAndIsRecompiledForOtherOptions) {
  const std::string plan = Path("plan.bin");
  CliResult c = RunBinary(kVibrantc, {"compile", kModel, "-o", plan, "--ctx-size", "64"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  for (const std::vector<std::string>& head : {std::vector<std::string>{plan}, std::vector<std::string>{"-m", plan}}) {
    std::vector<std::string> args = head;
    args.insert(args.end(), {"-p", "Once upon a time", "--temp", "0", "-n", "32"});
    CliResult r = Run(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, Ref().text);
    EXPECT_THAT(r.err, Not(HasSubstr("compil")));
  }
  // Another context than the plan's: its GGUF is compiled again.
  CliResult r = Run({plan, "-p", "Once upon a time", "--temp", "0", "-n", "32", "-c", "128", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("its context is 64 tokens, -c asks for 128; compiling its model again"));
  EXPECT_EQ(ParseJson(r.out).ids, Ref().generated);
}

TEST_F(RunTest, ContextAndBatchSize) {
  // -c 16: prompt and generation fill 16 positions, plus the last, unfed token.
  CliResult r = Greedy({"-c", "16", "--json"}, -1);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  JsonRun jr = ParseJson(r.out);
  ASSERT_EQ(jr.summaries.size(), 1u);
  EXPECT_EQ(jr.summaries[0]["stop"], "context_full");
  EXPECT_EQ(jr.prompt_tokens.size() + jr.ids.size(), 17u);
  // -b 2: the 5-token prompt in three steps; the same tokens.
  r = Greedy({"-b", "2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ParseJson(r.out).ids, Ref().generated);
  std::string prompt;
  for (int i = 0; i < 10; ++i) prompt += "Once upon a time there was a girl. ";
  r = Run({kModel, "-p", prompt, "-c", "16"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("longer than the context of 16 tokens (use a larger -c/--ctx-size"));
  EXPECT_EQ(r.out, "");
}

TEST_F(RunTest, DeviceChoices) {
  CliResult r = Run({kModel, "-p", "Once upon a time", "--temp", "0", "-n", "4"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // This machine: no GPU (CI), or a GPU where stories260K fits.
  EXPECT_TRUE(std::regex_search(r.err, std::regex("device auto: (cpu|cuda) \\(")) ) << r.err;
  r = Greedy({"--device", "cpu", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ParseJson(r.out).summaries[0]["device"], "cpu");
  EXPECT_THAT(r.err, Not(HasSubstr("device auto")));
  r = Greedy({"-ngl", "0", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ParseJson(r.out).summaries[0]["device"], "cpu");
  // stories260K has 5 layers: -ngl 2 asks for a plan split between the GPU
  // and the CPU (its run on a GPU: gpu_cli.GpuCliTest.LayerSplitGivesTheGpuTokens).
  r = Greedy({"-ngl", "2"});
  if (r.exit_code != 0) {  // no GPU, or no CUDA backend: the error names the flag that helps
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.err, HasSubstr("--device cpu"));
    EXPECT_TRUE(r.err.find("no CUDA backend") != std::string::npos ||
                r.err.find("-ngl 2: a split between the GPU and the CPU, layers 3..4 on the GPU") != std::string::npos)
        << r.err;
  }
  r = Greedy({"--device", "tpu"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--device: 'tpu' is not auto, cpu or cuda"));
  r = Greedy({"--device", "cuda"});
  if (r.exit_code != 0) {  // no GPU or no CUDA backend: an error naming the flag that helps
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.err, HasSubstr("--device cpu"));
  }
}

// With a presence penalty far above the logits' spread (stories260K's are
// within ±20) and the whole history in the window, greedy decoding can never
// pick a token it has seen: every generated token is new.
TEST_F(RunTest, PenaltiesFollowLlamaCppsFlags) {
  for (const char* flag : {"--presence-penalty", "--frequency-penalty"}) {
    CliResult r = Greedy({flag, "100", "--repeat-last-n", "-1", "--json"}, 40);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    JsonRun jr = ParseJson(r.out);
    std::set<int> seen(jr.prompt_tokens.begin(), jr.prompt_tokens.end());
    for (int id : jr.ids) {
      EXPECT_TRUE(seen.insert(id).second) << flag << ": token " << id << " repeated";
    }
    EXPECT_EQ(jr.ids.size(), 40u);
  }
  // --repeat-last-n 0 turns them off: llama.cpp's greedy text again.
  CliResult off = Greedy({"--presence-penalty", "100", "--repeat-last-n", "0"});
  ASSERT_EQ(off.exit_code, 0) << off.err;
  EXPECT_EQ(off.out, Ref().text);
  // A repeat penalty changes the text (the reference repeats " the" and "." ...),
  // deterministically.
  CliResult p1 = Greedy({"--repeat-penalty", "1.5"});
  CliResult p2 = Greedy({"--repeat-penalty", "1.5"});
  ASSERT_EQ(p1.exit_code, 0) << p1.err;
  EXPECT_NE(p1.out, Ref().text);
  EXPECT_EQ(p1.out, p2.out);
  // A window of 1 token: only an immediate repetition is penalized.
  CliResult w = Greedy({"--presence-penalty", "100", "--repeat-last-n", "1", "--json"}, 40);
  JsonRun jw = ParseJson(w.out);
  for (size_t i = 1; i < jw.ids.size(); ++i) EXPECT_NE(jw.ids[i], jw.ids[i - 1]);
}

TEST_F(RunTest, StopStringsAndReversePrompts) {
  const std::string& text = Ref().text;
  const size_t at = text.find("Lily");
  ASSERT_NE(at, std::string::npos);
  CliResult r = Greedy({"--stop", "Lily", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ParseJson(r.out).summaries[0]["stop"], "stop_string");
  r = Greedy({"--stop", "Lily"});
  EXPECT_EQ(r.out, text.substr(0, at));
  r = Greedy({"-r", "Lily"});
  EXPECT_EQ(r.out, text.substr(0, at + 4));
  r = Greedy({"--reverse-prompt", "nothing like this", "--stop", "park"});
  EXPECT_EQ(r.out, text.substr(0, text.find("park")));
  EXPECT_EQ(Greedy({"--stop", ""}).exit_code, 2);
}

TEST_F(RunTest, IgnoreEos) {
  if (!fs::exists(kTinyLlama)) GTEST_SKIP() << kTinyLlama << " is absent (../shared)";
  // tiny-llama (random weights, the stories vocabulary) with this seed samples
  // EOS after 84 tokens (seen when this test was written; any EOS will do).
  std::vector<std::string> args = {"-m", kTinyLlama, "-p", "Once upon a time", "--temp", "1", "--top-k", "0",
                                   "--top-p", "1", "--min-p", "0", "--seed", "2", "--device", "cpu", "-n", "1500",
                                   "--json"};
  CliResult r = Run(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  JsonRun jr = ParseJson(r.out);
  ASSERT_EQ(jr.summaries[0]["stop"], "eog") << "pick another seed";
  const size_t n_eog = jr.ids.size();
  args[args.size() - 2] = std::to_string(n_eog + 50);
  args.push_back("--ignore-eos");
  r = Run(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  jr = ParseJson(r.out);
  EXPECT_EQ(jr.summaries[0]["stop"], "n_predict");
  EXPECT_EQ(jr.ids.size(), n_eog + 50);
  for (int id : jr.ids) EXPECT_NE(id, 2) << "EOS was generated";
}

TEST_F(RunTest, NPredictSeedEchoAndJsonSummary) {
  CliResult r = Greedy({"--json"}, 0);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(ParseJson(r.out).ids.empty());
  r = Greedy({"--echo"});
  EXPECT_EQ(r.out, "Once upon a time" + Ref().text);
  r = Greedy({"-n", "-2", "-c", "12", "--json"});  // -2: as -1, until the context is full
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ParseJson(r.out).summaries[0]["stop"], "context_full");

  std::vector<std::string> seeded = {"-m", kModel, "-p", "Once upon a time", "-n", "24", "--seed", "7", "--json",
                                     "--device", "cpu"};
  CliResult a = Run(seeded), b = Run(seeded);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  JsonRun ja = ParseJson(a.out), jb = ParseJson(b.out);
  EXPECT_EQ(ja.ids, jb.ids);
  const nlohmann::json& s = ja.summaries[0];
  EXPECT_EQ(s["seed"], 7);
  for (const char* key : {"load_ms", "prompt_ms", "prompt_tok_s", "gen_ms", "gen_ms_per_token", "gen_tok_s",
                          "total_ms"}) {
    EXPECT_TRUE(s.contains(key) && s[key].is_number() && s[key].get<double>() >= 0) << key;
  }
  EXPECT_EQ(s["prompt_tokens"], 5);
  EXPECT_EQ(s["generated_tokens"], 24);
  EXPECT_EQ(s["stop"], "n_predict");
  EXPECT_EQ(s["device"], "cpu");
  EXPECT_GE(s["total_ms"].get<double>(), s["load_ms"].get<double>());
}

TEST_F(RunTest, TheTimingSummaryIsALineOfItsOwn) {
  // stdout and stderr into one pipe, as `2>&1 | less` does: the text does not
  // end with a newline, so one comes before the summary.
  const std::string cmd = ShellQuote(kRun) + " -m " + ShellQuote(kModel) +
                          " -p 'Once upon a time' --temp 0 -n 32 --no-plan-cache --device cpu 2>&1";
  CliResult r = RunBinary("/bin/sh", {"-c", cmd});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr(Ref().text + "\nload: "));
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex("\nload: [0-9.]+ ms \\| prompt: 5 tokens, [0-9.]+ ms, [0-9.]+ tok/s \\| generation: 32 "
                        "tokens, [0-9.]+ ms, [0-9.]+ ms/token, [0-9.]+ tok/s \\| total: [0-9.]+ ms \\| stop: "
                        "n_predict\n$")))
      << r.out;
  // Apart, stdout is exactly the text.
  r = Greedy({});
  EXPECT_EQ(r.out, Ref().text);
}

TEST_F(RunTest, InputsAreChecked) {
  CliResult r = Run({kModel, "-f", dir_.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("-f " + dir_.string() + ": is a directory"));
  r = Run({kModel, "-f", Path("absent.txt")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("absent.txt: cannot open"));
  r = Run({kModel, "-f", "/proc/self/mem"});  // opens, but cannot be read
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("read failed"));
  r = Run({Path("")});
  EXPECT_EQ(r.exit_code, 2);
  r = Run({dir_.string(), "-p", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("is a directory, not a model"));

  struct Bad {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Bad> bad = {
      {{"--top-k", "-3"}, "--top-k: '-3' is not an integer >= 0 (0 turns top-k off)"},
      {{"--top-p", "1.5"}, "--top-p: '1.5' is not a number in (0, 1]"},
      {{"--top-p", "0"}, "--top-p: '0' is not a number in (0, 1]"},
      {{"--min-p", "-0.1"}, "--min-p: '-0.1' is not a number in [0, 1]"},
      {{"--temp", "warm"}, "--temp: 'warm' is not a number"},
      {{"--temp", "nan"}, "--temp: 'nan' is not a number"},
      {{"--repeat-penalty", "0"}, "--repeat-penalty: '0' is not a number > 0"},
      {{"--repeat-last-n", "-5"}, "--repeat-last-n: '-5' is not an integer >= -1"},
      {{"--presence-penalty", "inf"}, "--presence-penalty: 'inf' is not a number"},
      {{"-n", "-3"}, "-n: '-3' is not an integer >= -2"},
      {{"-c", "-1"}, "-c: '-1' is not an integer >= 0"},
      {{"-b", "0"}, "-b: '0' is not an integer >= 1"},
      {{"-t", "0"}, "-t: '0' is not an integer >= 1"},
      {{"--seed", "-2"}, "--seed: '-2' is not a seed"},
      {{"-ngl", "-1"}, "-ngl: '-1' is not a number of layers"},
      {{"--chat-template", "vicuna"}, "unknown chat template 'vicuna' (known: chatml, llama2"},
      {{"-sys", "Be brief."}, "-sys is the system message of a chat: add -cnv"},
      {{"--bogus"}, "unknown option '--bogus'"},
  };
  for (const Bad& b : bad) {
    std::vector<std::string> args = {kModel, "-p", "x"};
    args.insert(args.end(), b.args.begin(), b.args.end());
    r = Run(args);
    EXPECT_EQ(r.exit_code, 2) << b.args[0];
    EXPECT_THAT(r.err, HasSubstr(b.message)) << b.args[0];
    EXPECT_EQ(r.out, "");
  }
  // Too many threads are clamped, with a message.
  const unsigned cores = std::thread::hardware_concurrency();
  r = Greedy({"-t", "1000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("-t 1000: this machine has " + std::to_string(cores) + " cores; using " +
                               std::to_string(cores)));
  EXPECT_EQ(r.out, Ref().text);
  r = Run({kModel});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("no prompt: give one with -p or -f, or chat with -cnv"));
  r = Run({"-p", "x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("no model given"));
}

// Ctrl-C (SIGINT) while generating: the generation stops, the summary says
// so, and the exit status is 130.
TEST_F(RunTest, SigintStopsGenerationWithASummary) {
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const std::string err_path = Path("err.txt");
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    FILE* err = std::fopen(err_path.c_str(), "w");
    ::dup2(fileno(err), STDERR_FILENO);
    ::close(out[0]);
    // Thousands of tokens: far longer than the test waits.
    ::execl(kRun.c_str(), kRun.c_str(), kModel.c_str(), "-p", "Once upon a time", "--temp", "0", "--ignore-eos",
            "-c", "8192", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  char buf[256];
  size_t got = 0;
  while (got < 64) {  // the text is streaming
    const ssize_t n = ::read(out[0], buf, sizeof(buf));
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ASSERT_GE(got, 64u);
  ::kill(pid, SIGINT);
  while (::read(out[0], buf, sizeof(buf)) > 0) {
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(out[0]);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  const std::string err = ReadFile(err_path);
  EXPECT_TRUE(std::regex_search(err, std::regex("generation: [0-9]+ tokens.*\\| stop: interrupted\n"))) << err;
}

TEST_F(RunTest, VersionInEveryTool) {
  const std::regex line("^(vibrant-run|vibrantc|vibrant-bench) [0-9]+\\.[0-9]+\\.[0-9]+ \\(git [^,]+, "
                        "(CUDA backend: toolkit [0-9.]+|no CUDA backend)\\)\n$");
  for (const auto& [bin, args] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {kRun, {"--version"}}, {kVibrantc, {"--version"}}, {kBench, {"--version"}}}) {
    CliResult r = RunBinary(bin, args);
    EXPECT_EQ(r.exit_code, 0) << bin;
    EXPECT_TRUE(std::regex_match(r.out, line)) << r.out;
  }
}

// Chat without a terminal: messages from stdin, one per line.
TEST_F(RunTest, ChatFromAPipeRendersTheTemplateAndReusesTheCache) {
  // A one-turn chat with ChatML: the prompt tokens are those of this text,
  // written by hand from the ChatML template.
  const std::string rendered =
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
  CliResult tok = RunBinary(kVibrantc, {"tokenize", kModel, rendered, "--json"});
  ASSERT_EQ(tok.exit_code, 0) << tok.err;
  std::vector<int> want;
  for (const auto& t : nlohmann::json::parse(tok.out)) want.push_back(t["id"].get<int>());
  CliResult r = Run({kModel, "-st", "-p", "Hi", "-sys", "Be brief.", "--chat-template", "chatml", "--temp", "0",
                     "-n", "8", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  JsonRun jr = ParseJson(r.out);
  ASSERT_EQ(jr.summaries.size(), 1u);
  EXPECT_EQ(jr.summaries[0]["prompt_ids"].get<std::vector<int>>(), want);
  EXPECT_EQ(jr.ids.size(), 8u);
  // stories260K has no template: chatml is the fallback, said on stderr.
  r = Run({kModel, "-st", "-p", "Hi", "-sys", "Be brief.", "--temp", "0", "-n", "8", "--json"});
  EXPECT_THAT(r.err, HasSubstr("has no chat template (tokenizer.chat_template); using chatml"));
  EXPECT_EQ(ParseJson(r.out).summaries[0]["prompt_ids"].get<std::vector<int>>(), want);

  // The same from files: -sysf for the system message, --chat-template-file
  // for a template's text (ChatML's, recognised as such).
  {
    std::ofstream(Path("system.txt")) << "Be brief.\n";
    std::ofstream(Path("chatml.jinja"))
        << "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
           "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% "
           "endif %}";
  }
  r = Run({kModel, "-st", "-p", "Hi", "-sysf", Path("system.txt"), "--chat-template-file", Path("chatml.jinja"),
           "--temp", "0", "-n", "8", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ParseJson(r.out).summaries[0]["prompt_ids"].get<std::vector<int>>(), want);
  r = Run({kModel, "-st", "-p", "Hi", "--chat-template-file", dir_.string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--chat-template-file " + dir_.string() + ": is a directory"));

  // Two turns from a pipe: the second prefills only its new tokens.
  const std::string cmd = "printf 'Once upon a time\\nThe end\\n' | " + ShellQuote(kRun) + " -m " +
                          ShellQuote(kModel) + " -cnv --temp 0 -n 8 --json --chat-template chatml";
  r = RunBinary("/bin/sh", {"-c", cmd});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  jr = ParseJson(r.out);
  ASSERT_EQ(jr.summaries.size(), 2u);
  const nlohmann::json &t1 = jr.summaries[0], &t2 = jr.summaries[1];
  EXPECT_EQ(t1["turn"], 1);
  EXPECT_EQ(t2["turn"], 2);
  EXPECT_EQ(t1["reused_tokens"], 0);
  // Turn 1's prompt and replies, but the reply's last token (never fed), were cached.
  EXPECT_EQ(t2["reused_tokens"].get<int>(), t1["prompt_tokens"].get<int>() + t1["generated_tokens"].get<int>() - 1);
  std::vector<int> p1 = t1["prompt_ids"].get<std::vector<int>>(), p2 = t2["prompt_ids"].get<std::vector<int>>();
  std::vector<int> gen1(jr.ids.begin(), jr.ids.begin() + 8);
  ASSERT_GE(p2.size(), p1.size() + gen1.size());
  EXPECT_TRUE(std::equal(p1.begin(), p1.end(), p2.begin()));
  EXPECT_TRUE(std::equal(gen1.begin(), gen1.end(), p2.begin() + p1.size()));
  // The rest is the ChatML text between the reply and the next one's start.
  const std::string between = "<|im_end|>\n<|im_start|>user\nThe end<|im_end|>\n<|im_start|>assistant\n";
  CliResult bt = RunBinary(kVibrantc, {"tokenize", kModel, between, "--json", "--no-bos"});
  std::vector<int> between_ids;
  for (const auto& t : nlohmann::json::parse(bt.out)) between_ids.push_back(t["id"].get<int>());
  EXPECT_EQ(std::vector<int>(p2.begin() + p1.size() + gen1.size(), p2.end()), between_ids);

  // A chat that outgrows its context (-c 128, replies of 24): the oldest turns
  // leave and every turn is answered; --no-context-shift makes it an error.
  const std::string lines = "printf 'Once upon a time\\nA dog ran\\nThe cat sat\\nThe sun rose\\n' | ";
  const std::string chat = ShellQuote(kRun) + " -m " + ShellQuote(kModel) +
                           " -cnv --temp 0 -n 24 -c 128 --json --chat-template chatml -sys 'Tell a story.'";
  r = RunBinary("/bin/sh", {"-c", lines + chat});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  jr = ParseJson(r.out);
  ASSERT_EQ(jr.summaries.size(), 4u) << r.err;
  int dropped = 0;
  for (const nlohmann::json& s : jr.summaries) dropped += s["dropped_messages"].get<int>();
  EXPECT_GT(dropped, 0);
  EXPECT_EQ(jr.summaries[0]["dropped_messages"], 0);
  r = RunBinary("/bin/sh", {"-c", lines + chat + " --no-context-shift"});
  ASSERT_EQ(r.exit_code, 0) << r.err;  // a chat goes on after an error: the turn is reported
  EXPECT_THAT(r.err, HasSubstr("no longer fits the context of 128"));
  EXPECT_LT(ParseJson(r.out).summaries.size(), 4u);
}

// stories260K with a chat template in its metadata, as instruct models have.
std::string WithTemplate(const std::string& path, const std::string& jinja) {
  absl::StatusOr<std::unique_ptr<vibrant::GgufFile>> f = vibrant::GgufFile::Open(kModel);
  EXPECT_TRUE(f.ok()) << f.status();
  vibrant::GgufWriter w;
  for (const auto& [key, value] : (*f)->metadata()) w.AddMetadata(key, value);
  w.AddString("tokenizer.chat_template", jinja);
  for (const vibrant::GgufTensorInfo& t : (*f)->tensors()) {
    w.AddTensor(t.name, t.dims, t.type, (*f)->TensorData(t));
  }
  EXPECT_TRUE(w.WriteFile(path).ok());
  return path;
}

std::vector<int> TokenIds(const std::string& text) {
  CliResult tok = RunBinary(kVibrantc, {"tokenize", kModel, text, "--json"});
  EXPECT_EQ(tok.exit_code, 0) << tok.err;
  std::vector<int> ids;
  for (const auto& t : nlohmann::json::parse(tok.out)) ids.push_back(t["id"].get<int>());
  return ids;
}

TEST_F(RunTest, TheModelsOwnTemplateIsRecognisedOrAnUnknownOneNamed) {
  // Qwen2-Instruct's template: ChatML with a default system message.
  const std::string qwen2 = WithTemplate(
      Path("qwen2-template.gguf"),
      R"({% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})");
  CliResult r = Run({qwen2, "-st", "-p", "Hi", "--temp", "0", "-n", "4", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, Not(HasSubstr("no chat template")));
  // Written by hand from that template: its default system message comes first.
  EXPECT_EQ(ParseJson(r.out).summaries[0]["prompt_ids"].get<std::vector<int>>(),
            TokenIds("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                     "<|im_start|>assistant\n"));
  CliResult inspect = RunBinary(kVibrantc, {"inspect", qwen2});
  EXPECT_THAT(inspect.out, HasSubstr("chat template: chatml\n"));
  // -sys replaces the default.
  r = Run({qwen2, "-st", "-p", "Hi", "-sys", "Be brief.", "--temp", "0", "-n", "4", "--json"});
  EXPECT_EQ(ParseJson(r.out).summaries[0]["prompt_ids"].get<std::vector<int>>(),
            TokenIds("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                     "<|im_start|>assistant\n"));

  // A template of no known family: an error that names the model's key and the flag.
  const std::string odd = WithTemplate(Path("odd-template.gguf"),
                                       "{% for m in messages %}USER: {{ m['content'] }}\n{% endfor %}ASSISTANT:");
  r = Run({odd, "-st", "-p", "Hi", "-n", "4"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(odd + ": tokenizer.chat_template: not a chat template Vibrant recognises (it "
                                     "begins \"{% for m in messages %}USER:"));
  EXPECT_THAT(r.err, HasSubstr("choose one with --chat-template NAME (known: chatml,"));
  r = Run({odd, "-st", "-p", "Hi", "-n", "4", "--chat-template", "llama3"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Plain completion does not need a template.
  r = Run({odd, "-p", "Once upon a time", "--temp", "0", "-n", "32", "--device", "cpu"});
  EXPECT_EQ(r.out, Ref().text);
}

}  // namespace
