#include "api/plan_cache.h"

#include <cstdlib>
#include <regex>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant {
namespace {

PlanCacheKey Base() {
  PlanCacheKey k;
  k.gguf_path = "/models/Qwen2.5-3B-Instruct-Q4_K_M.gguf";
  k.gguf_size = 1929903264;
  k.gguf_fingerprint = 0x1234567890abcdefull;
  k.device = "cpu";
  k.n_ctx = 4096;
  k.max_tokens = 512;
  k.kv_type = "f16";
  return k;
}

TEST(PlanCacheTest, EveryPartOfTheKeyChangesTheEntry) {
  const uint64_t base = PlanCacheHash(Base());
  EXPECT_EQ(PlanCacheHash(Base()), base);
  std::vector<PlanCacheKey> variants(12, Base());
  variants[0].gguf_path += "x";
  variants[1].gguf_size += 1;
  variants[2].gguf_fingerprint ^= 1;
  variants[3].device = "cuda";
  variants[4].arch = "sm_90";
  variants[5].n_ctx = 2048;
  variants[6].max_tokens = 1;
  variants[7].kv_type = "f32";
  variants[8].gguf_path = "/models/Qwen2.5-3B-Instruct-Q4_K_M.gguf4096";  // no ambiguity across fields
  variants[8].n_ctx = 0;
  variants[9].tp = 2;
  variants[10].gpu_layers = 0;  // -ngl splits: each its own plan
  variants[11].gpu_layers = 3;
  EXPECT_NE(PlanCacheHash(variants[10]), PlanCacheHash(variants[11]));
  for (size_t i = 0; i < variants.size(); ++i) EXPECT_NE(PlanCacheHash(variants[i]), base) << i;
}

TEST(PlanCacheTest, FileNamesAreReadableAndPortable) {
  PlanCacheKey k = Base();
  EXPECT_TRUE(std::regex_match(PlanCacheFileName(k),
                               std::regex("Qwen2\\.5-3B-Instruct-Q4_K_M-cpu-[0-9a-f]{16}\\.plan")))
      << PlanCacheFileName(k);
  k.gguf_path = "/m/we ird$name.gguf";
  k.device = "cuda";
  EXPECT_TRUE(std::regex_match(PlanCacheFileName(k), std::regex("we_ird_name-cuda-[0-9a-f]{16}\\.plan")))
      << PlanCacheFileName(k);
}

TEST(PlanCacheTest, DefaultDirectoryFollowsTheEnvironment) {
  ::setenv("VIBRANT_PLAN_CACHE", "/tmp/vpc", 1);
  EXPECT_EQ(*DefaultPlanCacheDir(), "/tmp/vpc");
  ::unsetenv("VIBRANT_PLAN_CACHE");
  ::setenv("XDG_CACHE_HOME", "/tmp/xdg", 1);
  EXPECT_EQ(*DefaultPlanCacheDir(), "/tmp/xdg/vibrant/plans");
  ::unsetenv("XDG_CACHE_HOME");
  ::setenv("HOME", "/tmp/home", 1);
  EXPECT_EQ(*DefaultPlanCacheDir(), "/tmp/home/.cache/vibrant/plans");
  ::unsetenv("HOME");
  absl::StatusOr<std::string> none = DefaultPlanCacheDir();
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(std::string(none.status().message()), ::testing::HasSubstr("--plan-cache"));
}

}  // namespace
}  // namespace vibrant
