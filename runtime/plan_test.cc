#include "runtime/plan.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "frontends/gguf/gguf_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/serialize.h"

namespace vibrant {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

uint32_t U32At(const std::string& s, size_t at) {
  uint32_t v;
  std::memcpy(&v, s.data() + at, 4);
  return v;
}
uint64_t U64At(const std::string& s, size_t at) {
  uint64_t v;
  std::memcpy(&v, s.data() + at, 8);
  return v;
}

struct SectionEntry {
  uint32_t kind, flags;
  uint64_t offset, size, checksum;
};
std::vector<SectionEntry> Table(const std::string& file) {
  std::vector<SectionEntry> t;
  uint32_t n = U32At(file, 12);
  for (uint32_t i = 0; i < n; ++i) {
    size_t at = 16 + 32 * i;
    t.push_back({U32At(file, at), U32At(file, at + 4), U64At(file, at + 8), U64At(file, at + 16),
                 U64At(file, at + 24)});
  }
  return t;
}

class PlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("plan_test_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // A small GGUF with one metadata string and one f32 tensor.
  std::string WriteGguf(const std::string& name, const std::string& arch = "llama",
                        float first = 1.0f) {
    GgufWriter w;
    w.AddString("general.architecture", arch);
    std::vector<float> data = {first, 2.0f, 3.0f, 4.0f};
    w.AddTensor("t.weight", {4}, DType::kF32,
                absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), 16));
    std::string path = Path(name);
    absl::Status st = w.WriteFile(path);
    EXPECT_TRUE(st.ok()) << st;
    return path;
  }

  static PlanContents ReferencedContents() {
    PlanContents c;
    c.graph = std::string("graph bytes\0\x01\x02 of some length", 30);
    c.options = {{"device", "cpu"}, {"max_tokens", "512"}, {"kv_type", "f16"}};
    c.model_ref = ModelRef{"/models/m.gguf", 1185376, 0x0123456789abcdefull};
    return c;
  }

  std::string WriteAndRead(const PlanContents& c, const std::string& name = "plan.bin") {
    std::string path = Path(name);
    absl::Status st = WritePlan(path, c);
    EXPECT_TRUE(st.ok()) << st;
    return ReadFile(path);
  }

  fs::path dir_;
};

TEST_F(PlanTest, RoundTripReferenced) {
  PlanContents c = ReferencedContents();
  std::string path = Path("plan.bin");
  ASSERT_TRUE(WritePlan(path, c).ok());
  absl::StatusOr<std::unique_ptr<PlanFile>> plan = PlanFile::Open(path);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const PlanFile& p = **plan;
  EXPECT_EQ(p.version(), kPlanFormatVersion);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(p.graph_bytes().data()),
                        p.graph_bytes().size()),
            c.graph);
  EXPECT_EQ(p.options(), c.options);
  EXPECT_EQ(p.Option("max_tokens"), "512");
  EXPECT_EQ(p.Option("missing", "dflt"), "dflt");
  ASSERT_TRUE(p.model_ref().has_value());
  EXPECT_EQ(p.model_ref()->path, "/models/m.gguf");
  EXPECT_EQ(p.model_ref()->size, 1185376u);
  EXPECT_EQ(p.model_ref()->fingerprint, 0x0123456789abcdefull);
  EXPECT_FALSE(p.embedded_gguf().has_value());

  // The on-disk layout documented in plan.h.
  std::string file = ReadFile(path);
  EXPECT_EQ(file.substr(0, 8), "VBRNTPLN");
  EXPECT_EQ(U32At(file, 8), 2u);
  std::vector<SectionEntry> table = Table(file);
  ASSERT_EQ(table.size(), 3u);
  for (const SectionEntry& e : table) {
    EXPECT_EQ(e.offset % 8, 0u);
    EXPECT_EQ(e.flags, 0u);
    EXPECT_EQ(e.checksum, Fnv1a64(Bytes(file.substr(e.offset, e.size))));
    if (e.kind == static_cast<uint32_t>(PlanSectionKind::kOptions)) {
      EXPECT_EQ(file.substr(e.offset, e.size), "device=cpu\nmax_tokens=512\nkv_type=f16\n");
    }
  }
  // No temporary file is left beside the plan.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(PlanTest, Fnv1a64KnownValues) {
  // Reference values of FNV-1a 64.
  EXPECT_EQ(Fnv1a64({}), 0xcbf29ce484222325ull);
  EXPECT_EQ(Fnv1a64(Bytes("a")), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(Fnv1a64(Bytes("foobar")), 0x85944171f73967e8ull);
  EXPECT_EQ(Fnv1a64(Bytes("bar"), Fnv1a64(Bytes("foo"))), Fnv1a64(Bytes("foobar")));
}

TEST_F(PlanTest, RoundTripEmbeddedKeepsTheGgufAlignedAndOpensIt) {
  std::string gguf_path = WriteGguf("m.gguf");
  std::string gguf = ReadFile(gguf_path);
  PlanContents c = ReferencedContents();
  c.model_ref.reset();
  c.embedded_gguf = Bytes(gguf);
  std::string path = Path("plan.bin");
  ASSERT_TRUE(WritePlan(path, c).ok());
  fs::remove(gguf_path);

  absl::StatusOr<std::unique_ptr<PlanFile>> plan = PlanFile::Open(path);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE((*plan)->embedded_gguf().has_value());
  EXPECT_FALSE((*plan)->model_ref().has_value());
  absl::Span<const uint8_t> emb = *(*plan)->embedded_gguf();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(emb.data()), emb.size()), gguf);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(emb.data()) % 64, 0u);

  absl::StatusOr<std::unique_ptr<GgufFile>> model = (*plan)->OpenModel();
  ASSERT_TRUE(model.ok()) << model.status();
  const GgufTensorInfo* t = (*model)->FindTensor("t.weight");
  ASSERT_NE(t, nullptr);
  float first;
  std::memcpy(&first, (*model)->TensorData(*t).data(), 4);
  EXPECT_EQ(first, 1.0f);
}

TEST_F(PlanTest, GraphRoundTrip) {
  ir::Graph g;
  g.max_tokens = 8;
  g.meta["arch"] = std::string("llama");
  ir::ValueId tokens = g.AddInput("tokens", DType::kI32, {ir::kTokens});
  ir::ValueId table = g.AddWeight("token_embd", DType::kF32, {16, 4}, "token_embd.weight");
  absl::StatusOr<ir::ValueId> x = g.AddOp(ir::OpKind::kEmbedding, {table, tokens}, "x");
  ASSERT_TRUE(x.ok()) << x.status();
  g.mutable_value(*x).storage = ir::Storage::kOutput;
  g.MarkOutput(*x);

  PlanContents c = ReferencedContents();
  c.graph = ir::SerializeGraph(g);
  std::string path = Path("plan.bin");
  ASSERT_TRUE(WritePlan(path, c).ok());
  absl::StatusOr<std::unique_ptr<PlanFile>> plan = PlanFile::Open(path);
  ASSERT_TRUE(plan.ok()) << plan.status();
  absl::StatusOr<ir::Graph> loaded = (*plan)->LoadGraph();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(ir::SerializeGraph(*loaded), c.graph);
  EXPECT_EQ(loaded->max_tokens, 8);
  EXPECT_EQ(loaded->values().size(), 3u);
}

TEST_F(PlanTest, TheDocumentedTruncationMessage) {
  std::string file = WriteAndRead(ReferencedContents());
  absl::StatusOr<std::unique_ptr<PlanFile>> p =
      PlanFile::FromBuffer("plan.bin", Bytes(file.substr(0, 40)));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(Msg(p.status()), "plan.bin: truncated: section table needs 96 bytes at offset 16, "
                             "file has 40");
  p = PlanFile::FromBuffer("plan.bin", Bytes(file.substr(0, 5)));
  EXPECT_EQ(Msg(p.status()), "plan.bin: truncated: header needs 16 bytes at offset 0, file has 5");
}

TEST_F(PlanTest, EveryTruncationIsANamedError) {
  std::string gguf = ReadFile(WriteGguf("m.gguf"));
  PlanContents embedded = ReferencedContents();
  embedded.model_ref.reset();
  embedded.embedded_gguf = Bytes(gguf);
  for (const PlanContents& c : {ReferencedContents(), embedded}) {
    std::string file = WriteAndRead(c);
    for (size_t len = 0; len < file.size(); ++len) {
      std::string cut = file.substr(0, len);
      absl::StatusOr<std::unique_ptr<PlanFile>> p = PlanFile::FromBuffer("plan.bin", Bytes(cut));
      ASSERT_FALSE(p.ok()) << "length " << len;
      EXPECT_THAT(Msg(p.status()), StartsWith("plan.bin: truncated: ")) << "length " << len;
    }
  }
}

TEST_F(PlanTest, EveryBitFlipOutsideTheEmbeddedGgufIsANamedError) {
  std::string gguf = ReadFile(WriteGguf("m.gguf"));
  PlanContents embedded = ReferencedContents();
  embedded.model_ref.reset();
  embedded.embedded_gguf = Bytes(gguf);
  for (bool embed : {false, true}) {
    std::string file = WriteAndRead(embed ? embedded : ReferencedContents());
    // Not checked at load, by design: the embedded GGUF's bytes and the
    // checksum field of its table entry.
    uint64_t skip_begin = file.size(), skip_end = file.size();
    uint64_t skip_checksum = file.size();
    std::vector<SectionEntry> table = Table(file);
    for (size_t i = 0; i < table.size(); ++i) {
      if (table[i].kind == static_cast<uint32_t>(PlanSectionKind::kEmbeddedGguf)) {
        skip_begin = table[i].offset;
        skip_end = table[i].offset + table[i].size;
        skip_checksum = 16 + 32 * i + 24;
      }
    }
    ASSERT_TRUE(PlanFile::FromBuffer("plan.bin", Bytes(file)).ok());
    int flips = 0;
    for (size_t byte = 0; byte < file.size(); ++byte) {
      if (byte >= skip_begin && byte < skip_end) continue;
      if (byte >= skip_checksum && byte < skip_checksum + 8) continue;
      for (int bit = 0; bit < 8; ++bit) {
        std::string bad = file;
        bad[byte] = static_cast<char>(bad[byte] ^ (1 << bit));
        absl::StatusOr<std::unique_ptr<PlanFile>> p =
            PlanFile::FromBuffer("plan.bin", Bytes(bad));
        ASSERT_FALSE(p.ok()) << "byte " << byte << " bit " << bit << (embed ? " embedded" : "");
        EXPECT_THAT(Msg(p.status()), StartsWith("plan.bin: "));
        ++flips;
      }
    }
    EXPECT_GT(flips, 8 * 100);
  }
}

TEST_F(PlanTest, ChecksumMismatchNamesTheSectionAndOffset) {
  std::string file = WriteAndRead(ReferencedContents());
  for (const SectionEntry& e : Table(file)) {
    if (e.kind != static_cast<uint32_t>(PlanSectionKind::kGraph)) continue;
    std::string bad = file;
    bad[e.offset + 3] ^= 0x10;
    absl::StatusOr<std::unique_ptr<PlanFile>> p = PlanFile::FromBuffer("plan.bin", Bytes(bad));
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(Msg(p.status()), "plan.bin: section GRAPH at offset " + std::to_string(e.offset) +
                                   ": checksum mismatch (file is corrupted)");
    return;
  }
  FAIL() << "no GRAPH section";
}

TEST_F(PlanTest, RandomMultiByteCorruptionNeverCrashes) {
  std::string file = WriteAndRead(ReferencedContents());
  std::mt19937 rng(5);
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bad = file;
    int n = 1 + rng() % 8;
    for (int i = 0; i < n; ++i) bad[rng() % bad.size()] = static_cast<char>(rng());
    if (bad == file) continue;
    absl::StatusOr<std::unique_ptr<PlanFile>> p = PlanFile::FromBuffer("plan.bin", Bytes(bad));
    EXPECT_FALSE(p.ok());
  }
}

TEST_F(PlanTest, KernelsSectionRoundTrips) {
  PlanContents c = ReferencedContents();
  std::string file = WriteAndRead(c);
  absl::StatusOr<std::unique_ptr<PlanFile>> p = PlanFile::FromBuffer("plan.bin", Bytes(file));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE((*p)->kernels().empty());
  c.kernels = std::string("VBKERNEL\0bytes", 14);
  file = WriteAndRead(c);
  p = PlanFile::FromBuffer("plan.bin", Bytes(file));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*p)->kernels().data()),
                        (*p)->kernels().size()),
            *c.kernels);
}

TEST_F(PlanTest, UnknownFormatVersion) {
  std::string file = WriteAndRead(ReferencedContents());
  file[8] = 3;
  absl::StatusOr<std::unique_ptr<PlanFile>> p = PlanFile::FromBuffer("plan.bin", Bytes(file));
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(Msg(p.status()), HasSubstr("plan.bin: format version at offset 8 is 3"));
  EXPECT_THAT(Msg(p.status()), HasSubstr("reads version 2"));
  EXPECT_THAT(Msg(p.status()), HasSubstr("a newer Vibrant (recompile it"));
  // A plan of the first format (before the DISPATCH section) asks for a recompile.
  file[8] = 1;
  p = PlanFile::FromBuffer("plan.bin", Bytes(file));
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(Msg(p.status()), HasSubstr("compiled by an older Vibrant (recompile it with this vibrantc)"));
}

TEST_F(PlanTest, DispatchSectionRoundTrip) {
  PlanContents c = ReferencedContents();
  std::string file = WriteAndRead(c);
  absl::StatusOr<std::unique_ptr<PlanFile>> p = PlanFile::FromBuffer("plan.bin", Bytes(file));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE((*p)->dispatch().empty());
  c.dispatch = std::string("VBDT\1\0\0\0table", 13);
  file = WriteAndRead(c);
  p = PlanFile::FromBuffer("plan.bin", Bytes(file));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*p)->dispatch().data()), (*p)->dispatch().size()),
            *c.dispatch);
}

TEST_F(PlanTest, NotAPlan) {
  std::string path = WriteGguf("m.gguf");
  absl::StatusOr<std::unique_ptr<PlanFile>> p = PlanFile::Open(path);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(Msg(p.status()), HasSubstr("magic at offset 0 is \"GGUF"));
  EXPECT_THAT(Msg(p.status()), HasSubstr("not a Vibrant plan"));
  p = PlanFile::Open(Path("absent.bin"));
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(Msg(p.status()), HasSubstr("absent.bin: cannot open"));
}

TEST_F(PlanTest, UnknownSectionKinds) {
  PlanContents c = ReferencedContents();
  c.extra_sections.emplace_back(77, kPlanSectionOptional, "from the future");
  std::string file = WriteAndRead(c);
  absl::StatusOr<std::unique_ptr<PlanFile>> p = PlanFile::FromBuffer("plan.bin", Bytes(file));
  ASSERT_TRUE(p.ok()) << p.status();  // optional: skipped

  c.extra_sections = {{77, 0, "required by the future"}};
  file = WriteAndRead(c);
  p = PlanFile::FromBuffer("plan.bin", Bytes(file));
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(Msg(p.status()), HasSubstr("unknown section kind 77 not marked optional"));

  c.extra_sections = {{static_cast<uint32_t>(PlanSectionKind::kMemoryPlan), 0, "arena"}};
  file = WriteAndRead(c);
  p = PlanFile::FromBuffer("plan.bin", Bytes(file));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Msg(p.status()), HasSubstr("(MEMORY_PLAN)"));

  c.extra_sections = {{static_cast<uint32_t>(PlanSectionKind::kOptions), 0, "a=b\n"}};
  file = WriteAndRead(c);
  p = PlanFile::FromBuffer("plan.bin", Bytes(file));
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(Msg(p.status()), HasSubstr("second OPTIONS section"));
}

TEST_F(PlanTest, WriterRejectsInconsistentContents) {
  PlanContents c = ReferencedContents();
  c.model_ref.reset();
  absl::Status st = WritePlan(Path("plan.bin"), c);
  EXPECT_FALSE(st.ok());
  c = ReferencedContents();
  c.options.emplace_back("bad\nkey", "x");
  EXPECT_FALSE(WritePlan(Path("plan.bin"), c).ok());
  st = WritePlan(Path("no/such/dir/plan.bin"), ReferencedContents());
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(Msg(st), HasSubstr("no/such/dir/plan.bin"));
  EXPECT_FALSE(fs::exists(Path("plan.bin")));
}

TEST_F(PlanTest, OverwritingAPlanReplacesIt) {
  PlanContents c = ReferencedContents();
  WriteAndRead(c);
  c.options = {{"device", "cpu"}, {"n_ctx", "64"}};
  WriteAndRead(c);
  absl::StatusOr<std::unique_ptr<PlanFile>> p = PlanFile::Open(Path("plan.bin"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->Option("n_ctx"), "64");
  EXPECT_EQ((*p)->Option("max_tokens"), "");
}

TEST_F(PlanTest, ReferencedModelIsCheckedAtLoad) {
  std::string gguf_path = WriteGguf("m.gguf");
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Open(gguf_path);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  absl::StatusOr<ModelRef> ref = MakeModelRef(**gguf);
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->path, fs::canonical(gguf_path).string());
  EXPECT_EQ(ref->size, fs::file_size(gguf_path));
  EXPECT_EQ(ref->fingerprint, GgufFingerprint(**gguf));
  gguf->reset();

  PlanContents c = ReferencedContents();
  c.model_ref = *ref;
  std::string plan_path = Path("plan.bin");
  ASSERT_TRUE(WritePlan(plan_path, c).ok());
  absl::StatusOr<std::unique_ptr<PlanFile>> plan = PlanFile::Open(plan_path);
  ASSERT_TRUE(plan.ok()) << plan.status();
  {
    absl::StatusOr<std::unique_ptr<GgufFile>> model = (*plan)->OpenModel();
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_NE((*model)->FindTensor("t.weight"), nullptr);
  }

  // Same size, different metadata: the fingerprint tells.
  WriteGguf("m.gguf", "llamb");
  ASSERT_EQ(fs::file_size(gguf_path), ref->size);
  absl::StatusOr<std::unique_ptr<GgufFile>> model = (*plan)->OpenModel();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(Msg(model.status()), HasSubstr("plan.bin: the model " + ref->path +
                                             " changed since the plan was compiled"));
  EXPECT_THAT(Msg(model.status()), HasSubstr("header, metadata or tensor table differ"));

  // A different size.
  WriteGguf("m.gguf", "a-longer-architecture-name-than-before");
  model = (*plan)->OpenModel();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(Msg(model.status()), HasSubstr("its size was " + std::to_string(ref->size) +
                                             " bytes, now " +
                                             std::to_string(fs::file_size(gguf_path))));

  // Gone.
  fs::remove(gguf_path);
  model = (*plan)->OpenModel();
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(Msg(model.status()), HasSubstr(ref->path + ", cannot be found"));
  EXPECT_THAT(Msg(model.status()), HasSubstr("--embed-weights"));

  // Back as it was: loads again.
  WriteGguf("m.gguf");
  EXPECT_TRUE((*plan)->OpenModel().ok());
}

}  // namespace
}  // namespace vibrant
