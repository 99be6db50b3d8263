// GGUF reader tests. Bad inputs are built byte by byte here, and every error
// is checked for the field it names and the byte offset, computed by hand from
// the layout written next to each test.
#include "frontends/gguf/gguf.h"

#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vibrant {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Little-endian byte builder for hand-made GGUF files.
class Bytes {
 public:
  template <typename T>
  Bytes& Put(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    data_.insert(data_.end(), b, b + sizeof(T));
    return *this;
  }
  Bytes& U8(uint8_t v) { return Put(v); }
  Bytes& U32(uint32_t v) { return Put(v); }
  Bytes& U64(uint64_t v) { return Put(v); }
  Bytes& Raw(std::string_view s) {
    data_.insert(data_.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& Str(std::string_view s) { return U64(s.size()).Raw(s); }
  Bytes& Zeros(size_t n) {
    data_.resize(data_.size() + n, 0);
    return *this;
  }
  Bytes& PadTo(size_t alignment) {
    while (data_.size() % alignment != 0) data_.push_back(0);
    return *this;
  }
  // "GGUF", version, tensor count, KV count: 24 bytes.
  Bytes& Header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    return Raw("GGUF").U32(version).U64(n_tensors).U64(n_kv);
  }
  // name, n_dims, dims, type, offset.
  Bytes& Info(std::string_view name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) U64(d);
    return U32(type).U64(offset);
  }
  size_t size() const { return data_.size(); }
  Bytes Prefix(size_t n) const {
    Bytes b;
    b.data_.assign(data_.begin(), data_.begin() + n);
    return b;
  }
  absl::Span<const uint8_t> span() const { return data_; }

 private:
  std::vector<uint8_t> data_;
};

absl::StatusOr<std::unique_ptr<GgufFile>> Parse(const Bytes& b) {
  return GgufFile::FromBuffer("m.gguf", b.span());
}

std::string ErrorOf(const Bytes& b) {
  absl::StatusOr<std::unique_ptr<GgufFile>> f = Parse(b);
  if (f.ok()) return "(parsed fine)";
  return std::string(f.status().message());
}

// ---- valid files ----

TEST(GgufReader, HeaderOnlyFile) {
  Bytes b;
  b.Header(3, 0, 0);
  auto f = Parse(b);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 3u);
  EXPECT_EQ((*f)->alignment(), 32u);
  EXPECT_EQ((*f)->data_offset(), 32u);  // 24 rounded up to 32
  EXPECT_TRUE((*f)->metadata().empty());
  EXPECT_TRUE((*f)->tensors().empty());
}

TEST(GgufReader, Version2IsAccepted) {
  Bytes b;
  b.Header(2, 0, 1).Str("k").U32(4).U32(7);
  auto f = Parse(b);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 2u);
  EXPECT_EQ(*(*f)->GetInt("k"), 7);
}

TEST(GgufReader, TensorsAndDataAreMappedInPlace) {
  // Header 0..23; info "a" at 24 (f32 [4, 2], offset 0) ends at 65;
  // info "b" at 65 (q8_0 [32], offset 32) ends at 98; data starts at 128:
  // "a" at 128..159, "b" (one 34-byte block) at 160..193.
  Bytes c;
  c.Header(3, 2, 0).Info("a", {4, 2}, 0, 0).Info("b", {32}, 8, 32).PadTo(32);
  for (int i = 0; i < 8; ++i) c.Put<float>(0.5f * i);
  c.U8(0x00).U8(0x3c);
  for (int i = 0; i < 32; ++i) c.U8(static_cast<uint8_t>(i));
  ASSERT_EQ(c.size(), 128u + 32 + 34);
  auto f = Parse(c);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  ASSERT_EQ(g.tensors().size(), 2u);
  EXPECT_EQ(g.data_offset(), 128u);
  const GgufTensorInfo& a = g.tensors()[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.dims, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(a.type, DType::kF32);
  EXPECT_EQ(a.elements(), 8);
  EXPECT_EQ(a.bytes, 32u);
  EXPECT_EQ(a.offset, 0u);
  EXPECT_EQ(a.file_offset, 128u);
  EXPECT_EQ(a.info_offset, 24u);
  const GgufTensorInfo* bt = g.FindTensor("b");
  ASSERT_NE(bt, nullptr);
  EXPECT_EQ(bt->type, DType::kQ8_0);
  EXPECT_EQ(bt->bytes, 34u);
  EXPECT_EQ(bt->file_offset, 160u);
  EXPECT_EQ(bt->info_offset, 65u);
  EXPECT_EQ(g.FindTensor("c"), nullptr);
  // The data is a view of the buffer, not a copy.
  absl::Span<const uint8_t> ad = g.TensorData(a);
  EXPECT_EQ(ad.data(), c.span().data() + 128);
  float third;
  std::memcpy(&third, ad.data() + 8, 4);
  EXPECT_EQ(third, 1.0f);
  EXPECT_EQ(g.TensorData(*bt)[2], 0);
  EXPECT_EQ(g.TensorData(*bt)[33], 31);
}

TEST(GgufReader, EveryValueType) {
  Bytes b;
  b.Header(3, 0, 14);
  b.Str("u8").U32(0).U8(200);
  b.Str("i8").U32(1).U8(0x80);  // -128
  b.Str("u16").U32(2).Put<uint16_t>(65535);
  b.Str("i16").U32(3).Put<int16_t>(-300);
  b.Str("u32").U32(4).U32(4000000000u);
  b.Str("i32").U32(5).Put<int32_t>(-7);
  b.Str("f32").U32(6).Put<float>(0.1f);
  b.Str("bool").U32(7).U8(1);
  b.Str("str").U32(8).Str("h\xc3\xa9llo");
  b.Str("u64").U32(10).U64(UINT64_MAX);
  b.Str("i64").U32(11).Put<int64_t>(INT64_MIN);
  b.Str("f64").U32(12).Put<double>(-2.5e300);
  // array of 3 strings
  b.Str("strs").U32(9).U32(8).U64(3).Str("a").Str("").Str("ccc");
  // array of 2 arrays of int32: [[1, 2], []]
  b.Str("nested").U32(9).U32(9).U64(2).U32(5).U64(2).Put<int32_t>(1).Put<int32_t>(2).U32(5).U64(0);
  auto f = Parse(b);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  ASSERT_EQ(g.metadata().size(), 14u);
  EXPECT_EQ(g.metadata()[0].first, "u8");
  EXPECT_EQ(g.metadata()[13].first, "nested");
  EXPECT_EQ(*g.GetInt("u8"), 200);
  EXPECT_EQ(*g.GetInt("i8"), -128);
  EXPECT_EQ(*g.GetInt("u16"), 65535);
  EXPECT_EQ(*g.GetInt("i16"), -300);
  EXPECT_EQ(*g.GetInt("u32"), 4000000000);
  EXPECT_EQ(*g.GetInt("i32"), -7);
  EXPECT_EQ(static_cast<float>(*g.GetFloat("f32")), 0.1f);
  EXPECT_EQ(*g.GetBool("bool"), true);
  EXPECT_EQ(*g.GetString("str"), "h\xc3\xa9llo");
  EXPECT_EQ(*g.Find("u64")->AsUint(), UINT64_MAX);
  EXPECT_EQ(g.GetInt("u64").status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(*g.GetInt("i64"), INT64_MIN);
  EXPECT_EQ(*g.GetFloat("f64"), -2.5e300);
  EXPECT_EQ(*g.GetFloat("i32"), -7.0);  // integers are numbers too
  for (const char* k : {"u8", "u16", "u32", "u64"}) {
    EXPECT_TRUE(g.Find(k)->is_integer()) << k;
  }
  EXPECT_EQ(g.Find("f32")->type(), GgufType::kFloat32);
  EXPECT_EQ(g.Find("f64")->type(), GgufType::kFloat64);
  EXPECT_TRUE(g.Find("f64")->is_float());

  const GgufArray* strs = *g.GetArray("strs");
  EXPECT_EQ(strs->elem_type, GgufType::kString);
  ASSERT_EQ(strs->elems.size(), 3u);
  EXPECT_EQ(*strs->elems[0].AsString(), "a");
  EXPECT_EQ(*strs->elems[1].AsString(), "");
  EXPECT_EQ(*strs->elems[2].AsString(), "ccc");

  const GgufArray* nested = *g.GetArray("nested");
  EXPECT_EQ(nested->elem_type, GgufType::kArray);
  ASSERT_EQ(nested->elems.size(), 2u);
  const GgufArray* inner0 = *nested->elems[0].AsArray();
  EXPECT_EQ(inner0->elem_type, GgufType::kInt32);
  ASSERT_EQ(inner0->elems.size(), 2u);
  EXPECT_EQ(*inner0->elems[1].AsInt(), 2);
  EXPECT_TRUE((*nested->elems[1].AsArray())->elems.empty());

  EXPECT_EQ(g.Find("nested")->ToString(), "[[1, 2], []]");
  EXPECT_EQ(g.Find("strs")->ToString(), "[\"a\", \"\", \"ccc\"]");
  EXPECT_EQ(g.Find("f32")->ToString(), "0.1");
  EXPECT_EQ(g.Find("bool")->ToString(), "true");
  EXPECT_EQ(g.Find("i16")->ToString(), "-300");
}

TEST(GgufReader, ToStringElidesLongArrays) {
  GgufArray a{GgufType::kUint32, {}};
  for (int i = 0; i < 10; ++i) a.elems.push_back(GgufValue::Uint(GgufType::kUint32, i));
  GgufValue v = GgufValue::Array(a);
  EXPECT_EQ(v.ToString(3), "[0, 1, 2, ... (10 items)]");
  EXPECT_EQ(v.ToString(10), "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]");
  EXPECT_EQ(GgufValue::String("a\"b\n").ToString(), "\"a\\\"b\\n\"");
}

TEST(GgufReader, TypedGettersNameFileKeyAndType) {
  Bytes b;
  b.Header(3, 0, 2).Str("s").U32(8).Str("x").Str("n").U32(4).U32(3);
  auto f = Parse(b);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<int64_t> missing = (*f)->GetInt("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "m.gguf: metadata key 'nope' not found");
  absl::StatusOr<int64_t> wrong = (*f)->GetInt("s");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(wrong.status().message(), "m.gguf: metadata key 's': value of type string is not an integer");
  EXPECT_EQ((*f)->GetString("n").status().message(),
            "m.gguf: metadata key 'n': value of type uint32 is not a string");
  EXPECT_EQ((*f)->GetBool("n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->GetArray("s").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->GetFloat("s").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->GetString("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*f)->Architecture().status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string((*f)->Architecture().status().message()),
              HasSubstr("general.architecture"));
}

TEST(GgufReader, AlignmentFromMetadata) {
  // "general.alignment" KV: key at 24 (8 + 17 bytes), type at 49, value at 53..56.
  // Info "w" (f32 [8]) at 57: name 57..65, n_dims 66, dims 70, type 78, offset
  // 82..89; end 90 -> data at 128 with alignment 64.
  Bytes b;
  b.Header(3, 1, 1).Str("general.alignment").U32(4).U32(64).Info("w", {8}, 0, 0).PadTo(64);
  ASSERT_EQ(b.size(), 128u);
  b.Zeros(32);
  auto f = Parse(b);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->alignment(), 64u);
  EXPECT_EQ((*f)->data_offset(), 128u);
  EXPECT_EQ((*f)->tensors()[0].file_offset, 128u);
}

TEST(GgufReader, VocabOnlyFileMayEndBeforeTheDataSection) {
  // llama.cpp's vocab-only files stop right after the metadata, without padding.
  Bytes b;
  b.Header(3, 0, 1).Str("k").U32(0).U8(1);  // 24 + 9 + 4 + 1 = 38 bytes
  auto f = Parse(b);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->data_offset(), 64u);
}

// ---- bad inputs: header ----

TEST(GgufReaderErrors, EmptyFile) {
  Bytes b;
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: magic at offset 0: needs 4 bytes but only 0 remain before the end of the "
            "file (size 0)");
}

TEST(GgufReaderErrors, WrongMagic) {
  Bytes b;
  b.Raw("GGML").U32(3).U64(0).U64(0);
  EXPECT_THAT(ErrorOf(b), StartsWith("m.gguf: magic at offset 0: expected \"GGUF\""));
  EXPECT_THAT(ErrorOf(b), HasSubstr("found 47 47 4d 4c"));
}

TEST(GgufReaderErrors, UnsupportedVersions) {
  for (uint32_t v : {0u, 1u, 4u}) {
    Bytes b;
    b.Header(v, 0, 0);
    auto f = Parse(b);
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(std::string(f.status().message()),
                StartsWith(absl::StrCat("m.gguf: version at offset 4: unsupported version ", v)));
  }
  Bytes be;
  be.Raw("GGUF").U32(0x03000000).U64(0).U64(0);
  EXPECT_THAT(ErrorOf(be), HasSubstr("big-endian"));
}

TEST(GgufReaderErrors, AbsurdTensorCount) {
  Bytes b;
  b.Header(3, uint64_t{1} << 60, 0).Zeros(100);
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: tensor_count at offset 8: 1152921504606846976 tensors cannot fit in the "
            "remaining 100 bytes after the metadata (each needs at least 32)");
}

TEST(GgufReaderErrors, AbsurdKvCount) {
  Bytes b;
  b.Header(3, 0, UINT64_MAX).Zeros(100);
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: metadata_kv_count at offset 16: 18446744073709551615 key-value pairs cannot "
            "fit in the remaining 100 bytes of the file (each needs at least 13)");
}

// ---- bad inputs: truncation at several points ----

// A complete file: header (0..23); KV "general.architecture" = "llama" (key at
// 24, type at 52, value at 56..68); KV "a.u32" = 5 (key at 69, type at 82,
// value at 86..89); info "token_embd.weight" at 90 (name 90..114, n_dims 115,
// dims[0] 119, dims[1] 127, type 135, offset 139..146); padding 147..159;
// f32 [4, 2] data at 160..191.
Bytes FullFile() {
  Bytes b;
  b.Header(3, 1, 2)
      .Str("general.architecture").U32(8).Str("llama")
      .Str("a.u32").U32(4).U32(5)
      .Info("token_embd.weight", {4, 2}, 0, 0)
      .PadTo(32);
  for (int i = 0; i < 8; ++i) b.Put<float>(i);
  return b;
}

TEST(GgufReaderErrors, FullFileIsValid) {
  Bytes b = FullFile();
  ASSERT_EQ(b.size(), 192u);
  auto f = Parse(b);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*(*f)->Architecture(), "llama");
  EXPECT_EQ((*f)->tensors()[0].info_offset, 90u);
  EXPECT_EQ((*f)->data_offset(), 160u);
}

TEST(GgufReaderErrors, TruncatedAtSeveralPoints) {
  const Bytes full = FullFile();
  struct Cut {
    size_t size;
    std::string error;
  };
  const Cut cuts[] = {
      {2, "m.gguf: magic at offset 0: needs 4 bytes but only 2 remain before the end of the file "
          "(size 2)"},
      {6, "m.gguf: version at offset 4: needs 4 bytes but only 2 remain before the end of the "
          "file (size 6)"},
      {12, "m.gguf: tensor_count at offset 8: needs 8 bytes but only 4 remain before the end of "
           "the file (size 12)"},
      {20, "m.gguf: metadata_kv_count at offset 16: needs 8 bytes but only 4 remain before the "
           "end of the file (size 20)"},
      // Inside the first key's characters.
      {50, "m.gguf: metadata[0].key at offset 24: string length 20 runs past the end of the "
           "file (size 50)"},
      // Inside the first value's string length.
      {60, "m.gguf: metadata[0].value at offset 56: needs 8 bytes but only 4 remain before the "
           "end of the file (size 60) (key 'general.architecture')"},
      // Inside the second value.
      {88, "m.gguf: metadata[1].value at offset 86: needs 4 bytes but only 2 remain before the "
           "end of the file (size 88) (key 'a.u32')"},
      // Too few bytes left for even one tensor info.
      {100, "m.gguf: tensor_count at offset 8: 1 tensors cannot fit in the remaining 10 bytes "
            "after the metadata (each needs at least 32)"},
      // Inside the tensor info's dims[1] and offset.
      {131, "m.gguf: tensor_infos[0].dims[1] at offset 127: needs 8 bytes but only 4 remain "
            "before the end of the file (size 131) (tensor 'token_embd.weight')"},
      {142, "m.gguf: tensor_infos[0].offset at offset 139: needs 8 bytes but only 3 remain "
            "before the end of the file (size 142) (tensor 'token_embd.weight')"},
      // In the padding and inside the data.
      {150, "m.gguf: tensor_infos[0].offset at offset 139: data of 32 bytes at offset 0 of the "
            "data section (which starts at 160) runs past the end of the file (size 150) "
            "(tensor 'token_embd.weight')"},
      {170, "m.gguf: tensor_infos[0].offset at offset 139: data of 32 bytes at offset 0 of the "
            "data section (which starts at 160) runs past the end of the file (size 170) "
            "(tensor 'token_embd.weight')"},
      {191, "m.gguf: tensor_infos[0].offset at offset 139: data of 32 bytes at offset 0 of the "
            "data section (which starts at 160) runs past the end of the file (size 191) "
            "(tensor 'token_embd.weight')"},
  };
  for (const Cut& c : cuts) {
    EXPECT_EQ(ErrorOf(full.Prefix(c.size)), c.error) << "cut at " << c.size;
  }
  // Every other cut point fails too, never crashes.
  for (size_t n = 0; n < full.size(); ++n) {
    EXPECT_FALSE(Parse(full.Prefix(n)).ok()) << "cut at " << n;
  }
}

// ---- bad inputs: metadata ----

TEST(GgufReaderErrors, StringLengthPastEndOfFile) {
  Bytes b;
  b.Header(3, 0, 1).U64(999999999).Raw("abcdefgh");
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: metadata[0].key at offset 24: string length 999999999 runs past the end of "
            "the file (size 40)");
}

TEST(GgufReaderErrors, AbsurdArrayLength) {
  // Key "k" at 24..32, type at 33, value at 37: element type at 37, count at 41.
  Bytes b;
  b.Header(3, 0, 1).Str("k").U32(9).U32(4).U64(uint64_t{1} << 62).Zeros(16);
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: metadata[0].value.count at offset 41: array length 4611686018427387904 of "
            "uint32 cannot fit in the remaining 16 bytes of the file (size 65) (key 'k')");
}

TEST(GgufReaderErrors, ArrayStringElementPastEnd) {
  // Value at 37: type 8, count 2 at 41; element 0 at 49 ("x", ends 58);
  // element 1 at 58 claims 1000 bytes.
  Bytes b;
  b.Header(3, 0, 1).Str("k").U32(9).U32(8).U64(2).Str("x").U64(1000).Raw("yy");
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: metadata[0].value[1] at offset 58: string length 1000 runs past the end of "
            "the file (size 68) (key 'k')");
}

// Key "k" at 24, type at 33, value at 37; each nesting level is an element
// type (9) and a count (1): 12 bytes.
Bytes Nested(int levels) {
  Bytes b;
  b.Header(3, 0, 1).Str("k").U32(9);
  for (int i = 1; i < levels; ++i) b.U32(9).U64(1);
  b.U32(0).U64(0);  // innermost: an empty uint8 array
  return b;
}

TEST(GgufReaderErrors, NestingTooDeep) {
  auto ok = Parse(Nested(8));
  ASSERT_TRUE(ok.ok()) << ok.status();
  const GgufValue* v = (*ok)->Find("k");
  for (int i = 1; i < 8; ++i) v = &(*v->AsArray())->elems[0];
  EXPECT_TRUE((*v->AsArray())->elems.empty());
  // The 9th array starts at 37 + 8 * 12 = 133.
  EXPECT_EQ(ErrorOf(Nested(9)),
            "m.gguf: metadata[0].value[0][0][0][0][0][0][0][0] at offset 133: arrays nested more "
            "than 8 deep (key 'k')");
  // Very deep nesting must not exhaust the stack.
  EXPECT_THAT(ErrorOf(Nested(100000)), HasSubstr("arrays nested more than 8 deep"));
}

TEST(GgufReaderErrors, UnknownValueType) {
  Bytes b;
  b.Header(3, 0, 1).Str("k").U32(13).U64(0);
  EXPECT_EQ(ErrorOf(b), "m.gguf: metadata[0].type at offset 33: unknown value type 13 (key 'k')");
  Bytes c;
  c.Header(3, 0, 1).Str("k").U32(9).U32(77).U64(0);
  EXPECT_EQ(ErrorOf(c),
            "m.gguf: metadata[0].value.type at offset 37: unknown value type 77 (key 'k')");
}

TEST(GgufReaderErrors, BadBool) {
  Bytes b;
  b.Header(3, 0, 1).Str("k").U32(7).U8(2);
  EXPECT_EQ(ErrorOf(b), "m.gguf: metadata[0].value at offset 37: bool value 2 is neither 0 nor 1 "
                        "(key 'k')");
}

TEST(GgufReaderErrors, DuplicateKey) {
  // Second key at 24 + 9 + 4 + 1 = 38.
  Bytes b;
  b.Header(3, 0, 2).Str("k").U32(0).U8(1).Str("k").U32(0).U8(2);
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: metadata[1].key at offset 38: duplicate key 'k' (also metadata[0])");
}

TEST(GgufReaderErrors, BadAlignment) {
  // "general.alignment": key at 24 (8 + 17), type at 49, value at 53.
  for (uint32_t a : {0u, 3u, 48u}) {
    Bytes b;
    b.Header(3, 0, 1).Str("general.alignment").U32(4).U32(a);
    EXPECT_EQ(ErrorOf(b), absl::StrCat("m.gguf: metadata[0].value at offset 53: alignment ", a,
                                       " is not a non-zero power of two (key "
                                       "'general.alignment')"));
  }
  // Issue #16: 2^30 made the writer pad a copy to 1 GiB; the bound is 64 KiB.
  for (uint32_t a : {1u << 17, 1u << 30, 1u << 31}) {
    Bytes b;
    b.Header(3, 0, 1).Str("general.alignment").U32(4).U32(a);
    EXPECT_EQ(ErrorOf(b), absl::StrCat("m.gguf: metadata[0].value at offset 53: alignment ", a,
                                       " exceeds the maximum of 65536 (key "
                                       "'general.alignment')"));
  }
  Bytes s;
  s.Header(3, 0, 1).Str("general.alignment").U32(8).Str("32");
  EXPECT_EQ(ErrorOf(s),
            "m.gguf: metadata[0].value at offset 53: general.alignment must be a uint32, not "
            "string (key 'general.alignment')");
}

// ---- bad inputs: tensor infos ----
// With no metadata, a tensor info "w" with n dims starts at 24: name 24..32,
// n_dims at 33, dims at 37, type at 37 + 8n, offset at 41 + 8n.

TEST(GgufReaderErrors, NDimsZeroAndFive) {
  Bytes zero;
  zero.Header(3, 1, 0).Str("w").U32(0).U32(0).U64(0).Zeros(16);
  EXPECT_EQ(ErrorOf(zero),
            "m.gguf: tensor_infos[0].n_dims at offset 33: 0 dimensions; a tensor has 1 to 4 "
            "(tensor 'w')");
  Bytes five;
  five.Header(3, 1, 0).Info("w", {1, 1, 1, 1, 1}, 0, 0).PadTo(32).Zeros(4);
  EXPECT_EQ(ErrorOf(five),
            "m.gguf: tensor_infos[0].n_dims at offset 33: 5 exceeds the maximum of 4 (tensor "
            "'w')");
}

TEST(GgufReaderErrors, ZeroAndHugeDimension) {
  Bytes b;
  b.Header(3, 1, 0).Info("w", {4, 0}, 0, 0).PadTo(32);
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: tensor_infos[0].dims[1] at offset 45: dimension is 0; every dimension must "
            "be at least 1 (tensor 'w')");
  Bytes h;
  h.Header(3, 1, 0).Info("w", {uint64_t{1} << 63}, 0, 0).PadTo(32);
  EXPECT_EQ(ErrorOf(h),
            "m.gguf: tensor_infos[0].dims[0] at offset 37: dimension 9223372036854775808 does "
            "not fit in int64 (tensor 'w')");
}

TEST(GgufReaderErrors, DimensionProductOverflows) {
  Bytes b;
  b.Header(3, 1, 0).Info("w", {uint64_t{1} << 32, uint64_t{1} << 32}, 0, 0).PadTo(32);
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: tensor_infos[0].dims at offset 37: the product of the dimensions "
            "[4294967296, 4294967296] overflows int64 (tensor 'w')");
  // The element count fits but the byte size does not.
  Bytes c;
  c.Header(3, 1, 0).Info("w", {uint64_t{1} << 31, uint64_t{1} << 31}, 0, 0).PadTo(32);
  EXPECT_THAT(ErrorOf(c), StartsWith("m.gguf: tensor_infos[0].dims at offset 37: "));
  EXPECT_THAT(ErrorOf(c), HasSubstr("overflows"));
}

TEST(GgufReaderErrors, RowNotAWholeNumberOfBlocks) {
  Bytes b;
  b.Header(3, 1, 0).Info("w", {16, 2}, 2, 0).PadTo(32).Zeros(64);  // q4_0 has 32-element blocks
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: tensor_infos[0].dims[0] at offset 37: row length 16 is not a multiple of "
            "q4_0's block size 32 (tensor 'w')");
}

TEST(GgufReader, ReadsTypesVibrantDoesNotComputeWith) {
  // A valid file of any ggml type with a block layout is readable (vibrantc
  // inspect describes it); lowering refuses the unsupported types by name.
  Bytes iq;
  iq.Header(3, 1, 0).Info("w", {512, 2}, 16, 0).PadTo(32).Zeros(4 * 66);  // iq2_xxs: 66 B / 256
  absl::StatusOr<std::unique_ptr<GgufFile>> f = Parse(iq);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->tensors()[0].type, DType::kIQ2_XXS);
  EXPECT_EQ((*f)->tensors()[0].bytes, 4u * 66);
  EXPECT_FALSE(IsSupported((*f)->tensors()[0].type));
}

TEST(GgufReaderErrors, UnsupportedTensorTypes) {
  // One dim: type at 45.
  Bytes removed;
  removed.Header(3, 1, 0).Info("w", {256}, 31, 0).PadTo(32).Zeros(256);
  absl::StatusOr<std::unique_ptr<GgufFile>> f = Parse(removed);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(f.status().message(),
            "m.gguf: tensor_infos[0].type at offset 45: unsupported tensor type q4_0_4_4 (31): "
            "removed from ggml, no block layout (tensor 'w')");
  Bytes unk;
  unk.Header(3, 1, 0).Info("w", {256}, 999, 0).PadTo(32).Zeros(256);
  EXPECT_EQ(ErrorOf(unk),
            "m.gguf: tensor_infos[0].type at offset 45: unsupported tensor type unknown (999) "
            "(tensor 'w')");
}

TEST(GgufReaderErrors, OffsetPastEndOfFile) {
  // Info ends at 57, data at 64; one f32 [8] of 32 bytes is present (file 96)
  // but the offset points at 64.
  Bytes b;
  b.Header(3, 1, 0).Info("w", {8}, 0, 64).PadTo(32).Zeros(32);
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: tensor_infos[0].offset at offset 49: data of 32 bytes at offset 64 of the "
            "data section (which starts at 64) runs past the end of the file (size 96) (tensor "
            "'w')");
  // An offset so large that adding it overflows.
  Bytes o;
  o.Header(3, 1, 0).Info("w", {8}, 0, UINT64_MAX - 31).PadTo(32).Zeros(32);
  EXPECT_THAT(ErrorOf(o), StartsWith("m.gguf: tensor_infos[0].offset at offset 49: data of 32 "
                                     "bytes at offset 18446744073709551584"));
}

TEST(GgufReaderErrors, MisalignedOffset) {
  Bytes b;
  b.Header(3, 1, 0).Info("w", {8}, 0, 16).PadTo(32).Zeros(64);
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: tensor_infos[0].offset at offset 49: 16 is not a multiple of the alignment "
            "32 (tensor 'w')");
}

TEST(GgufReaderErrors, DuplicateTensorNames) {
  // Info 0 at 24..56, info 1 at 57 (name 57..65, offset field at 82).
  Bytes b;
  b.Header(3, 2, 0).Info("w", {8}, 0, 0).Info("w", {8}, 0, 32).PadTo(32).Zeros(64);
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: tensor_infos[1].name at offset 57: duplicate tensor name 'w' (also "
            "tensor_infos[0])");
}

TEST(GgufReaderErrors, OverlappingTensorData) {
  Bytes b;
  b.Header(3, 2, 0).Info("a", {16}, 0, 0).Info("b", {8}, 0, 32).PadTo(32).Zeros(64);
  EXPECT_EQ(ErrorOf(b),
            "m.gguf: tensor_infos[1].offset at offset 82: data [32, 64) overlaps the data of "
            "tensor_infos[0] 'a' [0, 64) (tensor 'b')");
}

// ---- files on disk ----

TEST(GgufOpen, MissingFileAndDirectory) {
  auto f = GgufFile::Open("/nonexistent/dir/x.gguf");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(f.status().message()), StartsWith("/nonexistent/dir/x.gguf: "));
  auto d = GgufFile::Open("/tmp");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().message(), "/tmp: not a regular file (a directory)");
}

// Issue #16: a FIFO given as the model used to block forever in open(). The
// child gets 10 seconds (SIGALRM kills it otherwise, failing the test).
TEST(GgufOpenDeathTest, FifoIsAnErrorNotAHang) {
  const std::string path = ::testing::TempDir() + "/gguf_fifo_" + std::to_string(::getpid());
  ::unlink(path.c_str());
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  EXPECT_EXIT(
      {
        ::alarm(10);
        auto f = GgufFile::Open(path);
        std::exit(!f.ok() && f.status().message() == path + ": not a regular file (a FIFO)" ? 0 : 3);
      },
      ::testing::ExitedWithCode(0), "");
  ::unlink(path.c_str());
}

// Issue #16: truncating the mapped GGUF during a run gave SIGBUS. Reading
// tensor data past the new end now ends the process with a message naming
// the file and exit status 1.
TEST(GgufOpenDeathTest, ShrinkingModelIsACleanError) {
  const std::string path = ::testing::TempDir() + "/gguf_shrinks_" + std::to_string(::getpid()) + ".gguf";
  std::filesystem::copy_file(VIBRANT_SOURCE_DIR "/tests/data/stories260K.gguf", path,
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_EXIT(
      {
        auto f = GgufFile::Open(path);
        if (!f.ok()) std::exit(4);
        const GgufTensorInfo& last = (*f)->tensors().back();
        if (::truncate(path.c_str(), 4096) != 0) std::exit(5);
        volatile uint8_t sink = (*f)->TensorData(last)[0];
        (void)sink;
        std::exit(6);
      },
      ::testing::ExitedWithCode(1), "the file shrank while it was memory-mapped");
  std::filesystem::remove(path);
}

std::string SharedDir() { return VIBRANT_SOURCE_DIR "/../shared"; }

std::vector<std::string> GgufFilesIn(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".gguf") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(GgufShared, EveryModelAndVocabularyOpens) {
  std::vector<std::string> files = GgufFilesIn(SharedDir() + "/models");
  std::vector<std::string> vocabs = GgufFilesIn(SharedDir() + "/tokenizer");
  if (files.empty() && vocabs.empty()) GTEST_SKIP() << "../shared/models and tokenizer absent";
  for (const std::string& path : files) {
    auto f = GgufFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_FALSE((*f)->tensors().empty()) << path;
    EXPECT_TRUE((*f)->Architecture().ok()) << path;
    // Every tensor lies inside the file.
    for (const GgufTensorInfo& t : (*f)->tensors()) {
      EXPECT_LE(t.file_offset + t.bytes, (*f)->file_size()) << path << " " << t.name;
      EXPECT_EQ(t.file_offset % (*f)->alignment(), 0u);
    }
  }
  for (const std::string& path : vocabs) {
    auto f = GgufFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_TRUE((*f)->tensors().empty()) << path;
    auto tokens = (*f)->GetArray("tokenizer.ggml.tokens");
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_GT((*tokens)->elems.size(), 1000u) << path;
  }
}

// Expected values were read from the file with an independent Python parser.
TEST(GgufShared, Stories260K) {
  std::string path = SharedDir() + "/models/stories260K.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " absent";
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.file_size(), 1185376u);
  EXPECT_EQ(g.metadata().size(), 19u);
  EXPECT_EQ(g.tensors().size(), 48u);
  EXPECT_EQ(g.data_offset(), 14176u);
  EXPECT_EQ(*g.Architecture(), "llama");
  EXPECT_EQ(*g.GetInt("llama.block_count"), 5);
  EXPECT_EQ(*g.GetInt("llama.embedding_length"), 64);
  EXPECT_EQ(*g.GetInt("llama.feed_forward_length"), 172);
  EXPECT_EQ(*g.GetInt("llama.attention.head_count"), 8);
  EXPECT_EQ(*g.GetInt("llama.attention.head_count_kv"), 4);
  EXPECT_EQ(*g.GetInt("tokenizer.ggml.seperator_token_id"), 4294967295);
  EXPECT_EQ(static_cast<float>(*g.GetFloat("llama.attention.layer_norm_rms_epsilon")), 1e-5f);
  const GgufArray* tokens = *g.GetArray("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens->elems.size(), 512u);
  EXPECT_EQ(*tokens->elems[1].AsString(), "<s>");
  EXPECT_EQ(*tokens->elems[3].AsString(), "<0x00>");
  EXPECT_EQ((*g.GetArray("tokenizer.ggml.scores"))->elem_type, GgufType::kFloat32);
  EXPECT_EQ((*g.GetArray("tokenizer.ggml.token_type"))->elem_type, GgufType::kInt32);

  const GgufTensorInfo& first = g.tensors()[0];
  EXPECT_EQ(first.name, "token_embd.weight");
  EXPECT_EQ(first.dims, (std::vector<int64_t>{64, 512}));
  EXPECT_EQ(first.offset, 0u);
  const GgufTensorInfo* down = g.FindTensor("blk.0.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->dims, (std::vector<int64_t>{172, 64}));
  EXPECT_EQ(down->offset, 355840u);
  const GgufTensorInfo* k = g.FindTensor("blk.3.attn_k.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->dims, (std::vector<int64_t>{64, 32}));
  for (const GgufTensorInfo& t : g.tensors()) EXPECT_EQ(t.type, DType::kF32) << t.name;
  const GgufTensorInfo* last = g.FindTensor("blk.4.ffn_norm.weight");
  ASSERT_NE(last, nullptr);
  EXPECT_EQ(last->file_offset + last->bytes, g.file_size());
  const GgufTensorInfo* norm = g.FindTensor("output_norm.weight");
  ASSERT_NE(norm, nullptr);
  float w[2];
  std::memcpy(w, g.TensorData(*norm).data(), sizeof(w));
  EXPECT_FLOAT_EQ(w[0], 2.4583089f);
  EXPECT_FLOAT_EQ(w[1], 1.3673227f);
}

TEST(GgufShared, TinyLlamaQ4KMHasSeveralTensorTypes) {
  std::string path = SharedDir() + "/models/tiny-llama-q4_k_m.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " absent";
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  std::map<DType, int> counts;
  for (const GgufTensorInfo& t : (*f)->tensors()) counts[t.type]++;
  EXPECT_EQ(counts, (std::map<DType, int>{{DType::kF32, 5}, {DType::kQ4_K, 13}, {DType::kQ6_K, 3}}));
  EXPECT_EQ((*f)->FindTensor("output.weight")->type, DType::kQ6_K);
  EXPECT_EQ((*f)->FindTensor("blk.1.ffn_down.weight")->dims, (std::vector<int64_t>{768, 256}));
  EXPECT_EQ((*f)->FindTensor("blk.1.ffn_down.weight")->bytes, 768u / 256 * 210 * 256);
}

}  // namespace
}  // namespace vibrant
