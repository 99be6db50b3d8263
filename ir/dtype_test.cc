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

TEST(DType, IQ4TypesAreSupported) {
  // ggml-common.h: block_iq4_nl {f16 d; u8 qs[16]}, block_iq4_xs {f16 d;
  // u16 scales_h; u8 scales_l[4]; u8 qs[128]}.
  EXPECT_EQ(*DTypeFromGgmlId(20), DType::kIQ4_NL);
  EXPECT_EQ(*DTypeFromGgmlId(23), DType::kIQ4_XS);
  EXPECT_EQ(GetDTypeInfo(DType::kIQ4_NL).block_size, 32);
  EXPECT_EQ(GetDTypeInfo(DType::kIQ4_NL).block_bytes, 18);
  EXPECT_EQ(GetDTypeInfo(DType::kIQ4_XS).block_size, 256);
  EXPECT_EQ(GetDTypeInfo(DType::kIQ4_XS).block_bytes, 136);
  EXPECT_TRUE(IsSupported(DType::kIQ4_NL));
  EXPECT_TRUE(IsSupported(DType::kIQ4_XS));
  EXPECT_TRUE(CheckSupported(DType::kIQ4_XS).ok());
  EXPECT_EQ(*DTypeFromName("IQ4_XS"), DType::kIQ4_XS);
}

// Types a GGUF file may hold but Vibrant does not compute with: readable
// (their block layout sizes the tensor), refused by CheckSupported by name.
TEST(DType, UnsupportedLayoutsAreKnownAndNamed) {
  struct Layout { uint32_t id; const char* name; int64_t block, bytes; };
  // Sizes from ggml-common.h's static_asserts (QK_K = 256).
  const Layout layouts[] = {{9, "q8_1", 32, 36},       {16, "iq2_xxs", 256, 66},
                            {17, "iq2_xs", 256, 74},   {18, "iq3_xxs", 256, 98},
                            {19, "iq1_s", 256, 50},    {21, "iq3_s", 256, 110},
                            {22, "iq2_s", 256, 82},    {27, "i64", 1, 8},
                            {28, "f64", 1, 8},         {29, "iq1_m", 256, 56},
                            {34, "tq1_0", 256, 54},    {35, "tq2_0", 256, 66},
                            {39, "mxfp4", 32, 17}};
  for (const Layout& l : layouts) {
    auto t = DTypeFromGgmlId(l.id);
    ASSERT_TRUE(t.ok()) << l.name << ": " << t.status();
    EXPECT_EQ(DTypeName(*t), l.name);
    EXPECT_EQ(GetDTypeInfo(*t).block_size, l.block) << l.name;
    EXPECT_EQ(GetDTypeInfo(*t).block_bytes, l.bytes) << l.name;
    EXPECT_FALSE(IsSupported(*t)) << l.name;
    absl::Status s = CheckSupported(*t);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
    EXPECT_NE(s.message().find(std::string(l.name) + " (" + std::to_string(l.id) + ")"),
              std::string::npos)
        << s;
    EXPECT_NE(s.message().find("iq4_xs"), std::string::npos) << "lists the supported types: " << s;
  }
}

TEST(DType, UnsupportedIdIsNamed) {
  // Removed from ggml (the repacked Q4_0_4_4 family): no block layout.
  auto t = DTypeFromGgmlId(31);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("q4_0_4_4 (31)"), std::string::npos)
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
