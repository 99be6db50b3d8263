// The installed package, as a downstream project uses it: `cmake --install`
// into a temporary prefix installs only the public header, libvibrant.so and
// the CMake package; examples/ (a C program) is configured against that
// prefix with find_package(Vibrant), built, and run on stories260K, where its
// greedy text must be llama.cpp's.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli_util.h"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using vibrant::testing_util::CliResult;
using vibrant::testing_util::RunBinary;

TEST(InstallTest, TheInstalledPackageBuildsAndRunsTheExample) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("install_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const fs::path prefix = dir / "prefix";
  CliResult r = RunBinary(VIBRANT_CMAKE_COMMAND, {"--install", VIBRANT_BINARY_DIR, "--prefix", prefix.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  // Only the public API: one header, the shared library, the package, the CLIs.
  EXPECT_TRUE(fs::exists(prefix / "include/vibrant/vibrant.h"));
  int headers = 0, archives = 0, shared = 0, configs = 0;
  for (const auto& e : fs::recursive_directory_iterator(prefix)) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() == ".h") ++headers;
    if (e.path().extension() == ".a") ++archives;
    if (name.rfind("libvibrant.so", 0) == 0) ++shared;
    if (name == "VibrantConfig.cmake") ++configs;
  }
  EXPECT_EQ(headers, 1);
  EXPECT_EQ(archives, 0);
  EXPECT_GE(shared, 1);
  EXPECT_EQ(configs, 1);
  for (const char* tool : {"vibrant-run", "vibrantc", "vibrant-bench"}) EXPECT_TRUE(fs::exists(prefix / "bin" / tool));

  // A downstream project: configure, build.
  const fs::path build = dir / "example-build";
  r = RunBinary(VIBRANT_CMAKE_COMMAND,
                {"-S", VIBRANT_SOURCE_DIR "/examples", "-B", build.string(), "-G", VIBRANT_CMAKE_GENERATOR,
                 "-DCMAKE_PREFIX_PATH=" + prefix.string(), std::string("-DCMAKE_C_FLAGS=") + VIBRANT_C_FLAGS,
                 std::string("-DCMAKE_EXE_LINKER_FLAGS=") + VIBRANT_EXE_LINKER_FLAGS});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = RunBinary(VIBRANT_CMAKE_COMMAND, {"--build", build.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  // Run it: llama.cpp's greedy continuation of "Once upon a time".
  std::ifstream in(VIBRANT_SOURCE_DIR "/tests/data/stories260K.reference.json");
  const nlohmann::json ref = nlohmann::json::parse(in);
  std::string want;
  for (const auto& c : ref["cases"]) {
    if (c["prompt"] == "Once upon a time") want = c["generated_text"].get<std::string>();
  }
  ASSERT_FALSE(want.empty());
  ::setenv("VIBRANT_PLAN_CACHE", (dir / "plans").c_str(), 1);
  const std::string example = (build / "vibrant-example").string();
  const std::string model = VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf";
  r = RunBinary(example, {model, "Once upon a time", "32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, want);
  EXPECT_THAT(r.err, HasSubstr("5 prompt tokens (0 reused), 32 generated, stop: n_predict"));
  // A two-turn chat (stories260K has no template: chatml); the second turn reuses the cache.
  r = RunBinary(example, {model, "Once upon a time", "8", "--chat"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, ::testing::ContainsRegex("prompt tokens \\([1-9][0-9]* reused\\), 8 generated"));
  fs::remove_all(dir);
}

}  // namespace
