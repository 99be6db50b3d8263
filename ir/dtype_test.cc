#include "ir/dtype.h"

#include "gtest/gtest.h"

namespace vibrant {
namespace {

TEST(DType, BlockTableMatchesGgml) {
  EXPECT_EQ(GetDTypeInfo(DType::kQ4_K).block_bytes, 144);
  EXPECT_EQ(GetDTypeInfo(DType::kQ6_K).block_bytes, 210);
  EXPECT_EQ(GetDTypeInfo(DType::kQ2_K).block_bytes, 84);
  EXPECT_EQ(GetDTypeInfo(DType::kQ3_K).block_bytes, 110);
  EXPECT_EQ(GetDTypeInfo(DType::kQ5_K).block_bytes, 176);
  EXPECT_EQ(GetDTypeInfo(DType::kQ8_K).block_bytes, 292);
  EXPECT_EQ(GetDTypeInfo(DType::kQ8_0).block_bytes, 34);
  EXPECT_EQ(GetDTypeInfo(DType::kQ5_1).block_bytes, 24);
  EXPECT_EQ(GetDTypeInfo(DType::kBF16).block_bytes, 2);
}

TEST(DType, UnsupportedIdIsNamed) {
  auto t = DTypeFromGgmlId(16);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("iq2_xxs (16)"), std::string::npos)
      << t.status();
  auto u = DTypeFromGgmlId(1000);
  ASSERT_FALSE(u.ok());
  EXPECT_NE(u.status().message().find("unknown (1000)"), std::string::npos);
}

TEST(DType, BytesChecksBlocksAndOverflow) {
  EXPECT_EQ(*DTypeBytes(DType::kQ4_K, 512), 288);
  EXPECT_FALSE(DTypeBytes(DType::kQ4_K, 100).ok());
  EXPECT_FALSE(DTypeBytes(DType::kF32, int64_t{1} << 62).ok());
  EXPECT_EQ(*DTypeFromName("Q4_K"), DType::kQ4_K);
}

}  // namespace
}  // namespace vibrant
