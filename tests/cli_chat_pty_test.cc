// `vibrant-run -cnv` on a pseudo-terminal, as a person uses it: typed lines
// through libedit, a second turn that prefills only its new tokens, the
// history (up arrow), Ctrl-C stopping a reply without quitting, Ctrl-C at the
// prompt and Ctrl-D quitting. On the bundled stories260K (CPU).
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli_util.h"

namespace {

namespace fs = std::filesystem;

const std::string kRun = VIBRANT_BINARY_DIR "/tools/vibrant-run/vibrant-run";
const std::string kVibrantc = VIBRANT_BINARY_DIR "/tools/vibrantc/vibrantc";
const std::string kModel = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";

// A child process on a pseudo-terminal.
class Pty {
 public:
  ~Pty() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) ::close(fd_);
  }

  bool Start(const std::vector<std::string>& argv, const std::string& cache_dir) {
    struct winsize ws = {};
    ws.ws_row = 24;
    ws.ws_col = 200;
    pid_ = ::forkpty(&fd_, nullptr, nullptr, &ws);
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      ::setenv("TERM", "vt100", 1);
      ::setenv("VIBRANT_PLAN_CACHE", cache_dir.c_str(), 1);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    return true;
  }

  // Reads until `re` matches the output after `from_`, or `seconds` pass.
  // On a match, later waits start after it.
  bool WaitFor(const std::string& re, double seconds, std::smatch* m = nullptr) {
    const std::regex rx(re);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (true) {
      std::smatch local;
      std::smatch& match = m != nullptr ? *m : local;
      tail_ = out_.substr(from_);
      if (std::regex_search(tail_, match, rx)) {
        from_ += match.position(0) + match.length(0);
        return true;
      }
      const int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
      if (left <= 0 || !ReadSome(left)) return false;
    }
  }

  // Waits until at least `n` more bytes arrived.
  bool WaitForBytes(size_t n, double seconds) {
    const size_t want = out_.size() + n;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (out_.size() < want) {
      const int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
      if (left <= 0 || !ReadSome(left)) return false;
    }
    return true;
  }

  void Type(const std::string& s) { (void)!::write(fd_, s.data(), s.size()); }

  // Waits until the child's terminal is in raw mode (ICANON off), i.e. the
  // line editor is reading keys. libedit prints its prompt before it leaves
  // canonical mode, and a Ctrl-D typed in that window is taken by the kernel's
  // line discipline as end-of-file and reaches the editor as a NUL byte.
  bool WaitForRawMode(double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      struct termios t;
      if (::tcgetattr(fd_, &t) == 0 && (t.c_lflag & ICANON) == 0) return true;
      ReadSome(5);
    }
    return false;
  }

  // The exit status (128 + signal when killed), or -1 after `seconds`.
  int Wait(double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      ReadSome(20);
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
    }
    return -1;
  }

  const std::string& output() const { return out_; }

 private:
  // False when nothing can come any more (the child closed the terminal).
  bool ReadSome(int timeout_ms) {
    struct pollfd p = {fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return true;
    char buf[4096];
    const ssize_t n = ::read(fd_, buf, sizeof(buf));
    if (n > 0) {
      out_.append(buf, static_cast<size_t>(n));
      return true;
    }
    return n < 0 && (errno == EAGAIN || errno == EINTR);
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  std::string out_, tail_;
  size_t from_ = 0;
};

class ChatPtyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kRun)) << kRun << " is not built";
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) / (std::string("cli_pty_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  int Tokens(const std::string& text) {
    vibrant::testing_util::CliResult r =
        vibrant::testing_util::RunBinary(kVibrantc, {"tokenize", kModel, text, "--json", "--no-bos"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return static_cast<int>(nlohmann::json::parse(r.out).size());
  }

  fs::path dir_;
};

TEST_F(ChatPtyTest, TwoTurnsTheSecondPrefillsOnlyItsNewTokensThenHistoryAndCtrlD) {
  Pty pty;
  ASSERT_TRUE(pty.Start({kRun, "-m", kModel, "-cnv", "--temp", "0", "-n", "8", "--chat-template", "chatml", "-sys",
                         "Tell a story."},
                        (dir_ / "cache").string()));
  ASSERT_TRUE(pty.WaitFor("/clear starts over", 60)) << pty.output();
  ASSERT_TRUE(pty.WaitFor("> ", 10)) << pty.output();
  pty.Type("Once upon a time\r");
  std::smatch m;
  ASSERT_TRUE(pty.WaitFor("\\[turn 1\\] prompt: ([0-9]+) tokens, [^|]*\\| generation: ([0-9]+) tokens[^\n]*stop: n_predict", 30, &m))
      << pty.output();
  const int p1 = std::stoi(m[1]), g1 = std::stoi(m[2]);
  EXPECT_EQ(g1, 8);
  ASSERT_TRUE(pty.WaitFor("> ", 10)) << pty.output();
  pty.Type("The end\r");
  ASSERT_TRUE(pty.WaitFor("\\[turn 2\\] prompt: ([0-9]+) new tokens \\(([0-9]+) reused\\)", 30, &m)) << pty.output();
  const int new2 = std::stoi(m[1]), reused2 = std::stoi(m[2]);
  // Turn 1 stayed in the KV cache, except its last sampled token, which is
  // computed now with the ChatML text that closes the reply and opens the next.
  EXPECT_EQ(reused2, p1 + g1 - 1);
  const int between = Tokens("<|im_end|>\n<|im_start|>user\nThe end<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(new2, 1 + between);

  // The up arrow recalls "The end" (libedit's history): the same new text again.
  ASSERT_TRUE(pty.WaitFor("> ", 10)) << pty.output();
  pty.Type("\x1b[A");
  ASSERT_TRUE(pty.WaitFor("The end", 10)) << pty.output();
  pty.Type("\r");
  ASSERT_TRUE(pty.WaitFor("\\[turn 3\\] prompt: ([0-9]+) new tokens \\(([0-9]+) reused\\)", 30, &m)) << pty.output();
  EXPECT_EQ(std::stoi(m[1]), 1 + between);

  // Ctrl-D at the prompt ends the chat.
  ASSERT_TRUE(pty.WaitFor("> ", 10)) << pty.output();
  ASSERT_TRUE(pty.WaitForRawMode(10)) << pty.output();
  pty.Type("\x04");
  EXPECT_EQ(pty.Wait(20), 0) << pty.output();
}

TEST_F(ChatPtyTest, CtrlCStopsAReplyWithoutQuittingAndQuitsAtThePrompt) {
  Pty pty;
  // A reply that would take thousands of tokens (no EOS, a long context).
  ASSERT_TRUE(pty.Start({kRun, "-m", kModel, "-cnv", "--temp", "0", "--ignore-eos", "-c", "8192", "--chat-template",
                         "chatml"},
                        (dir_ / "cache").string()));
  ASSERT_TRUE(pty.WaitFor("/clear starts over", 60)) << pty.output();
  ASSERT_TRUE(pty.WaitFor("> ", 10)) << pty.output();
  pty.Type("Once upon a time\r");
  ASSERT_TRUE(pty.WaitFor("Once upon a time\r?\n", 10)) << pty.output();
  ASSERT_TRUE(pty.WaitForBytes(40, 30)) << pty.output();  // the reply is streaming
  pty.Type("\x03");
  std::smatch m;
  ASSERT_TRUE(pty.WaitFor("\\[turn 1\\] [^\n]*generation: ([0-9]+) tokens[^\n]*stop: interrupted", 30, &m))
      << pty.output();
  EXPECT_LT(std::stoi(m[1]), 8000);
  // Still chatting.
  ASSERT_TRUE(pty.WaitFor("> ", 10)) << pty.output();
  pty.Type("/exit\r");
  EXPECT_EQ(pty.Wait(20), 0) << pty.output();

  // Ctrl-C at the prompt quits (130, as a shell reports SIGINT).
  Pty again;
  ASSERT_TRUE(again.Start({kRun, "-m", kModel, "-cnv", "--chat-template", "chatml"}, (dir_ / "cache").string()));
  ASSERT_TRUE(again.WaitFor("/clear starts over", 60)) << again.output();
  ASSERT_TRUE(again.WaitFor("> ", 10)) << again.output();
  again.Type("\x03");
  EXPECT_EQ(again.Wait(20), 130) << again.output();
}

}  // namespace
