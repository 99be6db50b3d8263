// Helpers shared by the end-to-end CLI tests: run a built binary with
// arguments, capture its exit code, stdout and stderr.
#ifndef VIBRANT_TESTS_CLI_UTIL_H_
#define VIBRANT_TESTS_CLI_UTIL_H_

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vibrant::testing_util {

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A temp directory of this process: CTest may run tests in parallel, each in
// its own process, so nothing here is shared between them.
inline std::string ProcessTempDir() {
  const std::string dir = ::testing::TempDir() + "/vibrant_cli_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  return dir;
}

// Runs `binary args...` with stdin from /dev/null.
inline CliResult RunBinary(const std::string& binary, const std::vector<std::string>& args) {
  static std::atomic<int> counter{0};
  const std::string base = ProcessTempDir() + "/run" + std::to_string(counter++);
  const std::string out = base + ".out", err = base + ".err";
  std::string cmd = ShellQuote(binary);
  for (const std::string& a : args) cmd += " " + ShellQuote(a);
  cmd += " >" + ShellQuote(out) + " 2>" + ShellQuote(err) + " </dev/null";
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = ReadFile(out);
  r.err = ReadFile(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

}  // namespace vibrant::testing_util

#endif  // VIBRANT_TESTS_CLI_UTIL_H_
