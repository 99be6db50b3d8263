#include "api/gpu_fit.h"

#include <string>

#include "frontends/gguf/gguf.h"
#include "frontends/lower/lower.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant {
namespace {

using ::testing::HasSubstr;

TEST(GpuFitTest, WholeModelThenTheMostLastLayersThenNothing) {
  ModelBytes m;
  m.layers = {100, 100, 100, 100};
  m.rest = 50;
  std::string why;
  EXPECT_EQ(FitGpuLayers(m, 450 + 10, 10, &why), -1) << why;
  // Not the whole model: every layer without the head and embedding (a split
  // keeps them on the CPU), then fewer.
  EXPECT_EQ(FitGpuLayers(m, 449 + 10, 10, &why), 4) << why;
  EXPECT_EQ(FitGpuLayers(m, 409, 10, &why), 3) << why;
  EXPECT_THAT(why, HasSubstr("the last 3 of 4 layers fit"));
  EXPECT_THAT(why, HasSubstr("-ngl 3"));
  EXPECT_EQ(FitGpuLayers(m, 210, 10, &why), 2) << why;
  EXPECT_EQ(FitGpuLayers(m, 109, 10, &why), 0) << why;
  EXPECT_THAT(why, HasSubstr("not even one layer"));
  EXPECT_EQ(FitGpuLayers(m, 0, 10, &why), 0);
}

// stories260K: 5 layers of equal size, the embedding (tied: also the head)
// counted once as the rest; each layer's two KV caches in its layer.
TEST(GpuFitTest, CountsALoweredModelByLayer) {
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  LowerOptions lo;
  lo.n_ctx = 64;
  absl::StatusOr<ir::Graph> g = LowerGguf(**f, lo);
  ASSERT_TRUE(g.ok()) << g.status();
  const ModelBytes m = CountModelBytes(*g);
  ASSERT_EQ(m.layers.size(), 5u);
  for (int64_t b : m.layers) EXPECT_EQ(b, m.layers[0]);
  EXPECT_GT(m.rest, 0);
  int64_t weights = 0, kv = 0;
  std::map<std::string, int64_t> by_source;
  for (const ir::Value& v : g->values()) {
    const int64_t n = *DTypeBytes(v.dtype, ir::NumElements(v.shape, 1));
    if (v.storage == ir::Storage::kWeight) by_source[v.source] = n;
    if (v.storage == ir::Storage::kKvCache && v.alias_of < 0 && v.producer < 0) kv += n;
  }
  for (const auto& [s, n] : by_source) weights += n;
  EXPECT_EQ(m.total(), weights + kv);
}

}  // namespace
}  // namespace vibrant
