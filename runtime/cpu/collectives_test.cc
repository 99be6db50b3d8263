#include "runtime/cpu/collectives.h"

#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant {
namespace {

// Runs fn(rank) on `n` threads at once.
template <typename Fn>
void OnRanks(int n, Fn fn) {
  std::vector<std::thread> t;
  for (int r = 0; r < n; ++r) t.emplace_back(fn, r);
  for (auto& th : t) th.join();
}

TEST(LocalCollectives, AllReduceSumsInRankOrderOnEveryRank) {
  constexpr int kRanks = 4;
  LocalCollectives c(kRanks);
  // Values whose float sum depends on the order: rank order is
  // ((1e8 + 1) + -1e8) + 1 = 1 (1e8 + 1 rounds to 1e8), any other grouping
  // of the last three may give 2 or 0.
  const float in[kRanks][2] = {{1e8f, 1}, {1, 2}, {-1e8f, 3}, {1, 4}};
  float out[kRanks][2] = {};
  std::vector<absl::Status> st(kRanks);
  // Many rounds: buffers reused at once by the next call must not race.
  for (int round = 0; round < 200; ++round) {
    OnRanks(kRanks, [&](int r) { st[r] = c.AllReduceSum(r, in[r], out[r], 2); });
    for (int r = 0; r < kRanks; ++r) {
      ASSERT_TRUE(st[r].ok()) << st[r];
      EXPECT_EQ(out[r][0], 1.0f);
      EXPECT_EQ(out[r][1], 10.0f);
    }
  }
}

TEST(LocalCollectives, AllGatherPutsEachRanksColumnsInRankOrder) {
  constexpr int kRanks = 3;
  LocalCollectives c(kRanks);
  // Rank r holds rows {r*10 + row*100 + j}: 2 rows of 2 columns.
  std::vector<std::vector<float>> in(kRanks), out(kRanks, std::vector<float>(2 * 2 * kRanks));
  for (int r = 0; r < kRanks; ++r) {
    for (int row = 0; row < 2; ++row) {
      for (int j = 0; j < 2; ++j) in[r].push_back(static_cast<float>(r * 10 + row * 100 + j));
    }
  }
  OnRanks(kRanks, [&](int r) { ASSERT_TRUE(c.AllGather(r, in[r].data(), 2, 2, out[r].data()).ok()); });
  const std::vector<float> want = {0, 1, 10, 11, 20, 21, 100, 101, 110, 111, 120, 121};
  for (int r = 0; r < kRanks; ++r) EXPECT_EQ(out[r], want);
}

TEST(LocalCollectives, AnAbortingRankReleasesTheOthers) {
  LocalCollectives c(3);
  float x = 1, y = 0;
  std::vector<absl::Status> st(3);
  OnRanks(3, [&](int r) {
    if (r == 2) {
      c.Abort(absl::InvalidArgumentError("rank 2: token 9999 is outside the vocabulary"));
      st[r] = absl::InvalidArgumentError("own");
    } else {
      st[r] = c.AllReduceSum(r, &x, &y, 1);
    }
  });
  EXPECT_THAT(st[0].message(), ::testing::HasSubstr("token 9999"));
  EXPECT_THAT(st[1].message(), ::testing::HasSubstr("token 9999"));
  // Reset: the next collective runs.
  c.Reset();
  float in[3] = {1, 2, 3}, out[3] = {};
  OnRanks(3, [&](int r) { st[r] = c.AllReduceSum(r, &in[r], &out[r], 1); });
  for (int r = 0; r < 3; ++r) {
    EXPECT_TRUE(st[r].ok());
    EXPECT_EQ(out[r], 6);
  }
}

TEST(LocalCollectives, MismatchedSizesAreAnErrorOnEveryRank) {
  LocalCollectives c(2);
  float in[2][4] = {}, out[2][4];
  std::vector<absl::Status> st(2);
  OnRanks(2, [&](int r) { st[r] = c.AllReduceSum(r, in[r], out[r], r == 0 ? 4 : 3); });
  EXPECT_FALSE(st[0].ok());
  EXPECT_FALSE(st[1].ok());
  EXPECT_THAT(st[0].message(), ::testing::HasSubstr("values"));
}

}  // namespace
}  // namespace vibrant
