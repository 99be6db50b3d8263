#include "frontends/gguf/gguf_writer.h"

#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "frontends/gguf/gguf.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant {
namespace {

using ::testing::HasSubstr;

std::vector<uint8_t> FloatBytes(std::vector<float> v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

absl::StatusOr<std::unique_ptr<GgufFile>> Reread(const std::string& bytes) {
  return GgufFile::FromBuffer(
      "w.gguf", absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()),
                                          bytes.size()));
}

std::string ErrorOf(const GgufWriter& w) {
  absl::StatusOr<std::string> s = w.Serialize();
  return s.ok() ? "(serialized fine)" : std::string(s.status().message());
}

TEST(GgufWriter, ExactBytesOfATinyFile) {
  GgufWriter w;
  w.AddUint32("n", 7);
  w.AddTensor("t", {2}, DType::kF32, FloatBytes({1.0f, 2.0f}));
  absl::StatusOr<std::string> s = w.Serialize();
  ASSERT_TRUE(s.ok()) << s.status();
  // Written out by hand from the GGUF specification.
  std::string want;
  want += std::string("GGUF\x03\0\0\0", 8);                     // magic, version 3
  want += std::string("\x01\0\0\0\0\0\0\0", 8);                 // 1 tensor
  want += std::string("\x01\0\0\0\0\0\0\0", 8);                 // 1 key-value pair
  want += std::string("\x01\0\0\0\0\0\0\0n", 9);                // key "n"
  want += std::string("\x04\0\0\0\x07\0\0\0", 8);               // uint32 7
  want += std::string("\x01\0\0\0\0\0\0\0t", 9);                // name "t"
  want += std::string("\x01\0\0\0", 4);                         // 1 dim
  want += std::string("\x02\0\0\0\0\0\0\0", 8);                 // dims[0] = 2
  want += std::string("\0\0\0\0", 4);                           // f32
  want += std::string("\0\0\0\0\0\0\0\0", 8);                   // offset 0
  ASSERT_EQ(want.size(), 74u);
  want += std::string(96 - 74, '\0');                           // pad to 32
  want += std::string("\0\0\x80\x3f\0\0\0\x40", 8);             // 1.0f, 2.0f
  want += std::string(128 - 104, '\0');                         // pad to 32
  EXPECT_EQ(*s, want);
  EXPECT_EQ(*w.FileSize(), 128u);
}

TEST(GgufWriter, RoundTripsEveryValueType) {
  GgufWriter w;
  w.AddUint8("u8", 255);
  w.AddInt8("i8", -128);
  w.AddUint16("u16", 65535);
  w.AddInt16("i16", -32768);
  w.AddUint32("u32", 4294967295u);
  w.AddInt32("i32", std::numeric_limits<int32_t>::min());
  w.AddUint64("u64", std::numeric_limits<uint64_t>::max());
  w.AddInt64("i64", std::numeric_limits<int64_t>::min());
  w.AddFloat32("f32", 1e-5f);
  w.AddFloat64("f64", 3.141592653589793);
  w.AddBool("t", true);
  w.AddBool("f", false);
  w.AddString("s", "h\xc3\xa9llo\nworld");
  w.AddString("empty", "");
  std::vector<std::string> strs = {"<unk>", "", "\xe2\x96\x81the", std::string("a\0b", 3)};
  w.AddStringArray("strs", strs);
  std::vector<float> floats = {0.0f, -1.5f, 1e30f};
  w.AddFloat32Array("floats", floats);
  std::vector<int32_t> ints = {1, -2, 3};
  w.AddInt32Array("ints", ints);
  std::vector<uint32_t> uints = {7};
  w.AddUint32Array("uints", uints);
  w.AddInt32Array("no_ints", {});
  // [[["x"]], [], [[], ["y", "z"]]]: arrays of arrays of arrays of strings.
  auto str_arr = [](std::vector<std::string> v) {
    GgufArray a{GgufType::kString, {}};
    for (auto& s : v) a.elems.push_back(GgufValue::String(s));
    return GgufValue::Array(a);
  };
  auto arr_arr = [](std::vector<GgufValue> v) {
    return GgufValue::Array(GgufArray{GgufType::kArray, std::move(v)});
  };
  GgufValue nested = arr_arr({arr_arr({str_arr({"x"})}), arr_arr({}),
                              arr_arr({str_arr({}), str_arr({"y", "z"})})});
  w.AddMetadata("nested", nested);
  w.AddArray("bools", GgufArray{GgufType::kBool, {GgufValue::Bool(true), GgufValue::Bool(false)}});

  absl::StatusOr<std::string> bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto f = Reread(*bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  ASSERT_EQ(g.metadata().size(), w.metadata_count());
  EXPECT_EQ(g.metadata()[0].first, "u8");  // file order is insertion order
  EXPECT_EQ(g.Find("u8")->type(), GgufType::kUint8);
  EXPECT_EQ(*g.GetInt("u8"), 255);
  EXPECT_EQ(g.Find("i8")->type(), GgufType::kInt8);
  EXPECT_EQ(*g.GetInt("i8"), -128);
  EXPECT_EQ(g.Find("u16")->type(), GgufType::kUint16);
  EXPECT_EQ(*g.GetInt("u16"), 65535);
  EXPECT_EQ(g.Find("i16")->type(), GgufType::kInt16);
  EXPECT_EQ(*g.GetInt("i16"), -32768);
  EXPECT_EQ(g.Find("u32")->type(), GgufType::kUint32);
  EXPECT_EQ(*g.GetInt("u32"), 4294967295);
  EXPECT_EQ(g.Find("i32")->type(), GgufType::kInt32);
  EXPECT_EQ(*g.GetInt("i32"), std::numeric_limits<int32_t>::min());
  EXPECT_EQ(g.Find("u64")->type(), GgufType::kUint64);
  EXPECT_EQ(*g.Find("u64")->AsUint(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(g.Find("i64")->type(), GgufType::kInt64);
  EXPECT_EQ(*g.GetInt("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(g.Find("f32")->type(), GgufType::kFloat32);
  EXPECT_EQ(static_cast<float>(*g.GetFloat("f32")), 1e-5f);
  EXPECT_EQ(g.Find("f64")->type(), GgufType::kFloat64);
  EXPECT_EQ(*g.GetFloat("f64"), 3.141592653589793);
  EXPECT_EQ(*g.GetBool("t"), true);
  EXPECT_EQ(*g.GetBool("f"), false);
  EXPECT_EQ(*g.GetString("s"), "h\xc3\xa9llo\nworld");
  EXPECT_EQ(*g.GetString("empty"), "");

  const GgufArray* s = *g.GetArray("strs");
  ASSERT_EQ(s->elem_type, GgufType::kString);
  ASSERT_EQ(s->elems.size(), strs.size());
  for (size_t i = 0; i < strs.size(); ++i) EXPECT_EQ(*s->elems[i].AsString(), strs[i]);
  const GgufArray* fl = *g.GetArray("floats");
  ASSERT_EQ(fl->elem_type, GgufType::kFloat32);
  ASSERT_EQ(fl->elems.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(static_cast<float>(*fl->elems[i].AsFloat()), floats[i]);
  const GgufArray* in = *g.GetArray("ints");
  ASSERT_EQ(in->elem_type, GgufType::kInt32);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(*in->elems[i].AsInt(), ints[i]);
  EXPECT_EQ((*g.GetArray("uints"))->elem_type, GgufType::kUint32);
  EXPECT_EQ(*(*g.GetArray("uints"))->elems[0].AsInt(), 7);
  EXPECT_EQ((*g.GetArray("no_ints"))->elem_type, GgufType::kInt32);
  EXPECT_TRUE((*g.GetArray("no_ints"))->elems.empty());
  EXPECT_EQ(g.Find("nested")->ToString(), "[[[\"x\"]], [], [[], [\"y\", \"z\"]]]");
  const GgufArray* n = *g.GetArray("nested");
  const GgufArray* n2 = *n->elems[2].AsArray();
  EXPECT_EQ(n2->elem_type, GgufType::kArray);
  EXPECT_EQ((*n2->elems[1].AsArray())->elem_type, GgufType::kString);
  EXPECT_EQ(g.Find("bools")->ToString(), "[true, false]");
}

TEST(GgufWriter, TensorsOfSeveralTypesRoundTrip) {
  GgufWriter w;
  w.AddString("general.architecture", "test");
  std::vector<uint8_t> f32 = FloatBytes({1, 2, 3, 4, 5, 6});
  std::vector<uint8_t> q4(2 * 18);  // q4_0 [64]: two 18-byte blocks
  for (size_t i = 0; i < q4.size(); ++i) q4[i] = static_cast<uint8_t>(i * 7);
  std::vector<uint8_t> q6(210 * 2);  // q6_K [256, 2]: two 210-byte blocks
  for (size_t i = 0; i < q6.size(); ++i) q6[i] = static_cast<uint8_t>(i);
  w.AddTensor("a", {3, 2}, DType::kF32, f32);
  w.AddTensor("b", {64}, DType::kQ4_0, q4);
  w.AddTensor("c", {256, 2}, DType::kQ6_K, q6);
  int calls = 0;
  w.AddTensor("d", {4, 1, 1, 2}, DType::kI8, [&](absl::Span<uint8_t> out) {
    ++calls;
    EXPECT_EQ(out.size(), 8u);
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(100 + i);
    return absl::OkStatus();
  });
  absl::StatusOr<std::string> bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(calls, 1);
  auto f = Reread(*bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  ASSERT_EQ(g.tensors().size(), 4u);
  // Data offsets: a at 0 (24 bytes), b at 32 (36 bytes), c at 96 (420), d at 544.
  EXPECT_EQ(g.tensors()[0].offset, 0u);
  EXPECT_EQ(g.tensors()[1].offset, 32u);
  EXPECT_EQ(g.tensors()[2].offset, 96u);
  EXPECT_EQ(g.tensors()[3].offset, 544u);
  EXPECT_EQ(g.file_size(), g.data_offset() + 576);
  auto same = [](absl::Span<const uint8_t> a, const std::vector<uint8_t>& b) {
    return std::vector<uint8_t>(a.begin(), a.end()) == b;
  };
  EXPECT_TRUE(same(g.TensorData(g.tensors()[0]), f32));
  EXPECT_TRUE(same(g.TensorData(g.tensors()[1]), q4));
  EXPECT_TRUE(same(g.TensorData(g.tensors()[2]), q6));
  EXPECT_TRUE(same(g.TensorData(g.tensors()[3]), {100, 101, 102, 103, 104, 105, 106, 107}));
  EXPECT_EQ(g.tensors()[2].type, DType::kQ6_K);
  EXPECT_EQ(g.tensors()[2].dims, (std::vector<int64_t>{256, 2}));
  EXPECT_EQ(g.tensors()[3].dims, (std::vector<int64_t>{4, 1, 1, 2}));
}

TEST(GgufWriter, Alignment) {
  for (uint32_t a : {1u, 8u, 32u, 64u, 4096u}) {
    GgufWriter w;
    w.SetAlignment(a);
    w.AddString("general.architecture", "test");
    w.AddTensor("x", {3}, DType::kF32, FloatBytes({1, 2, 3}));
    w.AddTensor("y", {1}, DType::kF32, FloatBytes({4}));
    absl::StatusOr<std::string> bytes = w.Serialize();
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    auto f = Reread(*bytes);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ((*f)->alignment(), a);
    EXPECT_EQ((*f)->data_offset() % a, 0u);
    EXPECT_EQ((*f)->tensors()[1].offset, (12 + a - 1) / a * a);
    // general.alignment is recorded only when it is not the default.
    EXPECT_EQ((*f)->Find("general.alignment") != nullptr, a != 32) << a;
    if (a != 32) {
      EXPECT_EQ(*(*f)->GetInt("general.alignment"), a);
    }
  }
}

TEST(GgufWriter, AlignmentGivenAsMetadata) {
  GgufWriter w;
  w.AddUint32("general.alignment", 16);
  EXPECT_EQ(w.alignment(), 16u);
  w.AddTensor("x", {3}, DType::kF32, FloatBytes({1, 2, 3}));
  w.AddTensor("y", {1}, DType::kF32, FloatBytes({4}));
  auto f = Reread(*w.Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->alignment(), 16u);
  EXPECT_EQ((*f)->metadata().size(), 1u);
  EXPECT_EQ((*f)->tensors()[1].offset, 16u);
}

TEST(GgufWriter, RejectsBadInput) {
  {
    GgufWriter w;
    w.SetAlignment(0);
    EXPECT_EQ(ErrorOf(w), "GgufWriter: alignment: 0 is not a non-zero power of two");
  }
  {
    // Issue #16: the fuzzer's 2^30 alignment made Serialize allocate 1 GiB of
    // padding; now it is an error before anything is allocated.
    GgufWriter w;
    w.SetAlignment(1u << 30);
    w.AddTensor("x", {3}, DType::kF32, FloatBytes({1, 2, 3}));
    EXPECT_EQ(ErrorOf(w), "GgufWriter: alignment: 1073741824 exceeds the maximum of 65536");
    EXPECT_FALSE(w.FileSize().ok());
    GgufWriter ok;
    ok.SetAlignment(65536);
    ok.AddTensor("x", {3}, DType::kF32, FloatBytes({1, 2, 3}));
    EXPECT_TRUE(ok.Serialize().ok());
    w.SetAlignment(3);
    EXPECT_EQ(ErrorOf(w), "GgufWriter: alignment: 3 is not a non-zero power of two");
  }
  {
    GgufWriter w;
    w.AddString("general.alignment", "32");
    EXPECT_THAT(ErrorOf(w), HasSubstr("general.alignment"));
  }
  {
    GgufWriter w;
    w.AddUint32("k", 1);
    w.AddString("k", "again");
    EXPECT_EQ(ErrorOf(w), "GgufWriter: metadata 'k': duplicate key");
  }
  {
    GgufWriter w;
    w.AddMetadata("k", GgufValue::Uint(GgufType::kUint8, 300));
    EXPECT_EQ(ErrorOf(w), "GgufWriter: metadata 'k': value 300 does not fit uint8");
  }
  {
    GgufWriter w;
    w.AddMetadata("k", GgufValue::Int(GgufType::kInt16, -40000));
    EXPECT_EQ(ErrorOf(w), "GgufWriter: metadata 'k': value -40000 does not fit int16");
  }
  {
    GgufWriter w;
    w.AddMetadata("k", GgufValue::Int(GgufType::kUint32, -1));
    EXPECT_THAT(ErrorOf(w), HasSubstr("negative"));
  }
  {
    GgufWriter w;
    w.AddArray("k", GgufArray{GgufType::kInt32, {GgufValue::String("x")}});
    EXPECT_EQ(ErrorOf(w), "GgufWriter: metadata 'k': element of type string in an array of int32");
  }
  {
    // Nine levels of arrays: one more than readers accept.
    GgufValue v = GgufValue::Array(GgufArray{GgufType::kUint8, {}});
    for (int i = 1; i < 9; ++i) v = GgufValue::Array(GgufArray{GgufType::kArray, {v}});
    GgufWriter w;
    w.AddMetadata("k", v);
    EXPECT_EQ(ErrorOf(w), "GgufWriter: metadata 'k': arrays nested more than 8 deep");
  }
  {
    GgufWriter w;
    w.AddTensor("t", {2}, DType::kF32, FloatBytes({1, 2}));
    w.AddTensor("t", {2}, DType::kF32, FloatBytes({1, 2}));
    EXPECT_EQ(ErrorOf(w), "GgufWriter: tensor 't': duplicate tensor name");
  }
  {
    GgufWriter w;
    w.AddTensor("t", {3}, DType::kF32, FloatBytes({1, 2}));
    EXPECT_EQ(ErrorOf(w), "GgufWriter: tensor 't': has 8 bytes of data but 3 f32 needs 12");
  }
  {
    GgufWriter w;
    w.AddTensor("t", {2, 0}, DType::kF32, std::vector<uint8_t>{});
    EXPECT_EQ(ErrorOf(w), "GgufWriter: tensor 't': dimension 0 in [2, 0] is not positive");
  }
  {
    GgufWriter w;
    w.AddTensor("t", {1, 1, 1, 1, 1}, DType::kF32, FloatBytes({1}));
    EXPECT_EQ(ErrorOf(w), "GgufWriter: tensor 't': 5 dimensions; a tensor has 1 to 4");
  }
  {
    GgufWriter w;
    w.AddTensor("t", {}, DType::kF32, FloatBytes({1}));
    EXPECT_EQ(ErrorOf(w), "GgufWriter: tensor 't': 0 dimensions; a tensor has 1 to 4");
  }
  {
    GgufWriter w;
    w.AddTensor("t", {16}, DType::kQ4_0, std::vector<uint8_t>(9));
    EXPECT_EQ(ErrorOf(w),
              "GgufWriter: tensor 't': row length 16 is not a multiple of q4_0's block size 32");
  }
  {
    GgufWriter w;
    w.AddTensor("t", {int64_t{1} << 40, int64_t{1} << 40}, DType::kF32, GgufWriter::FillFn());
    EXPECT_THAT(ErrorOf(w), HasSubstr("overflows"));
  }
  {
    GgufWriter w;
    w.AddTensor("t", {2}, DType::kF32, [](absl::Span<uint8_t>) {
      return absl::DataLossError("source went away");
    });
    absl::StatusOr<std::string> s = w.Serialize();
    EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(s.status().message(),
              "GgufWriter: tensor 't': filling its data: source went away");
  }
}

class GgufWriterFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("gguf_writer_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::vector<std::string> Entries() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) {
      out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  std::filesystem::path dir_;
};

TEST_F(GgufWriterFile, WritesAFileThatOpens) {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  std::vector<uint8_t> big(1 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 31);
  w.AddTensor("big", {1 << 20}, DType::kI8, big);
  std::string path = (dir_ / "m.gguf").string();
  ASSERT_TRUE(w.WriteFile(path).ok());
  EXPECT_EQ(Entries(), std::vector<std::string>{"m.gguf"});  // no temporary left behind
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*(*f)->Architecture(), "llama");
  absl::Span<const uint8_t> d = (*f)->TensorData((*f)->tensors()[0]);
  EXPECT_TRUE(std::equal(d.begin(), d.end(), big.begin(), big.end()));
  EXPECT_EQ((*f)->file_size(), *w.FileSize());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  // Serialize and WriteFile produce the same bytes.
  std::ifstream in(path, std::ios::binary);
  std::string on_disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(on_disk, *w.Serialize());
}

TEST_F(GgufWriterFile, FailureLeavesTheOldFileAlone) {
  std::string path = (dir_ / "m.gguf").string();
  {
    std::ofstream out(path);
    out << "previous contents";
  }
  GgufWriter w;
  w.AddTensor("t", {4}, DType::kF32, [](absl::Span<uint8_t>) {
    return absl::InternalError("boom");
  });
  absl::Status s = w.WriteFile(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(s.message()), HasSubstr("boom"));
  EXPECT_EQ(Entries(), std::vector<std::string>{"m.gguf"});
  std::ifstream in(path);
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, "previous contents");

  // An invalid writer does not touch the file system at all.
  GgufWriter bad;
  bad.SetAlignment(3);
  EXPECT_FALSE(bad.WriteFile(path).ok());
  EXPECT_EQ(Entries(), std::vector<std::string>{"m.gguf"});
}

TEST_F(GgufWriterFile, MissingDirectoryIsAnError) {
  GgufWriter w;
  std::string path = (dir_ / "no" / "such" / "m.gguf").string();
  absl::Status s = w.WriteFile(path);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr(path));
}

}  // namespace
}  // namespace vibrant
